"""The hand_xray_landmarks MONAI bundle and its datalist builder on the real hand radiographs.

- ``hand_xray_datalist`` on the shared folder (``../shared/data/hand_xray`` next to the checkout): split
  counts 91 / 21 / 21, all 37 landmarks in order, coordinates exactly those of ``landmarks.csv``, sizes of
  ``images.csv``, and errors naming the file when the folder is broken (on copies in ``tmp_path``);
- metadata.json against MONAI's bundle schema (offline copy in ``tests/data``);
- train.json through ``ConfigWorkflow(workflow_type="train")`` on 4 training / 2 validation real images at
  a tiny size (32x32 grid, 3 levels): properties, ``models/model.pt`` with 37 sigmas, errors in file
  pixels about 16 x errors in grid pixels (512 -> 32), points following resize + pad exactly;
- evaluate.json and the standalone inference.json (one landmarks JSON per image) through ``ConfigWorkflow``.

Everything that reads the data is skipped when the shared folder is absent.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_checks import bundle_workflow, check_metadata_schema, evaluate_as_trained, train_and_summarise
from monai.data import decollate_batch, list_data_collate
from monai.engines.utils import engine_apply_transform

from monai_adaloss.bundles import bundle_path, latest_checkpoint
from monai_adaloss.io.hand_xray import (
    HAND_XRAY_GROUPS,
    HAND_XRAY_LANDMARKS,
    hand_xray_datalist,
    to_source_pixels,
    write_hand_xray_datalist,
)
from monai_adaloss.transforms import GaussianHeatmapd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hand_xray"
BUNDLE = bundle_path("hand_xray_landmarks")
CONFIGS = BUNDLE / "configs"
TINY = {
    "input_size": [32, 32],
    "network_channels": [4, 8, 16],
    "num_workers": 0,
    "train_batch_size": 2,
    "val_batch_size": 2,
}
EPOCHS = 2

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"hand X-ray data not found at {DATA}")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def datalist() -> dict[str, list[dict[str, Any]]]:
    if not DATA.is_dir():
        pytest.skip(f"hand X-ray data not found at {DATA}")
    return hand_xray_datalist(DATA)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory, datalist: dict) -> Path:
    """A datalist of 4 training, 2 validation and 2 test images of the real data (absolute image paths)."""
    root = tmp_path_factory.mktemp("hand_data")
    small = {
        "training": datalist["training"][:4],
        "validation": datalist["validation"][:2],
        "test": datalist["test"][:2],
    }
    (root / "datalist.json").write_text(json.dumps(small), encoding="utf-8")
    return root


# ------------------------------------------------------------------------------------------------ datalist


def test_landmark_names_and_groups() -> None:
    assert len(HAND_XRAY_LANDMARKS) == len(set(HAND_XRAY_LANDMARKS)) == 37
    assert sorted(i for group in HAND_XRAY_GROUPS.values() for i in group) == list(range(37))
    assert HAND_XRAY_LANDMARKS[17] == "metacarpal_base_thumb" and HAND_XRAY_LANDMARKS[20] == "thumb_tip"
    assert HAND_XRAY_LANDMARKS[36] == "little_tip"
    assert json.loads((CONFIGS / "train.json").read_text())["landmark_names"] == list(HAND_XRAY_LANDMARKS)


@needs_data
def test_datalist_matches_the_csv_files(datalist: dict) -> None:
    assert {key: len(value) for key, value in datalist.items()} == {"training": 91, "validation": 21, "test": 21}
    with (DATA / "landmarks.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (DATA / "images.csv").open(newline="") as handle:
        images = {row["image"]: row for row in csv.DictReader(handle)}
    entries = {Path(e["image"]).stem: e for split in datalist.values() for e in split}
    assert len(entries) == 133 and len(rows) == 133 * 37
    for entry in entries.values():
        assert Path(entry["image"]).is_absolute() and Path(entry["image"]).is_file()
        assert list(entry["label"]) == list(HAND_XRAY_LANDMARKS)
    for row in rows:
        point = entries[row["image"]]["label"][HAND_XRAY_LANDMARKS[int(row["landmark"])]]
        assert point == [[float(row["x"]), float(row["y"])]]
    for image_id, row in images.items():
        assert entries[image_id]["image_size"] == [int(row["width"]), int(row["height"])]
        assert entries[image_id]["source_size"] == [int(row["orig_width"]), int(row["orig_height"])]
    split_of = {"train": "training", "valid": "validation", "test": "test"}
    assert all(entries[i] in datalist[split_of[row["split"]]] for i, row in images.items())


@needs_data
def test_datalist_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"images\.csv"):
        hand_xray_datalist(tmp_path)
    broken = tmp_path / "hand"
    broken.mkdir()
    (broken / "images").symlink_to(DATA / "images")
    shutil.copy(DATA / "images.csv", broken / "images.csv")
    lines = (DATA / "landmarks.csv").read_text().splitlines()
    (broken / "landmarks.csv").write_text("\n".join(lines[:-1]) + "\n")  # the last landmark of one image dropped
    with pytest.raises(ValueError, match=r"landmarks\.csv.*landmarks \[36\]"):
        hand_xray_datalist(broken)
    lines[5] = lines[5].replace(lines[5].split(",")[3], "abc")
    (broken / "landmarks.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"landmarks\.csv` line 6: column 'x'"):
        hand_xray_datalist(broken)
    (broken / "images.csv").write_text("image,split\n1,train\n")
    with pytest.raises(ValueError, match=r"images\.csv` misses the columns"):
        hand_xray_datalist(broken)


@needs_data
def test_written_datalist_loads_in_the_bundle_format(tmp_path: Path) -> None:
    from monai_adaloss.bundles import load_datalist

    path = write_hand_xray_datalist(DATA, tmp_path / "sub" / "datalist.json")
    test = load_datalist(path, "test")
    assert len(test) == 21 and Path(test[0]["image"]).is_file()


def test_to_source_pixels_keeps_pixel_centres() -> None:
    # a 2x-downscaled image: the centre of pixel 0 is the midpoint of source pixels 0 and 1
    points = to_source_pixels(torch.tensor([[0.0, 0.0], [-0.5, 9.5]]), (10, 10), (20, 20))
    assert points.tolist() == [[0.5, 0.5], [-0.5, 19.5]]


# ------------------------------------------------------------------------------------------------ metadata


def test_metadata_follows_the_bundle_schema() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    check_metadata_schema(meta)
    nd = meta["network_data_format"]
    train = json.loads((CONFIGS / "train.json").read_text())
    assert nd["inputs"]["image"]["spatial_shape"] == nd["outputs"]["pred"]["spatial_shape"] == train["input_size"]
    assert nd["outputs"]["pred"]["num_channels"] == nd["post_processed_outputs"]["points"]["num_channels"] == 37
    assert [nd["outputs"]["pred"]["channel_def"][str(i)] for i in range(37)] == list(HAND_XRAY_LANDMARKS)
    assert (BUNDLE / "LICENSE").is_file() and (BUNDLE / "docs" / "README.md").is_file()


# ------------------------------------------------------------------------------------------------ workflows


def workflow(config_files: list[str], workflow_type: str, bundle_root: Path, dataset_dir: Path, **override: Any):
    return bundle_workflow(CONFIGS, config_files, workflow_type, bundle_root, dataset_dir, **{**TINY, **override})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bundle_root")
    wf = workflow(["train.json"], "train", root, dataset_dir, max_epochs=EPOCHS)
    return train_and_summarise(wf, root)


def test_train_workflow(trained: dict[str, Any]) -> None:
    assert trained["missing"] == []
    assert trained["sigma_history"].shape == (EPOCHS + 1, 37)
    assert bool((trained["sigma_history"] == 3.0).all())  # the bundle's fixed sigma (fixed_sigma)
    assert trained["trainer_metrics"]["sigma/little_tip"] == 3.0
    model_file = torch.load(trained["root"] / "models" / "model.pt", map_location="cpu", weights_only=True)
    info = model_file["model_info"]
    assert info["landmark_names"] == list(HAND_XRAY_LANDMARKS) and info["input_size"] == [32, 32]
    assert info["normalize"] == "mean" and len(info["sigma"]) == 37
    full = torch.load(latest_checkpoint(trained["root"] / "models"), map_location="cpu", weights_only=True)
    assert "lr_scheduler" in full and "weight_average" not in full  # resumes its cosine schedule; no average
    metrics = trained["metrics"]
    # the 512-px-high PNGs are resized to a 32-px grid: 16 file pixels per grid pixel (the width's scale differs
    # by its rounding, at most 0.5 / 16 of the 256-470 px widths)
    assert metrics["val_mean_dist_px"] == pytest.approx(16 * metrics["val_mean_dist_input_px"], rel=0.03)
    assert all(0.0 <= metrics[f"val_sdr_{r}px_input"] <= 1.0 for r in (2, 4, 8))
    assert metrics["val_sdr_2px_input"] <= metrics["val_sdr_4px_input"] <= metrics["val_sdr_8px_input"]


def test_missing_datalist_says_how_to_build_one(tmp_path: Path) -> None:
    wf = workflow(["train.json"], "train", tmp_path, tmp_path / "no_data", max_epochs=1)
    with pytest.raises(RuntimeError) as raised:
        wf.run()
    assert isinstance(raised.value.__cause__, FileNotFoundError)
    assert "write_hand_xray_datalist" in str(raised.value.__cause__)
    assert str(tmp_path / "no_data" / "datalist.json") in str(raised.value.__cause__)


def test_points_follow_resize_and_pad(tmp_path: Path, dataset_dir: Path) -> None:
    """Grid points lie on the image's landmarks, and a perfect heatmap decodes to the CSV points in file pixels."""
    wf = workflow(["train.json"], "train", tmp_path, dataset_dir)
    dataset = wf.parser.get_parsed_content("validate::dataset")
    postprocessing = wf.parser.get_parsed_content("validate::postprocessing")
    batch = list_data_collate([dataset[i] for i in range(len(dataset))])
    images = batch["image"]
    assert images.shape[1:] == (1, 32, 32)
    for image, label, original in zip(images, batch["label"], batch["label_original"], strict=True):
        width = int((image[0].sum(dim=1) > 0).sum())  # columns holding image content (the rest is padding)
        offset = (32 - width) / 2
        expected = (original.as_tensor() + 0.5) * 32 / 512 - 0.5  # longer side (height) 512 -> 32
        expected[..., 0] += offset
        assert torch.allclose(label.as_tensor(), expected, atol=0.6)  # padding is whole pixels, width rounded
    targets = torch.stack(
        [
            GaussianHeatmapd("label", sigma=1.5, ref_image_keys="image")({"label": lbl, "image": img})[
                "label_heatmap"
            ].as_tensor()
            for lbl, img in zip(batch["label"], images, strict=True)
        ]
    )
    pred = (images * 0 + targets).clamp(min=1e-30).log()  # the bundle's network outputs log-probabilities
    assert wf.parser.get_parsed_content("log_probabilities")
    output = {"pred": pred, "image": images, "label": batch["label"], "label_original": batch["label_original"]}
    for sample, out in zip(decollate_batch(batch), decollate_batch(output), strict=True):
        _, out = engine_apply_transform(sample, out, postprocessing)
        truth = out["label_points_original"].as_tensor()
        assert out["pred_points_original"].shape == (37, 1, 2)
        assert torch.allclose(out["pred_points_original"].as_tensor().float(), truth, atol=0.5)
    wf.finalize()


def test_evaluate_and_inference_workflows(trained: dict[str, Any], dataset_dir: Path, datalist: dict) -> None:
    wf = workflow(["train.json", "evaluate.json"], "eval", trained["root"], dataset_dir)
    assert wf.check_properties() == []
    wf.run()
    metrics = wf.parser.get_parsed_content("evaluator").state.metrics
    wf.finalize()
    assert all(math.isfinite(metrics[k]) for k in ("val_mean_dist_px", "val_mean_dist_input_px", "val_sdr_4px_input"))
    assert "val_mean_dist_px" in (trained["root"] / "eval" / "metrics.csv").read_text()

    wf = workflow(["inference.json"], "infer", trained["root"], dataset_dir)  # standalone: no train.json
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    names = [Path(e["image"]).stem for e in datalist["test"][:2]]
    records = [json.loads((trained["root"] / "predictions" / f"{n}_landmarks.json").read_text()) for n in names]
    rows = [[r["image"]] + [v for name in r["landmark_names"] for v in r["points_voxel"][name][0]] for r in records]
    assert [Path(row[0]).name for row in rows] == [Path(e["image"]).name for e in datalist["test"][:2]]
    assert all(len(row) == 1 + 37 * 2 and all(math.isfinite(float(v)) for v in row[1:]) for row in rows)
    # points lie on the network's canvas mapped back to the file: the image plus the zero padding that made it
    # square (a 2-epoch model may find a landmark in the padding, outside the image)
    for row, (width, height) in zip(rows, (e["image_size"] for e in datalist["test"][:2]), strict=True):
        side = max(width, height)
        for values, size in ((row[1::2], width), (row[2::2], height)):
            margin = (side - size) / 2 + side / 32  # padding, plus one network cell of refinement
            assert all(-0.5 - margin <= float(v) <= size - 0.5 + margin for v in values)


def test_evaluate_takes_size_and_network_from_the_model_info(
    trained: dict[str, Any], dataset_dir: Path, tmp_path: Path
) -> None:
    """No training override repeated: the 32x32 input and 4-8-16 channels of the trained model."""
    result = evaluate_as_trained(CONFIGS, trained["root"], dataset_dir, tmp_path, read=("input_size",), num_workers=0)
    assert result["missing"] == []
    assert result["input_shapes"] == {(32, 32)}  # train.json's default is 128x128
    assert result["input_size"] == [32, 32]
    assert math.isfinite(result["metrics"]["val_mean_dist_px"])
