"""The landmarks_3d MONAI bundle on tiny synthetic NIfTI volumes (32x32x20 voxels, tilted, 24^3 grid, 4-8-16 channels).

- metadata.json against MONAI's bundle schema (offline copy in ``tests/data``);
- train.json through ``ConfigWorkflow(workflow_type="train")`` for 2 epochs: properties, ``models/model.pt``
  with the model info (6 landmarks, per-landmark sigma, mean-normalised targets), metrics in mm and voxels;
- evaluate.json through ``ConfigWorkflow(workflow_type="eval")``;
- a perfect network output maps back to the volume's voxel indices and, through the NIfTI affine, to the
  datalist's world mm exactly (validation post-processing and inference writer alike);
- inference.json through ``ConfigWorkflow(workflow_type="infer")`` writes one JSON per volume.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_checks import bundle_workflow, check_metadata_schema, evaluate_as_trained, train_and_summarise
from monai.data import decollate_batch, list_data_collate
from monai.engines.utils import engine_apply_transform
from monai.transforms import ApplyTransformToPoints

from monai_adaloss.bundles import available_bundles, bundle_path
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.inference import load_checkpoint
from monai_adaloss.synthetic.volumes import VOLUME_LANDMARKS, VolumeConfig, make_volume_dataset

BUNDLE = bundle_path("landmarks_3d")
CONFIGS = BUNDLE / "configs"
TINY = {
    "input_size": [24, 24, 24],
    "network_channels": [4, 8, 16],
    "num_workers": 0,
    "train_batch_size": 2,
    "val_batch_size": 2,
}
EPOCHS = 2
SPACING = (1.2, 1.2, 2.5)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training, 2 validation and 2 test volumes of 32x32x20 voxels, anisotropic and tilted (oblique affine)."""
    root = tmp_path_factory.mktemp("volumes")
    config = VolumeConfig(shape=(32, 32, 20), spacing=SPACING, tilt_deg=(10.0, 0.0, 5.0))
    make_volume_dataset(root, 4, 2, 2, config=config, seed=1)
    return root


def workflow(config_files: list[str], workflow_type: str, bundle_root: Path, dataset_dir: Path, **override: Any):
    return bundle_workflow(CONFIGS, config_files, workflow_type, bundle_root, dataset_dir, **override)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("landmarks_3d_bundle")
    wf = workflow(["train.json"], "train", root, dataset_dir, max_epochs=EPOCHS, **TINY)
    return train_and_summarise(wf, root)


def test_metadata_follows_the_bundle_schema() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    check_metadata_schema(meta)
    nd = meta["network_data_format"]
    train = json.loads((CONFIGS / "train.json").read_text())
    assert train["input_size"] == nd["inputs"]["image"]["spatial_shape"] == nd["outputs"]["pred"]["spatial_shape"]
    assert train["landmark_names"] == list(VOLUME_LANDMARKS)
    assert nd["outputs"]["pred"]["num_channels"] == nd["post_processed_outputs"]["points"]["num_channels"] == 6
    assert nd["post_processed_outputs"]["points"]["spatial_shape"] == [1, 3]
    assert "landmarks_3d" in available_bundles() and (BUNDLE / "LICENSE").is_file()


def test_train_workflow_saves_the_best_model_with_per_landmark_sigma(trained: dict[str, Any]) -> None:
    assert trained["missing"] == []
    model_file = torch.load(trained["root"] / "models" / "model.pt", map_location="cpu", weights_only=True)
    info = model_file["model_info"]
    assert info["landmark_names"] == list(VOLUME_LANDMARKS) and info["input_size"] == [24, 24, 24]
    assert info["normalize"] == "mean" and len(info["sigma"]) == 6
    assert info["preprocessing"]["hu_window"] == [-1000, 1000]  # inference reads it from here
    assert trained["sigma_history"].shape == (EPOCHS + 1, 6)
    assert trained["sigma_history"][0].tolist() == [6.0] * 6  # 24 / 4; the first update comes after 4 epochs
    model = load_checkpoint(trained["root"] / "models" / "model.pt")
    assert model.network(torch.zeros(1, 1, 24, 24, 24)).shape == (1, 6, 24, 24, 24)
    assert trained["best_metric"] <= trained["metrics"]["val_mean_dist_mm"]


def test_validation_metrics_are_in_mm_and_original_voxels(trained: dict[str, Any]) -> None:
    metrics = trained["metrics"]
    for name in ("val_mean_dist_mm", "val_median_dist_mm", "val_p95_dist_mm", "val_mean_dist_voxel"):
        assert math.isfinite(metrics[name]), name
    # voxels are 1.2 x 1.2 x 2.5 mm: a mm error lies between 1.2 and 2.5 times the voxel error
    assert 1.2 * metrics["val_mean_dist_voxel"] <= metrics["val_mean_dist_mm"] <= 2.5 * metrics["val_mean_dist_voxel"]


def test_evaluate_workflow(trained: dict[str, Any], dataset_dir: Path) -> None:
    wf = workflow(["train.json", "evaluate.json"], "eval", trained["root"], dataset_dir, **TINY)
    assert wf.check_properties() == []
    wf.run()
    metrics = wf.parser.get_parsed_content("evaluator").state.metrics
    wf.finalize()
    assert math.isfinite(metrics["val_mean_dist_mm"]) and math.isfinite(metrics["val_mean_dist_voxel"])
    assert "val_mean_dist_mm" in (trained["root"] / "eval" / "metrics.csv").read_text()


def test_evaluate_takes_size_network_and_window_from_the_model_info(
    trained: dict[str, Any], dataset_dir: Path, tmp_path: Path
) -> None:
    """No training override repeated: the 24^3 grid and 4-8-16 channels of the trained model, and the HU window
    its (copied, edited) model_info.json says: [-500, 700], where train.json's default is [-1000, 1000]."""

    def change(info: dict[str, Any]) -> None:
        info["preprocessing"]["hu_window"] = [-500, 700]

    read = ("input_size", "hu_window")
    result = evaluate_as_trained(CONFIGS, trained["root"], dataset_dir, tmp_path, change, read, num_workers=0)
    assert result["missing"] == []
    assert result["input_shapes"] == {(24, 24, 24)}
    assert (result["input_size"], result["hu_window"]) == ([24, 24, 24], [-500, 700])
    assert result["metrics"] and all(math.isfinite(v) for v in result["metrics"].values())


def datalist_points(dataset_dir: Path, split: str, key: str) -> list[torch.Tensor]:
    """``(L, 1, 3)`` float64 points of a split's entries, from the datalist's ``label`` or ``label_world_mm``."""
    content = json.loads((dataset_dir / "datalist.json").read_text())
    return [
        torch.tensor([entry[key][name] for name in content["landmark_names"]], dtype=torch.float64)
        for entry in content[split]
    ]


def test_perfect_prediction_maps_back_to_voxels_and_world_mm(tmp_path: Path, dataset_dir: Path) -> None:
    """A network output equal to the targets decodes to the file's voxel indices and, through its affine, world mm."""
    wf = workflow(["train.json"], "train", tmp_path, dataset_dir, **{**TINY, "input_size": [24, 16, 32]})
    dataset = wf.parser.get_parsed_content("validate::dataset")
    postprocessing = wf.parser.get_parsed_content("validate::postprocessing")
    batch = list_data_collate([dataset[i] for i in range(len(dataset))])
    images = batch["image"]
    pred = images * 0 + render_gaussian_heatmaps(batch["label"].as_tensor(), 2.0, images.shape[2:])
    output = {"pred": pred, "image": images, "label": batch["label"]}
    voxels, worlds = (
        datalist_points(dataset_dir, "validation", "label"),
        datalist_points(dataset_dir, "validation", "label_world_mm"),
    )
    for sample, out, voxel, world in zip(decollate_batch(batch), decollate_batch(output), voxels, worlds, strict=True):
        _, out = engine_apply_transform(sample, out, postprocessing)
        found = out["pred_points_original"].as_tensor().double()
        assert torch.allclose(found, voxel, atol=0.02)
        affine = torch.as_tensor(nib.load(out["image"].meta["filename_or_obj"]).affine, dtype=torch.float64)
        assert torch.allclose(found @ affine[:3, :3].T + affine[:3, 3], world, atol=0.05)
        assert torch.allclose(torch.as_tensor(out["label_points_original"].meta["spacing"]).double(),
                              torch.tensor(SPACING, dtype=torch.float64), atol=1e-5)  # fmt: skip


def test_inference_writes_voxel_and_world_points(trained: dict[str, Any], dataset_dir: Path) -> None:
    wf = workflow(["inference.json"], "infer", trained["root"], dataset_dir / "test", num_workers=0)
    assert wf.check_properties() == []
    preprocessing = wf.parser.get_parsed_content("preprocessing")
    postprocessing = wf.parser.get_parsed_content("postprocessing")
    wf.run()
    written = sorted((trained["root"] / "predictions").glob("*_landmarks.json"))
    assert [p.name for p in written] == ["000000_landmarks.json", "000001_landmarks.json"]
    record = json.loads(written[0].read_text())
    assert record["landmark_names"] == list(VOLUME_LANDMARKS) and set(record["points_world"]) == set(VOLUME_LANDMARKS)
    wf.finalize()

    # a perfect network output: the writer gives the datalist's voxel indices and world mm
    out_dir = trained["root"] / "perfect"
    postprocessing.transforms[-1].writer.output_dir = out_dir
    voxels, worlds = (
        datalist_points(dataset_dir, "test", "label"),
        datalist_points(dataset_dir, "test", "label_world_mm"),
    )
    for index, (voxel, world) in enumerate(zip(voxels, worlds, strict=True)):
        sample = preprocessing({"image": str(dataset_dir / "test" / f"{index:06d}.nii.gz")})
        image = sample["image"]
        to_grid = torch.linalg.inv(image.affine) @ torch.as_tensor(image.meta["original_affine"], dtype=torch.float64)
        on_grid = ApplyTransformToPoints(invert_affine=False)(voxel.reshape(6, 1, 3), to_grid)
        pred = image * 0 + render_gaussian_heatmaps(on_grid[None].float(), 2.0, image.shape[1:])[0]
        postprocessing({"image": image, "pred": pred})
        record = json.loads((out_dir / f"{index:06d}_landmarks.json").read_text())
        for name, v, w in zip(VOLUME_LANDMARKS, voxel, world, strict=True):
            assert np.allclose(record["points_voxel"][name], v, atol=0.02), name
            assert np.allclose(record["points_world"][name], w, atol=0.05), name
            # confidence as `monai-adaloss infer` gives it: the peak relative to a clean training target of the
            # model's sigma (mean-normalised here, whose peak is above 1), so a unit-height peak scores below 1
            assert 0.05 < record["confidence"][name][0] < 1.0
