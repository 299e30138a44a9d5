"""Sigma schedules on the catheter task, several seeds, paired: the catheter evidence of issue #16.

Runs ``monai-adaloss demo --profile adaloss`` (the paper's recipe: squared error, the bundle's Adaloss
schedule, 30 epochs; the demo's default profile before session 8; extra demo arguments after ``--`` come
later on the command line and win, e.g. ``-- --tiny`` or ``-- --profile cpu``)
once per schedule and seed, each in its own folder ``<output-dir>/<schedule>/seed<k>`` (a folder
with a ``results.json`` is reused, so an interrupted study resumes), then aggregates the test frames
of every run: per schedule the mean over seeds of the tip error's mean, median and p95 (pixels of
the 256 x 256 frame), the outlier rate (> 10 px), SDR at 2 and 4 px, the confidence AUROC for
"error > 10 px", the final sigma and the training time, with a 95 % t-interval over seeds; then
paired per-seed differences against ``--reference``. One seed sets the synthetic data, the
initial weights and the data order, so runs of one seed differ only by their schedule.

Schedules (``--schedules`` picks a subset; the same settings as ``hand_schedule_study.py``):

- ``default``: the bundle's own ``AdalossSchedule`` (eq. 5, step bound 20 %, floor 2; what ships);
- ``paper``: eq. 5 without bound or cap (floor 0.5);
- ``spread``: the spread rule with a 50 % step bound;
- ``geometric``: ``sigma_0 * 0.7^(t / 3)``, floor 2;
- ``learned``: sigma learned by gradient with a size penalty (Payer et al.), from 3 px, mean-normalised targets;
- ``fixed_<s>``: a fixed sigma of s px of the 128 input grid.

    python benchmarks/catheter_schedule_study.py --seeds 0 1 2 --output-dir benchmarks_out/catheter_schedules \\
        [--schedules default learned fixed_3 ...] [-- extra monai-adaloss demo arguments]

``--link NAME:SEED=FOLDER`` uses an existing demo output folder as that run (for example a default
run made before the study).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from schedule_study import interval, schedule_arguments, summary_table

METRICS = ("mean", "median", "p95", "outlier_rate", "sdr_2", "sdr_4", "confidence_auroc", "final_sigma")
OUTLIER_RADIUS_PX = 10.0


def run_row(folder: Path) -> dict[str, float]:
    """The metrics of one demo output folder (``results.json`` and ``predictions.csv``)."""
    result = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    with (folder / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        error = np.array([float(row["error_px"] or "nan") for row in csv.DictReader(handle)])
    error = np.where(np.isnan(error), np.inf, error)  # a missed tip counts as a gross error
    return {
        "mean": result["model"]["mean_px"],
        "median": result["model"]["median_px"],
        "p95": result["model"]["p95_px"],
        "outlier_rate": float(np.mean(error > OUTLIER_RADIUS_PX)),
        "sdr_2": float(np.mean(error <= 2.0)),
        "sdr_4": float(np.mean(error <= 4.0)),
        "confidence_auroc": result["confidence_auroc"],
        "final_sigma": float(np.median(result["final_sigma"])),
        "train_s": result["timings_s"]["training"],
    }


def _link(text: str) -> tuple[str, int, Path]:
    name_seed, sep, folder = text.partition("=")
    name, _, seed = name_seed.partition(":")
    if not sep or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME:SEED=FOLDER, got {text!r}")
    return name, int(seed), Path(folder)


def table(rows: dict[str, dict[int, dict[str, float]]], seeds: list[int], reference: str) -> str:
    """Markdown: the per-schedule means with intervals, then the paired differences against ``reference``."""
    lines = [
        f"# Catheter test frames, seeds {', '.join(map(str, seeds))}",
        "",
        "Mean over seeds [95 % t-interval]; errors in px of the 256 x 256 frame; outlier: > 10 px.",
        "",
    ]
    lines += summary_table(rows, seeds, METRICS)
    if reference in rows:
        lines += ["", f"Paired per seed against `{reference}` (other minus reference; negative = better):", ""]
        lines += ["| schedule | seeds | mean difference [95 %] | outlier-rate difference [95 %] | better (mean) |"]
        lines += ["|---|---|---|---|---|"]
        for name, by_seed in rows.items():
            paired = [s for s in seeds if s in by_seed and s in rows[reference]]
            if name == reference or not paired:
                continue
            mean = interval([by_seed[s]["mean"] - rows[reference][s]["mean"] for s in paired])
            rate = interval([by_seed[s]["outlier_rate"] - rows[reference][s]["outlier_rate"] for s in paired])
            better = sum(by_seed[s]["mean"] < rows[reference][s]["mean"] for s in paired)
            lines.append(
                f"| {name} | {len(paired)} | {mean[0]:+.2f} [{mean[1]:+.2f}, {mean[2]:+.2f}] | "
                f"{rate[0]:+.3f} [{rate[1]:+.3f}, {rate[2]:+.3f}] | {better}/{len(paired)} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--schedules", nargs="+", default=["default", "paper", "spread", "geometric", "learned"])
    parser.add_argument("--reference", default="default", help="schedule the paired differences are taken against")
    parser.add_argument("--link", type=_link, nargs="*", default=[], metavar="NAME:SEED=FOLDER")
    parser.add_argument("--aggregate-only", action="store_true", help="only aggregate the existing run folders")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    for name, seed, folder in args.link:
        target = args.output_dir / name / f"seed{seed}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(folder.absolute(), target_is_directory=True)
    for name in args.schedules:
        for seed in args.seeds:
            folder = args.output_dir / name / f"seed{seed}"
            if args.aggregate_only or (folder / "results.json").exists():
                continue
            command = [sys.executable, "-m", "monai_adaloss", "demo", "--quiet", "--seed", str(seed),
                       "--output-dir", str(folder), "--profile", "adaloss", *schedule_arguments(name, []),
                       *extra]  # fmt: skip
            print("+", " ".join(command), flush=True)
            subprocess.run(command, check=False)  # exit 1 = not better than the centre guess: still a result
    rows = {}
    for name in args.schedules:
        by_seed = {s: run_row(args.output_dir / name / f"seed{s}") for s in args.seeds
                   if (args.output_dir / name / f"seed{s}" / "results.json").exists()}  # fmt: skip
        if by_seed:
            rows[name] = by_seed
    text = table(rows, args.seeds, args.reference)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "study.md").write_text(text, encoding="utf-8")
    print(text, flush=True)


if __name__ == "__main__":
    main()
