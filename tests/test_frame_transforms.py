"""One pre-processing description: the checkpoint's frame transforms are what inference applies, and are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Resized
from test_inference_support import good_files

from monai_adaloss.frame_transforms import build_frame_transforms, check_frame_transform_configs
from monai_adaloss.inference import DecodeSettings, InferenceConfigError, decode_file
from monai_adaloss.io import read_all_frames
from monai_adaloss.model_info import LandmarkModelInfo

NETWORK = {"_target_": "monai_adaloss.networks.catheter_unet", "in_channels": 1, "out_channels": 1}


def _info(transforms: list[dict]) -> LandmarkModelInfo:
    pre = {"reader": "XRayDicomReader", "apply_voi_lut": True, "transforms": transforms}
    return LandmarkModelInfo(["tip"], [16, 12], NETWORK, pre)


@pytest.mark.parametrize("mode", ["area", "nearest", "bilinear"])
def test_decoding_applies_the_checkpoints_frame_transforms(tmp_path: Path, mode: str) -> None:
    path = str(good_files(tmp_path)["single"])
    transforms = [{"_target_": "monai.transforms.Resized", "keys": "image", "spatial_size": [16, 12], "mode": mode}]
    decoded = decode_file(path, DecodeSettings.from_model_info(_info(transforms)))
    frames, _ = read_all_frames(path)
    expected = Resized("image", [16, 12], mode=mode)({"image": torch.from_numpy(frames[:1])})["image"]
    assert decoded.images.shape == (1, 1, 16, 12)
    assert np.allclose(decoded.images[0], np.asarray(expected), atol=1e-6)


def test_frame_transforms_that_miss_the_input_size_fail_the_file(tmp_path: Path) -> None:
    path = str(good_files(tmp_path)["single"])
    transforms = [{"_target_": "monai.transforms.Resized", "keys": "image", "spatial_size": [8, 8]}]
    with pytest.raises(ValueError, match="not its input size"):
        decode_file(path, DecodeSettings.from_model_info(_info(transforms)))


@pytest.mark.parametrize(
    ("transforms", "problem"),
    [
        ([{"_target_": "os.system", "command": "true"}], "may only be classes"),
        ([{"_target_": "monai.transforms.Resized", "keys": "image", "spatial_size": "$__import__('os')"}], "plain"),
        (
            [{"_target_": "monai.transforms.Resized", "keys": "image", "spatial_size": [16, 12], "_requires_": "@x"}],
            "special",
        ),
        ("Resized", "list of transform configs"),
    ],
)
def test_a_checkpoint_cannot_run_code_through_its_transforms(transforms: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_frame_transform_configs(transforms)
    with pytest.raises(InferenceConfigError, match=problem):
        DecodeSettings.from_model_info(_info(transforms))  # type: ignore[arg-type]


def test_build_gives_a_compose_of_the_configs() -> None:
    pipeline = build_frame_transforms(
        [{"_target_": "monai.transforms.Resized", "keys": "image", "spatial_size": [4, 6]}]
    )
    assert pipeline({"image": torch.rand(1, 8, 12)})["image"].shape == (1, 4, 6)
