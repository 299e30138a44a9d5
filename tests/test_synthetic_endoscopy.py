"""Synthetic laparoscopic frames: determinism, ground truth on the jaw tips, switches, scissors, datalist.

Points are ``(x, y) = (column, row)``; the PNG raster is ``raster[row, column, c]`` and MONAI's layout is
``image[c, x, y]`` (DESIGN.md section 2).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from monai.transforms import Compose, LoadImaged

from monai_adaloss.synthetic.endoscopy import (
    LANDMARK_NAMES,
    PART_JAW,
    EndoscopyConfig,
    generate_endoscopy_frame,
    make_endoscopy_dataset,
    save_endoscopy_preview_grid,
)
from monai_adaloss.transforms import LoadLandmarksd

SWITCHES = tuple(
    f.name for f in dataclasses.fields(EndoscopyConfig) if f.type == "bool" or f.name.endswith("_probability")
)
SMALL = {"rows": 128, "columns": 160}


def _switched_off(**keep) -> EndoscopyConfig:
    """A config with every switch off (booleans False, probabilities 0), except what `keep` sets."""
    values = {name: False if isinstance(getattr(EndoscopyConfig, name), bool) else 0.0 for name in SWITCHES}
    return EndoscopyConfig(**{**values, **keep})


def test_same_seed_same_frame_other_seed_other_frame():
    config = EndoscopyConfig(**SMALL, scissors_probability=0.5, annotation_noise_px=1.0)
    a = generate_endoscopy_frame(config, np.random.default_rng(7))
    b = generate_endoscopy_frame(config, np.random.default_rng(7))
    c = generate_endoscopy_frame(config, np.random.default_rng(8))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.landmarks_annotated, b.landmarks_annotated)
    assert a.instruments == b.instruments
    assert not np.array_equal(a.image, c.image)


def test_layouts_and_shapes():
    frame = generate_endoscopy_frame(EndoscopyConfig(rows=96, columns=128), np.random.default_rng(0))
    assert frame.image.shape == (3, 128, 96) and frame.image.dtype == np.uint8
    assert frame.raster.shape == (96, 128, 3)
    assert frame.raster[10, 50, 1] == frame.image[1, 50, 10]
    assert frame.instance_map.shape == frame.part_map.shape == (128, 96)
    assert frame.landmarks.shape == frame.landmarks_annotated.shape == (2, 3, 2)
    assert frame.visible.shape == (2, 3)
    assert frame.landmark_names == LANDMARK_NAMES


def test_claspers_lie_on_the_jaw_tips_in_a_noise_free_rendering():
    config = _switched_off(tissue_texture=True, specular_highlights=True, vignetting=True, instruments=(1, 3))
    checked = 0
    for seed in range(8):
        frame = generate_endoscopy_frame(config, np.random.default_rng(seed))
        drivers = [i for i, kind in enumerate(frame.instruments) if kind == "needle_driver"]
        for channel in range(2):
            for slot, instrument in enumerate(drivers):
                x, y = frame.landmarks[channel, slot]
                if np.isnan(x):
                    continue
                col, row = round(x), round(y)
                on_jaw = frame.instance_map[col, row] == instrument + 1 and frame.part_map[col, row] == PART_JAW
                assert frame.visible[channel, slot] == on_jaw
                if on_jaw:  # the rendered pixel is grey metal, not red tissue
                    r, g, b = frame.raster[row, col].astype(int)
                    assert abs(r - g) < 30 and abs(g - b) < 30, (seed, channel, slot, (r, g, b))
                    checked += 1
                else:  # hidden only by another instrument drawn later
                    assert frame.instance_map[col, row] > instrument + 1
            assert np.isnan(frame.landmarks[channel, len(drivers) :]).all()
    assert checked >= 20


def test_left_clasper_is_on_the_left_looking_along_the_instrument():
    config = _switched_off(instruments=(1, 1), jaw_opening_deg=(30.0, 50.0), wrist_bend_deg=(0.0, 0.0))
    for seed in range(6):
        frame = generate_endoscopy_frame(config, np.random.default_rng(seed))
        if np.isnan(frame.landmarks).any():
            continue
        shaft = np.argwhere(frame.part_map == 1).mean(axis=0)  # (x, y) centroid of the visible shaft
        left, right = frame.landmarks[:, 0]
        forward = (left + right) / 2 - shaft
        # left of `forward` in a y-down image: the cross product forward x (left - right) is negative
        cross = forward[0] * (left - right)[1] - forward[1] * (left - right)[0]
        assert cross < 0, seed


def test_all_switches_off_gives_plain_tissue():
    frame = generate_endoscopy_frame(_switched_off(instruments=(0, 0), **SMALL), np.random.default_rng(3))
    assert (frame.image == frame.image[:, :1, :1]).all()
    red, green, blue = frame.image[:, 0, 0].astype(int)
    assert red > green + 60 and red > blue + 60
    assert np.isnan(frame.landmarks).all() and not frame.visible.any()
    assert not frame.instance_map.any() and frame.instruments == ()


def test_scissors_are_a_distractor_without_labels():
    config = _switched_off(instruments=(1, 1), scissors_probability=1.0)
    frames = [generate_endoscopy_frame(config, np.random.default_rng(seed)) for seed in range(4)]
    assert all(frame.instruments == ("scissors",) for frame in frames)
    assert all(np.isnan(frame.landmarks).all() for frame in frames)
    tips = [(frame, tip) for frame in frames for tip in frame.scissors_tips]
    assert tips
    for frame, (x, y) in tips:
        assert frame.instance_map[round(x), round(y)] == 1


def test_config_validation():
    with pytest.raises(ValueError, match="smoke_probability"):
        EndoscopyConfig(smoke_probability=1.5)
    with pytest.raises(ValueError, match="instruments"):
        EndoscopyConfig(instruments=(3, 1))


def test_datalist_loads_through_monai(tmp_path):
    config = EndoscopyConfig(**SMALL)
    path = make_endoscopy_dataset(tmp_path, 3, 1, 2, config, seed=5, scissors_in_test=True)
    data = json.loads(path.read_text())
    assert data["landmark_names"] == list(LANDMARK_NAMES) and data["max_instances"] == 3
    assert [len(data[s]) for s in ("training", "validation", "test", "test_scissors")] == [3, 1, 2, 2]
    assert all(e["has_scissors"] for e in data["test_scissors"])
    assert not any(e["has_scissors"] for s in ("training", "validation", "test") for e in data[s])

    load = Compose(
        [
            LoadImaged("image", reader="PILReader", ensure_channel_first=True, image_only=True),
            LoadLandmarksd("label", names=list(LANDMARK_NAMES), max_instances=3),
        ]
    )
    for i, entry in enumerate(data["training"]):
        sample = load({**entry, "image": str(tmp_path / entry["image"])})
        assert tuple(sample["image"].shape) == (3, 160, 128)
        assert tuple(sample["label"].shape) == (2, 3, 2)
        frame = generate_endoscopy_frame(config, np.random.default_rng([5, 0, i]))
        np.testing.assert_array_equal(sample["image"].numpy(), frame.image)
        for channel, name in enumerate(LANDMARK_NAMES):
            present = frame.landmarks[channel][~np.isnan(frame.landmarks[channel]).any(axis=-1)]
            np.testing.assert_allclose(sample["label"][channel, : len(present)].numpy(), present, atol=1e-4)
            assert len(entry["label_visible"][name]) == len(present)

    preview = save_endoscopy_preview_grid(path, tmp_path / "preview.png", n=4)
    assert preview.stat().st_size > 0
