"""LandmarkModelInfo: live sigma at save time, weights_only round trip, clear errors."""

from __future__ import annotations

import pytest
import torch

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.model_info import LandmarkModelInfo, load_model_info

NETWORK = {"_target_": "monai_adaloss.networks.HeatmapUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2}


def test_state_dict_reads_live_sigma_and_loads_weights_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    schedule = AdalossSchedule(16.0, num_landmarks=2)
    info = LandmarkModelInfo(["tip", "marker"], [64, 64], NETWORK, {"intensity": "[0, 1]"}, schedule=schedule)
    for loss in (1.0, 0.6, 0.5, 0.45):
        schedule.update([loss, loss])
    path = tmp_path / "model.pt"
    torch.save({"model_info": info.state_dict()}, path)
    loaded = load_model_info(path)
    assert loaded.sigma == pytest.approx([12.8, 12.8])  # one step bounded to 20 % of 16
    assert loaded.landmark_names == ["tip", "marker"]
    assert loaded.network == NETWORK
    assert loaded.preprocessing == {"intensity": "[0, 1]"}


def test_errors_name_the_problem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "weights_only.pt"
    torch.save({"network": {}}, path)
    with pytest.raises(ValueError, match=r"weights_only.pt` holds no `model_info` entry"):
        load_model_info(path)
    with pytest.raises(ValueError, match="`max_instances` must be >= 1, got 0"):
        LandmarkModelInfo(["tip"], [64, 64], NETWORK, max_instances=0)
    with pytest.raises(ValueError, match="`schedule` has 2 landmarks, `landmark_names` 1"):
        LandmarkModelInfo(["tip"], [64, 64], NETWORK, schedule=AdalossSchedule(8.0, num_landmarks=2))
