"""How well a detector's confidence separates right from wrong detections, and a flag threshold.

- :func:`outlier_auroc`: the area under the ROC curve of *low* confidence as a detector of gross
  errors (error > radius, or no prediction): the probability that a random wrong detection has a
  lower confidence than a random right one (ties count one half; the Mann-Whitney U statistic).
  0.5 is chance, 1 is a perfect separation.
- :func:`choose_confidence_threshold`: the threshold below which a record gets
  ``flag: low_confidence``, chosen on validation data as the ``quantile`` of the right detections'
  confidences (so about ``quantile`` of the right detections are flagged) — a rule that is defined
  even when the validation set holds no gross error; when it does hold some, the threshold is raised
  to the value that maximises Youden's J (flagged wrong share minus flagged right share) if that
  flags more of them.

All inputs are 1D sequences over detections (frames x landmarks), errors in any one unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["choose_confidence_threshold", "outlier_auroc", "wrong_mask"]


def wrong_mask(errors: Sequence[float], radius: float) -> np.ndarray:
    """``True`` where a detection is a gross error: error > ``radius`` or NaN (no prediction)."""
    errors = np.asarray(errors, dtype=np.float64)
    return ~(errors <= radius)


def outlier_auroc(confidence: Sequence[float], errors: Sequence[float], radius: float) -> float:
    """AUROC of low confidence for ``error > radius``; NaN when all detections are right or all wrong."""
    confidence = np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=-np.inf)
    wrong = wrong_mask(errors, radius)
    if confidence.shape != wrong.shape:
        raise ValueError(f"`confidence` and `errors` must have the same length, got {confidence.shape} {wrong.shape}.")
    n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
    if n_wrong == 0 or n_right == 0:
        return math.nan
    right_conf, wrong_conf = confidence[~wrong], confidence[wrong]
    greater = (right_conf[:, None] > wrong_conf[None, :]).sum()
    ties = (right_conf[:, None] == wrong_conf[None, :]).sum()
    return float((greater + 0.5 * ties) / (n_wrong * n_right))


def choose_confidence_threshold(
    confidence: Sequence[float], errors: Sequence[float], radius: float, quantile: float = 0.05
) -> float:
    """The ``low_confidence`` threshold from validation detections (module docstring).

    Raises:
        ValueError: with no right detection to calibrate on, or a quantile outside (0, 1).
    """
    if not 0 < quantile < 1:
        raise ValueError(f"Argument `quantile` must be in (0, 1), got {quantile}.")
    confidence = np.asarray(confidence, dtype=np.float64)
    wrong = wrong_mask(errors, radius)
    right_conf = confidence[~wrong & np.isfinite(confidence)]
    if right_conf.size == 0:
        raise ValueError("No right detection (error <= radius) to choose a confidence threshold on.")
    threshold = float(np.quantile(right_conf, quantile))
    wrong_conf = confidence[wrong & np.isfinite(confidence)]
    if wrong_conf.size:
        best_j = -math.inf
        best = threshold
        for candidate in np.unique(np.concatenate([right_conf, wrong_conf])):
            above = np.nextafter(candidate, math.inf)  # flag everything <= candidate
            j = float((wrong_conf < above).mean() - (right_conf < above).mean())
            if j > best_j:
                best_j, best = j, float(above)
        threshold = max(threshold, best)
    return threshold
