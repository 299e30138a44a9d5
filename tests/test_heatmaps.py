"""render_gaussian_heatmaps: values against the closed form, instances, NaN, normalisation, spacing, errors."""

from __future__ import annotations

import math

import pytest
import torch

from monai_adaloss.heatmaps import render_gaussian_heatmaps

NAN = math.nan


def closed_form(point: list[float], sigma: list[float], index: tuple[int, ...]) -> float:
    return math.exp(-sum((i - p) ** 2 / (2 * s * s) for i, p, s in zip(index, point, sigma, strict=True)))


@pytest.mark.parametrize("shape", [(17,), (9, 12), (7, 8, 6)])
def test_values_match_closed_form_with_sub_voxel_centre(shape: tuple[int, ...]) -> None:
    point = [2.3, 4.71, 1.5][: len(shape)]
    heatmap = render_gaussian_heatmaps(torch.tensor([[[point]]], dtype=torch.float64), 1.7, shape)
    assert heatmap.shape == (1, 1, *shape)
    assert heatmap.dtype == torch.float64
    for index in [(0, 0, 0), (2, 5, 1), (3, 4, 2), tuple(s - 1 for s in shape)]:
        index = index[: len(shape)]
        assert heatmap[(0, 0, *index)].item() == pytest.approx(closed_form(point, [1.7] * len(shape), index), rel=1e-12)


def test_instances_merge_by_max_and_nan_instances_are_absent() -> None:
    points = torch.tensor([[[[2.0, 2.0], [7.0, 3.0], [NAN, NAN]], [[NAN, NAN], [NAN, 1.0], [NAN, NAN]]]])
    heatmap = render_gaussian_heatmaps(points, 1.0, (10, 6))
    single_a = render_gaussian_heatmaps(points[:, :1, :1], 1.0, (10, 6))
    single_b = render_gaussian_heatmaps(points[:, :1, 1:2], 1.0, (10, 6))
    assert torch.equal(heatmap[:, :1], torch.maximum(single_a, single_b))
    assert heatmap[0, 0, 2, 2] == 1.0 and heatmap[0, 0, 7, 3] == 1.0
    assert torch.count_nonzero(heatmap[0, 1]) == 0


def test_points_outside_the_grid_keep_their_in_grid_tail() -> None:
    heatmap = render_gaussian_heatmaps(torch.tensor([[[[-3.0, 4.0]]]]), 2.0, (8, 8), dtype=torch.float64)
    assert heatmap[0, 0, 0, 4].item() == pytest.approx(math.exp(-9 / 8))
    assert heatmap.argmax().item() == 4  # index (0, 4): the border voxel nearest the point


def test_sigma_per_landmark_and_per_sample() -> None:
    points = torch.tensor([[[[5.0]], [[5.0]]], [[[5.0]], [[5.0]]]])
    per_landmark = render_gaussian_heatmaps(points, [1.0, 3.0], (11,))
    assert per_landmark[0, 0, 6].item() == pytest.approx(math.exp(-0.5))
    assert per_landmark[1, 1, 8].item() == pytest.approx(math.exp(-0.5))
    per_sample = render_gaussian_heatmaps(points, torch.tensor([[1.0, 2.0], [3.0, 4.0]]), (11,))
    assert per_sample[1, 0, 8].item() == pytest.approx(math.exp(-0.5))
    assert per_sample[1, 1, 9].item() == pytest.approx(math.exp(-0.5))


def test_normalisation_peak_and_mean() -> None:
    points = torch.tensor([[[[3.5, 4.25]], [[NAN, NAN]]]], dtype=torch.float64)
    raw = render_gaussian_heatmaps(points, 2.0, (12, 12))
    peak = render_gaussian_heatmaps(points, 2.0, (12, 12), normalize="peak")
    mean = render_gaussian_heatmaps(points, 2.0, (12, 12), normalize="mean")
    assert raw[0, 0].max().item() < 1.0
    assert peak[0, 0].max().item() == pytest.approx(1.0)
    assert torch.allclose(peak[0, 0] * raw[0, 0].max(), raw[0, 0])
    assert mean[0, 0].mean().item() == pytest.approx(1.0)
    assert torch.count_nonzero(peak[0, 1]) == 0 and torch.count_nonzero(mean[0, 1]) == 0


def test_spacing_takes_sigma_in_mm() -> None:
    heatmap = render_gaussian_heatmaps(
        torch.tensor([[[[4.0, 4.0]]]], dtype=torch.float64), 2.0, (9, 9), spacing=(0.5, 2.0)
    )
    # per-axis sigma in voxels: 4 along axis 0, 1 along axis 1
    assert heatmap[0, 0, 8, 4].item() == pytest.approx(math.exp(-0.5))
    assert heatmap[0, 0, 4, 5].item() == pytest.approx(math.exp(-0.5))


def test_device_and_dtype_follow_the_points() -> None:
    points = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float16)
    assert render_gaussian_heatmaps(points, 2.0, (4, 4)).dtype == torch.float16
    assert render_gaussian_heatmaps(points.long(), 2.0, (4, 4)).dtype == torch.float32
    if torch.cuda.is_available():
        assert render_gaussian_heatmaps(points.cuda(), 2.0, (4, 4)).is_cuda


@pytest.mark.parametrize(
    ("points", "sigma", "shape", "kwargs", "message"),
    [
        (torch.zeros(1, 1, 2), 1.0, (4, 4), {}, r"`points` must have shape \(B, L, K, D\), got shape \(1, 1, 2\)"),
        (torch.zeros(1, 1, 1, 4), 1.0, (4, 4, 4, 4), {}, r"`points` must have D \(last dim\) in \{1, 2, 3\}, got D=4"),
        ([[[[1.0, 1.0]]]], 1.0, (4, 4), {}, "`points` must be a torch.Tensor"),
        (torch.zeros(1, 1, 1, 2), 0.0, (4, 4), {}, "`sigma` must be finite and positive, got 0.0"),
        (torch.zeros(1, 1, 1, 2), -1.0, (4, 4), {}, "`sigma` must be finite and positive, got -1.0"),
        (torch.zeros(1, 2, 1, 2), [1.0, 2.0, 3.0], (4, 4), {}, r"`sigma` must have shape \(L,\)=\(2,\), got \(3,\)"),
        (torch.zeros(1, 1, 1, 2), 1.0, (4, 4, 4), {}, r"`spatial_shape` must have rank D=2 .*got \(4, 4, 4\)"),
        (torch.zeros(1, 1, 1, 2), 1.0, (4, 4), {"normalize": "sum"}, "`normalize` must be one of .*got 'sum'"),
        (torch.zeros(1, 1, 1, 2), 1.0, (4, 4), {"spacing": (1.0, 0.0)}, "`spacing` must hold D=2 finite positive"),
    ],
)
def test_bad_input(points, sigma, shape, kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        render_gaussian_heatmaps(points, sigma, shape, **kwargs)
