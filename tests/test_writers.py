"""SaveLandmarks(d): points bound to a grid -> JSON in the file's voxel indices and world coordinates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.data import MetaTensor

from monai_adaloss.writers import SaveLandmarks, SaveLandmarksd


def grid_affine() -> torch.Tensor:
    """A working grid of 2 x 3 x 4 mm voxels, shifted, of a file whose affine is ``file_affine``."""
    return torch.tensor([[2.0, 0, 0, 10], [0, 3.0, 0, -5], [0, 0, 4.0, 7], [0, 0, 0, 1]], dtype=torch.float64)


def file_affine() -> torch.Tensor:
    return torch.tensor([[0.5, 0, 0, 10], [0, 0.5, 0, -5], [0, 0, 2.0, 7], [0, 0, 0, 1]], dtype=torch.float64)


def sample(tmp_path: Path) -> dict:
    image = MetaTensor(
        torch.zeros(1, 4, 4, 4),
        affine=grid_affine(),
        meta={"filename_or_obj": str(tmp_path / "data" / "sub" / "ct_7.nii.gz"), "original_affine": file_affine()},
    )
    points = MetaTensor(torch.tensor([[[1.0, 2.0, 0.5]], [[float("nan")] * 3]]), affine=grid_affine())
    return {"image": image, "points": points, "confidence": torch.tensor([[0.8], [0.0]])}


def test_writes_file_voxels_world_and_confidence(tmp_path: Path) -> None:
    writer = SaveLandmarksd(
        "points", ["a", "b"], tmp_path / "out", confidence_keys="confidence", data_root_dir=tmp_path / "data"
    )
    writer(sample(tmp_path))
    record = json.loads((tmp_path / "out" / "sub" / "ct_7_landmarks.json").read_text())
    # world = grid affine @ (1, 2, 0.5) = (12, 1, 9); file voxels = ((12 - 10) / 0.5, (1 + 5) / 0.5, (9 - 7) / 2)
    assert record["points_world"] == {"a": [[12.0, 1.0, 9.0]], "b": []}
    assert record["points_voxel"] == {"a": [[4.0, 12.0, 1.0]], "b": []}
    assert record["confidence"] == {"a": [pytest.approx(0.8)], "b": []}
    assert record["image"].endswith("ct_7.nii.gz") and record["landmark_names"] == ["a", "b"]


def test_identity_file_affine_and_errors(tmp_path: Path) -> None:
    data = sample(tmp_path)
    SaveLandmarksd("points", ["a", "b"], tmp_path / "flat", affine_key=None)(data)
    record = json.loads((tmp_path / "flat" / "ct_7_landmarks.json").read_text())
    assert record["points_voxel"] == record["points_world"] == {"a": [[12.0, 1.0, 9.0]], "b": []}
    writer = SaveLandmarks(["a", "b"], tmp_path / "array", affine_key=None, output_postfix="")
    assert writer(data["points"], data["image"].meta, postfix="_x") is data["points"]
    assert json.loads((tmp_path / "array" / "ct_7_x.json").read_text())["points_voxel"] == record["points_voxel"]
    with pytest.raises(ValueError, match="channels"):
        SaveLandmarksd("points", ["a"], tmp_path)(data)
    with pytest.raises(ValueError, match="bound"):
        SaveLandmarksd("points", ["a", "b"], tmp_path)({**data, "points": torch.zeros(2, 1, 3)})
    with pytest.raises(KeyError, match="no_such_key"):
        SaveLandmarksd("points", ["a", "b"], tmp_path, affine_key="no_such_key")(data)
