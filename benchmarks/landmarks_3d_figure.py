"""Train the landmarks_3d bundle on synthetic CT-like volumes, evaluate it on held-out volumes, draw the figure.

Writes synthetic NIfTI volumes (anisotropic voxels, oblique affine) with ``make_volume_dataset``, trains
``bundles/landmarks_3d/configs/train.json`` through MONAI's ``ConfigWorkflow`` (per-landmark Adaloss),
evaluates the best model on the test volumes with ``evaluate.json``, and saves

- ``<figure>``: for one test volume, three orthogonal slices through each true landmark (true +,
  predicted x, axes in mm), sigma per landmark per epoch and the per-landmark test errors in mm;
- ``<output-dir>/results.json``: the measured numbers (also printed).

The errors are compared with guessing every landmark at its mean voxel position over the training
volumes (all volumes share one grid here), which is what a model that ignores the image would score.

    nice python benchmarks/landmarks_3d_figure.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import torch
from ignite.engine import Events
from matplotlib.gridspec import GridSpec
from monai.bundle import ConfigWorkflow

from monai_adaloss.bundles import bundle_path
from monai_adaloss.synthetic.volumes import VolumeConfig, make_volume_dataset

REPO = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "landmarks_3d")
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "images" / "landmarks_3d.png")
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-val", type=int, default=4)
    parser.add_argument("--n-test", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 48), help="volume voxels (i, j, k)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 2.5), help="voxel size in mm")
    parser.add_argument("--tilt", type=float, nargs=3, default=(8.0, 0.0, 4.0), help="grid tilt in degrees")
    parser.add_argument("--shift", type=float, nargs=3, default=(10.0, 10.0, 15.0), help="anatomy shift, mm")
    parser.add_argument("--input-size", type=int, nargs=3, default=(32, 32, 32), help="working grid")
    parser.add_argument("--channels", type=int, nargs="+", default=(8, 16, 32, 64))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def bundle_workflow(files: list[str], kind: str, root: Path, data: Path, **override: Any) -> ConfigWorkflow:
    configs = bundle_path("landmarks_3d") / "configs"
    wf = ConfigWorkflow(
        config_file=[str(configs / name) for name in files],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=kind,
        bundle_root=str(root),
        dataset_dir=str(data),
        **override,
    )
    wf.initialize()
    return wf


def mm_distances(pred: np.ndarray, true: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``(N, L)`` distances in mm of ``(N, L, 3)`` voxel points with ``(N, 3)`` per-axis spacing."""
    return np.linalg.norm((pred - true) * spacing[:, None, :], axis=-1)


def draw_figure(path: Path, volume: dict, names: list[str], sigma: np.ndarray, errors_mm: np.ndarray) -> None:
    """Orthogonal slices through each true landmark of one volume, sigma per epoch, per-landmark errors."""
    image = nib.load(volume["image"]).get_fdata(dtype=np.float32)
    spacing = volume["spacing"]
    edges_mm = [(-0.5 * s, (n - 0.5) * s) for n, s in zip(image.shape, spacing, strict=True)]  # voxel centres at i * s
    views = (  # (title, axis held fixed, in-plane axes (horizontal, vertical))
        ("axial (k)", 2, (0, 1)),
        ("coronal (j)", 1, (0, 2)),
        ("sagittal (i)", 0, (1, 2)),
    )
    fig = plt.figure(figsize=(13, 2.1 * len(names)))
    grid = GridSpec(len(names), 5, figure=fig, width_ratios=[1, 1, 1, 0.15, 1.6])
    for row, name in enumerate(names):
        true, pred = volume["true"][row], volume["pred"][row]
        for col, (title, fixed, (h, v)) in enumerate(views):
            ax = fig.add_subplot(grid[row, col])
            index = int(np.clip(round(true[fixed]), 0, image.shape[fixed] - 1))
            plane = np.take(image, index, axis=fixed)  # axes in increasing order of the remaining two
            ax.imshow(
                plane.T,
                cmap="gray",
                vmin=-250,
                vmax=350,
                origin="lower" if v == 2 else "upper",  # superior up; axial: anterior up
                extent=(*edges_mm[h], *(edges_mm[v] if v == 2 else edges_mm[v][::-1])),
                interpolation="nearest",
            )
            ax.plot(true[h] * spacing[h], true[v] * spacing[v], "+", color="lime", ms=11, mew=2)
            ax.plot(pred[h] * spacing[h], pred[v] * spacing[v], "x", color="red", ms=9, mew=2)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{title} slice", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{name}\n{float(np.linalg.norm((pred - true) * spacing)):.1f} mm", fontsize=8)
    ax = fig.add_subplot(grid[: len(names) // 2, 4])
    for channel, name in enumerate(names):
        ax.plot(np.arange(sigma.shape[0]), sigma[:, channel], marker=".", label=name)
    ax.set_xlabel("epoch (row t = sigma used in epoch t)")
    ax.set_ylabel("sigma (voxels of the working grid)")
    ax.set_title("Adaloss sigma per landmark", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[len(names) // 2 + 1 :, 4])
    ax.boxplot([errors_mm[:, c] for c in range(len(names))], vert=False)
    ax.set_yticks(range(1, len(names) + 1), names, fontsize=7)
    ax.set_xlabel("test error (mm)")
    ax.set_title("per-landmark error, all test volumes", fontsize=9)
    fig.suptitle("landmarks_3d: true (+, green) and predicted (x, red) landmarks, slices through the true point")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data, root = args.output_dir / "data", args.output_dir / "bundle"
    config = VolumeConfig(
        shape=tuple(args.shape), spacing=tuple(args.spacing), tilt_deg=tuple(args.tilt), shift_mm=tuple(args.shift)
    )
    datalist = make_volume_dataset(data, args.n_train, args.n_val, args.n_test, config=config, seed=args.seed)
    content = json.loads(datalist.read_text())
    names = content["landmark_names"]
    generated = time.perf_counter()

    override = {
        "input_size": list(args.input_size),
        "network_channels": list(args.channels),
        "max_epochs": args.epochs,
        "train_batch_size": args.batch_size,
        "val_batch_size": args.batch_size,
        "num_workers": 0,
        "seed": args.seed,
    }
    wf = bundle_workflow(["train.json"], "train", root, data, **override)
    wf.run()
    sigma = wf.parser.get_parsed_content("adaloss_schedule").sigma_history.numpy()
    best_epoch = wf.parser.get_parsed_content("validate::evaluator").state.best_metric_epoch
    wf.finalize()
    trained = time.perf_counter()

    wf = bundle_workflow(["train.json", "evaluate.json"], "eval", root, data, eval_split="test", **override)
    evaluator = wf.parser.get_parsed_content("evaluator")
    samples: list[dict] = []

    @evaluator.on(Events.ITERATION_COMPLETED)
    def collect(engine) -> None:
        for out in engine.state.output:
            truth = out["label_points_original"]
            samples.append(
                {
                    "image": str(out["image"].meta["filename_or_obj"]),
                    "pred": out["pred_points_original"].as_tensor().double().numpy()[:, 0],
                    "true": truth.as_tensor().double().numpy()[:, 0],
                    "spacing": np.asarray(torch.as_tensor(truth.meta["spacing"]).double()),
                }
            )

    wf.run()
    metrics = {key: float(value) for key, value in evaluator.state.metrics.items()}
    wf.finalize()
    evaluated = time.perf_counter()

    spacing = np.stack([s["spacing"] for s in samples])
    pred, true = np.stack([s["pred"] for s in samples]), np.stack([s["true"] for s in samples])
    errors_mm = mm_distances(pred, true, spacing)
    train_mean = np.mean([[content_point[n][0] for n in names] for content_point in
                          (entry["label"] for entry in content["training"])], axis=0)  # fmt: skip
    baseline_mm = mm_distances(np.broadcast_to(train_mean, true.shape), true, spacing)
    draw_figure(args.figure, samples[0], names, sigma, errors_mm)
    done = time.perf_counter()

    results = {
        "command_args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "volumes": {"train": args.n_train, "validation": args.n_val, "test": args.n_test},
        "test_metrics_bundle": metrics,
        "test_mean_mm": float(errors_mm.mean()),
        "test_median_mm": float(np.median(errors_mm)),
        "test_per_landmark_mean_mm": dict(zip(names, errors_mm.mean(axis=0).round(2).tolist(), strict=True)),
        "mean_position_baseline_mean_mm": float(baseline_mm.mean()),
        "mean_position_baseline_per_landmark_mm": dict(
            zip(names, baseline_mm.mean(axis=0).round(2).tolist(), strict=True)
        ),
        "best_epoch": int(best_epoch),
        "sigma_first_last": {n: [float(sigma[0, c]), float(sigma[-1, c])] for c, n in enumerate(names)},
        "working_voxel_mm": [n * s / g for n, s, g in zip(args.shape, args.spacing, args.input_size, strict=True)],
        "wall_s": {
            "generate": round(generated - start, 1),
            "train": round(trained - generated, 1),
            "evaluate": round(evaluated - trained, 1),
            "figure": round(done - evaluated, 1),
            "total": round(done - start, 1),
        },
        "threads": args.threads,
        "figure": str(args.figure),
    }
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    assert all(math.isfinite(v) for v in errors_mm.ravel()), "a landmark was not found"


if __name__ == "__main__":
    main()
