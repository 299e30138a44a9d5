"""The endoscopic_tool_landmarks MONAI bundle on tiny synthetic laparoscopic PNG frames, and PNG/JPEG inference.

- metadata.json against MONAI's bundle schema (offline copy in ``tests/data``), and full dotted ``_target_``
  paths in every config;
- train.json through ``ConfigWorkflow(workflow_type="train")`` for 2 epochs on 64x80 frames (40x32 input,
  4-8-16 channels): properties, ``models/model.pt`` (``{"model", "model_info"}`` with K_max > 1 and the
  multi-instance decoding arguments), per-clasper-type validation metrics, F1 as the key metric;
- evaluate.json through ``ConfigWorkflow(workflow_type="eval")`` on the frames with scissors;
- the validation post-processing finds every instance of a perfect (max-merged target) prediction at its
  annotated point in original pixels;
- ``monai-adaloss infer`` on a folder of PNG and JPEG frames with the trained model.pt: a corrupt PNG is an
  error line naming the file and the other frames still get records (no UIDs); SR output is refused;
- image inference maps points back to the original pixels, per colour channel and instance (an oracle
  network), and ``DecodeSettings`` accepts only what image inference can apply.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bundle_checks import bundle_workflow, check_metadata_schema, evaluate_as_trained, train_and_summarise
from monai.data import decollate_batch, list_data_collate
from monai.engines.utils import engine_apply_transform
from PIL import Image
from torch import nn

from monai_adaloss import cli
from monai_adaloss.bundles import bundle_path
from monai_adaloss.inference import DecodeSettings, InferenceConfigError, InferenceRunner, load_checkpoint
from monai_adaloss.metrics import match_instances
from monai_adaloss.model_info import LandmarkModelInfo
from monai_adaloss.synthetic.endoscopy import LANDMARK_NAMES, EndoscopyConfig, make_endoscopy_dataset
from monai_adaloss.transforms import GaussianHeatmapd

BUNDLE = bundle_path("endoscopic_tool_landmarks")
CONFIGS = BUNDLE / "configs"
TINY = {
    "input_size": [40, 32],
    "network_channels": [4, 8, 16],
    "num_workers": 0,
    "train_batch_size": 4,
    "val_batch_size": 4,
}
EPOCHS = 2
SCORES = ("precision", "recall", "f1", "mean_distance")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training, 4 validation, 4 test and 4 test-with-scissors frames of 64 rows x 80 columns."""
    root = tmp_path_factory.mktemp("endoscopy_data")
    make_endoscopy_dataset(root, 8, 4, 4, config=EndoscopyConfig(rows=64, columns=80), seed=5, scissors_in_test=True)
    return root


def workflow(config_files: list[str], workflow_type: str, bundle_root: Path, dataset_dir: Path, **override: Any):
    return bundle_workflow(CONFIGS, config_files, workflow_type, bundle_root, dataset_dir, **{**TINY, **override})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("endoscopy_bundle_root")
    wf = workflow(["train.json"], "train", root, dataset_dir, max_epochs=EPOCHS)
    return train_and_summarise(wf, root)


# ------------------------------------------------------------------------------------------------ configs


def test_metadata_follows_the_bundle_schema() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    check_metadata_schema(meta)
    nd = meta["network_data_format"]
    train = json.loads((CONFIGS / "train.json").read_text())
    assert nd["inputs"]["image"]["num_channels"] == 3
    assert nd["inputs"]["image"]["spatial_shape"] == nd["outputs"]["pred"]["spatial_shape"] == train["input_size"]
    assert nd["outputs"]["pred"]["num_channels"] == len(train["landmark_names"]) == 2
    assert nd["post_processed_outputs"]["points"]["spatial_shape"] == [train["max_instances"], 2]
    assert train["landmark_names"] == list(LANDMARK_NAMES) and train["max_instances"] > 1
    assert (BUNDLE / "LICENSE").is_file() and (BUNDLE / "docs" / "README.md").is_file()


def test_configs_use_full_target_paths() -> None:
    def targets(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "_target_" in node:
                yield node["_target_"]
            for value in node.values():
                yield from targets(value)
        elif isinstance(node, list):
            for value in node:
                yield from targets(value)

    for name in ("train.json", "evaluate.json", "multi_gpu_train.json", "inference.json"):
        found = list(targets(json.loads((CONFIGS / name).read_text())))
        assert found or name == "evaluate.json"
        for target in found:
            assert target.startswith(("monai.", "monai_adaloss.", "torch.", "ignite.")), f"{name}: {target}"


def test_decoding_windows_scale_with_the_input_size(tmp_path: Path, dataset_dir: Path) -> None:
    """Median filter 7x7 and NMS window 11 (about 10 px) at 256, odd and >= 3 on smaller grids."""
    for size, median, nms in (([320, 256], 7, 11), ([160, 128], 5, 5), ([40, 32], 3, 3)):
        wf = workflow(["train.json"], "train", tmp_path, dataset_dir, input_size=size)
        assert wf.parser.get_parsed_content("decoding") == {
            "median_kernel": median,
            "nms_kernel": nms,
            "threshold": 0.5,
            "refine": True,
        }


# ------------------------------------------------------------------------------------------------ training


def test_train_workflow_saves_a_multi_instance_model(trained: dict[str, Any]) -> None:
    assert trained["missing"] == []
    model_file = torch.load(trained["root"] / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert set(model_file) == {"model", "model_info", "checkpointer"}
    info = model_file["model_info"]
    assert info["landmark_names"] == list(LANDMARK_NAMES) and info["input_size"] == [40, 32]
    assert info["max_instances"] == 3
    assert info["decoding"] == {"median_kernel": 3, "nms_kernel": 3, "threshold": 0.5, "refine": True}
    assert info["preprocessing"]["reader"] == "PILReader" and info["preprocessing"]["channels"] == 3
    assert trained["sigma_history"].shape == (EPOCHS + 1, 2)
    assert info["sigma"] == pytest.approx(trained["sigma_history"][trained["best_epoch"]].tolist())
    model = load_checkpoint(trained["root"] / "models" / "model.pt")
    assert model.network(torch.zeros(1, 3, 40, 32)).shape == (1, 2, 40, 32)
    metrics = trained["metrics"]
    expected = {"val_f1"} | {f"val_{s}_{n}" for s in SCORES for n in LANDMARK_NAMES}
    assert expected <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in expected if not k.startswith("val_mean_distance"))
    assert trained["best_metric"] >= metrics["val_f1"]  # higher is better


def test_evaluate_workflow_on_frames_with_scissors(trained: dict[str, Any], dataset_dir: Path) -> None:
    wf = workflow(["train.json", "evaluate.json"], "eval", trained["root"], dataset_dir, eval_split="test_scissors")
    assert wf.check_properties() == []
    wf.run()
    metrics = wf.parser.get_parsed_content("evaluator").state.metrics
    wf.finalize()
    assert all(math.isfinite(metrics[f"val_{s}_{n}"]) for s in ("precision", "recall", "f1") for n in LANDMARK_NAMES)
    saved = (trained["root"] / "eval" / "metrics.csv").read_text()
    assert "val_f1" in saved and "val_recall_right_clasper" in saved


def test_evaluate_takes_size_channels_and_decoding_from_the_model_info(
    trained: dict[str, Any], dataset_dir: Path, tmp_path: Path
) -> None:
    """No training override repeated: the 40x32 input, 4-8-16 channels and the decoding of the trained model.

    The copied model_info.json says threshold 0.3 and 4 instances (train.json's defaults: 0.5 and 3).
    """

    def change(info: dict[str, Any]) -> None:
        info["decoding"]["threshold"], info["max_instances"] = 0.3, 4

    read = ("input_size", "peak_threshold", "max_instances", "median_kernel", "nms_kernel")
    result = evaluate_as_trained(CONFIGS, trained["root"], dataset_dir, tmp_path, change, read, num_workers=0)
    assert result["missing"] == []
    assert result["input_shapes"] == {(40, 32)}  # train.json's default is 320x256
    assert result["input_size"] == [40, 32]
    assert (result["peak_threshold"], result["max_instances"]) == (0.3, 4)
    assert (result["median_kernel"], result["nms_kernel"]) == (3, 3)  # from the 32-pixel side: defaults 7 and 11
    assert math.isfinite(result["metrics"]["val_f1"])


def test_perfect_prediction_finds_every_instance_in_original_pixels(tmp_path: Path, dataset_dir: Path) -> None:
    """Max-merged target heatmaps of the validation frames decode to every annotated clasper, in original pixels."""
    wf = workflow(["train.json"], "train", tmp_path, dataset_dir, input_size=[80, 64])  # the frames' own size
    dataset = wf.parser.get_parsed_content("validate::dataset")
    postprocessing = wf.parser.get_parsed_content("validate::postprocessing")
    batch = list_data_collate([dataset[i] for i in range(len(dataset))])
    render = GaussianHeatmapd("label", sigma=1.5, ref_image_keys="image")
    targets = torch.stack(
        [
            render({"label": lb, "image": im})["label_heatmap"].as_tensor()
            for lb, im in zip(batch["label"], batch["image"], strict=True)
        ]
    )
    output = {"pred": batch["image"][:, :2] * 0 + targets, "image": batch["image"], "label": batch["label"]}
    instances = 0
    for sample, out in zip(decollate_batch(batch), decollate_batch(output), strict=True):
        _, out = engine_apply_transform(sample, out, postprocessing)
        truth = out["label_points_original"].as_tensor()
        matches = match_instances(out["pred_points_original"].as_tensor()[None].float(), truth[None], radius=0.25)
        assert int(matches.fp.sum()) == 0 and int(matches.fn.sum()) == 0
        instances += int(matches.tp.sum())
        for name in LANDMARK_NAMES:
            assert out[f"pred_points_original_{name}"].shape == (1, 3, 2)
    assert instances > 2 * len(dataset)  # several tools per frame: several instances in one channel


# ---------------------------------------------------------------------------------------------- inference


def write_frames(folder: Path, dataset_dir: Path) -> dict[str, Path]:
    """Two test PNGs, one of them as JPEG, and a corrupt (truncated) PNG."""
    folder.mkdir(parents=True)
    files = {"png0": folder / "a.png", "png1": folder / "sub" / "b.png", "jpeg": folder / "c.jpg"}
    files["png1"].parent.mkdir()
    files["png0"].write_bytes((dataset_dir / "test" / "000000.png").read_bytes())
    files["png1"].write_bytes((dataset_dir / "test_scissors" / "000001.png").read_bytes())
    Image.open(dataset_dir / "test" / "000002.png").save(files["jpeg"], quality=90)
    good = (dataset_dir / "test" / "000003.png").read_bytes()
    files["broken"] = folder / "broken.png"
    files["broken"].write_bytes(good[: len(good) // 2])
    return files


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_infer_command_on_png_and_jpeg_frames(trained: dict[str, Any], dataset_dir: Path, tmp_path: Path) -> None:
    files = write_frames(tmp_path / "frames", dataset_dir)
    checkpoint = str(trained["root"] / "models" / "model.pt")
    argv = ["infer", str(tmp_path / "frames"), "-c", checkpoint, "-o", str(tmp_path / "out"), "--num-workers", "1"]
    assert cli.main([*argv, "--overlays", "-q"]) == 1  # the run completed; one file failed
    errors = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert [e["path"] for e in errors] == [str(files["broken"])]
    assert str(files["broken"]) in errors[0]["reason"] and errors[0]["error"] == "ImageReadError"
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    good = sorted(str(files[k]) for k in ("png0", "png1", "jpeg"))
    assert sorted({r["path"] for r in records}) == good
    assert all(r["sop_instance_uid"] == r["series_instance_uid"] == r["study_instance_uid"] == "" for r in records)
    assert all(r["frame"] == 0 and r["landmark"] in LANDMARK_NAMES and r["x_mm"] is None for r in records)
    for r in records:
        if r["x"] is not None:  # original pixels of the 80 x 64 frames
            assert -0.5 <= r["x"] <= 79.5 and -0.5 <= r["y"] <= 63.5
    overlays = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert [name.split("_")[0] for name in overlays] == ["a", "b", "c"]
    assert Image.open(tmp_path / "out" / "overlays" / overlays[0]).size == (80, 64)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["succeeded"] == 3 and summary["counts"]["failed"] == 1
    assert cli.main(["infer", str(tmp_path / "frames"), "-c", checkpoint, "-o", str(tmp_path / "sr"), "--sr"]) == 2
    assert not (tmp_path / "sr").exists()


class ColourSpotOracle(nn.Module):
    """Channel 0: a unit-peak Gaussian at every pure-red voxel of an RGB input; channel 1: at every pure-green one."""

    def __init__(self, sigma: float = 1.5) -> None:
        super().__init__()
        r = torch.arange(-4, 5, dtype=torch.float32)
        kernel = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
        self.register_buffer("kernel", kernel[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spots = [(x[:, c] > 0.9) & (x[:, [k for k in range(3) if k != c]] < 0.1).all(dim=1) for c in (0, 1)]
        return F.conv2d(torch.stack(spots, dim=1).flatten(0, 1)[:, None].float(), self.kernel, padding=4).reshape(
            x.shape[0], 2, *x.shape[2:]
        )


def test_image_inference_maps_instances_back_to_original_pixels(tmp_path: Path) -> None:
    """2x2-pixel colour spots in a 96 x 80 (columns x rows) frame on a 48 x 40 grid: exact (x, y) = (column, row)."""
    raster = np.full((80, 96, 3), 128, np.uint8)  # (rows, columns, RGB)
    red, green = [(30, 20), (70, 50)], [(10, 60)]  # (column, row) of each spot's top-left pixel, even
    for colour, spots in ((0, red), (1, green)):
        for col, row in spots:
            raster[row : row + 2, col : col + 2] = [255 if c == colour else 0 for c in range(3)]
    (tmp_path / "in").mkdir()
    Image.fromarray(raster).save(tmp_path / "in" / "spots.png")
    Image.fromarray(raster[..., 0]).save(tmp_path / "in" / "grey.png")  # converted to RGB: no pure colour
    info = LandmarkModelInfo(
        landmark_names=list(LANDMARK_NAMES),
        input_size=[48, 40],
        network={"_target_": "monai_adaloss.networks.endoscopy_unet", "channels": [4, 8, 16]},
        preprocessing={"reader": "PILReader", "intensity": "[0, 1]", "channels": 3, "resize_mode": "area"},
        max_instances=3,
        decoding={"median_kernel": 3, "nms_kernel": 3, "threshold": 0.5},
        sigma=[1.5, 1.5],
    )
    torch.save({"model": {}, "model_info": info.state_dict()}, tmp_path / "oracle.pt")
    runner = InferenceRunner(
        tmp_path / "oracle.pt", tmp_path / "in", tmp_path / "out", network=ColourSpotOracle(), num_workers=0
    )
    summary = runner.run()
    assert summary.exit_code == 0 and summary.succeeded == 2
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    for name, spots in zip(LANDMARK_NAMES, (red, green), strict=True):  # a 2x2 spot's centre: (col + 0.5, row + 0.5)
        found = sorted((r["x"], r["y"]) for r in records if r["landmark"] == name and r["path"].endswith("spots.png"))
        assert np.allclose(found, [(c + 0.5, r + 0.5) for c, r in spots], atol=1e-3), (name, found)
    grey = [r for r in records if r["path"].endswith("grey.png")]
    assert len(grey) == 2 and all(r["x"] is None and r["confidence"] == 0.0 for r in grey)


def test_decode_settings_for_images() -> None:
    def info(**preprocessing: Any) -> LandmarkModelInfo:
        return LandmarkModelInfo(["a"], [32, 32], {"_target_": "x"}, preprocessing=preprocessing)

    settings = DecodeSettings.from_model_info(info(reader="PILReader", channels=3, intensity="[0, 1]"))
    assert (settings.reader, settings.channels) == ("PILReader", 3)
    assert DecodeSettings.from_model_info(info()).reader == "XRayDicomReader"
    for pre, match in (
        ({"reader": "PILReader", "channels": 4}, "`channels` is 4"),
        ({"reader": "ITKReader"}, "`reader` is 'ITKReader'"),
        ({"reader": "XRayDicomReader", "channels": 3}, "`channels` is 3"),
        ({"reader": "PILReader", "apply_voi_lut": True}, "apply_voi_lut"),
    ):
        with pytest.raises(InferenceConfigError, match=match):
            DecodeSettings.from_model_info(info(**pre))
    with pytest.raises(InferenceConfigError, match="SR output needs DICOM inputs"):
        DecodeSettings.from_model_info(info(reader="PILReader", channels=3), keep_header=True)
