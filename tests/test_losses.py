"""AdalossHeatmapLoss: hand-computed values, masking of absent landmarks, channel sums, live sigma, errors."""

from __future__ import annotations

import math

import pytest
import torch

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.losses import AdalossHeatmapLoss

NAN = float("nan")

# 1D grid of 3 voxels, sigma = 1: a point at voxel 1 gives the target (e^-1/2, 1, e^-1/2); a point at
# voxel 0 gives (1, e^-1/2, e^-2) and one at voxel 2 its mirror image. Against a zero prediction the
# spatial-mean squared errors are
CENTRE = (1.0 + 2.0 * math.exp(-1.0)) / 3.0  # (e^-1 + 1 + e^-1) / 3
EDGE = (1.0 + math.exp(-1.0) + math.exp(-4.0)) / 3.0  # (1 + e^-1 + e^-4) / 3


def tiny_points() -> torch.Tensor:
    """``(B=2, L=2, K=1, D=1)``: sample 0 has landmarks at 1 and 0, sample 1 at 2 and absent."""
    return torch.tensor([[[[1.0]], [[0.0]]], [[[2.0]], [[NAN]]]], dtype=torch.float64)


def test_hand_computed_mse_and_channel_sums() -> None:
    loss_fn = AdalossHeatmapLoss(sigma=1.0)
    loss = loss_fn(torch.zeros(2, 2, 3, dtype=torch.float64), tiny_points())
    # three present (sample, landmark) pairs: (0, 0) centre, (0, 1) edge, (1, 0) edge
    assert loss.item() == pytest.approx((CENTRE + 2.0 * EDGE) / 3.0, rel=1e-12)
    assert loss_fn.last_channel_sums.tolist() == pytest.approx([CENTRE + EDGE, EDGE], rel=1e-12)
    assert loss_fn.last_channel_counts.tolist() == [2.0, 1.0]
    assert loss_fn.last_channel_losses.tolist() == pytest.approx([(CENTRE + EDGE) / 2.0, EDGE], rel=1e-12)


def test_hand_computed_mse_with_nonzero_prediction() -> None:
    points = torch.tensor([[[[1.0]]]], dtype=torch.float64)
    pred = torch.ones(1, 1, 3, dtype=torch.float64)
    loss = AdalossHeatmapLoss(sigma=1.0)(pred, points)
    assert loss.item() == pytest.approx(2.0 * (1.0 - math.exp(-0.5)) ** 2 / 3.0, rel=1e-12)


def test_absent_landmark_gives_no_loss_and_no_gradient() -> None:
    loss_fn = AdalossHeatmapLoss(sigma=1.0)
    pred = torch.zeros(2, 2, 3, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(pred, tiny_points())
    loss.backward()
    assert torch.equal(pred.grad[1, 1], torch.zeros(3, dtype=torch.float64))
    assert bool((pred.grad[0] != 0).all()) and bool((pred.grad[1, 0] != 0).all())
    # whatever the network predicts for the absent landmark does not change the loss
    other = torch.zeros(2, 2, 3, dtype=torch.float64)
    other[1, 1] = 100.0
    assert loss_fn(other, tiny_points()).item() == loss.item()


def test_batch_without_any_landmark() -> None:
    loss_fn = AdalossHeatmapLoss(sigma=1.0)
    pred = torch.rand(2, 2, 5, requires_grad=True)
    loss = loss_fn(pred, torch.full((2, 2, 1, 1), NAN))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    assert loss_fn.last_channel_counts.tolist() == [0.0, 0.0]
    assert bool(torch.isnan(loss_fn.last_channel_losses).all())


def test_multi_instance_landmark_counts_once_per_sample() -> None:
    points = torch.tensor([[[[0.0], [NAN]], [[NAN], [NAN]]]])  # (B=1, L=2, K=2, D=1)
    loss_fn = AdalossHeatmapLoss(sigma=1.0)
    loss_fn(torch.zeros(1, 2, 3), points)
    assert loss_fn.last_channel_counts.tolist() == [1.0, 0.0]
    assert loss_fn.last_channel_sums.tolist() == pytest.approx([EDGE, 0.0], rel=1e-6)


def test_fixed_sigma_mode_matches_renderer() -> None:
    points = torch.tensor([[[[4.3, 7.8]], [[12.0, 2.5]]]])  # (B=1, L=2, K=1, D=2)
    pred = torch.rand(1, 2, 16, 12, generator=torch.Generator().manual_seed(0))
    for sigma in (2.0, [1.5, 3.0]):
        loss_fn = AdalossHeatmapLoss(sigma=sigma)
        target = render_gaussian_heatmaps(points, sigma, (16, 12))
        assert loss_fn(pred, points).item() == pytest.approx((pred - target).pow(2).mean().item(), rel=1e-6)
        assert loss_fn.sigma.tolist() == sigma
    assert AdalossHeatmapLoss(sigma=2.0).schedule is None


def test_normalized_target_is_passed_through() -> None:
    points = torch.tensor([[[[3.4, 5.6]]]])
    for normalize in ("peak", "mean"):
        target = render_gaussian_heatmaps(points, 2.0, (10, 9), normalize=normalize)
        loss_fn = AdalossHeatmapLoss(sigma=2.0, normalize=normalize)
        assert loss_fn(target, points).item() == pytest.approx(0.0, abs=1e-12)
        assert AdalossHeatmapLoss(sigma=2.0)(target, points).item() > 1e-4


def test_target_scale_multiplies_the_targets_and_keeps_the_relative_loss() -> None:
    points = torch.tensor([[[[1.0]]]], dtype=torch.float64)
    loss_fn = AdalossHeatmapLoss(sigma=1.0, target_scale=3.0)
    # against a zero prediction: the centre target's energy times 3^2; the reference (all-zero) loss too
    assert loss_fn(torch.zeros(1, 1, 3, dtype=torch.float64), points).item() == pytest.approx(9.0 * CENTRE, rel=1e-12)
    assert loss_fn.last_channel_reference_sums.tolist() == pytest.approx([9.0 * CENTRE], rel=1e-12)
    # the scaled target is matched exactly
    target = 3.0 * render_gaussian_heatmaps(points, 1.0, (3,))
    assert loss_fn(target, points).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_target_scale_must_be_positive_and_finite(scale: float) -> None:
    with pytest.raises(ValueError, match="target_scale"):
        AdalossHeatmapLoss(sigma=1.0, target_scale=scale)


def test_live_sigma_changes_target_between_calls() -> None:
    schedule = AdalossSchedule(4.0, num_landmarks=1, max_step_fraction=0.5, sigma_min=1.0)
    loss_fn = AdalossHeatmapLoss(schedule)
    points = torch.tensor([[[[6.0, 5.0]]]])
    pred = render_gaussian_heatmaps(points, 4.0, (12, 10))
    assert loss_fn(pred, points).item() == pytest.approx(0.0, abs=1e-12)
    for epoch_loss in (1.0, 0.6, 0.5, 0.45):  # the last update is a large negative step, bounded to -2
        schedule.update([epoch_loss])
    assert schedule.sigma.tolist() == [2.0]
    assert loss_fn.sigma.tolist() == [2.0]
    narrower = render_gaussian_heatmaps(points, 2.0, (12, 10))
    assert loss_fn(pred, points).item() == pytest.approx((pred - narrower).pow(2).mean().item(), rel=1e-6)
    assert loss_fn(narrower, points).item() == pytest.approx(0.0, abs=1e-12)


def test_output_dtype_follows_prediction() -> None:
    points = torch.tensor([[[[2.0]]]])
    assert AdalossHeatmapLoss(sigma=1.0)(torch.zeros(1, 1, 5, dtype=torch.float64), points).dtype == torch.float64
    assert AdalossHeatmapLoss(sigma=1.0)(torch.zeros(1, 1, 5), points).dtype == torch.float32


@pytest.mark.parametrize(
    ("pred_shape", "points_shape"),
    [
        ((2, 3, 8, 8), (2, 2, 1, 2)),  # L differs
        ((3, 2, 8, 8), (2, 2, 1, 2)),  # B differs
        ((2, 2, 8, 8, 8), (2, 2, 1, 2)),  # 3 spatial dims for 2D points
        ((2, 2, 8), (2, 2, 1, 2)),  # 1 spatial dim for 2D points
    ],
)
def test_shape_mismatch_raises(pred_shape: tuple[int, ...], points_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="pred"):
        AdalossHeatmapLoss(sigma=1.0)(torch.zeros(pred_shape), torch.zeros(points_shape))


def test_points_without_batch_axis_raise() -> None:
    with pytest.raises(ValueError, match="points"):
        AdalossHeatmapLoss(sigma=1.0)(torch.zeros(2, 8, 8), torch.zeros(2, 1, 2))


def test_exactly_one_of_schedule_and_sigma() -> None:
    with pytest.raises(ValueError, match="Exactly one"):
        AdalossHeatmapLoss()
    with pytest.raises(ValueError, match="Exactly one"):
        AdalossHeatmapLoss(AdalossSchedule(4.0, num_landmarks=1), sigma=2.0)
