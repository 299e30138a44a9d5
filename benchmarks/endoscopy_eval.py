"""The paper's Table 4 (EndoVis clasper detection) on synthetic laparoscopic frames, through the bundle.

1. ``make_endoscopy_dataset`` writes ``--n-train`` / ``--n-val`` / ``--n-test`` RGB PNG frames of
   ``--frame-size`` (rows columns) with 1 to 3 needle drivers each (their left and right claspers are the
   landmarks), plus a ``test_scissors`` split of ``--n-test`` frames in which one instrument is a curved
   scissors: a tool type never seen in training, whose jaws are not labelled (an unseen distractor).
2. ``bundles/endoscopic_tool_landmarks/configs/train.json`` is run through ``monai.bundle.ConfigWorkflow``
   for ``--epochs`` epochs at ``--input-size`` (tensor-axis order ``x y``) with ``--channels`` U-Net
   channels; everything else is the bundle's (Adam 1e-3, per-landmark Adaloss, augmentation, median
   filter + NMS decoding scaled to the input size, best ``val_f1`` model saved as ``models/model.pt``).
3. ``train.json`` + ``evaluate.json`` evaluate ``models/model.pt`` on the test frames without scissors,
   with scissors, and on both together ("full"), and the table prints recall, precision and the mean
   matched distance (original-frame pixels) per clasper type. A prediction matches an annotated clasper
   of its type within ``--match-radius`` original pixels, one-to-one (Hungarian matching).

    python benchmarks/endoscopy_eval.py --output-dir endo_out [--n-train 384] [--n-val 40] [--n-test 60]
        [--frame-size 96 120] [--input-size 60 48] [--epochs 36] [--channels 8 16 32] [--batch-size 8]
        [--match-radius 6] [--seed 0] [--threads 1]

Outputs in ``--output-dir``: ``data/`` (frames and datalist), ``bundle/`` (models, TensorBoard logs,
metrics.csv), ``results.md`` (the table, settings and timings).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigWorkflow

from monai_adaloss.bundles import bundle_path
from monai_adaloss.synthetic.endoscopy import LANDMARK_NAMES, EndoscopyConfig, make_endoscopy_dataset

SPLITS = {
    "without scissors": "['test']",
    "with scissors": "['test_scissors']",
    "full": "['test', 'test_scissors']",
}
"""Table columns -> datalist splits evaluated together."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--n-train", type=int, default=384)
    parser.add_argument("--n-val", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--frame-size", type=int, nargs=2, default=[96, 120], metavar=("ROWS", "COLUMNS"))
    parser.add_argument("--input-size", type=int, nargs=2, default=[60, 48], metavar=("X", "Y"))
    parser.add_argument("--epochs", type=int, default=36)
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--match-radius", type=float, default=6.0, help="match radius, original-frame pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def workflow(configs: list[str], kind: str, args: argparse.Namespace, **override: Any) -> ConfigWorkflow:
    """An initialised ``ConfigWorkflow`` of the bundle's configs with the benchmark's settings."""
    bundle = bundle_path("endoscopic_tool_landmarks")
    wf = ConfigWorkflow(
        config_file=[str(bundle / "configs" / name) for name in configs],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=kind,
        bundle_root=str(args.output_dir / "bundle"),
        dataset_dir=str(args.output_dir / "data"),
        input_size=list(args.input_size),
        network_channels=list(args.channels),
        train_batch_size=args.batch_size,
        val_batch_size=args.batch_size,
        num_workers=0,
        match_radius_px=args.match_radius,
        seed=args.seed,
        **override,
    )
    wf.initialize()
    return wf


def evaluate(args: argparse.Namespace, splits: str) -> dict[str, float]:
    """Evaluate ``models/model.pt`` on the frames of ``splits`` (a Python list literal of datalist splits)."""
    data = f"$sum((monai_adaloss.bundles.load_datalist(@datalist, s) for s in {splits}), [])"
    wf = workflow(["train.json", "evaluate.json"], "eval", args, **{"validate::dataset::data": data})
    wf.run()
    metrics = dict(wf.parser.get_parsed_content("evaluator").state.metrics)
    wf.finalize()
    return metrics


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown table: rows = clasper type x score, columns = test subsets."""
    lines = [
        "| clasper | score | " + " | ".join(results) + " |",
        "|---|---|" + "---|" * len(results),
    ]
    scores = (("recall", "recall (%)", 100.0), ("precision", "precision (%)", 100.0))
    scores += (("mean_distance", "mean matched distance (px)", 1.0),)
    for name in LANDMARK_NAMES:
        for key, label, scale in scores:
            values = [metrics[f"val_{key}_{name}"] * scale for metrics in results.values()]
            cells = " | ".join("-" if math.isnan(v) else f"{v:.2f}" for v in values)
            lines.append(f"| {name.replace('_', ' ')} | {label} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, columns = args.frame_size
    config = EndoscopyConfig(rows=rows, columns=columns)
    make_endoscopy_dataset(
        args.output_dir / "data", args.n_train, args.n_val, args.n_test, config, seed=args.seed, scissors_in_test=True
    )
    data_s = time.perf_counter() - started

    wf = workflow(["train.json"], "train", args, max_epochs=args.epochs)
    wf.run()
    schedule = wf.parser.get_parsed_content("adaloss_schedule")
    evaluator = wf.parser.get_parsed_content("validate::evaluator")
    best_epoch, best_f1 = evaluator.state.best_metric_epoch, evaluator.state.best_metric
    decoding = wf.parser.get_parsed_content("decoding")
    wf.finalize()
    train_s = time.perf_counter() - started - data_s

    results = {column: evaluate(args, splits) for column, splits in SPLITS.items()}
    total_s = time.perf_counter() - started
    sigma = schedule.sigma_history
    report = "\n".join(
        [
            table(results),
            "",
            "F1 (both clasper types): " + ", ".join(f"{c} {m['val_f1'] * 100:.2f} %" for c, m in results.items()),
            f"frames: {args.n_train} training / {args.n_val} validation / {args.n_test} test without scissors / "
            f"{args.n_test} test with scissors, {rows} x {columns} (rows x columns); input {args.input_size[0]} x "
            f"{args.input_size[1]} (x, y); U-Net channels {args.channels}; {args.epochs} epochs, batch "
            f"{args.batch_size}; decoding {json.dumps(decoding)}; match radius {args.match_radius} px",
            f"model: epoch {best_epoch} of {args.epochs} (best validation F1 {best_f1:.4f}); sigma per landmark "
            f"{[round(s, 2) for s in sigma[0].tolist()]} -> {[round(s, 2) for s in sigma[-1].tolist()]} "
            f"(at the model's epoch: {[round(s, 2) for s in sigma[best_epoch].tolist()]}) pixels of the input grid",
            f"wall time: {total_s:.0f} s (data {data_s:.0f} s, training {train_s:.0f} s, evaluation "
            f"{total_s - data_s - train_s:.0f} s); torch threads {args.threads}",
        ]
    )
    (args.output_dir / "results.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
