"""The paper's Figure 4 from the catheter sigma sweep: validation tip distance per epoch, fixed sigma vs Adaloss.

Reads one or more ``per_epoch.csv`` files written by ``benchmarks/catheter_sigma_sweep.py`` (a sweep may be
split over several processes with ``--runs``; a run found in two files must have identical rows) and draws
one panel per learning rate: the fixed-sigma runs (``fixed_*``) and Adaloss at that learning rate
(``adaloss_lr*``). The y axis is the validation mean (or median) tip distance at 256-equivalent pixels.

    python benchmarks/plot_lr_study.py benchmarks_out/sweep128_a/per_epoch.csv benchmarks_out/sweep128_b/per_epoch.csv \
        --output docs/images/lr_study.png [--statistic median]
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_runs(paths: Sequence[Path]) -> dict[str, list[dict[str, str]]]:
    """Rows per run name, ordered by epoch, from the per-epoch CSV files.

    Raises:
        ValueError: a file lacks the sweep's columns, or a run appears in two files with different rows.
    """
    runs: dict[str, list[dict[str, str]]] = {}
    for path in paths:
        with open(path, newline="") as stream:
            reader = csv.DictReader(stream)
            missing = {"run", "lr", "epoch", "val_mean_px_256", "val_median_px_256"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: not a sweep per_epoch.csv, missing columns {sorted(missing)}.")
            found: dict[str, list[dict[str, str]]] = {}
            for row in reader:
                found.setdefault(row["run"], []).append(row)
        for name, rows in found.items():
            rows.sort(key=lambda row: int(row["epoch"]))
            if name in runs and runs[name] != rows:
                raise ValueError(f"{path}: run {name!r} differs from the same run in an earlier file.")
            runs[name] = rows
    return runs


def plot_lr_study(runs: dict[str, list[dict[str, str]]], output: Path, statistic: str = "mean") -> Path:
    """One panel per Adaloss learning rate; fixed-sigma runs (all at their own lr) drawn in every panel."""
    column = f"val_{statistic}_px_256"
    adaloss = sorted((name for name in runs if name.startswith("adaloss_lr")), key=lambda n: -float(runs[n][0]["lr"]))
    fixed = sorted((name for name in runs if name.startswith("fixed_")), key=lambda n: float(n.split("_")[1]))
    if not adaloss or not fixed:
        raise ValueError(f"Need fixed_* and adaloss_lr* runs, got {sorted(runs)}.")
    fig, axes = plt.subplots(1, len(adaloss), figsize=(6 * len(adaloss), 4.2), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], adaloss, strict=True):
        for other in fixed:
            rows = runs[other]
            ax.plot([int(r["epoch"]) for r in rows], [float(r[column]) for r in rows], lw=1.2,
                    label=f"fixed sigma {other.split('_')[1]} (lr {float(rows[0]['lr']):g})")  # fmt: skip
        rows = runs[name]
        ax.plot([int(r["epoch"]) for r in rows], [float(r[column]) for r in rows], "k", lw=2.2,
                label=f"Adaloss (lr {float(rows[0]['lr']):g})")  # fmt: skip
        ax.set_title(f"Adaloss at lr {float(rows[0]['lr']):g}")
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"validation {statistic} tip distance (px, 256-eq.)")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("per_epoch", type=Path, nargs="+", help="per_epoch.csv files of the sweep")
    parser.add_argument("--output", type=Path, default=Path("lr_study.png"))
    parser.add_argument("--statistic", choices=("mean", "median"), default="mean")
    args = parser.parse_args(argv)
    path = plot_lr_study(read_runs(args.per_epoch), args.output, args.statistic)
    print(f"written: {path}")
    return path


if __name__ == "__main__":
    main()
