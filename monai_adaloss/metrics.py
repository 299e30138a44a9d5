"""Landmark metrics: point error (voxels, mm), SDR, NME and multi-instance precision / recall / F1.

A functional core of pure, batched tensor functions plus MONAI ``CumulativeIterationMetric``
wrappers that plug into MONAI evaluators through ``monai.handlers.IgniteMetricHandler``.

Conventions (DESIGN.md section 2):

- Points are float tensors ``(B, L, K, D)``: batch, landmark channels, instance slots and D = 1,
  2 or 3 coordinates in the voxel-index space of the image, in the order of the tensor's spatial
  axes (a 2D MONAI image gives ``(x, y)`` = (column, row)). A slot with any non-finite coordinate
  is absent.
- An absent ground-truth landmark is masked out of every metric; it is never a zero-distance hit.
- A missing prediction (non-finite) for a present ground-truth landmark is a *miss*: point-error
  statistics exclude it and count it separately (``LandmarkDistanceMetric.num_misses``); SDR
  counts it as a failure at every radius.
- ``spacing`` is a per-axis voxel size in mm, ``(D,)`` for the whole batch or ``(B, D)`` per
  sample, in the same axis order as the points. mm distances scale the coordinate difference
  per axis before the norm, so anisotropic voxels are handled exactly.

Spacing in the metric classes (MONAI evaluators call a metric with ``(y_pred, y)`` only), first
match wins:

1. ``metric(y_pred, y, spacing=...)`` when called by hand;
2. the ground truth's meta: when ``y`` is a ``MetaTensor`` (or a list of them, as a decollating
   engine passes) whose ``meta[spacing_key]`` (default ``"spacing"``) holds ``(D,)`` per item or
   ``(B, D)`` collated. The landmark loader puts the image's spacing there. The points' own
   ``MetaTensor.pixdim`` is *not* used: a points tensor's affine is the identity by default,
   which would silently report mm equal to voxels;
3. the constructor's ``spacing`` (one ``(D,)`` value for a dataset with a fixed voxel size).

Each class takes ``unit="voxel" | "mm"``: the space in which distances, radii and NME are
computed; ``"mm"`` needs a spacing for every sample and raises ``ValueError`` otherwise.

Keeping the best model for lower-is-better metrics: MONAI's ``Workflow`` keeps the epoch for which
``metric_cmp_fn(current, best)`` is true, and its default ``default_metric_cmp_fn`` is
``current > best`` (higher is better). Every class here has ``higher_is_better``; for the error
metrics (``LandmarkDistanceMetric``, ``NormalizedMeanErrorMetric``, ``InstanceDetectionMetric``
with ``metric_name="mean_distance"``):

- pass ``metric_cmp_fn=lower_is_better`` to ``SupervisedEvaluator`` (or any MONAI ``Workflow``)
  so that ``state.best_metric`` / ``best_metric_epoch`` track the lowest error;
- pass ``key_metric_negative_sign=True`` to ``monai.handlers.CheckpointSaver`` (with
  ``save_key_metric=True``), which keeps the checkpoints with the lowest error; with a plain
  ignite ``Checkpoint`` use ``score_function=Checkpoint.get_default_score_fn(name, score_sign=-1.0)``.

Example::

    evaluator = SupervisedEvaluator(
        device=device, val_data_loader=loader, network=net, postprocessing=decode_points,
        key_val_metric={"mean_dist": IgniteMetricHandler(
            metric_fn=LandmarkDistanceMetric(unit="mm"), output_transform=from_engine(["pred", "label"]))},
        metric_cmp_fn=lower_is_better,
    )

Heatmaps are decoded to points by a post-transform before the metric; the metrics consume points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from monai.data import MetaTensor
from monai.metrics import CumulativeIterationMetric
from scipy.optimize import linear_sum_assignment

from .heatmaps import check_points

__all__ = [
    "OUTER_EYE_CORNERS_300W",
    "InstanceDetectionMetric",
    "InstanceMatches",
    "LandmarkDistanceMetric",
    "LandmarkOutlierMetric",
    "NormalizedMeanErrorMetric",
    "SuccessDetectionRateMetric",
    "detection_scores",
    "inter_pupil_distance_300w",
    "is_present",
    "lower_is_better",
    "match_instances",
    "normalized_mean_error",
    "point_distances",
    "success_detection_rate",
]

OUTER_EYE_CORNERS_300W = (36, 45)
"""0-based indices of the outer eye corners in the 68-point 300-W / iBUG markup (inter-ocular NME)."""

Unit = Literal["voxel", "mm"]
DistanceReduction = Literal["mean", "median", "p95"]
DetectionScore = Literal["precision", "recall", "f1", "mean_distance"]
Normalizer = tuple[int, int] | Callable[[torch.Tensor], torch.Tensor]

_UNITS = ("voxel", "mm")
_DISTANCE_REDUCTIONS = ("mean", "median", "p95")
_DETECTION_SCORES = ("precision", "recall", "f1", "mean_distance")
_QUANTILES = {"median": 0.5, "p95": 0.95}


def lower_is_better(current_metric: float, prev_best: float) -> bool:
    """``metric_cmp_fn`` for MONAI workflows whose key metric is an error: ``current < prev_best``."""
    return current_metric < prev_best


# ----------------------------------------------------------------------------- argument checks


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``(B, L, K, D)`` shapes and return both as a common floating dtype."""
    check_points(pred, "pred")
    check_points(target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"Arguments `pred` and `target` must have the same shape (B, L, K, D), "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    return pred.to(dtype), target.to(dtype)


def _spacing_per_sample(
    spacing: Sequence[float] | np.ndarray | torch.Tensor, batch: int, ndim: int, like: torch.Tensor
) -> torch.Tensor:
    """Return ``spacing`` (``(D,)`` or ``(B, D)``) as a ``(B, D)`` tensor like ``like``; values finite and > 0."""
    spacing_t = torch.as_tensor(spacing, dtype=like.dtype, device=like.device)
    if spacing_t.shape == (ndim,):
        spacing_t = spacing_t.expand(batch, ndim)
    elif spacing_t.shape != (batch, ndim):
        raise ValueError(
            f"Argument `spacing` must have shape (D,)=({ndim},) or (B, D)=({batch}, {ndim}), "
            f"got {tuple(spacing_t.shape)}."
        )
    if not bool((torch.isfinite(spacing_t) & (spacing_t > 0)).all()):
        raise ValueError(f"Argument `spacing` must be finite and positive, got {spacing_t.tolist()}.")
    return spacing_t


def _check_radius(radius: float, name: str = "radius") -> float:
    value = float(radius)
    if not (value >= 0 and np.isfinite(value)):
        raise ValueError(f"Argument `{name}` must be finite and non-negative, got {radius}.")
    return value


def _check_radii(radii: Sequence[float] | torch.Tensor) -> torch.Tensor:
    radii_t = torch.as_tensor(radii, dtype=torch.float64).flatten()
    if radii_t.numel() == 0:
        raise ValueError("Argument `radii` must hold at least one radius, got none.")
    for radius in radii_t.tolist():
        _check_radius(radius, "radii")
    return radii_t


def _check_choice(value: Any, choices: tuple, name: str) -> None:
    if value not in choices:
        raise ValueError(f"Argument `{name}` must be one of {choices}, got {value!r}.")


# ----------------------------------------------------------------------------- functional core


def is_present(points: torch.Tensor) -> torch.Tensor:
    """``(B, L, K)`` bool: the slot holds a point (every coordinate finite) of ``(B, L, K, D)`` points."""
    return torch.isfinite(points).all(dim=-1)


def point_distances(
    pred: torch.Tensor,
    target: torch.Tensor,
    spacing: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Slot-wise Euclidean distance between predicted and ground-truth points.

    Slot ``k`` of ``pred`` is compared with slot ``k`` of ``target`` (single-instance use, K = 1,
    or slots already put in correspondence); use ``match_instances`` for unordered instances.

    Args:
        pred: ``(B, L, K, D)`` predicted points, voxel indices in spatial-axis order; NaN = not found.
        target: ``(B, L, K, D)`` ground truth, same convention; NaN = absent landmark.
        spacing: optional voxel size in mm, ``(D,)`` or ``(B, D)``; the distance is then in mm.

    Returns:
        ``(B, L, K)`` distances in voxels (mm with ``spacing``); NaN where the target is absent or
        the prediction missing (tell the two apart with ``is_present(target)``).

    Raises:
        ValueError: on a shape mismatch, D not in {1, 2, 3} or a bad ``spacing``.
    """
    pred, target = _check_pair(pred, target)
    diff = pred - target
    if spacing is not None:
        batch, _, _, ndim = target.shape
        diff = diff * _spacing_per_sample(spacing, batch, ndim, target)[:, None, None, :]
    distance = torch.linalg.vector_norm(diff, dim=-1)
    valid = is_present(pred) & is_present(target)
    return torch.where(valid, distance, torch.full_like(distance, float("nan")))


def success_detection_rate(
    distances: torch.Tensor,
    radii: Sequence[float] | torch.Tensor,
    target_present: torch.Tensor,
) -> torch.Tensor:
    """Fraction of present ground-truth landmarks found within each radius (distance <= radius).

    Args:
        distances: distances of any shape, e.g. ``(B, L, K)`` from ``point_distances``; NaN for a
            present target is a missing prediction and fails at every radius.
        radii: ``(R,)`` non-negative radii, in the unit of ``distances``.
        target_present: bool, same shape as ``distances``: which ground-truth landmarks exist
            (``is_present(target)``); absent ones are left out of numerator and denominator.

    Returns:
        ``(R,)`` rates in [0, 1] on the device of ``distances``; NaN when no target is present.
    """
    radii_t = _check_radii(radii)
    if target_present.shape != distances.shape:
        raise ValueError(
            f"Argument `target_present` must have the shape of `distances` {tuple(distances.shape)}, "
            f"got {tuple(target_present.shape)}."
        )
    dtype = torch.promote_types(distances.dtype, torch.float32)
    radii_t = radii_t.to(device=distances.device, dtype=dtype)
    present_distances = distances[target_present.bool()].to(dtype)
    if present_distances.numel() == 0:
        return torch.full_like(radii_t, float("nan"))
    hits = present_distances[None, :] <= radii_t[:, None]  # NaN compares False: a miss
    return hits.to(dtype).mean(dim=1)


def inter_pupil_distance_300w(target: torch.Tensor) -> torch.Tensor:
    """Distance between the eye centroids (landmarks 36-41 and 42-47, 0-based) of 300-W faces.

    Args:
        target: ``(B, L, 1, D)`` ground truth in the 68-point markup (L >= 48).

    Returns:
        ``(B,)`` distances; NaN when an eye landmark is absent.
    """
    check_points(target, "target")
    if target.shape[1] < 48 or target.shape[2] != 1:
        raise ValueError(f"Argument `target` must be (B, 68, 1, D) 300-W points, got shape {tuple(target.shape)}.")
    right_eye = target[:, 36:42, 0].mean(dim=1)
    left_eye = target[:, 42:48, 0].mean(dim=1)
    return torch.linalg.vector_norm(left_eye - right_eye, dim=-1)


def _landmark_pair_distance(target: torch.Tensor, pair: tuple[int, int]) -> torch.Tensor:
    first, second = pair
    num_landmarks = target.shape[1]
    if not (0 <= first < num_landmarks and 0 <= second < num_landmarks):
        raise ValueError(f"Argument `normalizer` must index landmarks in [0, {num_landmarks}), got {pair}.")
    return torch.linalg.vector_norm(target[:, first, 0] - target[:, second, 0], dim=-1)


def _check_normalizer(normalizer: Normalizer) -> Normalizer:
    if callable(normalizer):
        return normalizer
    if isinstance(normalizer, Sequence) and len(normalizer) == 2 and all(isinstance(i, int) for i in normalizer):
        return (int(normalizer[0]), int(normalizer[1]))
    raise ValueError(
        f"Argument `normalizer` must be a pair of landmark indices or a callable (B, L, K, D) -> (B,), "
        f"got {normalizer!r}."
    )


def normalized_mean_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    normalizer: Normalizer,
    spacing: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample normalised mean error (NME), as a fraction (papers print it x 100).

    ``NME_b = mean over present, found landmarks of ||pred - target|| / n_b``. A missing prediction
    is left out of the mean (``LandmarkDistanceMetric.num_misses`` counts those).

    Args:
        pred: ``(B, L, 1, D)`` predicted points (single instance), spatial-axis order.
        target: ``(B, L, 1, D)`` ground truth; NaN = absent landmark.
        normalizer: a pair ``(i, j)`` of landmark indices whose ground-truth distance normalises
            (``OUTER_EYE_CORNERS_300W`` = inter-ocular NME), or a callable mapping ``target``
            ``(B, L, 1, D)`` to ``(B,)`` distances (e.g. ``inter_pupil_distance_300w``).
        spacing: optional ``(D,)`` or ``(B, D)`` voxel size; both errors and normaliser are then
            computed on mm coordinates (matters only for anisotropic voxels).

    Returns:
        ``(B,)`` NME; NaN for a sample whose normaliser is absent, zero or non-finite, or with no
        present, found landmark.
    """
    pred, target = _check_pair(pred, target)
    normalizer = _check_normalizer(normalizer)
    if target.shape[2] != 1:
        raise ValueError(f"Argument `target` must be single-instance (K=1) for NME, got K={target.shape[2]}.")
    if spacing is not None:
        batch, _, _, ndim = target.shape
        scale = _spacing_per_sample(spacing, batch, ndim, target)[:, None, None, :]
        pred, target = pred * scale, target * scale
    distances = point_distances(pred, target).flatten(1)  # (B, L)
    norm = normalizer(target) if callable(normalizer) else _landmark_pair_distance(target, normalizer)
    norm = torch.as_tensor(norm, dtype=distances.dtype, device=distances.device)
    if norm.shape != (target.shape[0],):
        raise ValueError(f"Argument `normalizer` must return shape (B,)=({target.shape[0]},), got {tuple(norm.shape)}.")
    norm = torch.where(torch.isfinite(norm) & (norm > 0), norm, torch.full_like(norm, float("nan")))
    return torch.nanmean(distances, dim=1) / norm


class InstanceMatches(NamedTuple):
    """Counts of a radius-bounded one-to-one matching, each ``(B, L)``."""

    tp: torch.Tensor
    """int64 matched predictions (true positives)."""
    fp: torch.Tensor
    """int64 unmatched present predictions (false positives)."""
    fn: torch.Tensor
    """int64 unmatched present targets (false negatives)."""
    distance_sum: torch.Tensor
    """float64 sum of the matched pairs' distances (voxels, or mm with spacing)."""


def _match_one(pred: np.ndarray, target: np.ndarray, radius: float) -> tuple[int, int, int, float]:
    """Hungarian matching of ``(P, D)`` predictions to ``(T, D)`` targets: (tp, fp, fn, distance sum)."""
    if len(pred) == 0 or len(target) == 0:
        return 0, len(pred), len(target), 0.0
    cost = np.linalg.norm(pred[:, None, :] - target[None, :, :], axis=-1)
    within = cost <= radius
    # A pair beyond the radius costs more than any set of in-radius pairs can sum to, so the assignment
    # first maximises the number of in-radius matches, then minimises their total distance.
    out_of_reach = (min(cost.shape) + 1) * (radius + 1.0)
    rows, cols = linear_sum_assignment(np.where(within, cost, out_of_reach))
    kept = within[rows, cols]
    tp = int(kept.sum())
    return tp, len(pred) - tp, len(target) - tp, float(cost[rows, cols][kept].sum())


def match_instances(
    pred: torch.Tensor,
    target: torch.Tensor,
    radius: float,
    spacing: Sequence[float] | torch.Tensor | None = None,
) -> InstanceMatches:
    """One-to-one matching of predicted to ground-truth instances per (sample, landmark channel).

    Present predictions and present targets are matched by the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``) on their Euclidean distance; a pair is a match only
    when its distance is <= ``radius``. The matching has the most in-radius pairs possible and, among
    those, the smallest total distance (greedy nearest-first matching can find fewer).

    Args:
        pred: ``(B, L, K, D)`` predicted instances (NaN slots = no prediction), spatial-axis order.
        target: ``(B, L, K', D)`` ground-truth instances (NaN slots = none); K' may differ from K.
        radius: non-negative match radius, in voxels (mm with ``spacing``).
        spacing: optional ``(D,)`` or ``(B, D)`` voxel size in mm.

    Returns:
        ``InstanceMatches(tp, fp, fn, distance_sum)``, each ``(B, L)`` on the CPU.
    """
    check_points(pred, "pred")
    check_points(target, "target")
    if pred.shape[:2] != target.shape[:2] or pred.shape[3] != target.shape[3]:
        raise ValueError(
            f"Arguments `pred` and `target` must share B, L and D, got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    radius = _check_radius(radius)
    batch, num_landmarks, _, ndim = target.shape
    pred64, target64 = pred.detach().to("cpu", torch.float64), target.detach().to("cpu", torch.float64)
    if spacing is not None:
        scale = _spacing_per_sample(spacing, batch, ndim, target64)[:, None, None, :]
        pred64, target64 = pred64 * scale, target64 * scale
    pred_present, target_present = is_present(pred64), is_present(target64)
    counts = torch.zeros(3, batch, num_landmarks, dtype=torch.int64)
    distance_sum = torch.zeros(batch, num_landmarks, dtype=torch.float64)
    for b in range(batch):
        for lm in range(num_landmarks):
            tp, fp, fn, dist = _match_one(
                pred64[b, lm][pred_present[b, lm]].numpy(), target64[b, lm][target_present[b, lm]].numpy(), radius
            )
            counts[:, b, lm] = torch.tensor([tp, fp, fn])
            distance_sum[b, lm] = dist
    return InstanceMatches(counts[0], counts[1], counts[2], distance_sum)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor, empty_value: float) -> torch.Tensor:
    numerator, denominator = numerator.to(torch.float64), denominator.to(torch.float64)
    empty = denominator == 0
    return torch.where(empty, torch.full_like(numerator, empty_value), numerator / torch.where(empty, 1.0, denominator))


def detection_scores(matches: InstanceMatches) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and mean matched distance from (summed) match counts, elementwise.

    Edge cases (vacuous truth, so every score stays finite for tables and key metrics):
    precision = TP / (TP + FP), 1 when nothing was predicted; recall = TP / (TP + FN), 1 when there
    was nothing to find; F1 = 2 TP / (2 TP + FP + FN), 1 when there were neither predictions nor
    targets (so no predictions with targets present gives P = 1, R = 0, F1 = 0). The mean distance
    = distance_sum / TP is NaN when nothing matched.
    """
    tp, fp, fn = matches.tp, matches.fp, matches.fn
    return {
        "precision": _ratio(tp, tp + fp, 1.0),
        "recall": _ratio(tp, tp + fn, 1.0),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "mean_distance": _ratio(matches.distance_sum, tp, float("nan")),
    }


# ----------------------------------------------------------------------------- metric classes


def _plain(points: torch.Tensor) -> torch.Tensor:
    return points.as_tensor() if isinstance(points, MetaTensor) else points


def _as_batch(points: torch.Tensor | Sequence[torch.Tensor], name: str) -> torch.Tensor:
    """A batch-first ``(B, L, K, D)`` tensor from a batch or from a list of ``(L, K, D)`` samples."""
    if isinstance(points, torch.Tensor):
        return _plain(points)
    if isinstance(points, (list, tuple)) and points and all(isinstance(p, torch.Tensor) for p in points):
        shapes = {tuple(p.shape) for p in points}
        if len(shapes) != 1:
            raise ValueError(f"Argument `{name}` must hold samples of one shape (L, K, D), got {sorted(shapes)}.")
        return torch.stack([_plain(p) for p in points])
    raise ValueError(f"Argument `{name}` must be a (B, L, K, D) tensor or a list of (L, K, D) tensors, got {points!r}.")


def _meta_spacing(y: torch.Tensor | Sequence[torch.Tensor], key: str) -> Any:
    """The spacing stored under ``key`` in the meta of ``y`` (a MetaTensor or a list of them), else None."""
    if isinstance(y, MetaTensor):
        return y.meta.get(key)
    if isinstance(y, (list, tuple)):
        values = [item.meta.get(key) if isinstance(item, MetaTensor) else None for item in y]
        if all(v is None for v in values):
            return None
        if any(v is None for v in values):
            raise ValueError(f"Argument `y` has `{key}` in the meta of some samples only.")
        return torch.stack([torch.as_tensor(v) for v in values])
    return None


class _LandmarkMetric(CumulativeIterationMetric):
    """Shared input handling: list or batch, spacing resolution, unit."""

    higher_is_better: bool

    def __init__(
        self,
        unit: Unit = "voxel",
        spacing: Sequence[float] | torch.Tensor | None = None,
        spacing_key: str = "spacing",
    ) -> None:
        super().__init__()
        _check_choice(unit, _UNITS, "unit")
        self.unit = unit
        self.spacing = None if spacing is None else torch.as_tensor(spacing, dtype=torch.float64)
        self.spacing_key = spacing_key

    def __call__(  # type: ignore[override]
        self,
        y_pred: torch.Tensor | Sequence[torch.Tensor],
        y: torch.Tensor | Sequence[torch.Tensor] | None = None,
        spacing: Sequence[float] | torch.Tensor | None = None,
    ) -> Any:
        """Add one iteration.

        Args:
            y_pred: ``(B, L, K, D)`` predicted points or a list of ``(L, K, D)`` samples.
            y: ground truth, same form as ``y_pred``.
            spacing: ``(D,)`` or ``(B, D)`` voxel size in mm; by default taken from ``y``'s meta
                (``spacing_key``), else the constructor's ``spacing`` (see the module docstring).
        """
        if y is None:
            raise ValueError("Argument `y` (ground-truth points) is required.")
        if spacing is None:
            spacing = _meta_spacing(y, self.spacing_key)
        if spacing is None:
            spacing = self.spacing
        if spacing is None and self.unit == "mm":
            raise ValueError(
                f"Argument `unit` is 'mm' but no spacing was given: pass `spacing`, put it in the meta of `y` "
                f"under {self.spacing_key!r}, or give the metric a constructor `spacing`."
            )
        pred, target = _as_batch(y_pred, "y_pred"), _as_batch(y, "y")
        return super().__call__(pred, target, spacing=spacing)

    def _unit_spacing(self, spacing: Any) -> Any:
        return spacing if self.unit == "mm" else None

    def _buffered(self) -> list[torch.Tensor]:
        buffers = self.get_buffer()
        if buffers is None:
            raise ValueError(f"{self.__class__.__name__} has no values to aggregate: call it on some data first.")
        return buffers if isinstance(buffers, list) else [buffers]


def _reduce_distances(values: torch.Tensor, reduction: DistanceReduction) -> torch.Tensor:
    """Reduce the last dim of ``values`` ignoring NaN: mean, median or 95th percentile (linear)."""
    if reduction == "mean":
        return torch.nanmean(values, dim=-1)
    return torch.nanquantile(values, _QUANTILES[reduction], dim=-1)


class LandmarkDistanceMetric(_LandmarkMetric):
    """Point error of single-instance landmarks (slot-wise), in voxels and mm.

    Each iteration buffers per-slot distances in voxels and in mm (NaN without spacing) and the
    ground-truth presence. ``aggregate`` pools all present, found points of all samples (not a mean
    of per-sample means); missing predictions are excluded and counted by ``num_misses``.
    Lower is better: see the module docstring for ``metric_cmp_fn=lower_is_better``.

    Args:
        unit: ``"voxel"`` or ``"mm"``, the default unit of ``aggregate``; ``"mm"`` requires spacing.
        reduction: default statistic of ``aggregate``: ``"mean"``, ``"median"`` or ``"p95"``.
        per_landmark: default of ``aggregate``: one value per landmark channel ``(L,)``.
        spacing: fallback ``(D,)`` voxel size in mm when neither the call nor ``y``'s meta gives one.
        spacing_key: meta key of ``y`` holding the spacing.
    """

    higher_is_better = False

    def __init__(
        self,
        unit: Unit = "voxel",
        reduction: DistanceReduction = "mean",
        per_landmark: bool = False,
        spacing: Sequence[float] | torch.Tensor | None = None,
        spacing_key: str = "spacing",
    ) -> None:
        super().__init__(unit=unit, spacing=spacing, spacing_key=spacing_key)
        _check_choice(reduction, _DISTANCE_REDUCTIONS, "reduction")
        self.reduction = reduction
        self.per_landmark = per_landmark

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, spacing: Any = None
    ) -> list[torch.Tensor]:
        """``[voxel distances, mm distances, target present]``, each ``(B, L, K)``."""
        voxel = point_distances(y_pred, y)
        mm = point_distances(y_pred, y, spacing) if spacing is not None else torch.full_like(voxel, float("nan"))
        return [voxel, mm, is_present(y).to(voxel.dtype)]

    def _distances(self, unit: Unit) -> torch.Tensor:
        voxel, mm, _ = self._buffered()
        if unit == "voxel":
            return voxel
        if bool((torch.isnan(mm) & ~torch.isnan(voxel)).any()):
            raise ValueError("Argument `unit` is 'mm' but some samples were added without spacing.")
        return mm

    def aggregate(  # type: ignore[override]
        self,
        reduction: DistanceReduction | None = None,
        unit: Unit | None = None,
        per_landmark: bool | None = None,
    ) -> torch.Tensor:
        """Point-error statistic over all buffered present, found points.

        Args:
            reduction: ``"mean"``, ``"median"`` or ``"p95"``; defaults to the constructor's.
            unit: ``"voxel"`` or ``"mm"``; defaults to the constructor's.
            per_landmark: ``(L,)`` per channel instead of a scalar; defaults to the constructor's.

        Returns:
            A scalar, or ``(L,)``; NaN where there is no found point.
        """
        reduction = reduction or self.reduction
        unit = unit or self.unit
        _check_choice(reduction, _DISTANCE_REDUCTIONS, "reduction")
        _check_choice(unit, _UNITS, "unit")
        distances = self._distances(unit)  # (N, L, K)
        per_landmark = self.per_landmark if per_landmark is None else per_landmark
        if per_landmark:
            return _reduce_distances(distances.transpose(0, 1).flatten(1), reduction)
        return _reduce_distances(distances.flatten(), reduction)

    def num_misses(self, per_landmark: bool = False) -> torch.Tensor:
        """int64 count of present ground-truth landmarks without a prediction: scalar or ``(L,)``."""
        voxel, _, present = self._buffered()
        misses = (present.bool() & torch.isnan(voxel)).transpose(0, 1).flatten(1).sum(dim=1)
        return misses if per_landmark else misses.sum()


OutlierReduction = Literal["rate", "rate_then_median"]
_OUTLIER_REDUCTIONS = ("rate", "rate_then_median")


class LandmarkOutlierMetric(LandmarkDistanceMetric):
    """Gross errors of single-instance landmarks: the share of points more than ``radius`` off.

    A present ground-truth landmark counts as an outlier when its prediction is more than
    ``radius`` away (in ``unit``) or missing. Two reductions:

    - ``"rate"``: outliers / present points, in [0, 1];
    - ``"rate_then_median"`` (model selection, lower is better): the rate plus a tie-breaker
      ``0.5 / n * median / (median + radius)`` (``n`` present points, ``median`` of the found
      points' errors; ``0.5 / n`` when nothing was found). The tie-breaker is below half of one
      outlier's share (``1 / n``) and grows with the median, so a model with fewer outliers always
      ranks first and the median decides only between equal rates.

    Args:
        radius: outlier radius in ``unit`` (e.g. 10 px of the original frame for catheter tips).
        unit: ``"voxel"`` or ``"mm"``.
        reduction: ``"rate"`` or ``"rate_then_median"``.
        spacing, spacing_key: as :class:`LandmarkDistanceMetric`.
    """

    higher_is_better = False

    def __init__(
        self,
        radius: float,
        unit: Unit = "voxel",
        reduction: OutlierReduction = "rate",
        spacing: Sequence[float] | torch.Tensor | None = None,
        spacing_key: str = "spacing",
    ) -> None:
        super().__init__(unit=unit, spacing=spacing, spacing_key=spacing_key)
        _check_choice(reduction, _OUTLIER_REDUCTIONS, "reduction")
        self.radius = _check_radius(radius)
        self.outlier_reduction = reduction

    def aggregate(self, reduction: OutlierReduction | None = None) -> torch.Tensor:  # type: ignore[override]
        """The outlier rate, or the selection score; NaN when no ground-truth point is present."""
        reduction = reduction or self.outlier_reduction
        _check_choice(reduction, _OUTLIER_REDUCTIONS, "reduction")
        distances = self._distances(self.unit).flatten()
        present = self._buffered()[2].bool().flatten()
        count = int(present.sum())
        if count == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        found = distances[present]
        outliers = (torch.isnan(found) | (found > self.radius)).sum()
        rate = outliers.to(torch.float64) / count
        if reduction == "rate":
            return rate
        finite = found[~torch.isnan(found)].to(torch.float64)
        if finite.numel() == 0:
            return rate + 0.5 / count  # no prediction at all: worse than any found median
        median = finite.median()
        return rate + 0.5 / count * median / (median + self.radius)


class SuccessDetectionRateMetric(_LandmarkMetric):
    """Success detection rate: fraction of present landmarks found within each radius (higher is better).

    Missing predictions fail at every radius; absent ground truth is left out. With one radius the
    aggregate is a scalar usable as an evaluator's key metric.

    Args:
        radii: ``(R,)`` non-negative radii in ``unit``.
        unit: ``"voxel"`` or ``"mm"`` (requires spacing).
        per_landmark: default of ``aggregate``: ``(L, R)`` instead of ``(R,)``.
        spacing: fallback ``(D,)`` voxel size in mm.
        spacing_key: meta key of ``y`` holding the spacing.
    """

    higher_is_better = True

    def __init__(
        self,
        radii: Sequence[float] = (2, 4, 8),
        unit: Unit = "voxel",
        per_landmark: bool = False,
        spacing: Sequence[float] | torch.Tensor | None = None,
        spacing_key: str = "spacing",
    ) -> None:
        super().__init__(unit=unit, spacing=spacing, spacing_key=spacing_key)
        self.radii = _check_radii(radii)
        self.per_landmark = per_landmark

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, spacing: Any = None
    ) -> list[torch.Tensor]:
        """``[distances in unit, target present]``, each ``(B, L, K)``."""
        distances = point_distances(y_pred, y, self._unit_spacing(spacing))
        return [distances, is_present(y).to(distances.dtype)]

    def aggregate(self, per_landmark: bool | None = None) -> torch.Tensor:  # type: ignore[override]
        """``(R,)`` rates over all buffered landmarks, or ``(L, R)`` per landmark channel; NaN if none present."""
        distances, present = self._buffered()
        per_landmark = self.per_landmark if per_landmark is None else per_landmark
        if not per_landmark:
            return success_detection_rate(distances, self.radii, present.bool())
        return torch.stack(
            [
                success_detection_rate(distances[:, lm], self.radii, present[:, lm].bool())
                for lm in range(distances.shape[1])
            ]
        )


class NormalizedMeanErrorMetric(_LandmarkMetric):
    """Mean over samples of the per-sample NME (``normalized_mean_error``), lower is better.

    Samples with an undefined NME (absent normaliser landmarks, nothing found) are left out.

    Args:
        normalizer: ``(i, j)`` landmark indices (e.g. ``OUTER_EYE_CORNERS_300W``) or a callable
            ``(B, L, 1, D) -> (B,)`` (e.g. ``inter_pupil_distance_300w``).
        unit: ``"voxel"`` or ``"mm"``; only changes the result for anisotropic voxels.
        spacing: fallback ``(D,)`` voxel size in mm.
        spacing_key: meta key of ``y`` holding the spacing.
    """

    higher_is_better = False

    def __init__(
        self,
        normalizer: Normalizer = OUTER_EYE_CORNERS_300W,
        unit: Unit = "voxel",
        spacing: Sequence[float] | torch.Tensor | None = None,
        spacing_key: str = "spacing",
    ) -> None:
        super().__init__(unit=unit, spacing=spacing, spacing_key=spacing_key)
        self.normalizer = _check_normalizer(normalizer)

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, spacing: Any = None
    ) -> torch.Tensor:
        """``(B,)`` per-sample NME."""
        return normalized_mean_error(y_pred, y, self.normalizer, self._unit_spacing(spacing))

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Scalar mean NME over samples with a defined NME (a fraction; x 100 for percent)."""
        (nme,) = self._buffered()
        return torch.nanmean(nme)


class InstanceDetectionMetric(_LandmarkMetric):
    """Multi-instance detection within a radius: precision, recall, F1, mean matched distance.

    Each iteration buffers per (sample, channel) TP, FP, FN and matched-distance sums from
    ``match_instances``; ``aggregate`` sums them over all samples (micro-averaging), per landmark
    channel or over all channels, then applies the conventions of ``detection_scores``
    (P = 1 with no predictions, R = 1 with no targets, F1 = 1 with neither; mean distance NaN
    without a match).

    Args:
        radius: non-negative match radius in ``unit``.
        metric_name: the score ``aggregate`` returns by default, or ``None`` for a dict of all four
            (an ignite engine then stores each under its own name in ``state.metrics``).
        unit: ``"voxel"`` or ``"mm"`` (requires spacing).
        per_landmark: default of ``aggregate``: ``(L,)`` per channel instead of a scalar.
        spacing: fallback ``(D,)`` voxel size in mm.
        spacing_key: meta key of ``y`` holding the spacing.
    """

    def __init__(
        self,
        radius: float,
        metric_name: DetectionScore | None = "f1",
        unit: Unit = "voxel",
        per_landmark: bool = False,
        spacing: Sequence[float] | torch.Tensor | None = None,
        spacing_key: str = "spacing",
    ) -> None:
        super().__init__(unit=unit, spacing=spacing, spacing_key=spacing_key)
        self.radius = _check_radius(radius)
        _check_choice(metric_name, (*_DETECTION_SCORES, None), "metric_name")
        self.metric_name = metric_name
        self.per_landmark = per_landmark

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """False for ``metric_name="mean_distance"``, True for the scores."""
        return self.metric_name != "mean_distance"

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, spacing: Any = None
    ) -> list[torch.Tensor]:
        """``[tp, fp, fn, distance_sum]``, each ``(B, L)``."""
        return list(match_instances(y_pred, y, self.radius, self._unit_spacing(spacing)))

    def aggregate(  # type: ignore[override]
        self, metric_name: DetectionScore | None = None, per_landmark: bool | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """The chosen score (scalar, or ``(L,)`` per channel), or a dict of all four when the name is None.

        Args:
            metric_name: overrides the constructor's ``metric_name`` when given.
            per_landmark: overrides the constructor's ``per_landmark`` when given.
        """
        if metric_name is not None:
            _check_choice(metric_name, _DETECTION_SCORES, "metric_name")
        name = metric_name or self.metric_name
        per_landmark = self.per_landmark if per_landmark is None else per_landmark
        tp, fp, fn, distance_sum = (b.sum(dim=0) for b in self._buffered())  # (L,) each
        if not per_landmark:
            tp, fp, fn, distance_sum = tp.sum(), fp.sum(), fn.sum(), distance_sum.sum()
        scores = detection_scores(InstanceMatches(tp, fp, fn, distance_sum))
        return scores if name is None else scores[name]
