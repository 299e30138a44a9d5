"""The face_landmarks_300w MONAI bundle on the real 300-W / 300-VW sample faces of ``shared/data/faces_300w_samples``.

The six sample faces (four 300-VW frames with ``.pts`` files, two 300-W PNGs whose COCO keypoints are written as
``.pts``) are laid out as a tiny 300-W root, one face per sub-folder: ``train`` = lfpw/trainset + helen/trainset +
afw (3 faces: 2 train, 1 validation with ``validation_every=3``), ``common`` = 2, ``challenging`` = 1, ``full`` = 3.

- metadata.json against MONAI's bundle schema (offline copy in ``tests/data``);
- train.json through ``ConfigWorkflow(workflow_type="train")`` for 1 epoch at 32x32 (Dense U-Net, 68 landmarks):
  properties, ``models/model.pt`` with 68 per-landmark sigmas, NME metrics;
- evaluate.json through ``ConfigWorkflow(workflow_type="eval")`` on the ``full`` split;
- a perfect network output decodes to the ``.pts`` points in original pixels (NME 0);
- inference.json writes one JSON per face in original pixels.

Skipped when the samples folder (outside the package, next to the repository) is absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_checks import (
    bundle_workflow,
    check_metadata_schema,
    evaluate_as_trained,
    train_and_summarise,
    write_tiny_300w,
)
from monai.data import decollate_batch, list_data_collate
from monai.engines.utils import engine_apply_transform
from monai.transforms import ApplyTransformToPoints

from monai_adaloss.bundles import bundle_path
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.io.faces300w import list_300w_split, read_pts
from monai_adaloss.metrics import OUTER_EYE_CORNERS_300W, NormalizedMeanErrorMetric

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces_300w_samples"
pytestmark = [
    pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"300-W samples not found at {SAMPLES}"),
    pytest.mark.usefixtures("single_thread"),
]

BUNDLE = bundle_path("face_landmarks_300w")
CONFIGS = BUNDLE / "configs"
TINY = {
    "input_size": [32, 32],
    "init_channels": 4,
    "growth_rate": 4,
    "num_workers": 0,
    "train_batch_size": 2,
    "val_batch_size": 3,
    "validation_every": 3,
}


@pytest.fixture(scope="module")
def root_300w(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-W folder layout with one sample face per sub-folder."""
    return write_tiny_300w(tmp_path_factory.mktemp("300W"), SAMPLES)


def workflow(config_files: list[str], workflow_type: str, bundle_root: Path, dataset_dir: Path, **override: Any):
    return bundle_workflow(CONFIGS, config_files, workflow_type, bundle_root, dataset_dir, **override)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, root_300w: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("face_bundle")
    wf = workflow(["train.json"], "train", root, root_300w, max_epochs=1, **TINY)
    return train_and_summarise(
        wf,
        root,
        also=lambda wf: {
            "train_size": len(wf.parser.get_parsed_content("train::dataset")),
            "val_size": len(wf.parser.get_parsed_content("validate::dataset")),
        },
    )


def test_metadata_follows_the_bundle_schema() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    check_metadata_schema(meta)
    nd = meta["network_data_format"]
    train = json.loads((CONFIGS / "train.json").read_text())
    assert train["input_size"] == nd["inputs"]["image"]["spatial_shape"] == nd["outputs"]["pred"]["spatial_shape"]
    assert len(train["landmark_names"]) == nd["outputs"]["pred"]["num_channels"] == 68
    assert list(nd["outputs"]["pred"]["channel_def"].values()) == train["landmark_names"]
    assert train["learning_rate"] == 1e-4 and train["normalize"] == "mean"


def test_train_workflow_with_68_adaloss_landmarks(trained: dict[str, Any]) -> None:
    assert trained["missing"] == []
    assert (trained["train_size"], trained["val_size"]) == (2, 1)
    assert trained["sigma_history"].shape == (2, 68) and bool((trained["sigma_history"] == 8.0).all())  # 32 / 4
    model_file = torch.load(trained["root"] / "models" / "model.pt", map_location="cpu", weights_only=True)
    info = model_file["model_info"]
    assert len(info["landmark_names"]) == 68 and len(info["sigma"]) == 68 and info["input_size"] == [32, 32]
    assert info["network"]["_target_"] == "monai_adaloss.networks.face_dense_unet"
    assert info["preprocessing"]["crop_margin"] == 0.25  # inference reads it from here
    metrics = trained["metrics"]
    assert all(math.isfinite(metrics[k]) for k in ("val_nme_inter_ocular", "val_nme_inter_pupil", "val_mean_dist_px"))
    assert metrics["val_nme_inter_ocular"] < metrics["val_nme_inter_pupil"]  # outer corners lie wider than pupils


def test_evaluate_workflow_on_the_full_split(trained: dict[str, Any], root_300w: Path) -> None:
    wf = workflow(["train.json", "evaluate.json"], "eval", trained["root"], root_300w, **TINY)
    assert wf.check_properties() == []
    assert len(wf.parser.get_parsed_content("validate::dataset")) == len(list_300w_split(root_300w, "full")) == 3
    wf.run()
    metrics = wf.parser.get_parsed_content("evaluator").state.metrics
    wf.finalize()
    assert math.isfinite(metrics["val_nme_inter_ocular"]) and math.isfinite(metrics["val_nme_inter_pupil"])
    assert "val_nme_inter_ocular" in (trained["root"] / "eval" / "metrics.csv").read_text()


def test_evaluate_takes_size_network_and_crop_from_the_model_info(
    trained: dict[str, Any], root_300w: Path, tmp_path: Path
) -> None:
    """No training override repeated: the 32x32 input and the 4/4 dense U-Net of the trained model, and the face
    crop margin its (copied, edited) model_info.json says: 0.4, where train.json's default is 0.25."""

    def change(info: dict[str, Any]) -> None:
        info["preprocessing"]["crop_margin"] = 0.4

    read = ("input_size", "crop_margin")
    result = evaluate_as_trained(CONFIGS, trained["root"], root_300w, tmp_path, change, read, num_workers=0)
    assert result["missing"] == []
    assert result["input_shapes"] == {(32, 32)}  # train.json's default is 256x256
    assert (result["input_size"], result["crop_margin"]) == ([32, 32], 0.4)
    assert result["metrics"] and all(math.isfinite(v) for v in result["metrics"].values())


def test_perfect_prediction_maps_back_to_the_pts_points(tmp_path: Path, root_300w: Path) -> None:
    # no trained model here: the values evaluate.json would read from its model info are given
    overrides = {**TINY, "input_size": [48, 48], "crop_margin": 0.25}
    wf = workflow(["train.json", "evaluate.json"], "eval", tmp_path, root_300w, **overrides)
    dataset = wf.parser.get_parsed_content("validate::dataset")
    postprocessing = wf.parser.get_parsed_content("validate::postprocessing")
    batch = list_data_collate([dataset[i] for i in range(len(dataset))])
    images = batch["image"]
    pred = images[:, :1] * 0 + render_gaussian_heatmaps(batch["label"].as_tensor(), 1.5, images.shape[2:])
    output = {"pred": pred, "image": images, "label": batch["label"]}
    metric = NormalizedMeanErrorMetric(OUTER_EYE_CORNERS_300W)
    for sample, out, entry in zip(
        decollate_batch(batch), decollate_batch(output), list_300w_split(root_300w, "full"), strict=True
    ):
        _, out = engine_apply_transform(sample, out, postprocessing)
        found = out["pred_points_original"].as_tensor()[:, 0].float()
        assert torch.allclose(found, torch.from_numpy(read_pts(entry["label"])), atol=0.05)
        metric(y_pred=[out["pred_points_original"]], y=[out["label_points_original"]])
    assert float(metric.aggregate()) < 1e-3


def test_inference_writes_points_in_original_pixels(trained: dict[str, Any], root_300w: Path) -> None:
    folder = root_300w / "helen" / "testset"
    wf = workflow(["inference.json"], "infer", trained["root"], folder, num_workers=0)
    assert wf.check_properties() == []
    preprocessing = wf.parser.get_parsed_content("preprocessing")
    postprocessing = wf.parser.get_parsed_content("postprocessing")
    wf.run()
    wf.finalize()
    record = json.loads((trained["root"] / "predictions" / "000732_landmarks.json").read_text())
    assert len(record["landmark_names"]) == 68 and record["image"].endswith("000732.jpg")
    assert record["points_world"] == record["points_voxel"]  # 2D pictures: the reader's affine is the identity

    # a perfect network output on the face crop: the writer gives the .pts points in original pixels
    postprocessing.transforms[-1].writer.output_dir = trained["root"] / "perfect"
    truth = torch.from_numpy(read_pts(folder / "000732.pts")).double()
    image = preprocessing({"image": str(folder / "000732.jpg"), "box_points": str(folder / "000732.pts")})["image"]
    on_grid = ApplyTransformToPoints(invert_affine=True)(truth[:, None], image.affine)  # original -> crop voxels
    pred = image[:1] * 0 + render_gaussian_heatmaps(on_grid[None].float(), 1.5, image.shape[1:])[0]
    postprocessing({"image": image, "pred": pred})
    record = json.loads((trained["root"] / "perfect" / "000732_landmarks.json").read_text())
    found = torch.tensor([record["points_voxel"][name][0] for name in record["landmark_names"]], dtype=torch.float64)
    assert torch.allclose(found, truth, atol=0.05)
