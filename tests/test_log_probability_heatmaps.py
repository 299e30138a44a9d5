"""Log-probability heatmaps: SpatialLogSoftmax networks, the cross-entropy criterion, decoding and confidence."""

from __future__ import annotations

import math

import pytest
import torch

from monai_adaloss.decoding import decode_multi_instance, decode_single_instance
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.inference.heatmap_points import HeatmapDecoder
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.model_info import LandmarkModelInfo
from monai_adaloss.networks import (
    SpatialLogSoftmax,
    catheter_context_unet,
    catheter_unet,
    face_dense_unet,
    hand_scn,
)
from monai_adaloss.transforms import DecodeHeatmap

NAN = float("nan")


def log_target(points: torch.Tensor, sigma: float, shape: tuple[int, ...]) -> torch.Tensor:
    """The normalised Gaussian target as log-probabilities ``(B, L, *shape)`` (float64)."""
    target = render_gaussian_heatmaps(points.double(), torch.tensor(sigma, dtype=torch.float64), shape)
    target = target / target.flatten(2).sum(2)[..., None, None]
    return target.clamp(min=1e-300).log()


def test_spatial_log_softmax_normalises_each_channel() -> None:
    x = torch.randn(2, 3, 5, 7) * 10
    out = SpatialLogSoftmax()(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out.exp().flatten(2).sum(2), torch.ones(2, 3))
    # shift invariance per channel: adding a constant to one channel's logits changes nothing
    torch.testing.assert_close(SpatialLogSoftmax()(x + torch.tensor([0.0, 5.0, -3.0])[None, :, None, None]), out)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: catheter_unet(1, 2, (4, 8, 16), output="log_probability"),
        lambda: catheter_context_unet(1, 2, (4, 8, 16, 32, 64), output="log_probability"),
        lambda: hand_scn(1, 3, (4, 8, 16, 32), output="log_probability"),
        lambda: face_dense_unet(1, 2, init_channels=4, growth_rate=4),
    ],
)
def test_networks_with_log_probability_output_script_with_equal_outputs(factory) -> None:
    net = factory().eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        out = net(x)
        scripted = torch.jit.script(net)(x)
    torch.testing.assert_close(scripted, out)
    if isinstance(net, torch.nn.Module) and "SpatialLogSoftmax" in repr(net):
        torch.testing.assert_close(out.exp().flatten(2).sum(2), torch.ones(out.shape[:2]))


def test_unknown_output_is_refused() -> None:
    with pytest.raises(ValueError, match="output"):
        catheter_unet(output="softmax")


def test_cross_entropy_is_zero_for_the_target_and_the_reference_for_uniform() -> None:
    points = torch.tensor([[[[10.0, 20.0]], [[NAN, NAN]]]], dtype=torch.float64)
    loss_fn = AdalossHeatmapLoss(sigma=2.0, criterion="cross_entropy")
    perfect = log_target(points[:, :1], 2.0, (32, 32))
    pred = torch.cat([perfect, torch.zeros_like(perfect)], dim=1)
    assert loss_fn(pred, points).item() == pytest.approx(0.0, abs=1e-9)
    assert loss_fn.last_channel_counts.tolist() == [1.0, 0.0]  # the absent landmark is masked out
    reference = loss_fn.last_channel_reference_sums[0].item()
    uniform = torch.full((1, 2, 32, 32), -math.log(32 * 32), dtype=torch.float64)
    assert loss_fn(uniform, points).item() == pytest.approx(reference, rel=1e-9)
    # entropy of a 2D Gaussian with sigma 2 (discretised): KL(t || uniform) = log N - H(t)
    entropy = 1.0 + math.log(2 * math.pi * 4.0)
    assert reference == pytest.approx(math.log(1024) - entropy, rel=1e-3)


def test_cross_entropy_penalises_a_distractor_by_the_mass_it_takes() -> None:
    """Half of the probability on a far peak costs log 2 (KL of t against t/2 + distractor/2)."""
    points = torch.tensor([[[[10.0, 10.0]]]], dtype=torch.float64)
    right = log_target(points, 2.0, (48, 48)).exp()
    wrong = log_target(torch.tensor([[[[38.0, 38.0]]]], dtype=torch.float64), 2.0, (48, 48)).exp()
    mixed = (0.5 * right + 0.5 * wrong).log()
    loss = AdalossHeatmapLoss(sigma=2.0, criterion="cross_entropy")(mixed, points)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_cross_entropy_gradient_reaches_a_far_target() -> None:
    """A confident peak 30 px off still gets a finite gradient that moves mass to the right voxel."""
    logits = torch.full((1, 1, 48, 48), -50.0)
    logits[0, 0, 40, 40] = 50.0
    logits.requires_grad_(True)
    points = torch.tensor([[[[10.0, 10.0]]]])
    loss = AdalossHeatmapLoss(sigma=2.0, criterion="cross_entropy")(SpatialLogSoftmax()(logits), points)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 50
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0, 0, 10, 10] < 0 < logits.grad[0, 0, 40, 40]  # gradient descent raises the right voxel


def test_cross_entropy_treats_a_point_far_outside_the_grid_as_absent() -> None:
    points = torch.tensor([[[[100.0, 10.0]]], [[[5.0, 5.0]]]])
    loss_fn = AdalossHeatmapLoss(sigma=2.0, criterion="cross_entropy")
    pred = SpatialLogSoftmax()(torch.zeros(2, 1, 32, 32))
    loss_fn(pred, points)
    assert loss_fn.last_channel_counts.tolist() == [1.0]
    # a point just outside the border keeps most of its mass inside and counts
    loss_fn(pred[:1], torch.tensor([[[[32.5, 10.0]]]]))
    assert loss_fn.last_channel_counts.tolist() == [1.0]


def test_unknown_criterion_is_refused() -> None:
    with pytest.raises(ValueError, match="criterion"):
        AdalossHeatmapLoss(sigma=2.0, criterion="l1")


def test_decoding_log_probabilities_equals_decoding_their_exp() -> None:
    points = torch.tensor([[[[12.3, 20.7]], [[30.1, 5.4]]]], dtype=torch.float64)
    logp = log_target(points, 2.5, (40, 40)).float()
    decoded, confidence = decode_single_instance(logp, log_probabilities=True)
    expected, expected_confidence = decode_single_instance(logp.exp())
    torch.testing.assert_close(decoded, expected)
    torch.testing.assert_close(confidence, expected_confidence)
    torch.testing.assert_close(decoded[:, :, 0].double(), points[:, :, 0], atol=1e-3, rtol=0)
    multi, _score = decode_multi_instance(logp, 1, median_kernel=None, threshold=0.001, log_probabilities=True)
    torch.testing.assert_close(multi, expected, atol=1e-4, rtol=0)
    points_t, _conf_t = DecodeHeatmap(log_probabilities=True)(logp[0])
    torch.testing.assert_close(points_t, decoded[0])


def test_inference_confidence_is_one_for_a_prediction_as_sharp_as_the_target() -> None:
    info = LandmarkModelInfo(
        landmark_names=["tip"],
        input_size=[32, 32],
        network={"_target_": "monai_adaloss.networks.catheter_unet", "output": "log_probability"},
        decoding={"refine": True, "log_probabilities": True},
        sigma=[2.0],
    )
    logp = log_target(torch.tensor([[[[16.0, 16.0]]]]), 2.0, (32, 32)).float()
    _points, confidence = HeatmapDecoder(info)(logp)
    assert confidence.item() == pytest.approx(1.0, rel=1e-4)
    wider = log_target(torch.tensor([[[[16.0, 16.0]]]]), 4.0, (32, 32)).float()
    assert HeatmapDecoder(info)(wider)[1].item() == pytest.approx(0.25, rel=0.02)


def test_nearly_flat_maps_decode_to_points_on_the_grid() -> None:
    """An untrained network's almost uniform maps: the sub-voxel fit may not leave the grid."""
    torch.manual_seed(0)
    net = hand_scn(1, 37, (4, 8, 16), output="log_probability")
    net.spatial_configuration[-1].conv.bias.data.fill_(0.5)
    net.eval()
    with torch.no_grad():
        logp = net(torch.rand(2, 1, 32, 32))
    points, _ = decode_single_instance(logp, log_probabilities=True)
    assert bool(((points >= -0.5) & (points <= 31.5)).all())
