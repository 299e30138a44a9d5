"""Gross errors before / after: catheter demo models on a fixed synthetic test set, hand X-ray models on the real test.

Two sub-commands; both write ``results.csv`` / ``results.md`` (one row per run and inference mode) and
``points.csv`` (every test point's error and confidence) into ``--output-dir``.

``catheter``: evaluate finished ``monai-adaloss demo`` runs (``--runs``, their output folders) on one
fixed synthetic test set (``--n-test`` frames of 256 x 256 written once with ``--test-seed``,
independent of the runs' seeds), through the inference runner, with and without test-time
augmentation (4-px shifts + both flips). Errors in pixels of the 256 x 256 frames; outlier = more
than 10 px off or missed; the ``low_confidence`` threshold is chosen on the run's own validation
frames (``choose_confidence_threshold``). The training wall time is the run's own (``results.json``).
``--training-frames`` adds a row per run: its model on its own training frames (plain inference).

    python benchmarks/outliers.py catheter --runs runs/demo_s0 runs/demo_s1 ... \
        --output-dir benchmarks_out/outliers_cath

``hand``: train on the hand X-ray training split with the bundle's pre-processing (128 px input,
training augmentation + ``--translate`` px random translation), select the epoch on the validation
split (outlier rate, then median), and evaluate on the test split. The schedule is the package's
``AdalossSchedule`` with its defaults (sigma_0 = 128 / 4, step bound 20 %, floor 2 px),
``normalize="mean"``, Adam with a cosine learning-rate decay to ``lr / 100``. Errors in PNG pixels
(longer side 512); outlier = more than 20 px off; SDR at 2 / 4 px of the 128 grid (8 / 16 PNG px).

    python benchmarks/outliers.py hand --data ../shared/data/hand_xray --network scn --seeds 0 1 2 \\
        --epochs 60 --output-dir benchmarks_out/outliers_hand

Run under the shared CPU lock with ``--threads 2``; the wall times are of this machine's 2 shared cores.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, decollate_batch, list_data_collate
from monai.engines.utils import engine_apply_transform
from monai.transforms import Compose

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.bundles import bundle_path, load_datalist
from monai_adaloss.confidence import choose_confidence_threshold, outlier_auroc
from monai_adaloss.demo import OUTLIER_RADIUS_PX, _predict, make_synthetic_dataset
from monai_adaloss.io import LoadDicomFrame
from monai_adaloss.io.hand_xray import HAND_XRAY_LANDMARKS, hand_xray_datalist
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.networks import HeatmapUNet, SpatialConfigurationNet
from monai_adaloss.schedules import make_schedule
from monai_adaloss.tta import TestTimeAugmentation

HAND_OUTLIER_PX = 20.0
"""Hand X-ray outlier radius in PNG pixels (longer side 512)."""
HAND_SCALE = 4.0
"""PNG pixels per pixel of the 128 grid (512 / 128): the SDR radii are given on the 128 grid."""


def statistics(errors: np.ndarray, confidence: np.ndarray, radius: float, sdr_px: tuple[float, float]) -> dict:
    """Mean, median, p95, outlier rate (NaN = missed counts as outlier), SDR and confidence AUROC."""
    found = errors[np.isfinite(errors)]
    return {
        "points": int(errors.size),
        "missed": int((~np.isfinite(errors)).sum()),
        "mean": float(found.mean()) if found.size else math.nan,
        "median": float(np.median(found)) if found.size else math.nan,
        "p95": float(np.percentile(found, 95)) if found.size else math.nan,
        "outlier_rate": float(np.mean(~(errors <= radius))),
        f"sdr_{sdr_px[0]:g}": float(np.mean(errors <= sdr_px[0])),
        f"sdr_{sdr_px[1]:g}": float(np.mean(errors <= sdr_px[1])),
        "auroc": outlier_auroc(confidence, errors, radius),
    }


def write_table(rows: list[dict], out: Path, title: str) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (row.get(k, "") for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines), flush=True)


# ------------------------------------------------------------------------------------------- catheter


def catheter(args: argparse.Namespace) -> None:
    out = args.output_dir
    test_dir = out / "test_data"
    if not (test_dir / "datalist.json").exists():
        make_synthetic_dataset(test_dir, 1, 1, args.n_test, 256, seed=args.test_seed, progress=False)
    test_entries = load_datalist(test_dir / "datalist.json", "test")
    loader = LoadDicomFrame()
    title = f"catheter tips, fixed synthetic test set ({args.n_test} frames, seed {args.test_seed})"
    rows, points = [], []
    for run in args.runs:
        summary = json.loads((run / "results.json").read_text())
        model = run / "bundle" / "models" / "model.pt"
        val_entries = load_datalist(run / "data" / "datalist.json", "validation")
        for mode in ("plain", "tta"):
            tta = TestTimeAugmentation(flip_axes=(0, 1)) if mode == "tta" else None
            tag = f"{run.name}_{mode}"
            val = _predict(model, val_entries, out / "inference" / f"{tag}_val", loader, False, tta)
            start = time.perf_counter()
            test = _predict(model, test_entries, out / "inference" / f"{tag}_test", loader, False, tta)
            infer_s = time.perf_counter() - start
            val_err = np.array([f.error(f.prediction) for f in val])
            try:
                threshold = choose_confidence_threshold([f.confidence for f in val], val_err, OUTLIER_RADIUS_PX)
            except ValueError:
                threshold = math.nan
            errors = np.array([f.error(f.prediction) for f in test])
            conf = np.array([f.confidence for f in test])
            wrong = ~(errors <= OUTLIER_RADIUS_PX)
            flagged = conf < threshold
            rows.append(
                {
                    **run_columns(run, summary),
                    "inference": mode,
                    **statistics(errors, conf, OUTLIER_RADIUS_PX, (2.0, 4.0)),
                    "threshold": threshold,
                    "flagged_wrong": f"{int((flagged & wrong).sum())}/{int(wrong.sum())}",
                    "flagged_right": f"{int((flagged & ~wrong).sum())}/{int((~wrong).sum())}",
                    **timing_columns(summary),
                    "test_infer_s": infer_s,
                }
            )
            points += [
                {"run": run.name, "inference": mode, "image": f.image, "frame": f.frame, "error_px": e, "confidence": c}
                for f, e, c in zip(test, errors, conf, strict=True)
            ]
            write_table(rows, out, title)
        if args.training_frames:
            rows.append(training_frames_row(run, summary, model, out, loader))
            write_table(rows, out, title)
    with (out / "points.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(points[0]))
        writer.writeheader()
        writer.writerows(points)


def training_frames_row(run: Path, summary: dict, model: Path, out: Path, loader: LoadDicomFrame) -> dict:
    """The run's model on its own training frames (plain inference, no augmentation): a row of the results table.

    A model that misses the tip on frames it was trained on has not fitted them; the gap to the test rows is what
    it has not learnt to generalise.
    """
    entries = load_datalist(run / "data" / "datalist.json", "training")
    frames = _predict(model, entries, out / "inference" / f"{run.name}_plain_training", loader, False, None)
    errors = np.array([f.error(f.prediction) for f in frames])
    return {
        **run_columns(run, summary),
        "inference": "plain, own training frames",
        **statistics(errors, np.array([f.confidence for f in frames]), OUTLIER_RADIUS_PX, (2.0, 4.0)),
        **timing_columns(summary),
    }


def run_columns(run: Path, summary: dict) -> dict:
    """The columns that name a demo run in the results table: its folder, network and channels (``results.json``)."""
    profile = summary["profile"]
    return {
        "run": run.name,
        "network": profile.get("network", "catheter_unet"),
        "channels": "-".join(map(str, profile["channels"])),
    }


def timing_columns(summary: dict) -> dict:
    """The run's own training and total demo wall times (``results.json``), s."""
    return {"train_s": summary["timings_s"]["training"], "demo_total_s": summary["timings_s"]["total"]}


# ----------------------------------------------------------------------------------------------- hand


def hand_parser(args: argparse.Namespace, seed: int) -> ConfigParser:
    datalist = args.output_dir / "datalist.json"
    datalist.write_text(json.dumps(hand_xray_datalist(args.data), indent=1), encoding="utf-8")
    parser = ConfigParser()
    parser.read_config(str(bundle_path("hand_xray_landmarks") / "configs" / "train.json"))
    augmentation = parser["train"]["augmentation"]
    if args.translate > 0:
        augmentation = [
            {
                "_target_": "monai.transforms.RandAffined",
                "keys": "image",
                "prob": 1.0,
                "translate_range": [args.translate, args.translate],
                "rotate_range": [args.rotate],
                "scale_range": [args.scale, args.scale],
                "padding_mode": "zeros",
                "mode": "bilinear",
            },
            *augmentation,
        ]
    parser.update(
        {
            "bundle_root": str(args.output_dir),
            "datalist": str(datalist),
            "num_workers": 0,
            "seed": seed,
            "train::augmentation": augmentation,
            "validate::postprocessing::transforms::0::log_probabilities": args.heatmap_output == "log_probability",
        }
    )
    return parser


def make_network(name: str, norm: str = "batch", output: str = "heatmap", **scn: int) -> torch.nn.Module:
    num = len(HAND_XRAY_LANDMARKS)
    if name == "scn":
        return SpatialConfigurationNet(2, 1, num, channels=(16, 32, 64, 128), norm=norm, output=output, **scn)
    if name == "unet":  # the bundle's network before this benchmark
        return HeatmapUNet(2, 1, num, channels=(8, 16, 32, 64, 128), kernel_size=5, output=output)
    if name == "unet_coord":
        return HeatmapUNet(2, 1, num, channels=(16, 32, 64, 128, 128), kernel_size=3, coordinates=True, output=output)
    raise ValueError(f"Unknown network {name!r}.")


@torch.no_grad()
def hand_predict(
    network, dataset, postprocessing, tta: TestTimeAugmentation | None, log_probabilities: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Errors ``(N, L)`` in PNG pixels, confidence ``(N, L)`` (the decoder's peak value, or the TTA confidence)
    and ``(N, L)`` the index of the true landmark nearest to each prediction (a landmark "swapped" with
    another one answers on its neighbour: nearest != own index)."""
    from monai_adaloss.decoding import decode_single_instance

    network.eval()
    errors, confidence, nearest = [], [], []
    for start in range(0, len(dataset), 4):
        indices = range(start, min(start + 4, len(dataset)))
        batch = list_data_collate([dataset[i] for i in indices])
        images = batch["image"]
        pred = network(images)
        if tta is not None:
            decode = functools.partial(decode_single_instance, log_probabilities=log_probabilities)
            tta_points, tta_conf, _ = tta(images.as_tensor(), network, decode)
        for row, (sample, out) in enumerate(zip(decollate_batch(batch), decollate_batch({"pred": pred}), strict=True)):
            data = {"pred": out["pred"], "label": sample["label"], "label_original": sample["label_original"]}
            _, data = engine_apply_transform(sample, data, postprocessing)
            if tta is not None:  # the TTA points replace the plain decoding before mapping back to the PNG
                data["pred_points"] = data["pred_points"].new_tensor(tta_points[row])
                data["pred_confidence"] = tta_conf[row]
                data.pop("pred_points_original")
                data.pop("label_points_original")
                _, data = engine_apply_transform(sample, data, Compose(postprocessing.transforms[1:]))
            pred_png, true_png = data["pred_points_original"].as_tensor(), data["label_points_original"].as_tensor()
            errors.append(torch.linalg.vector_norm(pred_png - true_png, dim=-1)[:, 0].double().numpy())
            confidence.append(torch.as_tensor(data["pred_confidence"]).reshape(-1).double().numpy())
            distances = torch.cdist(pred_png[:, 0].double(), true_png[:, 0].double()).nan_to_num(math.inf)
            nearest.append(distances.argmin(dim=1).numpy())
    return np.stack(errors), np.stack(confidence), np.stack(nearest)


def hand_train(args: argparse.Namespace, seed: int, train_ds, val_ds, postprocessing, log) -> tuple:
    torch.manual_seed(seed)
    np.random.seed(seed)
    train_ds.transform.set_random_state(seed=seed)
    scn = {"sc_downsample": args.sc_downsample, "sc_kernel_size": args.sc_kernel, "sc_layers": args.sc_layers}
    network = make_network(args.network, args.norm, args.heatmap_output, **(scn if args.network == "scn" else {}))
    num = len(HAND_XRAY_LANDMARKS)
    if args.schedule == "default":
        schedule = AdalossSchedule.for_spatial_shape([128, 128], num)  # the package's defaults
    else:
        schedule = make_schedule(args.schedule, [128, 128], num, **dict(args.schedule_arg))
    normalize = None if args.normalize == "none" else args.normalize
    criterion = "cross_entropy" if args.heatmap_output == "log_probability" else "mse"
    loss = AdalossHeatmapLoss(schedule, normalize=normalize, target_scale=args.target_scale, criterion=criterion)
    groups = [{"params": list(network.parameters())}]
    if list(loss.parameters()):  # learned sigma: log sigma in its own group
        groups.append({"params": list(loss.parameters()), "lr": args.learned_lr})
    optimizer = torch.optim.Adam(groups, lr=args.lr)
    loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    steps = args.epochs * len(loader)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=args.lr / 100)
    best, best_state, best_epoch = math.inf, None, 0
    budget_end = time.perf_counter() + 60 * args.budget_min if args.budget_min else math.inf
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        if start > budget_end:
            log(f"seed {seed}: training budget of {args.budget_min} min spent after {epoch - 1} epochs")
            break
        network.train()
        sums = torch.zeros(num, dtype=torch.float64)
        counts = torch.zeros_like(sums)
        references = torch.zeros_like(sums)
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            value = loss(network(batch["image"].as_tensor()), batch["label"].as_tensor())
            value.backward()
            optimizer.step()
            lr_schedule.step()
            sums += loss.last_channel_sums.double()
            counts += loss.last_channel_counts.double()
            references += loss.last_channel_reference_sums.double()
        sigma_used = float(schedule.sigma.median())
        schedule.update(sums / counts, references / counts)
        errors, _, _ = hand_predict(network, val_ds, postprocessing, None)
        rate = float(np.mean(~(errors <= HAND_OUTLIER_PX)))
        median = float(np.nanmedian(errors))
        score = rate + 0.5 / errors.size * median / (median + HAND_OUTLIER_PX)
        if score < best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        log(
            f"seed {seed} epoch {epoch}/{args.epochs}: loss {float((sums / counts).mean()):.4g}, "
            f"sigma {sigma_used:.2f}, "
            f"val outliers {100 * rate:.1f} %, median {median:.2f}, mean {float(np.nanmean(errors)):.2f} PNG px "
            f"(best epoch {best_epoch}), {time.perf_counter() - start:.1f} s"
        )
    network.load_state_dict(best_state)
    return network, best_epoch, schedule


def hand(args: argparse.Namespace) -> None:
    out = args.output_dir
    rows, points = [], []
    log_file = (out / "train.log").open("a", encoding="utf-8")

    def log(line: str) -> None:
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    for seed in args.seeds:
        parser = hand_parser(args, seed)
        train_ds = parser.get_parsed_content("train::dataset")
        postprocessing = parser.get_parsed_content("validate::postprocessing")
        val_ds = parser.get_parsed_content("validate::dataset")
        parser["validate::dataset::data"] = "$monai_adaloss.bundles.load_datalist(@datalist, 'test')"
        test_ds = parser.get_parsed_content("validate::dataset", lazy=False)
        start = time.perf_counter()
        network, best_epoch, schedule = hand_train(args, seed, train_ds, val_ds, postprocessing, log)
        train_s = time.perf_counter() - start
        torch.save({"model": network.state_dict(), "network": args.network}, out / f"{args.network}_seed{seed}.pt")
        for mode in ("plain", "tta"):
            tta = TestTimeAugmentation() if mode == "tta" else None  # shifts only: no flip in training
            log_probabilities = args.heatmap_output == "log_probability"
            val_err, val_conf, _ = hand_predict(network, val_ds, postprocessing, tta, log_probabilities)
            try:
                threshold = choose_confidence_threshold(val_conf.ravel(), val_err.ravel(), HAND_OUTLIER_PX)
            except ValueError:  # no right (or no wrong) validation point: no threshold, nothing flagged
                threshold = math.nan
            errors, conf, nearest = hand_predict(network, test_ds, postprocessing, tta, log_probabilities)
            swapped = nearest != np.arange(errors.shape[1])[None, :]
            wrong = ~(errors <= HAND_OUTLIER_PX)
            flagged = conf < threshold
            rows.append(
                {
                    "network": args.network,
                    "heatmap_output": args.heatmap_output,
                    "schedule": " ".join([args.schedule, *(f"{k}={v}" for k, v in args.schedule_arg)]),
                    "seed": seed,
                    "inference": mode,
                    "epochs": args.epochs,
                    "best_epoch": best_epoch,
                    "final_sigma_median": float(schedule.sigma.median()),
                    **statistics(errors.ravel(), conf.ravel(), HAND_OUTLIER_PX, (2 * HAND_SCALE, 4 * HAND_SCALE)),
                    "swapped_rate": float(swapped.mean()),
                    "threshold": threshold,
                    "flagged_wrong": f"{int((flagged & wrong).sum())}/{int(wrong.sum())}",
                    "flagged_right": f"{int((flagged & ~wrong).sum())}/{int((~wrong).sum())}",
                    "train_s": train_s,
                }
            )
            points += [
                {"seed": seed, "inference": mode, "image": i, "landmark": HAND_XRAY_LANDMARKS[j],
                 "error_png_px": float(errors[i, j]), "confidence": float(conf[i, j]),
                 "nearest_true_landmark": HAND_XRAY_LANDMARKS[int(nearest[i, j])]}
                for i in range(errors.shape[0]) for j in range(errors.shape[1])
            ]  # fmt: skip
        write_table(rows, out, "hand X-ray test split (21 images x 37 landmarks), errors in PNG px (longer side 512)")
        with (out / "points.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(points[0]))
            writer.writeheader()
            writer.writerows(points)


def _key_value(text: str) -> tuple[str, float | str]:
    key, _, value = text.partition("=")
    try:
        return key, float(value)
    except ValueError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="task", required=True)
    cath = sub.add_parser("catheter", help="evaluate demo runs on a fixed synthetic test set")
    cath.add_argument("--runs", type=Path, nargs="+", required=True, help="monai-adaloss demo output folders")
    cath.add_argument("--n-test", type=int, default=200)
    cath.add_argument("--test-seed", type=int, default=1000)
    cath.add_argument(
        "--training-frames", action="store_true", help="also score each run's model on its own training frames (plain)"
    )
    hand_cmd = sub.add_parser("hand", help="train and evaluate on the hand X-ray splits")
    hand_cmd.add_argument("--data", type=Path, required=True)
    hand_cmd.add_argument("--network", choices=("scn", "unet", "unet_coord"), default="scn")
    hand_cmd.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    hand_cmd.add_argument("--epochs", type=int, default=60)
    hand_cmd.add_argument("--batch-size", type=int, default=4)
    hand_cmd.add_argument("--lr", type=float, default=1e-3)
    hand_cmd.add_argument("--translate", type=float, default=8.0, help="random translation, px of the 128 grid")
    hand_cmd.add_argument(
        "--schedule", default="default", help="'default' (AdalossSchedule's defaults) or a make_schedule name"
    )
    hand_cmd.add_argument(
        "--schedule-arg", type=_key_value, nargs="*", default=[], help="make_schedule keyword arguments, key=value"
    )
    hand_cmd.add_argument("--rotate", type=float, default=0.0, help="random rotation in the affine, radians")
    hand_cmd.add_argument("--scale", type=float, default=0.0, help="random scale in the affine, fraction")
    hand_cmd.add_argument("--sc-downsample", type=int, default=4, help="SCN: pooling of the configuration branch")
    hand_cmd.add_argument("--sc-kernel", type=int, default=7, help="SCN: kernel of the configuration branch")
    hand_cmd.add_argument("--sc-layers", type=int, default=3, help="SCN: convolutions of the configuration branch")
    hand_cmd.add_argument("--normalize", choices=("none", "peak", "mean"), default="mean", help="target scaling")
    hand_cmd.add_argument("--target-scale", type=float, default=1.0, help="factor on the rendered targets")
    hand_cmd.add_argument(
        "--heatmap-output",
        choices=("heatmap", "log_probability"),
        default="heatmap",
        help="linear heatmaps with a squared error, or spatial log-softmax with cross-entropy",
    )
    hand_cmd.add_argument("--norm", default="batch", help="normalisation of the SCN's local-appearance U-Net")
    hand_cmd.add_argument("--learned-lr", type=float, default=5e-2, help="learning rate of a learned sigma")
    hand_cmd.add_argument("--budget-min", type=float, default=None, help="stop training after this many minutes")
    for cmd in (cath, hand_cmd):
        cmd.add_argument("--output-dir", type=Path, required=True)
        cmd.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (catheter if args.task == "catheter" else hand)(args)


if __name__ == "__main__":
    main()
