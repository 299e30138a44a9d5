"""Adaloss vs fixed sigmas on 133 real hand radiographs with 37 landmarks (train on train, evaluate on test).

Every run trains the same network (the ``hand_xray_landmarks`` bundle's ``HeatmapUNet``: 5 levels, kernel 5,
BatchNorm + ReLU) from the same seed, on the same cached images with the same augmentation stream, for the
same number of epochs, with Adam 1e-3 and a plain PyTorch loop; only the target sigma differs (fixed, or the
bundle's ``AdalossSchedule``: sigma_0 = size / 4 per landmark, step bound 10 %, floor 2 px). The loss is
always ``AdalossHeatmapLoss(normalize="mean")``; an Adaloss run calls ``schedule.update(epoch sums / counts)``
of the loss's per-landmark values once per epoch, as ``AdalossHandler`` does at ``EPOCH_COMPLETED``.

Data: the pre-processing of the bundle itself (``configs/train.json`` read with ``ConfigParser``): PNG ->
[0, 1] per image -> longer side resized to ``--size`` (area) -> zero-padded to a square -> (training only)
rotation, zoom and intensity augmentation, with the points following the image. The datalist is built by
``monai_adaloss.io.hand_xray.hand_xray_datalist`` from ``--data`` (``images.csv`` + ``landmarks.csv``).

Evaluation on the test split at the last epoch (no model selection, the validation split is not used):
the bundle's validation post-processing: ``DecodeHeatmapd`` (argmax + sub-pixel fit) in the working grid, and
the points mapped back to the PNG (inverse of resize + pad), then to the source radiograph's
pixels with the original sizes of ``images.csv`` (``to_source_pixels``). Reported: mean / median radial error
in working px, PNG px and source px, SDR at 2 / 4 / 8 working px, and for Adaloss the final sigma per landmark
with the Spearman correlation between final sigma and the landmark's mean test error (working px).

Outputs in ``--output-dir``: ``results.csv`` / ``results.md`` (one row per run, written after each run),
``per_landmark.csv`` (final sigma and test error of every landmark and run), ``per_epoch.csv`` (mean training
loss and sigma range per epoch), ``sigma_history.csv`` (the Adaloss sigma of every landmark and epoch),
``spearman.md``; the figure of sigma per landmark over epochs, grouped by finger and by joint, goes to ``--plot``
(``--replot`` redraws it from ``sigma_history.csv`` without training).

    python benchmarks/hand_xray_adaloss.py --data ../shared/data/hand_xray --output-dir benchmarks_out/hand_xray
        [--size 128] [--epochs 40] [--batch-size 8] [--channels 8 16 32 64 128] [--fixed-sigmas 2 5 12]
        [--seed 0] [--threads 1] [--plot docs/images/hand_xray_sigma.png]

On a CPU shared with other jobs keep ``--threads 1``: with 2 intra-op threads on 2 busy cores one training
batch took 6-9 s instead of 0.4 s (measured at 64x64, load average about 9).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from monai.bundle import ConfigParser
from monai.data import DataLoader, decollate_batch, list_data_collate
from monai.engines.utils import engine_apply_transform
from scipy.stats import spearmanr

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.bundles import bundle_path
from monai_adaloss.io.hand_xray import HAND_XRAY_GROUPS, HAND_XRAY_LANDMARKS, hand_xray_datalist, to_source_pixels
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.networks import HeatmapUNet

SDR_RADII = (2, 4, 8)
"""SDR radii in pixels of the working grid."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with images/, images.csv, landmarks.csv")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128, help="square working grid (divisible by 16)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--fixed-sigmas", type=float, nargs="*", default=[2.0, 5.0, 12.0], help="working px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--plot", type=Path, default=Path("docs/images/hand_xray_sigma.png"))
    parser.add_argument(
        "--replot", action="store_true", help="only redraw --plot from <output-dir>/sigma_history.csv of a finished run"
    )
    return parser.parse_args()


def bundle_parser(args: argparse.Namespace) -> ConfigParser:
    """The bundle's train.json with the benchmark's datalist, size and channels."""
    datalist = args.output_dir / "datalist.json"
    datalist.write_text(json.dumps(hand_xray_datalist(args.data), indent=1), encoding="utf-8")
    parser = ConfigParser()
    parser.read_config(str(bundle_path("hand_xray_landmarks") / "configs" / "train.json"))
    parser.update(
        {
            "bundle_root": str(args.output_dir),
            "datalist": str(datalist),
            "input_size": [args.size, args.size],
            "network_channels": list(args.channels),
            "num_workers": 0,
            "seed": args.seed,
            "validate::dataset::data": "$monai_adaloss.bundles.load_datalist(@datalist, 'test')",
        }
    )
    return parser


def train_one(
    name: str, loss: AdalossHeatmapLoss, args: argparse.Namespace, parser: ConfigParser, train_ds, per_epoch: list
) -> torch.nn.Module:
    """Train one run; append its per-epoch rows to ``per_epoch``; return the trained network."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train_ds.transform.set_random_state(seed=args.seed)  # the same augmentation stream in every run
    network = HeatmapUNet(2, 1, len(HAND_XRAY_LANDMARKS), channels=args.channels, kernel_size=5)
    optimizer = torch.optim.Adam(network.parameters(), lr=parser["learning_rate"])
    loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        network.train()
        sums = torch.zeros(len(HAND_XRAY_LANDMARKS), dtype=torch.float64)
        counts = torch.zeros_like(sums)
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            value = loss(network(batch["image"].as_tensor()), batch["label"].as_tensor())
            value.backward()
            optimizer.step()
            sums += loss.last_channel_sums.double()
            counts += loss.last_channel_counts.double()
        epoch_losses = sums / counts
        sigma_used = loss.sigma.clone()
        if loss.schedule is not None:
            loss.schedule.update(epoch_losses)
        sigma = sigma_used.expand(len(HAND_XRAY_LANDMARKS))
        row = {
            "run": name,
            "epoch": epoch,
            "train_loss": float(epoch_losses.mean()),
            "sigma_min": float(sigma.min()),
            "sigma_median": float(sigma.median()),
            "sigma_max": float(sigma.max()),
            "seconds": time.perf_counter() - start,
        }
        per_epoch.append(row)
        print(
            f"  {name} epoch {epoch}/{args.epochs}: loss {row['train_loss']:.4g}, sigma used "
            f"{row['sigma_min']:.2f}-{row['sigma_max']:.2f}, {row['seconds']:.1f} s",
            flush=True,
        )
    return network


@torch.no_grad()
def evaluate(network: torch.nn.Module, test_ds, test_entries: list[dict], postprocessing) -> dict[str, np.ndarray]:
    """Per-landmark radial errors ``(N, L)`` on the test split in working, PNG and source pixels."""
    network.eval()
    errors: dict[str, list[np.ndarray]] = {"working": [], "png": [], "source": []}
    for start in range(0, len(test_ds), 4):
        indices = range(start, min(start + 4, len(test_ds)))
        batch = list_data_collate([test_ds[i] for i in indices])
        pred = network(batch["image"])  # a MetaTensor with the batch's metadata (resize + pad in its affine)
        for index, sample, out in zip(indices, decollate_batch(batch), decollate_batch({"pred": pred}), strict=True):
            out = {"pred": out["pred"], "label": sample["label"], "label_original": sample["label_original"]}
            _, out = engine_apply_transform(sample, out, postprocessing)
            pred_working, true_working = out["pred_points"].as_tensor(), sample["label"].as_tensor()
            working = torch.linalg.vector_norm(pred_working - true_working, dim=-1)[:, 0]
            pred_png, true_png = out["pred_points_original"].as_tensor(), out["label_points_original"].as_tensor()
            entry = test_entries[index]
            pred_src = to_source_pixels(pred_png, entry["image_size"], entry["source_size"])
            true_src = to_source_pixels(true_png, entry["image_size"], entry["source_size"])
            errors["working"].append(working.double().numpy())
            errors["png"].append(torch.linalg.vector_norm(pred_png - true_png, dim=-1)[:, 0].double().numpy())
            errors["source"].append(torch.linalg.vector_norm(pred_src - true_src, dim=-1)[:, 0].numpy())
    return {key: np.stack(value) for key, value in errors.items()}


def summary(name: str, errors: dict[str, np.ndarray], seconds: float) -> dict[str, float | str]:
    row: dict[str, float | str] = {"run": name}
    for unit in ("working", "png", "source"):
        row[f"mre_{unit}_px"] = float(errors[unit].mean())
        row[f"median_{unit}_px"] = float(np.median(errors[unit]))
    for radius in SDR_RADII:
        row[f"sdr_{radius}px"] = float((errors["working"] <= radius).mean())
    row["train_seconds"] = seconds
    return row


def write_results(rows: list[dict], args: argparse.Namespace) -> None:
    with (args.output_dir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"| run | MRE working px ({args.size}) | MRE PNG px (512) | MRE source px | median source px | "
        "SDR 2 px | SDR 4 px | SDR 8 px | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['mre_working_px']:.2f} | {r['mre_png_px']:.2f} | {r['mre_source_px']:.1f} | "
            f"{r['median_source_px']:.1f} | {100 * r['sdr_2px']:.1f} % | {100 * r['sdr_4px']:.1f} % | "
            f"{100 * r['sdr_8px']:.1f} % | {r['train_seconds']:.0f} |"
        )
    (args.output_dir / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines), flush=True)


def plot_sigma_by_group(history: np.ndarray, out_png: Path, size: int) -> None:
    """Sigma per landmark over epochs: a panel per finger / wrist group and one per joint (cf. the paper's Figure 7)."""
    fig = Figure(figsize=(13, 6.5), dpi=110)
    epochs = np.arange(history.shape[0])
    for panel, (group, indices) in enumerate(HAND_XRAY_GROUPS.items(), start=1):
        ax = fig.add_subplot(2, 4, panel)
        for index in indices:
            label = HAND_XRAY_LANDMARKS[index].replace("radius_ulna_carpal_", "rc ").replace("metacarpal_base_", "")
            ax.plot(epochs, history[:, index], label=label, linewidth=1.2)
        ax.set_title(group, fontsize=10)
        ax.set_ylim(0, history.max() * 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2 if len(indices) > 5 else 1)
        if panel > 4:
            ax.set_xlabel("epoch")
        if panel in (1, 5):
            ax.set_ylabel(f"sigma (px of the {size}x{size} grid)")
    ax = fig.add_subplot(2, 4, 8)
    for joint in ("mcp", "pip", "dip", "tip"):
        indices = [HAND_XRAY_LANDMARKS.index(f"{finger}_{joint}") for finger in ("index", "middle", "ring", "little")]
        ax.plot(epochs, history[:, indices].mean(axis=1), label=f"{joint.upper()}", linewidth=1.2)
    ax.set_title("by joint (mean of index ... little)", fontsize=10)
    ax.set_ylim(0, history.max() * 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    ax.set_xlabel("epoch")
    fig.suptitle("Adaloss on hand radiographs: sigma of each landmark per epoch")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.replot:
        history = np.loadtxt(args.output_dir / "sigma_history.csv", delimiter=",", skiprows=1)
        plot_sigma_by_group(history, args.plot, args.size)
        return
    args.output_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    parser = bundle_parser(args)
    train_ds = parser.get_parsed_content("train::dataset")
    test_ds = parser.get_parsed_content("validate::dataset")
    postprocessing = parser.get_parsed_content("validate::postprocessing")
    test_entries = hand_xray_datalist(args.data)["test"]
    num = len(HAND_XRAY_LANDMARKS)
    print(f"cached {len(train_ds)} training / {len(test_ds)} test images in {time.perf_counter() - wall:.0f} s")

    schedule = AdalossSchedule.for_spatial_shape(
        [args.size, args.size], num, max_step_fraction=parser["max_step_fraction"], sigma_min=parser["sigma_min"]
    )
    runs = [("adaloss", AdalossHeatmapLoss(schedule, normalize="mean"))]
    runs += [(f"fixed_{s:g}", AdalossHeatmapLoss(sigma=s, normalize="mean")) for s in args.fixed_sigmas]
    rows: list[dict] = []
    per_epoch: list[dict] = []
    per_landmark: dict[str, list] = {"landmark": list(HAND_XRAY_LANDMARKS)}
    for name, loss in runs:
        print(f"run {name}", flush=True)
        start = time.perf_counter()
        network = train_one(name, loss, args, parser, train_ds, per_epoch)
        seconds = time.perf_counter() - start
        errors = evaluate(network, test_ds, test_entries, postprocessing)
        rows.append(summary(name, errors, seconds))
        per_landmark[f"{name}_mre_working_px"] = errors["working"].mean(axis=0).tolist()
        per_landmark[f"{name}_mre_source_px"] = errors["source"].mean(axis=0).tolist()
        if loss.schedule is not None:
            history = loss.schedule.sigma_history.numpy()
            per_landmark["adaloss_final_sigma"] = history[-1].tolist()
            np.savetxt(args.output_dir / "sigma_history.csv", history, delimiter=",", fmt="%.4f",
                       header=",".join(HAND_XRAY_LANDMARKS), comments="")  # fmt: skip
            plot_sigma_by_group(history, args.plot, args.size)
            rho, p_value = spearmanr(history[-1], errors["working"].mean(axis=0))
            spearman = (
                f"Spearman correlation of the final Adaloss sigma with the landmark's mean test error (working px), "
                f"over the {num} landmarks: rho = {rho:.3f}, p = {p_value:.3g}.\n"
            )
            (args.output_dir / "spearman.md").write_text(spearman, encoding="utf-8")
            print(spearman, flush=True)
        write_results(rows, args)
        with (args.output_dir / "per_landmark.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(per_landmark))
            writer.writerows(zip(*per_landmark.values(), strict=True))
        with (args.output_dir / "per_epoch.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(per_epoch[0]))
            writer.writeheader()
            writer.writerows(per_epoch)
    total = time.perf_counter() - wall
    (args.output_dir / "wall_time.txt").write_text(f"{total:.0f} s\n", encoding="utf-8")
    print(f"wall time {total:.0f} s ({math.ceil(total / 60)} min)")


if __name__ == "__main__":
    main()
