"""What the schedule studies share (``hand_schedule_study.py``, ``catheter_schedule_study.py``).

The schedules compared, as ``--schedule`` / ``--schedule-arg`` arguments (the same settings on both
tasks), and the mean with its 95 % t-interval over seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

SCHEDULE_ARGUMENTS: dict[str, list[str]] = {
    "paper": ["--schedule", "paper"],
    "spread": ["--schedule", "spread", "--schedule-arg", "max_step_fraction=0.5"],
    "geometric": ["--schedule", "geometric", "--schedule-arg", "rate=0.7", "period=3", "sigma_min=2"],
    "learned": ["--schedule", "learned", "--schedule-arg", "sigma_0=3", "penalty_weight=1e-3", "sigma_min=1"],
}
"""``paper``: eq. 5 without bound or cap (floor 0.5); ``spread``: the spread rule, 50 % step bound;
``geometric``: ``sigma_0 * 0.7^(t / 3)``, floor 2; ``learned``: sigma learned by gradient with a size
penalty (Payer et al.) from 3 px. ``fixed_<s>``: a fixed sigma of s px. ``default`` is each script's own."""


def schedule_arguments(name: str, default: list[str]) -> list[str]:
    """The ``--schedule`` arguments of ``name`` (``default``, ``fixed_<s>`` or a key of ``SCHEDULE_ARGUMENTS``)."""
    if name == "default":
        return default
    if name.startswith("fixed_"):
        return ["--schedule", "fixed", "--schedule-arg", f"sigma={float(name.removeprefix('fixed_'))}"]
    if name not in SCHEDULE_ARGUMENTS:
        raise SystemExit(
            f"Unknown schedule {name!r}: use default, fixed_<sigma> or one of {sorted(SCHEDULE_ARGUMENTS)}."
        )
    return SCHEDULE_ARGUMENTS[name]


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval bounds of the finite ``values`` (NaN bounds for fewer than two)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size < 2:
        return (float(finite.mean()) if finite.size else math.nan), math.nan, math.nan
    mean = float(finite.mean())
    half = stats.t.ppf(0.975, finite.size - 1) * float(finite.std(ddof=1)) / math.sqrt(finite.size)
    return mean, mean - half, mean + half


def summary_table(rows: Mapping[str, Mapping[int, Mapping[str, object]]], seeds: Sequence[int],
                  metrics: Sequence[str]) -> list[str]:  # fmt: skip
    """Markdown lines: per schedule, the mean [95 % t-interval] of each metric over ``seeds`` and the training time.

    ``rows``: schedule -> seed -> metric values (numbers or their text, as read from a CSV), with ``train_s``.
    """
    lines = ["| schedule | seeds | " + " | ".join(metrics) + " | train s |", "|---|---|" + "---|" * (len(metrics) + 1)]
    for name, by_seed in rows.items():
        done = [s for s in seeds if s in by_seed]
        cells = []
        for metric in metrics:
            mean, low, high = interval([float(by_seed[s][metric]) for s in done])
            cells.append(f"{mean:.3g} [{low:.3g}, {high:.3g}]" if math.isfinite(low) else f"{mean:.3g}")
        train = statistics.fmean(float(by_seed[s]["train_s"]) for s in done)
        lines.append(f"| {name} | {len(done)} | " + " | ".join(cells) + f" | {train:.0f} |")
    return lines
