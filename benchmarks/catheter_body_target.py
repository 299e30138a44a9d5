"""Probe: does a second target, the catheter's body, teach the tip detector what the catheter is?

The catheter demo's gross errors are predictions on another line end (often the catheter's own far end where
it leaves the field), a clip or a wire. This script trains the demo's ``cpu`` recipe (the paper's U-Net 8-16-32,
128 px input, spatial log-softmax + cross-entropy against a Gaussian of fixed sigma 3 px, Adam 1e-3, batch 4,
the catheter bundle's augmentation with device layers on half of the samples) with **one more output channel**
trained with a binary cross-entropy (weight ``--aux-weight``) against a tube ``exp(-d^2 / 2 r^2)`` along the
catheter's centre line from where it enters the image to its tip. ``--aux-weight 0`` is the same training with
the extra channel untrained (same network, same random draws): two runs with weights 0 and w are paired.

The centre lines are not in the datalist: they are drawn again from the synthetic generator's seeds
(``make_dataset`` draws every file from ``(seed, split, index)``; ``--data-seed`` must be the seed that wrote
``--data``), and every frame's regenerated tip is checked against the datalist's ``tip_true``.

Every epoch from ``--eval-from`` on, the tip channel is decoded (integer argmax + refinement) on the validation
split of ``--data`` and on the fixed test set ``--test-data`` (``benchmarks/outliers.py catheter`` writes one
under ``<output-dir>/test_data``); errors are in px of each test frame (``> 10 px`` = gross). The run's result is
the epoch with the lowest validation outlier rate (then median), as the demo selects it, plus the mean
gross-error share of the last five evaluations. Writes ``history.json``, ``per_frame.npz`` (test errors and
confidences per evaluated epoch), ``model_e<N>.pt`` (state dicts), ``check.png`` (the first training samples
over their body targets) and ``result.json`` into ``--output-dir``.

    python benchmarks/catheter_body_target.py --data runs/demo_s0/data --data-seed 0 \\
        --test-data benchmarks_out/outliers200/test_data --seed 0 --aux-weight 1 --output-dir benchmarks_out/body_s0_w1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, EnsureTyped, MapTransform, Resized
from monai.utils import set_determinism

from monai_adaloss.bundles import bundle_path, load_datalist
from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.demo import OUTLIER_RADIUS_PX
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.networks import SpatialLogSoftmax, catheter_unet
from monai_adaloss.synthetic.fluoroscopy import FluoroscopyConfig, _sample_scene, _truncate

SPLIT_INDEX = {"training": 0, "validation": 1, "test": 2}
"""``make_dataset``'s split numbers (the second element of every file's seed)."""


def regenerated_scenes(datalist: Path, split: str, seed: int) -> tuple[list[dict], dict[str, tuple[Any, int, list]]]:
    """The entries of ``split`` and, per file, its scene drawn again: ``image -> (scene, n_frames, file_seed)``.

    ``file_seed`` is ``make_dataset``'s ``[seed, split number, file index, 1]``; the frame size is the first
    file's (DICOM Rows / Columns).
    """
    entries = json.loads(datalist.read_text())[split]
    frames_per_file = Counter(entry["image"] for entry in entries)
    first = pydicom.dcmread(datalist.parent / entries[0]["image"], stop_before_pixels=True)
    config = FluoroscopyConfig(rows=int(first.Rows), columns=int(first.Columns))
    scenes = {}
    for image, n_frames in frames_per_file.items():
        file_seed = [seed, SPLIT_INDEX[split], int(Path(image).stem), 1]
        scenes[image] = (_sample_scene(config, np.random.default_rng(file_seed), n_frames), n_frames, file_seed)
    return entries, scenes


def catheter_centrelines(datalist: Path, split: str, seed: int) -> dict[tuple[str, int], np.ndarray]:
    """``(image, frame) -> (N, 2)`` catheter centre line ``(x, y)`` (px of the frame), entry point to tip.

    Raises:
        AssertionError: when a regenerated tip is not the datalist's ``tip_true`` (wrong ``seed`` or data).
    """
    entries, scenes = regenerated_scenes(datalist, split, seed)
    lines = {}
    for image, (scene, n_frames, _) in scenes.items():
        path, motion = scene.devices.path, scene.devices.motion
        for k in range(n_frames):
            lines[(image, k)], _ = _truncate(path.centreline + motion[k], path.arc, float(path.tip_arcs[k]))
    for entry in entries:
        tip = lines[(entry["image"], entry.get("frame", 0))][-1]
        assert np.allclose(tip, entry["tip_true"], atol=2e-3), f"{entry['image']}: {tip} != {entry['tip_true']}"
    return lines


class CatheterBodyd(MapTransform):
    """``data["body_line"]`` ``(N, 2)`` ``(x, y)`` -> ``data["body"]`` ``(1, X, Y)``: ``exp(-d^2 / 2 r^2)``.

    ``d`` is each pixel's distance to the polyline (sampled every 0.5 px) on the grid of ``data["image"]``
    ``(C, X, Y)``; ``r`` = ``radius`` px. Pixels farther than ``3 r`` are 0.
    """

    def __init__(self, radius: float) -> None:
        super().__init__(keys="body_line")
        self.radius = radius

    def __call__(self, data: Any) -> dict:
        d = dict(data)
        size_x, size_y = d["image"].shape[1:]
        line = np.asarray(d.pop("body_line"), dtype=np.float32)
        points = [line[:1]]
        for a, b, length in zip(line[:-1], line[1:], np.hypot(*np.diff(line, axis=0).T), strict=True):
            n = max(math.ceil(length / 0.5), 1)
            points.append(a + np.arange(1, n + 1, dtype=np.float32)[:, None] / n * (b - a))
        distance = np.full((size_x, size_y), np.inf, dtype=np.float32)
        reach = math.ceil(3 * self.radius)
        offset_x, offset_y = np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1), indexing="ij")
        for px, py in np.concatenate(points):
            xs, ys = round(float(px)) + offset_x, round(float(py)) + offset_y
            inside = (xs >= 0) & (xs < size_x) & (ys >= 0) & (ys < size_y)
            np.minimum.at(distance, (xs[inside], ys[inside]), np.hypot(xs[inside] - px, ys[inside] - py))
        d["body"] = torch.from_numpy(np.exp(-(distance**2) / (2 * self.radius**2)).astype(np.float32)[None])
        return d


def bundle_parser() -> ConfigParser:
    """The catheter bundle's ``train.json``, read (its ``load_transforms`` load a frame and its points)."""
    parser = ConfigParser()
    parser.read_config(str(bundle_path("catheter_tip_fluoro") / "configs" / "train.json"))
    return parser


def recipe_parser(seed: int, input_size: int, overlay: float) -> ConfigParser:
    """:func:`bundle_parser` with the probes' input size, device-layer share and augmentation seed."""
    parser = bundle_parser()
    parser["input_size"] = [input_size, input_size]
    parser["device_overlay_prob"] = overlay
    parser["seed"] = seed
    return parser


def training_transforms(seed: int, input_size: int, overlay: float, radius: float) -> tuple[Compose, list]:
    """The catheter bundle's loading, a resize to ``input_size`` and its augmentation, the body mask alongside.

    The flips, rotation and zoom move the body mask with the image; returns the training ``Compose`` and the
    bundle's loading transforms (for evaluation).
    """
    parser = recipe_parser(seed, input_size, overlay)
    for index in range(4):  # RandFlipd x 2, RandRotated, RandZoomd
        parser[f"train#augmentation#{index}#keys"] = ["image", "body"]
    load = parser.get_parsed_content("load_transforms")
    steps = [
        *load,
        CatheterBodyd(radius),
        Resized(keys=["image", "body"], spatial_size=[input_size] * 2, mode="area"),
        *parser.get_parsed_content("train#augmentation"),
        *parser.get_parsed_content("train#points_and_types"),
        EnsureTyped(keys="body", dtype=torch.float32),
    ]
    return Compose(steps), load


def _plain(tensor: Any) -> torch.Tensor:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


TIP_LOG_PROBABILITIES = SpatialLogSoftmax()
"""Applied to channel 0 (the tip) of the network's ``(B, 2, H, W)`` output; channel 1 is the body's logits."""


def predict_tips(
    net: torch.nn.Module, entries: list[dict], load: list, input_size: int, batch_size: int = 16
) -> Iterator[tuple[dict, torch.Tensor, np.ndarray, float, float]]:
    """Per entry: ``(entry, input (1, X, Y), tip (x, y) in px of the frame, confidence, frame px per input px)``.

    Each frame is loaded with ``load``, resized ("area") to ``input_size`` (square frames) and decoded from the
    tip channel (integer argmax + refinement); an input pixel ``i`` covers frame pixels around
    ``i * scale + (scale - 1) / 2``.
    """
    load_frame = Compose(load)
    resize = Compose([Resized(keys="image", spatial_size=[input_size] * 2, mode="area"), EnsureTyped(keys="image")])
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for start in range(0, len(entries), batch_size):
            chunk = entries[start : start + batch_size]
            frames = [load_frame(dict(entry)) for entry in chunk]
            scales = [frame["image"].shape[1] / input_size for frame in frames]
            x = torch.stack([_plain(resize(frame)["image"]).float() for frame in frames])
            points, confidence = decode_single_instance(TIP_LOG_PROBABILITIES(net(x)[:, :1]), log_probabilities=True)
            for i, entry in enumerate(chunk):
                xy = points[i, 0, 0].numpy() * scales[i] + (scales[i] - 1) / 2
                yield entry, x[i], xy, float(confidence[i, 0, 0]), scales[i]
    net.train(was_training)


def evaluate(net: torch.nn.Module, entries: list[dict], load: list, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tip errors (px of each frame) and confidences of ``entries`` (:func:`predict_tips`)."""
    predictions = list(predict_tips(net, entries, load, input_size))
    errors = [float(np.hypot(*(xy - np.asarray(entry["tip_true"])))) for entry, _, xy, _, _ in predictions]
    return np.asarray(errors), np.asarray([confidence for _, _, _, confidence, _ in predictions])


def save_check_figure(dataset: CacheDataset, path: Path, n: int = 4) -> None:
    """The first ``n`` training samples (augmented) above their body targets, the tip marked: alignment check.

    Drawing the samples advances the augmentation's random state, as training will.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6))
    for j in range(n):
        sample = dataset[j]
        axes[0, j].imshow(sample["image"][0].T, cmap="gray")
        axes[1, j].imshow(sample["body"][0].T)
        for ax in axes[:, j]:
            tip = sample["label"][0, 0]
            ax.plot(tip[0], tip[1], "r+")
    fig.savefig(path)
    plt.close(fig)


def summary(errors: np.ndarray) -> dict[str, float]:
    """Mean, median, p95 (px), gross-error share (> 10 px) and SDR at 2 / 4 px."""
    return {
        "mean": float(errors.mean()),
        "median": float(np.median(errors)),
        "p95": float(np.percentile(errors, 95)),
        "gross": float((errors > OUTLIER_RADIUS_PX).mean()),
        "sdr2": float((errors <= 2).mean()),
        "sdr4": float((errors <= 4).mean()),
    }


def select_epoch(evaluated: list[dict]) -> dict[str, Any]:
    """The demo's choice among ``evaluated`` rows (``{"epoch", "val", "test"}``, summaries of :func:`summary`).

    Returns the selected epoch (lowest validation gross share, then median) with its test summary, the last row's
    test summary and the mean test gross share of the last five rows.
    """
    best = min(evaluated, key=lambda row: (row["val"]["gross"], row["val"]["median"]))
    return {
        "selected_epoch": best["epoch"],
        "selected_test": best["test"],
        "last_test": evaluated[-1]["test"],
        "mean_last5_gross": float(np.mean([row["test"]["gross"] for row in evaluated[-5:]])),
    }


def add_recipe_arguments(parser: argparse.ArgumentParser, eval_from: int) -> None:
    """The options every ``cpu``-recipe probe takes: data, seeds, sizes, epochs, evaluation start, threads, output."""
    parser.add_argument("--data", type=Path, required=True, help="a synthetic dataset (a demo run's data/)")
    parser.add_argument("--test-data", type=Path, required=True, help="a synthetic dataset whose test split is scored")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=3.0, help="fixed tip sigma, px of the input grid")
    parser.add_argument("--device-overlay", type=float, default=0.5, help="share of samples with device layers")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=22)
    parser.add_argument("--eval-from", type=int, default=eval_from, help="first epoch evaluated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, required=True)


def train(args: argparse.Namespace) -> dict:
    """One run (see the module docstring); returns what ``result.json`` holds."""
    torch.set_num_threads(args.threads)
    set_determinism(args.seed)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    datalist = args.data / "datalist.json"
    lines = catheter_centrelines(datalist, "training", args.data_seed)
    training = load_datalist(datalist, "training")
    for entry in training:
        image = Path(entry["image"])
        entry["body_line"] = lines[(f"{image.parent.name}/{image.name}", entry["frame"])]
    validation = load_datalist(datalist, "validation")
    test = load_datalist(args.test_data / "datalist.json", "test")
    transform, load = training_transforms(args.seed, args.input_size, args.device_overlay, args.radius)
    dataset = CacheDataset(training, transform, cache_rate=1.0, num_workers=1, progress=False)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=0)
    save_check_figure(dataset, out / "check.png")
    net = catheter_unet(1, 2, (8, 16, 32), output="heatmap")
    tip_loss = AdalossHeatmapLoss(sigma=args.sigma, criterion="cross_entropy")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    history: list[dict] = []
    per_frame: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        tip_sum = body_sum = 0.0
        for batch in loader:
            out_maps = net(_plain(batch["image"]))
            loss = tip_loss(TIP_LOG_PROBABILITIES(out_maps[:, :1]), _plain(batch["label"])).mean()
            body = F.binary_cross_entropy_with_logits(out_maps[:, 1:], _plain(batch["body"]))
            optimizer.zero_grad()
            (loss + args.aux_weight * body).backward()
            optimizer.step()
            tip_sum, body_sum = tip_sum + float(loss.detach()), body_sum + float(body.detach())
        row: dict[str, Any] = {"epoch": epoch, "loss": tip_sum / len(loader), "body_loss": body_sum / len(loader)}
        row["time"] = time.perf_counter() - started
        if epoch >= args.eval_from:
            val_errors, _ = evaluate(net, validation, load, args.input_size)
            test_errors, test_confidence = evaluate(net, test, load, args.input_size)
            row["val"], row["test"] = summary(val_errors), summary(test_errors)
            per_frame[f"test_e{epoch}"], per_frame[f"conf_e{epoch}"] = test_errors, test_confidence
            np.savez(out / "per_frame.npz", **per_frame)
            torch.save(net.state_dict(), out / f"model_e{epoch}.pt")
        history.append(row)
        print(json.dumps(row), flush=True)
        (out / "history.json").write_text(json.dumps(history, indent=1))
    result = {
        **select_epoch([row for row in history if "val" in row]),
        "wall": time.perf_counter() - started,
        "args": {key: str(value) for key, value in vars(args).items()},
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_recipe_arguments(parser, eval_from=12)
    parser.add_argument("--data-seed", type=int, required=True, help="the seed that wrote --data")
    parser.add_argument("--aux-weight", type=float, default=1.0, help="weight of the body target's loss (0: off)")
    parser.add_argument("--radius", type=float, default=3.0, help="body tube radius, px of the frame")
    print(json.dumps(train(parser.parse_args())))


if __name__ == "__main__":
    main()
