"""Synthetic CT-like NIfTI volumes: anatomy, the voxel order and affine seen through MONAI's readers, and a tiny
3D training run from the written files to an error in mm."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.handlers import AdalossHandler
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.metrics import LandmarkDistanceMetric
from monai_adaloss.networks import HeatmapUNet
from monai_adaloss.synthetic.volumes import (
    VOLUME_LANDMARKS,
    VolumeConfig,
    generate_volume,
    make_volume_dataset,
    volume_affine,
)
from monai_adaloss.transforms import LoadLandmarksd

MARKER_HU = 3000.0
# an oblique, anisotropic grid with a non-zero origin; small so that the files are quick to write and read
OBLIQUE = VolumeConfig(
    shape=(24, 20, 12), spacing=(0.9, 0.7, 2.5), tilt_deg=(15.0, -8.0, 20.0), origin_mm=(40.0, -25.0, 300.0)
)


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def marked_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training and one validation volume whose landmark voxels hold the unique values MARKER_HU + l."""
    config = replace(OBLIQUE, marker_hu=MARKER_HU)
    return make_volume_dataset(tmp_path_factory.mktemp("volumes"), 2, 1, 0, config, seed=3)


def test_volume_anatomy_and_geometry() -> None:
    volume = generate_volume(VolumeConfig(), np.random.default_rng(0))
    assert volume.image.shape == (64, 64, 48) and volume.image.dtype == np.float32
    assert volume.landmark_names == VOLUME_LANDMARKS
    assert volume.points.shape == volume.points_world_mm.shape == (6, 1, 3)
    points = volume.points[:, 0]
    assert bool((points >= 0).all()) and bool((points <= np.array([63, 63, 47])).all())
    torch.testing.assert_close(np.linalg.norm(volume.affine[:3, :3], axis=0), np.array([0.8, 0.8, 2.5]))
    world = points @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    np.testing.assert_allclose(volume.points_world_mm[:, 0], world, rtol=0, atol=1e-9)

    def hu(name: str) -> float:
        return float(volume.image[tuple(np.round(points[VOLUME_LANDMARKS.index(name)]).astype(int))])

    assert abs(float(volume.image[0, 0, 0]) + 1000.0) < 60.0  # air in the corner
    for vertebra in ("vertebra_upper", "vertebra_middle", "vertebra_lower"):
        assert 150.0 < hu(vertebra) < 450.0  # cancellous bone
    assert 60.0 < hu("liver_centroid") < 160.0  # enhanced liver, above soft tissue
    assert 110.0 < hu("left_kidney_centroid") < 260.0
    # the vertebrae are stacked along k (superior first); the spinous tip lies posterior (+j) of the middle one
    assert points[0, 2] > points[1, 2] > points[2, 2]
    assert points[3, 1] > points[1, 1] + 5.0
    same = generate_volume(VolumeConfig(), np.random.default_rng(0))
    np.testing.assert_array_equal(same.image, volume.image)


def test_shift_moves_anatomy_and_landmarks_together() -> None:
    """``shift_mm`` translates the whole anatomy: every landmark by one offset, the image with it."""
    fixed = VolumeConfig(shape=(40, 40, 24), spacing=(1.0, 1.0, 2.5), variability=0.0, noise_hu=0.0)
    shifted = replace(fixed, shift_mm=(6.0, 6.0, 8.0))
    centred = generate_volume(fixed, np.random.default_rng(0))
    offsets = [generate_volume(shifted, np.random.default_rng(seed)) for seed in range(3)]
    for volume in offsets:
        offset_mm = (volume.points - centred.points)[:, 0] * np.array(fixed.spacing)  # (L, 3)
        assert np.allclose(offset_mm, offset_mm[0], atol=1e-9)  # one translation for all landmarks
        assert bool((np.abs(offset_mm[0]) <= np.array(shifted.shift_mm)).all()) and np.abs(offset_mm[0]).max() > 0.5
        for name, point in zip(VOLUME_LANDMARKS[:3], volume.points[:3, 0], strict=True):  # vertebral bodies
            assert volume.image[tuple(np.round(point).astype(int))] > 150, name
    assert generate_volume(fixed, np.random.default_rng(0)).image.tobytes() == centred.image.tobytes()
    with pytest.raises(ValueError, match="shift_mm"):
        VolumeConfig(shift_mm=(-1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="out of the grid"):
        generate_volume(replace(fixed, shift_mm=(0.0, 0.0, 200.0)), np.random.default_rng(0))


def test_volume_config_rejects_unknown_landmarks() -> None:
    with pytest.raises(ValueError, match="landmark_names"):
        VolumeConfig(landmark_names=("vertebra_upper", "femur_head"))
    with pytest.raises(ValueError, match="spacing"):
        VolumeConfig(spacing=(0.8, 0.0, 2.5))


@pytest.mark.parametrize("reader", [None, "ITKReader"], ids=["default_nibabel", "itk"])
def test_monai_reader_voxel_order_and_affine(marked_dataset: Path, reader: str | None) -> None:
    """The datalist's (i, j, k) index the array MONAI loads, and affine @ [i, j, k, 1] is the stored world mm."""
    datalist = json.loads(marked_dataset.read_text())
    names = datalist["landmark_names"]
    load = Compose(
        [
            LoadImaged(keys="image", reader=reader, image_only=False),
            EnsureChannelFirstd(keys="image"),
            LoadLandmarksd(keys="label", names=names, ndim=3),
        ]
    )
    for entry in datalist["training"] + datalist["validation"]:
        path = marked_dataset.parent / entry["image"]
        sample = load({"image": str(path), "label": entry["label"]})
        image = sample["image"]
        assert tuple(image.shape) == (1, *OBLIQUE.shape)
        assert sample["image_meta_dict"]["space"] == "RAS"
        points = sample["label"]
        assert tuple(points.shape) == (len(names), 1, 3)
        values = image[0].numpy()
        for channel, name in enumerate(names):
            voxel = np.round(points[channel, 0].numpy()).astype(int)
            assert values[tuple(voxel)] == MARKER_HU + channel
            assert int((values == MARKER_HU + channel).sum()) == 1
            for affine in (image.affine.numpy(), np.asarray(sample["image_meta_dict"]["original_affine"])):
                world = affine @ np.append(np.asarray(entry["label"][name][0]), 1.0)
                np.testing.assert_allclose(world[:3], entry["label_world_mm"][name][0], rtol=0, atol=1e-3)
        torch.testing.assert_close(image.pixdim.double(), torch.tensor(OBLIQUE.spacing, dtype=torch.float64))
    if reader is None:  # the file's sform, read back by nibabel, is exactly the generator's affine
        config = replace(OBLIQUE, marker_hu=MARKER_HU)
        stored = nib.load(marked_dataset.parent / datalist["training"][0]["image"]).affine
        np.testing.assert_array_equal(stored, volume_affine(config))
        np.testing.assert_array_equal(image.affine.numpy(), volume_affine(config))


def test_tiny_3d_training_and_error_in_mm(tmp_path: Path) -> None:
    """Files -> LoadImaged + LoadLandmarksd -> SupervisedTrainer with Adaloss -> decoded point -> error in mm."""
    config = VolumeConfig(
        shape=(32, 32, 16), spacing=(0.8, 0.8, 2.5), tilt_deg=(12.0, 0.0, -5.0), landmark_names=VOLUME_LANDMARKS[:4]
    )
    datalist_path = make_volume_dataset(tmp_path, 2, 0, 0, config, seed=0)
    datalist = json.loads(datalist_path.read_text())
    names = datalist["landmark_names"]
    samples = [{"image": str(tmp_path / e["image"]), "label": e["label"]} for e in datalist["training"]]
    transforms = Compose(
        [
            LoadImaged(keys="image", image_only=True),
            EnsureChannelFirstd(keys="image"),
            ScaleIntensityRanged(keys="image", a_min=-1000.0, a_max=1000.0, b_min=0.0, b_max=1.0, clip=True),
            LoadLandmarksd(keys="label", names=names, ndim=3),
        ]
    )
    loader = DataLoader(Dataset(samples, transform=transforms), batch_size=2)
    torch.manual_seed(0)
    # instance norm: batch-norm running statistics of two iterations are useless in eval mode
    net = HeatmapUNet(3, 1, len(names), channels=(4, 8), kernel_size=3, norm="instance")
    schedule = AdalossSchedule(4.0, num_landmarks=len(names), sigma_min=1.0)
    loss_fn = AdalossHeatmapLoss(schedule)
    trainer = SupervisedTrainer(
        "cpu",
        2,
        loader,
        net,
        torch.optim.Adam(net.parameters(), lr=1e-2),
        loss_fn,
        train_handlers=[AdalossHandler(loss_fn, names)],
    )
    trainer.run()
    assert schedule.loss_history.shape == (2, len(names))
    assert bool(torch.isfinite(schedule.loss_history).all())
    assert set(trainer.state.metrics) >= {f"sigma/{name}" for name in names}

    batch = next(iter(loader))
    net.eval()
    with torch.no_grad():
        heatmaps = net(batch["image"])
    assert tuple(heatmaps.shape) == (2, len(names), 32, 32, 16)
    pred, _ = decode_single_instance(heatmaps)
    target = batch["label"].as_tensor()
    spacing = torch.stack(batch["image"].pixdim)  # (B, 3): each image's pixdim, from its affine
    metric = LandmarkDistanceMetric(unit="mm", per_landmark=True)
    metric(pred, target, spacing=spacing)
    error_mm = metric.aggregate()
    assert error_mm.shape == (len(names),) and bool(torch.isfinite(error_mm).all())
    # the error in mm is the world distance through the (rotated, anisotropic) affine
    affine = batch["image"].affine.to(torch.float64)  # (B, 4, 4)
    world_diff = torch.einsum("bxd,bld->blx", affine[:, :3, :3], (pred - target)[:, :, 0].to(torch.float64))
    expected = torch.linalg.vector_norm(world_diff, dim=-1).mean(dim=0)
    torch.testing.assert_close(error_mm.to(torch.float64), expected, rtol=1e-4, atol=1e-4)
    assert not math.isclose(float(error_mm.mean()), float(metric.aggregate(unit="voxel").mean()), rel_tol=1e-3)
