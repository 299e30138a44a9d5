"""Landmark metrics: hand-computed values, masking, misses, spacing, matching, MONAI evaluator integration."""

from __future__ import annotations

import math

import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import IgniteMetricHandler, from_engine
from torch import nn

from monai_adaloss.metrics import (
    OUTER_EYE_CORNERS_300W,
    InstanceDetectionMetric,
    InstanceMatches,
    LandmarkDistanceMetric,
    NormalizedMeanErrorMetric,
    SuccessDetectionRateMetric,
    detection_scores,
    inter_pupil_distance_300w,
    is_present,
    lower_is_better,
    match_instances,
    normalized_mean_error,
    point_distances,
    success_detection_rate,
)

NAN = math.nan


def pts(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ----------------------------------------------------------------------------- point_distances


def test_point_distances_mask_absent_targets_and_missing_predictions() -> None:
    target = pts([[[[0.0, 0.0]], [[NAN, NAN]], [[10.0, 10.0]]]])  # (1, 3, 1, 2)
    pred = pts([[[[3.0, 4.0]], [[1.0, 1.0]], [[NAN, NAN]]]])
    distances = point_distances(pred, target)
    assert distances.shape == (1, 3, 1)
    assert distances[0, 0, 0].item() == pytest.approx(5.0)
    assert torch.isnan(distances[0, 1:]).all()  # absent target: not a zero-distance hit
    assert is_present(target)[0, :, 0].tolist() == [True, False, True]  # lm 2 is a miss, lm 1 absent


def test_point_distances_in_mm_with_anisotropic_spacing() -> None:
    target = pts([[[[0.0, 0.0]]], [[[0.0, 0.0]]]])
    pred = pts([[[[3.0, 4.0]]], [[[1.0, 1.0]]]])
    per_axis = point_distances(pred, target, spacing=[2.0, 0.5])
    assert per_axis[:, 0, 0].tolist() == pytest.approx([math.sqrt(36 + 4), math.sqrt(4 + 0.25)])
    per_sample = point_distances(pred, target, spacing=torch.tensor([[2.0, 0.5], [3.0, 4.0]]))
    assert per_sample[:, 0, 0].tolist() == pytest.approx([math.sqrt(40), 5.0])


# ----------------------------------------------------------------------------- distance metric

# three samples, two landmarks; errors along axis 0: [[1, 3], [2, absent], [miss, 5]]
TARGET = pts([[[[0.0, 0.0]], [[5.0, 5.0]]], [[[0.0, 0.0]], [[NAN, NAN]]], [[[0.0, 0.0]], [[5.0, 5.0]]]])
PRED = pts([[[[1.0, 0.0]], [[8.0, 5.0]]], [[[2.0, 0.0]], [[9.0, 9.0]]], [[[NAN, NAN]], [[10.0, 5.0]]]])


def test_distance_metric_mean_median_p95_per_landmark_and_misses() -> None:
    metric = LandmarkDistanceMetric()
    metric(PRED, TARGET)
    assert metric.aggregate().item() == pytest.approx(2.75)  # (1 + 3 + 2 + 5) / 4
    assert metric.aggregate(per_landmark=True).tolist() == pytest.approx([1.5, 4.0])
    assert metric.aggregate(reduction="median").item() == pytest.approx(2.5)
    assert metric.aggregate(reduction="p95").item() == pytest.approx(3 + 0.85 * 2)  # linear at rank 2.85
    assert metric.aggregate(reduction="median", per_landmark=True).tolist() == pytest.approx([1.5, 4.0])
    assert metric.num_misses().item() == 1
    assert metric.num_misses(per_landmark=True).tolist() == [1, 0]
    assert LandmarkDistanceMetric.higher_is_better is False


def test_distance_metric_mm_from_call_meta_and_constructor() -> None:
    target = pts([[[[0.0, 0.0]]], [[[0.0, 0.0]]]])
    pred = pts([[[[3.0, 4.0]]], [[[1.0, 1.0]]]])
    spacing = torch.tensor([[2.0, 0.5], [3.0, 4.0]])
    expected = (math.sqrt(40) + 5) / 2

    by_call = LandmarkDistanceMetric(unit="mm")
    by_call(pred, target, spacing=spacing)
    assert by_call.aggregate().item() == pytest.approx(expected)
    assert by_call.aggregate(unit="voxel").item() == pytest.approx((5 + math.sqrt(2)) / 2)

    by_meta = LandmarkDistanceMetric(unit="mm")
    by_meta([pred[0], pred[1]], [MetaTensor(target[i], meta={"spacing": spacing[i]}) for i in range(2)])
    assert by_meta.aggregate().item() == pytest.approx(expected)

    by_constructor = LandmarkDistanceMetric(unit="mm", spacing=[2.0, 0.5])
    by_constructor(pred[:1], target[:1])
    assert by_constructor.aggregate().item() == pytest.approx(math.sqrt(40))


def test_distance_metric_mm_without_spacing_is_an_error() -> None:
    with pytest.raises(ValueError, match="`unit`"):
        LandmarkDistanceMetric(unit="mm")(PRED, TARGET)
    metric = LandmarkDistanceMetric()
    metric(PRED, TARGET)
    with pytest.raises(ValueError, match="`unit`"):
        metric.aggregate(unit="mm")


# ----------------------------------------------------------------------------- SDR


def test_success_detection_rate_counts_misses_as_failures_and_skips_absent() -> None:
    distances = point_distances(PRED, TARGET)
    present = is_present(TARGET)
    # present: 1, 3, 2, 5 and one miss; a distance equal to the radius is a success
    rates = success_detection_rate(distances, [2, 4, 8], present)
    assert rates.tolist() == pytest.approx([2 / 5, 3 / 5, 4 / 5])
    assert torch.isnan(success_detection_rate(distances, [2], torch.zeros_like(present))).all()


def test_sdr_metric_overall_and_per_landmark() -> None:
    metric = SuccessDetectionRateMetric(radii=(2, 4, 8))
    metric(PRED[:2], TARGET[:2])
    metric(PRED[2:], TARGET[2:])
    assert metric.aggregate().tolist() == pytest.approx([2 / 5, 3 / 5, 4 / 5])
    per_landmark = metric.aggregate(per_landmark=True)
    assert per_landmark.shape == (2, 3)
    assert per_landmark[0].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3])
    assert per_landmark[1].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert SuccessDetectionRateMetric.higher_is_better is True


def test_sdr_metric_radius_in_mm() -> None:
    metric = SuccessDetectionRateMetric(radii=(2.0,), unit="mm", spacing=[0.5, 1.0])
    metric(pts([[[[3.0, 0.0]]]]), pts([[[[0.0, 0.0]]]]))  # 3 voxels = 1.5 mm
    assert metric.aggregate().tolist() == [1.0]


# ----------------------------------------------------------------------------- NME


def toy_face() -> torch.Tensor:
    """(1, 68, 1, 2) face: outer eye corners 40 apart, eye centroids 30 apart."""
    face = torch.stack([torch.arange(68.0), 50.0 + torch.arange(68.0) % 7], dim=-1)
    right_eye = pts([[10, 20], [13, 18], [17, 18], [20, 20], [17, 22], [13, 22]])  # 36-41, centroid (15, 20)
    face[36:42] = right_eye.float()
    face[42:48] = (right_eye + pts([30, 0])).float()  # 42-47, centroid (45, 20), outer corner 45 at (50, 20)
    return face[None, :, None, :].double()


def test_toy_face_normalisers() -> None:
    face = toy_face()
    assert (face[0, 45, 0] - face[0, 36, 0]).norm().item() == pytest.approx(40.0)
    assert inter_pupil_distance_300w(face).tolist() == pytest.approx([30.0])


def test_nme_with_both_normalisers_and_an_absent_landmark() -> None:
    target = toy_face().repeat(2, 1, 1, 1)
    pred = target.clone()
    pred[:, 0, 0] += pts([3.0, 4.0])  # error 5
    pred[:, 10, 0] += pts([0.0, 6.0])  # error 6
    target[1, 20] = NAN  # absent: left out of the mean, not a zero-error hit
    pred[1, 20] = pts([0.0, 0.0])
    inter_ocular = normalized_mean_error(pred, target, OUTER_EYE_CORNERS_300W)
    assert inter_ocular.tolist() == pytest.approx([11 / 68 / 40, 11 / 67 / 40])
    inter_pupil = normalized_mean_error(pred, target, inter_pupil_distance_300w)
    assert inter_pupil.tolist() == pytest.approx([11 / 68 / 30, 11 / 67 / 30])

    metric = NormalizedMeanErrorMetric(normalizer=inter_pupil_distance_300w)
    metric([pred[0], pred[1]], [target[0], target[1]])
    assert metric.aggregate().item() == pytest.approx((11 / 68 + 11 / 67) / 2 / 30)
    assert NormalizedMeanErrorMetric.higher_is_better is False


def test_nme_is_nan_without_its_normaliser_and_the_metric_skips_it() -> None:
    target = toy_face().repeat(2, 1, 1, 1)
    pred = target + 1.0  # error sqrt(2) everywhere
    target[1, 36] = NAN
    nme = normalized_mean_error(pred, target, OUTER_EYE_CORNERS_300W)
    assert nme[0].item() == pytest.approx(math.sqrt(2) / 40) and math.isnan(nme[1].item())
    metric = NormalizedMeanErrorMetric(OUTER_EYE_CORNERS_300W)
    metric(pred, target)
    assert metric.aggregate().item() == pytest.approx(math.sqrt(2) / 40)


# ----------------------------------------------------------------------------- matching


def single(points: list[list[float]], slots: int = 3) -> torch.Tensor:
    """(1, 1, slots, D) from a list of points, NaN-padded."""
    ndim = len(points[0]) if points else 2
    out = torch.full((1, 1, slots, ndim), NAN, dtype=torch.float64)
    if points:
        out[0, 0, : len(points)] = pts(points)
    return out


def counts(matches: InstanceMatches) -> tuple[int, int, int]:
    return int(matches.tp.sum()), int(matches.fp.sum()), int(matches.fn.sum())


def test_match_near_miss_just_outside_the_radius() -> None:
    assert counts(match_instances(single([[2.01, 0.0]]), single([[0.0, 0.0]]), radius=2.0)) == (0, 1, 1)
    on_radius = match_instances(single([[2.0, 0.0]]), single([[0.0, 0.0]]), radius=2.0)
    assert counts(on_radius) == (1, 0, 0) and on_radius.distance_sum.item() == pytest.approx(2.0)


def test_match_two_predictions_for_one_target() -> None:
    matches = match_instances(single([[5.0, 7.5], [5.0, 6.0]]), single([[5.0, 5.0]]), radius=3.0)
    assert counts(matches) == (1, 1, 0)
    assert matches.distance_sum.item() == pytest.approx(1.0)  # the nearer prediction is the match


def test_match_empty_frame_and_frame_without_predictions() -> None:
    empty = match_instances(single([]), single([]), radius=2.0)
    assert counts(empty) == (0, 0, 0)
    scores = detection_scores(empty)
    assert (scores["precision"].item(), scores["recall"].item(), scores["f1"].item()) == (1.0, 1.0, 1.0)
    assert math.isnan(scores["mean_distance"].item())

    no_preds = match_instances(single([]), single([[1.0, 1.0], [4.0, 4.0]]), radius=2.0)
    assert counts(no_preds) == (0, 0, 2)
    scores = detection_scores(no_preds)
    assert (scores["precision"].item(), scores["recall"].item(), scores["f1"].item()) == (1.0, 0.0, 0.0)


def greedy_matches(pred: list[float], target: list[float], radius: float) -> int:
    pairs = sorted((abs(p - t), i, j) for i, p in enumerate(pred) for j, t in enumerate(target))
    used_p: set[int] = set()
    used_t: set[int] = set()
    for dist, i, j in pairs:
        if dist <= radius and i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    return len(used_p)


def test_match_beats_greedy_nearest_first() -> None:
    pred, target = [1.1, 3.2], [0.0, 2.0]
    assert greedy_matches(pred, target, 1.5) == 1  # greedy takes 1.1 -> 2.0 (0.9) and strands both others
    matches = match_instances(single([[p] for p in pred]), single([[t] for t in target]), radius=1.5)
    assert counts(matches) == (2, 0, 0)
    assert matches.distance_sum.item() == pytest.approx(1.1 + 1.2)


def test_match_maximises_in_radius_pairs_before_minimising_distance() -> None:
    # raw min-cost pairs p1-t1 (0) with p2-t2 (1.1 > radius); two in-radius pairs of 0.9 each exist
    cos = (0.81 + 0.81 - 1.21) / 1.62
    p2 = [0.9 * cos, 0.9 * math.sqrt(1 - cos * cos)]
    matches = match_instances(single([[0.0, 0.0], p2]), single([[0.0, 0.0], [0.9, 0.0]]), radius=1.0)
    assert counts(matches) == (2, 0, 0)
    assert matches.distance_sum.item() == pytest.approx(1.8)


def test_match_in_mm_and_per_sample_landmark_shapes() -> None:
    pred, target = single([[3.0, 0.0]]), single([[0.0, 0.0]])
    assert counts(match_instances(pred, target, radius=2.0)) == (0, 1, 1)
    assert counts(match_instances(pred, target, radius=2.0, spacing=[0.5, 1.0])) == (1, 0, 0)
    many = match_instances(pred.repeat(2, 3, 1, 1), target.repeat(2, 3, 1, 1), radius=4.0)
    assert many.tp.shape == (2, 3) and many.tp.dtype == torch.int64 and bool((many.tp == 1).all())


def test_instance_metric_accumulates_counts_across_iterations() -> None:
    metric = InstanceDetectionMetric(radius=3.0, metric_name=None)
    metric(single([[5.0, 7.5], [5.0, 6.0]]), single([[5.0, 5.0]]))  # TP 1, FP 1
    metric([single([])[0]], [single([[1.0, 1.0], [4.0, 4.0]])[0]])  # FN 2
    scores = metric.aggregate()
    assert isinstance(scores, dict)
    assert scores["precision"].item() == pytest.approx(0.5)
    assert scores["recall"].item() == pytest.approx(1 / 3)
    assert scores["f1"].item() == pytest.approx(2 / 5)
    assert scores["mean_distance"].item() == pytest.approx(1.0)
    assert metric.aggregate("recall", per_landmark=True).tolist() == pytest.approx([1 / 3])
    assert InstanceDetectionMetric(1.0).higher_is_better
    assert not InstanceDetectionMetric(1.0, metric_name="mean_distance").higher_is_better


# ----------------------------------------------------------------------------- list vs batch


def random_points(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(shape, generator=generator) * 20
    points[torch.rand(shape[:-1], generator=generator) < 0.2] = NAN
    return points


@pytest.mark.parametrize(
    "make_metric",
    [
        lambda: LandmarkDistanceMetric(reduction="p95"),
        lambda: SuccessDetectionRateMetric(radii=(3, 6)),
        lambda: NormalizedMeanErrorMetric((0, 1)),
        lambda: InstanceDetectionMetric(radius=5.0, metric_name="f1", per_landmark=True),
    ],
)
def test_list_of_samples_and_batch_give_the_same_aggregate(make_metric) -> None:
    pred, target = random_points(0, (5, 3, 1, 2)), random_points(1, (5, 3, 1, 2))
    target[:, :2] = torch.tensor([[0.0, 0.0]]).expand(5, 2, 1, 2) + torch.arange(2.0)[:, None, None] * 10
    batched, listed = make_metric(), make_metric()
    batched(pred[:3], target[:3])
    batched(pred[3:], target[3:])
    listed(list(pred[:2]), list(target[:2]))
    listed(list(pred[2:]), list(target[2:]))
    assert torch.allclose(batched.aggregate(), listed.aggregate(), equal_nan=True)
    listed.reset()
    assert listed.get_buffer() is None


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="`pred` and `target`"):
        point_distances(torch.zeros(1, 2, 1, 2), torch.zeros(1, 3, 1, 2))
    with pytest.raises(ValueError, match=r"`pred`.*D=4"):
        point_distances(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    with pytest.raises(ValueError, match=r"`target`.*shape"):
        point_distances(torch.zeros(1, 2, 1, 2), torch.zeros(2, 1, 2))
    with pytest.raises(ValueError, match=r"`radius`.*-1"):
        match_instances(single([[0.0, 0.0]]), single([[0.0, 0.0]]), radius=-1)
    with pytest.raises(ValueError, match="`radius`"):
        InstanceDetectionMetric(radius=-0.5)
    with pytest.raises(ValueError, match="`radii`"):
        SuccessDetectionRateMetric(radii=(2, -4))
    with pytest.raises(ValueError, match="`spacing`"):
        point_distances(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2), spacing=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="`spacing`"):
        point_distances(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2), spacing=[1.0, 0.0])
    with pytest.raises(ValueError, match="`normalizer`"):
        normalized_mean_error(torch.zeros(1, 5, 1, 2), torch.zeros(1, 5, 1, 2), (0, 9))
    with pytest.raises(ValueError, match="`y_pred`"):
        LandmarkDistanceMetric()([torch.zeros(2, 1, 2), torch.zeros(3, 1, 2)], [torch.zeros(2, 1, 2)] * 2)
    with pytest.raises(ValueError, match="`reduction`"):
        LandmarkDistanceMetric(reduction="max")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- MONAI evaluator


class FixedPoints(nn.Module):
    """Returns ``table[i] + offset`` for an image filled with the sample index ``i``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.offset = 0.0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.table[image[:, 0, 0, 0].long()] + self.offset


EVAL_TARGET = pts([[[[2.0, 2.0]], [[6.0, 6.0]]], [[[1.0, 1.0]], [[NAN, NAN]]], [[[4.0, 4.0]], [[7.0, 3.0]]]]).float()
EVAL_PRED = pts([[[[2.0, 5.0]], [[6.0, 6.0]]], [[[1.0, 2.0]], [[0.0, 0.0]]], [[[NAN, NAN]], [[7.0, 7.0]]]]).float()
EVAL_SPACING = torch.tensor([[2.0, 0.5], [1.0, 1.0], [0.25, 0.25]])


def make_evaluator(network: FixedPoints, **kwargs) -> SupervisedEvaluator:
    labels = [MetaTensor(EVAL_TARGET[i], meta={"spacing": EVAL_SPACING[i]}) for i in range(3)]
    data = [{"image": torch.full((1, 4, 4), float(i)), "label": label} for i, label in enumerate(labels)]
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=2),
        network=network,
        postprocessing=None,
        key_val_metric={
            "mean_dist": IgniteMetricHandler(
                metric_fn=LandmarkDistanceMetric(), output_transform=from_engine(["pred", "label"])
            )
        },
        additional_metrics={
            "mean_dist_mm": IgniteMetricHandler(
                metric_fn=LandmarkDistanceMetric(unit="mm"), output_transform=from_engine(["pred", "label"])
            ),
            "f1": IgniteMetricHandler(
                metric_fn=InstanceDetectionMetric(radius=2.0), output_transform=from_engine(["pred", "label"])
            ),
        },
        **kwargs,
    )


def test_supervised_evaluator_with_ignite_metric_handler() -> None:
    evaluator = make_evaluator(FixedPoints(EVAL_PRED))
    evaluator.run()
    # found points: errors 3 (sample 0, lm 0), 0, 1, 4; lm 1 of sample 1 absent; lm 0 of sample 2 missed
    assert evaluator.state.metrics["mean_dist"] == pytest.approx((3 + 0 + 1 + 4) / 4)
    # mm: 3 * 0.5, 0, 1 * 1, 4 * 0.25
    assert evaluator.state.metrics["mean_dist_mm"] == pytest.approx((1.5 + 0 + 1 + 1) / 4)
    # radius 2: TP 2 (errors 0, 1); FP 3 (errors 3, 4 and the prediction for the absent landmark);
    # FN 3 (errors 3, 4 and the miss) -> F1 = 4 / (4 + 3 + 3)
    assert evaluator.state.metrics["f1"] == pytest.approx(0.4)


@pytest.mark.parametrize(("cmp_fn", "best", "best_epoch"), [(lower_is_better, 1.0, 2), (None, 3.0, 3)])
def test_evaluator_best_metric_with_lower_is_better(cmp_fn, best: float, best_epoch: int) -> None:
    network = FixedPoints(EVAL_TARGET.nan_to_num(0.0))
    evaluator = make_evaluator(network, **({"metric_cmp_fn": cmp_fn} if cmp_fn else {}))
    for epoch, offset in enumerate([2.0, 1.0, 3.0], start=1):
        network.offset = offset  # every found point is off by offset along both axes
        evaluator.run(global_epoch=epoch)
        assert evaluator.state.metrics["mean_dist"] == pytest.approx(offset * math.sqrt(2))
    assert evaluator.state.best_metric == pytest.approx(best * math.sqrt(2))
    assert evaluator.state.best_metric_epoch == best_epoch
