"""decode_single_instance / decode_multi_instance: round trip with the renderer, noise, instances, plateaus, errors."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from scipy.optimize import linear_sum_assignment

from monai_adaloss.decoding import decode_multi_instance, decode_single_instance
from monai_adaloss.heatmaps import render_gaussian_heatmaps

NAN = math.nan
# grid side per dimensionality for the round trip: large enough for sigma = 64 to curve visibly
ROUND_TRIP_SIZE = {1: 512, 2: 256, 3: 96}


def random_points(
    generator: torch.Generator, count: int, ndim: int, size: int, margin: float, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``(count, 1, 1, ndim)`` uniform sub-voxel points at least ``margin`` from the grid's borders."""
    return margin + torch.rand(count, 1, 1, ndim, generator=generator, dtype=dtype) * (size - 1 - 2 * margin)


def separated_points(generator: torch.Generator, count: int, ndim: int, size: int, min_distance: float) -> torch.Tensor:
    """``(count, ndim)`` points at least ``min_distance`` apart and 8 voxels from the borders."""
    points: list[torch.Tensor] = []
    while len(points) < count:
        candidate = 8 + torch.rand(ndim, generator=generator, dtype=torch.float64) * (size - 17)
        if all(torch.linalg.norm(candidate - p) > min_distance for p in points):
            points.append(candidate)
    return torch.stack(points)


def matched_errors(found: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Distances between ``found`` and ``truth`` ``(K, D)`` points under the optimal one-to-one matching."""
    cost = torch.cdist(found.double(), truth.double())
    rows, cols = linear_sum_assignment(cost.numpy())
    return cost[rows, cols]


def decoding_error(heatmaps: torch.Tensor, points: torch.Tensor, refine: bool = True) -> torch.Tensor:
    decoded, _ = decode_single_instance(heatmaps, refine=refine)
    return torch.linalg.norm(decoded.double() - points.double(), dim=-1).flatten()


@pytest.mark.parametrize(("ndim", "max_examples"), [(1, 40), (2, 30), (3, 12)])
def test_round_trip_within_five_hundredths_of_a_voxel(ndim: int, max_examples: int) -> None:
    size = ROUND_TRIP_SIZE[ndim]

    @settings(deadline=None, max_examples=max_examples, derandomize=True)
    @given(
        sigmas=st.lists(st.floats(1.0, 64.0), min_size=2, max_size=2),
        fractions=st.lists(st.floats(0.0, 1.0), min_size=2 * ndim, max_size=2 * ndim),
    )
    def check(sigmas: list[float], fractions: list[float]) -> None:
        margins = torch.tensor([min(2.5 * s, size / 4) for s in sigmas]).reshape(1, 2, 1, 1)
        fraction = torch.tensor(fractions).reshape(1, 2, 1, ndim)
        points = margins + fraction * (size - 1 - 2 * margins)
        heatmaps = render_gaussian_heatmaps(points, sigmas, (size,) * ndim)
        assert heatmaps.dtype == torch.float32
        errors = decoding_error(heatmaps, points)
        assert errors.max().item() <= 0.05, (sigmas, points, errors)

    check()


@pytest.mark.parametrize(
    ("ndim", "size", "sigmas", "trials"),
    [
        # in 1D the Cramér-Rao bound grows like sqrt(sigma) (std 0.15 voxel at sigma 8), so only small sigmas
        (1, 256, (2.0, 3.0, 4.0), 100),
        (2, 256, (2.0, 4.0, 8.0, 16.0, 32.0, 64.0), 50),
        (3, 48, (2.0, 4.0, 8.0), 16),
    ],
)
def test_noisy_heatmaps_beat_integer_argmax(ndim: int, size: int, sigmas: tuple[float, ...], trials: int) -> None:
    generator = torch.Generator().manual_seed(ndim)
    for sigma in sigmas:
        points = random_points(generator, trials, ndim, size, margin=min(2.5 * sigma, size / 4), dtype=torch.float32)
        heatmaps = render_gaussian_heatmaps(points, sigma, (size,) * ndim)
        heatmaps = heatmaps + 0.05 * torch.randn(heatmaps.shape, generator=generator)
        refined = decoding_error(heatmaps, points).mean().item()
        argmax = decoding_error(heatmaps, points, refine=False).mean().item()
        assert refined <= 0.15, (sigma, refined)
        assert refined < argmax, (sigma, refined, argmax)


def test_single_instance_layout_and_confidence() -> None:
    points = torch.tensor([[[[10.0, 40.0]], [[33.4, 7.8]]]])
    heatmaps = render_gaussian_heatmaps(points, 2.0, (48, 64))
    coarse, confidence = decode_single_instance(heatmaps, refine=False)
    assert coarse.shape == (1, 2, 1, 2) and confidence.shape == (1, 2, 1)
    assert coarse[0, 0, 0].tolist() == [10.0, 40.0]
    assert coarse[0, 1, 0].tolist() == [33.0, 8.0]
    assert confidence[0, 1, 0] == heatmaps[0, 1, 33, 8] == heatmaps[0, 1].max()
    fine, _ = decode_single_instance(heatmaps)
    assert torch.allclose(fine, points, atol=1e-4)


def test_empty_flat_and_non_finite_channels_give_nan_and_zero_confidence() -> None:
    heatmaps = torch.zeros(1, 6, 20, 30)
    heatmaps[0, 1] = 0.3
    heatmaps[0, 2] = NAN
    heatmaps[0, 3, 4, 5] = math.inf
    heatmaps[0, 4] = render_gaussian_heatmaps(torch.tensor([[[[12.3, 7.6]]]]), 1.5, (20, 30))[0, 0]
    heatmaps[0, 5] = heatmaps[0, 4]
    heatmaps[0, 5, 0, :3] = NAN  # NaN voxels are ignored
    points, confidence = decode_single_instance(heatmaps)
    assert points.shape == (1, 6, 1, 2) and confidence.shape == (1, 6, 1)
    assert torch.isnan(points[0, :4]).all()
    assert confidence[0, :4].eq(0).all()
    assert torch.allclose(points[0, 4:, 0], torch.tensor([[12.3, 7.6], [12.3, 7.6]]), atol=1e-4)
    assert confidence[0, 4:].gt(0.9).all()
    points, confidence = decode_single_instance(torch.zeros(2, 3, 10))
    assert torch.isnan(points).all() and confidence.eq(0).all()


def test_absent_landmark_renders_empty_and_decodes_to_nan() -> None:
    points = torch.tensor([[[[5.2, 6.1, 7.3]], [[NAN, NAN, NAN]]], [[[NAN, 1.0, 1.0]], [[9.9, 3.3, 4.4]]]])
    heatmaps = render_gaussian_heatmaps(points, 1.5, (16, 12, 14))
    decoded, confidence = decode_single_instance(heatmaps)
    absent = torch.tensor([[False, True], [True, False]])
    assert torch.isnan(decoded[absent]).all() and confidence[absent].eq(0).all()
    assert torch.allclose(decoded[~absent], points[~absent], atol=1e-4)


def test_degenerate_fits_keep_the_integer_coordinate() -> None:
    spike = torch.zeros(1, 1, 9, 9)
    spike[0, 0, 3, 6] = 1.0
    assert decode_single_instance(spike)[0][0, 0, 0].tolist() == [3.0, 6.0]
    # a singleton axis keeps its only index; the other axis is still refined
    line = render_gaussian_heatmaps(torch.tensor([[[[0.0, 11.37]]]]), 2.0, (1, 30))
    assert torch.allclose(decode_single_instance(line)[0], torch.tensor([0.0, 11.37]), atol=1e-4)


def test_output_dtype_and_device_follow_the_heatmaps() -> None:
    heatmaps = render_gaussian_heatmaps(torch.tensor([[[[6.25, 9.5]]]], dtype=torch.float64), 2.0, (16, 20))
    points, confidence = decode_single_instance(heatmaps)
    assert points.dtype == confidence.dtype == torch.float64
    assert torch.allclose(points, torch.tensor([6.25, 9.5], dtype=torch.float64), atol=1e-9)
    as_int = (heatmaps * 255).round().to(torch.uint8)
    points, confidence = decode_single_instance(as_int)
    assert points.dtype == confidence.dtype == torch.float32
    assert confidence.item() == float(as_int.max())
    assert torch.allclose(points, torch.tensor([6.25, 9.5]), atol=0.05)
    half, _ = decode_single_instance(heatmaps.half())
    assert half.dtype == torch.float16 and torch.allclose(half.float(), torch.tensor([6.25, 9.5]), atol=0.05)
    multi_points, scores = decode_multi_instance(as_int, 2, threshold=10)
    assert multi_points.dtype == scores.dtype == torch.float32


def test_meta_tensor_heatmaps_give_plain_tensors() -> None:
    heatmaps = MetaTensor(render_gaussian_heatmaps(torch.tensor([[[[5.3, 6.2]]]]), 4.0, (24, 24)))
    for points, values in (decode_single_instance(heatmaps), decode_multi_instance(heatmaps, 2)):
        assert type(points) is torch.Tensor and type(values) is torch.Tensor
        assert torch.allclose(points[0, 0, 0], torch.tensor([5.3, 6.2]), atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decoding_on_cuda_matches_cpu() -> None:
    points = torch.tensor([[[[20.3, 30.6]], [[50.5, 20.1]]]])
    heatmaps = render_gaussian_heatmaps(points, [3.0, 40.0], (128, 128))
    on_gpu = decode_single_instance(heatmaps.cuda())
    on_cpu = decode_single_instance(heatmaps)
    assert on_gpu[0].device.type == "cuda"
    assert torch.allclose(on_gpu[0].cpu(), on_cpu[0], atol=1e-4)
    multi_gpu, multi_cpu = decode_multi_instance(heatmaps.cuda(), 2), decode_multi_instance(heatmaps, 2)
    assert torch.allclose(multi_gpu[0].cpu(), multi_cpu[0], atol=1e-4, equal_nan=True)


@pytest.mark.parametrize(("seed", "noise"), [(0, 0.0), (1, 0.0), (2, 0.05), (3, 0.05)])
def test_multi_instance_recovers_separated_instances_2d(seed: int, noise: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    size, nms_kernel, counts = 160, 11, [[5, 3], [1, 4]]
    sigmas = (3.5 + 1.5 * torch.rand(2, generator=generator)).tolist()
    points = torch.full((2, 2, 6, 2), NAN, dtype=torch.float64)
    for b in range(2):
        for channel in range(2):
            min_distance = 3 * sigmas[channel] + nms_kernel
            points[b, channel, : counts[b][channel]] = separated_points(
                generator, counts[b][channel], 2, size, min_distance
            )
    heatmaps = render_gaussian_heatmaps(points, sigmas, (size, size), dtype=torch.float32)
    heatmaps = heatmaps + noise * torch.randn(heatmaps.shape, generator=generator)
    found, scores = decode_multi_instance(heatmaps, max_instances=6, nms_kernel=nms_kernel)
    assert found.shape == (2, 2, 6, 2) and scores.shape == (2, 2, 6)
    tolerance = 0.5 if noise else 0.05
    for b in range(2):
        for channel in range(2):
            count = counts[b][channel]
            assert scores[b, channel, :count].gt(0.5).all() and scores[b, channel, count:].eq(0).all()
            assert torch.equal(scores[b, channel].sort(descending=True).values, scores[b, channel])
            assert torch.isnan(found[b, channel, count:]).all()
            errors = matched_errors(found[b, channel, :count], points[b, channel, :count])
            assert errors.max().item() <= tolerance, errors


def test_multi_instance_recovers_separated_instances_3d() -> None:
    generator = torch.Generator().manual_seed(7)
    size, sigma, nms_kernel = 40, 2.5, 7
    truth = separated_points(generator, 3, 3, size, 3 * sigma + nms_kernel)
    points = torch.cat([truth, torch.full((1, 3), NAN, dtype=torch.float64)]).reshape(1, 1, 4, 3)
    heatmaps = render_gaussian_heatmaps(points, sigma, (size,) * 3, dtype=torch.float32)
    found, scores = decode_multi_instance(heatmaps, max_instances=4, median_kernel=3, nms_kernel=nms_kernel)
    assert scores[0, 0, :3].gt(0.5).all() and scores[0, 0, 3] == 0 and torch.isnan(found[0, 0, 3]).all()
    assert matched_errors(found[0, 0, :3], truth).max().item() <= 0.05


def test_multi_instance_1d_and_max_instances_keeps_the_highest() -> None:
    points = torch.tensor([[[[10.3], [30.6], [52.2]]]])
    heatmaps = render_gaussian_heatmaps(points, 2.0, (64,)) * torch.tensor([0.9, 1.0, 0.8]).repeat_interleave(
        torch.tensor([20, 22, 22])
    )
    found, scores = decode_multi_instance(heatmaps, max_instances=2, median_kernel=3, nms_kernel=7)
    assert scores[0, 0, 0] > scores[0, 0, 1] > 0.5
    assert torch.allclose(found[0, 0, :, 0], torch.tensor([30.6, 10.3]), atol=0.05)


def test_channels_without_a_peak_above_threshold_yield_no_instances() -> None:
    generator = torch.Generator().manual_seed(0)
    heatmaps = torch.zeros(1, 3, 64, 64)
    heatmaps[0, 1] = 0.05 * torch.randn(64, 64, generator=generator)
    heatmaps[0, 2] = 0.4 * render_gaussian_heatmaps(torch.tensor([[[[30.0, 30.0]]]]), 4.0, (64, 64))[0, 0]
    points, scores = decode_multi_instance(heatmaps, max_instances=3)
    assert torch.isnan(points).all() and scores.eq(0).all()


def test_plateau_yields_one_detection_at_its_centre() -> None:
    clipped = render_gaussian_heatmaps(torch.tensor([[[[30.0, 40.0]]]]), 4.0, (64, 64)).clamp(max=0.6)
    for refine in (False, True):
        points, scores = decode_multi_instance(clipped, max_instances=3, median_kernel=None, refine=refine)
        assert scores[0, 0].tolist() == pytest.approx([0.6, 0.0, 0.0])
        assert torch.allclose(points[0, 0, 0], torch.tensor([30.0, 40.0]), atol=1e-4)
    # equal maxima inside one NMS window, not touching: merged at their mean
    spikes = torch.zeros(1, 1, 30, 30)
    spikes[0, 0, 10, 10] = spikes[0, 0, 12, 13] = 1.0
    points, scores = decode_multi_instance(spikes, max_instances=3, median_kernel=None)
    assert scores[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert points[0, 0, 0].tolist() == [11.0, 11.5]


@pytest.mark.parametrize("shape", [(4, 4), (1, 1, 2, 2, 2, 2)])
def test_heatmaps_of_wrong_rank_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="Argument `heatmaps` must have shape"):
        decode_single_instance(torch.zeros(shape))
    with pytest.raises(ValueError, match="Argument `heatmaps` must have shape"):
        decode_multi_instance(torch.zeros(shape), 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nms_kernel": 4}, "Argument `nms_kernel` must be an odd positive integer, got 4."),
        ({"nms_kernel": 0}, "Argument `nms_kernel` must be an odd positive integer, got 0."),
        ({"nms_kernel": -3}, "Argument `nms_kernel` must be an odd positive integer, got -3."),
        ({"median_kernel": 4}, "Argument `median_kernel` must be an odd positive integer or 2 of them, got 4."),
        (
            {"median_kernel": (3, 4)},
            "Argument `median_kernel` must be an odd positive integer or 2 of them, got (3, 4).",
        ),
        ({"median_kernel": (3,)}, "Argument `median_kernel` must be an odd positive integer or 2 of them, got (3,)."),
        ({"max_instances": 0}, "Argument `max_instances` must be a positive integer, got 0."),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs: dict, message: str) -> None:
    arguments = {"max_instances": 2, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        decode_multi_instance(torch.zeros(1, 1, 8, 8), **arguments)
