"""The catheter_tip_fluoro MONAI bundle on tiny synthetic DICOM data (64x64 frames, 32x32 input, 4-8-16 channels).

- metadata.json against MONAI's bundle schema (the offline copy ``tests/data/meta_schema_20240725.json``) and
  against train.json's sizes;
- train.json through ``ConfigWorkflow(workflow_type="train")``: properties, ``models/model.pt`` (weights-only
  ``{"model", "model_info", "checkpointer"}`` with the sigma of the best epoch, loadable by the inference code),
  ``models/model_info.json``, the full checkpoint, sigma in TensorBoard, resuming from the latest checkpoint;
- evaluate.json through ``ConfigWorkflow(workflow_type="eval")``;
- the validation post-processing maps a perfect network-grid prediction back to the original pixels exactly;
- a clear error when the datalist is missing;
- multi_gpu_train.json with two gloo processes (``torch.distributed.run``) on the CPU;
- ``monai_adaloss.bundles`` helpers.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_checks import bundle_workflow, check_metadata_schema, train_and_summarise
from monai.data import decollate_batch, list_data_collate
from monai.engines.utils import engine_apply_transform
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monai_adaloss.bundles import available_bundles, bundle_path, latest_checkpoint, load_datalist
from monai_adaloss.inference import load_checkpoint
from monai_adaloss.synthetic import FluoroscopyConfig, make_dataset
from monai_adaloss.transforms import GaussianHeatmapd

BUNDLE = bundle_path("catheter_tip_fluoro")
CONFIGS = BUNDLE / "configs"
TINY = {
    "input_size": [32, 32],
    "network_channels": [4, 8, 16],
    "num_workers": 0,
    "train_batch_size": 4,
    "val_batch_size": 4,
}
EPOCHS = 5  # sigma's first update is after window + 1 = 4 epochs


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training, 4 validation and 4 test frames of 64x64 pixels (some multi-frame, compressed, MONOCHROME1)."""
    root = tmp_path_factory.mktemp("catheter_data")
    make_dataset(root, 8, 4, 4, config=FluoroscopyConfig(rows=64, columns=64), seed=3)
    return root


def workflow(config_files: list[str], workflow_type: str, bundle_root: Path, dataset_dir: Path, **override: Any):
    """A ``ConfigWorkflow`` of the bundle's configs with the tiny overrides, initialised."""
    return bundle_workflow(CONFIGS, config_files, workflow_type, bundle_root, dataset_dir, **{**TINY, **override})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> dict[str, Any]:
    """train.json run for EPOCHS epochs; what the tests need from it."""
    root = tmp_path_factory.mktemp("bundle_root")
    wf = workflow(["train.json"], "train", root, dataset_dir, max_epochs=EPOCHS)
    return train_and_summarise(wf, root)


# ------------------------------------------------------------------------------------------------ metadata


def test_metadata_follows_the_bundle_schema() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    check_metadata_schema(meta)
    nd = meta["network_data_format"]
    assert nd["inputs"]["image"]["spatial_shape"] == nd["outputs"]["pred"]["spatial_shape"] == [256, 256]
    assert nd["post_processed_outputs"]["points"]["spatial_shape"] == [1, 2]
    train = json.loads((CONFIGS / "train.json").read_text())
    assert train["input_size"] == nd["inputs"]["image"]["spatial_shape"]
    assert len(train["landmark_names"]) == nd["outputs"]["pred"]["num_channels"]


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

    for name in ("train.json", "evaluate.json", "multi_gpu_train.json"):
        for target in targets(json.loads((CONFIGS / name).read_text())):
            assert target.startswith(("monai.", "monai_adaloss.", "torch.", "ignite.")), f"{name}: {target}"


# ------------------------------------------------------------------------------------------------ training


def test_train_workflow_writes_the_best_model_with_its_sigma(trained: dict[str, Any]) -> None:
    assert trained["missing"] == []
    models = trained["root"] / "models"
    model_file = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    # "checkpointer": the best-model saver's record of the best metric (key_metric_save_state), for resuming
    assert set(model_file) == {"model", "model_info", "checkpointer"}
    info = model_file["model_info"]
    sigma_history = trained["sigma_history"]
    assert sigma_history.shape == (EPOCHS + 1, 1)
    assert sigma_history[0, 0] == 8.0  # 32 / 4
    assert sigma_history[-1, 0] < 8.0  # updated after epoch 5
    # validation and the best-model saver run after the handler's sigma update of the same epoch
    assert info["sigma"] == pytest.approx(sigma_history[trained["best_epoch"]].tolist())
    assert info["landmark_names"] == ["tip"] and info["input_size"] == [32, 32]
    # one pre-processing description: the checkpoint carries train.json's frame transforms, inference applies them
    assert info["preprocessing"]["transforms"] == [
        {"_target_": "monai.transforms.Resized", "keys": "image", "spatial_size": [32, 32], "mode": "area"}
    ]
    model = load_checkpoint(models / "model.pt")  # the inference code rebuilds the network from the model info
    state = model.network.state_dict()
    assert all(torch.equal(state[key], value) for key, value in model_file["model"].items())
    assert model.info.sigma == info["sigma"]
    # lower is better: the best metric is the smallest selection score seen (outlier rate, then median)
    assert trained["best_metric"] <= trained["metrics"]["val_selection_score"]
    rate = trained["metrics"]["val_outlier_rate"]
    assert 0.0 <= rate <= trained["metrics"]["val_selection_score"] < rate + 0.5 / 4 + 1e-9  # 4 validation frames
    full = torch.load(latest_checkpoint(models), map_location="cpu", weights_only=True)
    assert Path(latest_checkpoint(models)).name == f"checkpoint_epoch={EPOCHS}.pt"
    assert {"network", "optimizer", "trainer", "adaloss", "rng", "model_info"} <= set(full)
    assert "weight_average" not in full  # ema_momentum null (the bundle's default): the raw weights only
    assert json.loads((models / "model_info.json").read_text())  # written with model.pt, for ckpt_export
    assert full["model_info"]["sigma"] == pytest.approx(sigma_history[-1].tolist())
    assert torch.tensor(full["adaloss"]["schedule"]["sigma_history"], dtype=torch.float64).equal(sigma_history)


def test_validation_metrics_are_in_original_pixels_and_mm(trained: dict[str, Any]) -> None:
    metrics = trained["metrics"]
    # 64x64 frames on a 32x32 grid: original-pixel errors are twice the input-grid errors; spacing 0.3-0.4 mm
    assert metrics["val_mean_dist_px"] == pytest.approx(2 * metrics["val_mean_dist_input_px"], rel=1e-4)
    assert 0.25 * metrics["val_mean_dist_px"] < metrics["val_mean_dist_mm"] < 0.65 * metrics["val_mean_dist_px"]


def test_sigma_is_logged_to_tensorboard(trained: dict[str, Any]) -> None:
    tags: set[str] = set()
    for events in (trained["root"] / "eval").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags.update(accumulator.Tags()["scalars"])
    assert {"sigma/tip", "adaloss_loss/tip", "train_loss", "val_mean_dist_px", "val_mean_dist_mm"} <= tags


def test_resume_continues_from_the_latest_checkpoint(trained: dict[str, Any], dataset_dir: Path) -> None:
    wf = workflow(["train.json"], "train", trained["root"], dataset_dir, max_epochs=EPOCHS + 1, resume=True)
    wf.run()
    trainer = wf.parser.get_parsed_content("train::trainer")
    history = wf.parser.get_parsed_content("adaloss_schedule").sigma_history
    wf.finalize()
    assert trainer.state.epoch == EPOCHS + 1
    assert history.shape == (EPOCHS + 2, 1)
    assert history[: EPOCHS + 1].tolist() == trained["sigma_history"].tolist()
    assert Path(latest_checkpoint(trained["root"] / "models")).name == f"checkpoint_epoch={EPOCHS + 1}.pt"
    assert len(list((trained["root"] / "models").glob("checkpoint_epoch=*.pt"))) == 1  # n_saved, also after resuming


def test_model_pt_is_the_moving_average_of_the_weights_and_resuming_restores_it(
    tmp_path: Path, dataset_dir: Path
) -> None:
    """ema_momentum (the demo's 0.01): the average is validated and saved; a resumed run continues it exactly."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    workflow(["train.json"], "train", straight, dataset_dir, max_epochs=2, ema_momentum=0.01).run()
    workflow(["train.json"], "train", resumed, dataset_dir, max_epochs=1, ema_momentum=0.01).run()
    after_one = torch.load(resumed / "models" / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    best = torch.load(resumed / "models" / "model.pt", map_location="cpu", weights_only=True)["model"]
    # one epoch: model.pt is that epoch's moving average, not the raw weights
    assert all(torch.equal(best[key], value) for key, value in after_one["weight_average"].items())
    assert not all(torch.equal(after_one["network"][key], value) for key, value in best.items())
    workflow(["train.json"], "train", resumed, dataset_dir, max_epochs=2, ema_momentum=0.01, resume=True).run()
    expected = torch.load(straight / "models" / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    got = torch.load(resumed / "models" / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    for key, value in expected["weight_average"].items():  # a fresh average (not restored) would be far off
        assert torch.allclose(got["weight_average"][key].double(), value.double(), atol=1e-5), key


def test_missing_datalist_says_how_to_make_one(tmp_path: Path) -> None:
    wf = workflow(["train.json"], "train", tmp_path, tmp_path / "no_data", max_epochs=1)
    with pytest.raises(RuntimeError) as raised:
        wf.run()
    assert isinstance(raised.value.__cause__, FileNotFoundError)
    assert "monai-adaloss synth" in str(raised.value.__cause__)


# ---------------------------------------------------------------------------------------------- evaluation


def test_evaluate_workflow(trained: dict[str, Any], dataset_dir: Path) -> None:
    wf = workflow(["train.json", "evaluate.json"], "eval", trained["root"], dataset_dir)
    assert wf.check_properties() == []
    wf.run()
    metrics = wf.parser.get_parsed_content("evaluator").state.metrics
    wf.finalize()
    assert all(math.isfinite(metrics[k]) for k in ("val_mean_dist_px", "val_mean_dist_mm", "val_median_dist_px"))
    saved = (trained["root"] / "eval" / "metrics.csv").read_text()
    assert "val_mean_dist_px" in saved and "val_mean_dist_mm" in saved


def test_evaluate_takes_size_names_and_network_from_the_model_info(trained: dict[str, Any], dataset_dir: Path) -> None:
    """No training overrides repeated: evaluate.json reads the tiny model's size and channels from model_info.json."""
    wf = bundle_workflow(CONFIGS, ["train.json", "evaluate.json"], "eval", trained["root"], dataset_dir, num_workers=0)
    assert wf.parser.get_parsed_content("input_size") == TINY["input_size"]  # not train.json's default 256
    wf.run()
    metrics = wf.parser.get_parsed_content("evaluator").state.metrics
    wf.finalize()
    assert math.isfinite(metrics["val_mean_dist_px"])


def test_perfect_prediction_maps_back_to_the_original_pixels(tmp_path: Path, dataset_dir: Path) -> None:
    """A network output equal to the target heatmap decodes to the annotated point in original pixels and mm."""
    wf = workflow(["train.json"], "train", tmp_path, dataset_dir, input_size=[48, 40])  # anisotropic resize
    dataset = wf.parser.get_parsed_content("validate::dataset")
    postprocessing = wf.parser.get_parsed_content("validate::postprocessing")
    batch = list_data_collate([dataset[i] for i in range(len(dataset))])
    images = batch["image"]
    targets = torch.stack(
        [
            GaussianHeatmapd("label", sigma=2.0, ref_image_keys="image")({"label": label, "image": image})[
                "label_heatmap"
            ].as_tensor()
            for label, image in zip(batch["label"], images, strict=True)
        ]
    )
    pred = images * 0 + targets  # a MetaTensor with the batch's metadata, as a network output is
    output = {"pred": pred, "image": images, "label": batch["label"]}
    for sample, out in zip(decollate_batch(batch), decollate_batch(output), strict=True):
        _, out = engine_apply_transform(sample, out, postprocessing)
        truth = out["label_points_original"]
        if torch.isnan(truth).all():
            continue
        assert torch.allclose(out["pred_points_original"].as_tensor().float(), truth.as_tensor(), atol=0.02)
        assert out["pred_points_original"].shape == (1, 1, 2)
        spacing = torch.as_tensor(truth.meta["spacing"])
        assert bool(((spacing > 0.2) & (spacing < 0.6)).all())


# ----------------------------------------------------------------------------------------------- multi-GPU


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_multi_gpu_config_trains_with_two_cpu_processes(tmp_path: Path, dataset_dir: Path) -> None:
    configs = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")]
    overrides = {**TINY, "max_epochs": 1, "train_batch_size": 2, "val_batch_size": 2, "use_cuda": False}
    overrides["ema_momentum"] = 0.01  # the moving average of the DDP-wrapped network's module
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
        "-m", "monai.bundle", "run", "--config_file", repr(configs), "--bundle_root", str(tmp_path),
        "--dataset_dir", str(dataset_dir),
    ]  # fmt: skip
    for key, value in overrides.items():
        command += [f"--{key}", repr(value)]  # parsed by `fire` as Python literals
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    full = torch.load(tmp_path / "models" / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert full["rng"]["world_size"] == 2
    assert not any(key.startswith("module.") for key in full["network"])
    assert set(full["weight_average"]) == set(full["network"])  # the average of the unwrapped network
    assert len(list((tmp_path / "eval").glob("events.out.tfevents.*"))) == 2  # rank 0 only: trainer + evaluator


# -------------------------------------------------------------------------------------------------- helpers


def test_bundle_path_finds_the_checkout_bundle() -> None:
    assert "catheter_tip_fluoro" in available_bundles()
    assert (BUNDLE / "LICENSE").is_file() and (BUNDLE / "docs" / "README.md").is_file()
    with pytest.raises(FileNotFoundError, match="catheter_tip_fluoro"):
        bundle_path("no_such_bundle")


def test_load_datalist_resolves_paths_and_frames(dataset_dir: Path) -> None:
    entries = load_datalist(dataset_dir / "datalist.json", "training")
    assert len(entries) == 8
    assert all(Path(e["image"]).is_absolute() and Path(e["image"]).is_file() for e in entries)
    assert all(isinstance(e["frame"], int) for e in entries)
    with pytest.raises(ValueError, match="'nope'"):
        load_datalist(dataset_dir / "datalist.json", "nope")


def test_latest_checkpoint_takes_the_largest_epoch(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="resume"):
        latest_checkpoint(tmp_path)
    for epoch in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={epoch}.pt").touch()
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=10.pt")
