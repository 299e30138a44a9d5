"""Synthetic device layers and their overlay augmentation (monai_adaloss.synthetic.device_overlay)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_adaloss.synthetic.device_overlay import DEVICE_LAYER_CONFIG, RandDeviceOverlayd, render_device_layers


def test_layers_are_device_attenuations_on_an_empty_field() -> None:
    layers = render_device_layers(3, (128, 96), pixel_spacing_mm=(0.6, 0.8), seed=1)
    assert layers.shape == (3, 128, 96) and layers.dtype == np.float32
    assert np.isfinite(layers).all() and 0.0 <= layers.min() < 1e-6
    for layer in layers:
        assert np.mean(layer < 0.2) > 0.5  # mostly empty field (or faint electrode pads)
        assert layer.max() > 1.0  # and some dense device pixels (ECG snaps, clips, wires)
    np.testing.assert_array_equal(layers, render_device_layers(3, (128, 96), pixel_spacing_mm=(0.6, 0.8), seed=1))
    assert not np.array_equal(layers[0], layers[1])


def test_layers_refuse_a_catheter_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="catheter off"):
        render_device_layers(1, (64, 64), config=replace(DEVICE_LAYER_CONFIG, catheter=True))
    with pytest.raises(ValueError, match="`n`"):
        render_device_layers(0, (64, 64))
    with pytest.raises(ValueError, match=r"\(X, Y\)"):
        render_device_layers(1, (64, 64, 64))


def _sample() -> dict:
    image = MetaTensor(torch.full((1, 64, 64), 0.8), meta={"filename_or_obj": "frame.dcm"})
    return {"image": image, "label": torch.tensor([[[10.0, 20.0]]])}


def test_overlay_darkens_without_moving_anything() -> None:
    overlay = RandDeviceOverlayd("image", prob=1.0, pool_size=2, pixel_spacing_mm=(0.6, 0.8))
    overlay.set_random_state(0)
    sample = _sample()
    out = overlay(sample)
    assert isinstance(out["image"], MetaTensor) and out["image"].meta["filename_or_obj"] == "frame.dcm"
    assert out["image"].shape == (1, 64, 64)
    assert bool((out["image"] <= 0.8 + 1e-6).all()) and bool((out["image"] < 0.4).any())
    assert out["label"] is sample["label"]  # the points are not touched
    layers = overlay.pool((64, 64))
    assert layers.shape == (2, 64, 64)
    assert overlay.pool((64, 64)) is layers  # rendered once per shape


def test_overlay_probability_zero_is_the_identity_and_numpy_works() -> None:
    sample = _sample()
    out = RandDeviceOverlayd("image", prob=0.0, pool_size=1)(sample)
    assert out["image"] is sample["image"]
    overlay = RandDeviceOverlayd("image", prob=1.0, pool_size=1, weight=(0.5, 0.5))
    image = np.full((2, 64, 64), 0.5, dtype=np.float32)  # two channels: one layer multiplies both
    result = overlay({"image": image})["image"]
    assert isinstance(result, np.ndarray) and result.dtype == np.float32
    np.testing.assert_array_equal(result[0], result[1])
    transmission = np.exp(-0.5 * overlay.pool((64, 64))[0].numpy())  # weight 0.5: a window of 2 units
    flips = [transmission, np.flip(transmission, 0), np.flip(transmission, 1), np.flip(transmission, (0, 1))]
    assert any(np.allclose(result[0], 0.5 * candidate) for candidate in flips)


def test_overlay_draws_follow_the_random_state_and_reject_3d() -> None:
    def draws(seed: int) -> list[torch.Tensor]:
        overlay = RandDeviceOverlayd("image", prob=0.7, pool_size=3)
        overlay.set_random_state(seed)
        return [overlay(_sample())["image"].as_tensor() for _ in range(4)]

    for a, b in zip(draws(5), draws(5), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"2D images \(C, X, Y\)"):
        RandDeviceOverlayd("image", prob=1.0, pool_size=1)({"image": torch.zeros(1, 8, 8, 8)})
    with pytest.raises(ValueError, match="pool_size"):
        RandDeviceOverlayd("image", pool_size=0)
