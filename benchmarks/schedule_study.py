"""What the schedule studies share (``hand_schedule_study.py``, ``catheter_schedule_study.py``).

The schedules compared, as ``--schedule`` / ``--schedule-arg`` arguments (the same settings on both
tasks), and the mean with its 95 % t-interval over seeds.
"""

from __future__ import annotations

import math

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
