"""Sigma schedules on the real hand radiographs, several seeds, paired: the 2D evidence of issue #16.

Runs ``benchmarks/outliers.py hand`` once per schedule (all seeds in one process, same recipe, same
epochs, same data order per seed), then aggregates the test-split rows of every run into one table:
per schedule the mean over seeds of MRE, median, p95, outlier rate (> 20 PNG px), SDR at 8 / 16 PNG
px, the swapped rate (predictions nearer to another landmark's truth) and the final median sigma,
with a 95 % t-interval over seeds; then paired per-seed differences of MRE and outlier rate against
``--reference`` (same seed = same initial weights and data order).

Schedules (``NAME=outliers.py arguments``; ``--schedules`` picks a subset):

- ``default``: ``AdalossSchedule``'s defaults (eq. 5, step bound 20 %, floor 2; what the package ships);
- ``paper``: eq. 5 without bound or cap (floor 0.5);
- ``spread``: the spread rule with a 50 % step bound;
- ``geometric``: ``sigma_0 * 0.7^(t / 3)``, floor 2 (sigma 3 by epoch 20);
- ``learned``: sigma learned by gradient with a size penalty (Payer et al.), starting at 3 px;
- ``fixed_<s>``: a fixed sigma of s px of the 128 grid.

    python benchmarks/hand_schedule_study.py --data ../shared/data/hand_xray --seeds 0 1 2 --epochs 30 \\
        --output-dir benchmarks_out/hand_schedules [--schedules default spread fixed_3 ...] [-- extra outliers.py args]

Errors are in PNG pixels (longer side 512), evaluated on the 21 test images (777 points) with the epoch
that had the best validation score (outlier rate, then median).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

from schedule_study import interval, schedule_arguments, summary_table

METRICS = ("mean", "median", "p95", "outlier_rate", "sdr_8", "sdr_16", "swapped_rate", "final_sigma_median")


def read_rows(folder: Path) -> dict[int, dict]:
    """The plain-inference rows of one run folder, by seed."""
    with (folder / "results.csv").open(newline="") as handle:
        return {int(row["seed"]): row for row in csv.DictReader(handle) if row["inference"] == "plain"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--schedules", nargs="+", default=["default", "paper", "spread", "geometric", "learned", "fixed_3"]
    )
    parser.add_argument("--reference", default="default", help="schedule the paired differences are taken against")
    parser.add_argument("--aggregate-only", action="store_true", help="only aggregate the existing run folders")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("outliers.py")
    for name in args.schedules:
        folder = args.output_dir / name
        done = (folder / "results.csv").exists() and set(read_rows(folder)) >= set(args.seeds)
        if args.aggregate_only or done:
            continue
        command = [sys.executable, str(script), "hand", "--data", str(args.data), "--network", "scn",
                   "--seeds", *map(str, args.seeds), "--epochs", str(args.epochs), "--output-dir", str(folder),
                   *schedule_arguments(name, ["--schedule", "default"]), *extra]  # fmt: skip
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    rows = {name: read_rows(args.output_dir / name) for name in args.schedules if (args.output_dir / name).exists()}
    lines = [
        f"# Hand X-ray test split, {len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}), {args.epochs} epochs",
        "",
        "Mean over seeds [95 % t-interval]; errors in PNG px (longer side 512).",
        "",
    ]
    lines += summary_table(rows, args.seeds, METRICS)
    reference = rows.get(args.reference)
    if reference:
        lines += ["", f"Paired per seed against `{args.reference}` (other minus reference; negative = better):", ""]
        lines += [
            "| schedule | MRE difference [95 %] | outlier-rate difference [95 %] | seeds better (MRE) |",
            "|---|---|---|---|",
        ]
        for name, by_seed in rows.items():
            if name == args.reference:
                continue
            seeds = [s for s in args.seeds if s in by_seed and s in reference]
            if not seeds:
                continue
            mre = [float(by_seed[s]["mean"]) - float(reference[s]["mean"]) for s in seeds]
            rate = [float(by_seed[s]["outlier_rate"]) - float(reference[s]["outlier_rate"]) for s in seeds]
            a, b = interval(mre), interval(rate)
            better = sum(d < 0 for d in mre)
            lines.append(
                f"| {name} | {a[0]:+.2f} [{a[1]:+.2f}, {a[2]:+.2f}] | {b[0]:+.3f} [{b[1]:+.3f}, {b[2]:+.3f}] "
                f"| {better}/{len(seeds)} |"
            )
    text = "\n".join(lines) + "\n"
    (args.output_dir / "study.md").write_text(text, encoding="utf-8")
    print(text, flush=True)


if __name__ == "__main__":
    main()
