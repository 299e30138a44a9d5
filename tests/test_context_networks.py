"""Whole-image networks: CoordConv channels, the five-level catheter U-Net's receptive field, the
spatial-configuration network, and TorchScript scripting with outputs equal to eager mode."""

from __future__ import annotations

import pytest
import torch

from monai_adaloss.networks import (
    AddCoordinates,
    HeatmapUNet,
    SpatialConfigurationNet,
    catheter_context_unet,
    catheter_resnet_unet,
    catheter_unet,
    hand_scn,
)


def receptive_field_1d(levels: int, kernel_size: int, length: int = 1024) -> int:
    """Width of the input region that reaches the centre output voxel (non-zero input gradient)."""
    torch.manual_seed(0)
    net = HeatmapUNet(1, 1, 1, channels=[2] * levels, kernel_size=kernel_size).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.Conv1d):  # positive weights and biases: every ReLU passes gradients
            torch.nn.init.constant_(module.weight, 0.1)
            torch.nn.init.constant_(module.bias, 0.1)
    x = torch.ones(1, 1, length, requires_grad=True)
    net(x)[0, 0, length // 2].backward()
    touched = (x.grad[0, 0] != 0).nonzero().flatten()
    return int(touched.max() - touched.min() + 1)


def test_receptive_field_covers_the_input_only_with_more_levels() -> None:
    assert receptive_field_1d(3, 5) < 128  # the paper's catheter U-Net: about half of a 128 px input
    assert receptive_field_1d(5, 5) > 256  # the context U-Net: more than a 256 px input


def test_add_coordinates_2d_and_3d() -> None:
    out = AddCoordinates()(torch.zeros(2, 1, 3, 5))
    assert out.shape == (2, 3, 3, 5)
    torch.testing.assert_close(out[0, 1, :, 0], torch.tensor([-1.0, 0.0, 1.0]))  # axis 0
    torch.testing.assert_close(out[1, 2, 0], torch.linspace(-1, 1, 5))  # axis 1
    assert AddCoordinates()(torch.zeros(1, 2, 2, 3, 4)).shape == (1, 5, 2, 3, 4)


def test_context_unet_shapes_and_coordinates() -> None:
    net = catheter_context_unet(channels=(4, 8, 8, 8, 8)).eval()
    assert net(torch.zeros(2, 1, 32, 48)).shape == (2, 1, 32, 48)
    assert isinstance(net.stem, AddCoordinates)
    assert not isinstance(catheter_unet().stem, AddCoordinates)  # the paper's network keeps no coordinates
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(1, 1, 40, 32))


def test_resnet_unet_sees_the_whole_input_and_outputs_a_distribution() -> None:
    torch.manual_seed(0)
    net = catheter_resnet_unet(channels=(8, 8, 8, 4, 4), output="log_probability").eval()
    x = torch.rand(2, 1, 64, 96, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 1, 64, 96)
    torch.testing.assert_close(out.exp().sum(dim=(2, 3)), torch.ones(2, 1))
    out[0, 0, 32, 48].backward()  # one output pixel in the middle: its gradient reaches every corner
    grad = x.grad[0, 0].abs()
    assert all(float(corner) > 0 for corner in (grad[0, 0], grad[0, -1], grad[-1, 0], grad[-1, -1]))
    assert catheter_resnet_unet(channels=(8, 8, 8, 4, 4)).eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="5 decoder widths"):
        catheter_resnet_unet(channels=(8, 8, 8))
    with pytest.raises(ValueError, match="output"):
        catheter_resnet_unet(output="probability")
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.zeros(1, 1, 40, 32))


def test_spatial_configuration_net() -> None:
    torch.manual_seed(0)
    net = SpatialConfigurationNet(2, 1, 3, channels=(4, 8), sc_channels=8, sc_layers=2, sc_downsample=4).eval()
    x = torch.rand(2, 1, 32, 32)
    out = net(x)
    assert out.shape == (2, 3, 32, 32)
    local = net.local_appearance(x)
    ratio = out / local  # the bounded spatial-configuration factor: tanh(bias 0.5 + tiny weights) at start
    assert float(ratio.abs().max()) < 1.0
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(torch.tanh(torch.tensor(0.5)))), atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="sc_layers"):
        SpatialConfigurationNet(2, 1, 3, sc_layers=0)
    with pytest.raises(ValueError, match="sc_downsample=4"):
        SpatialConfigurationNet(2, 1, 3, channels=(4, 8), sc_downsample=4)(torch.zeros(1, 1, 34, 34))


@pytest.mark.parametrize(
    "factory",
    [
        lambda: catheter_context_unet(channels=(4, 8, 8, 8, 8)),
        lambda: hand_scn(out_channels=5, channels=(4, 8, 8)),
        lambda: catheter_unet(channels=(4, 8, 16)),
        lambda: HeatmapUNet(3, 1, 2, channels=(2, 4), kernel_size=3, coordinates=True),
        lambda: catheter_resnet_unet(channels=(8, 8, 8, 4, 4), output="log_probability"),
    ],
    ids=["catheter_context_unet", "hand_scn", "catheter_unet", "unet3d_coordinates", "catheter_resnet_unet"],
)
def test_networks_script_with_equal_outputs(factory) -> None:
    torch.manual_seed(0)
    net = factory().eval()
    shape = (16, 16, 16) if isinstance(net, HeatmapUNet) and net.spatial_dims == 3 else (32, 32)
    x = torch.rand(2, 1, *shape)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_input_channels_of_coordconv_networks_leave_out_the_coordinate_channels() -> None:
    """The ONNX / TorchScript example input has the image's channels, not the first convolution's."""
    from monai_adaloss.export import input_channels
    from monai_adaloss.networks import catheter_context_unet, catheter_unet, hand_scn

    assert input_channels(catheter_unet(1, 1, (4, 8, 16))) == 1
    assert input_channels(catheter_context_unet(1, 1, (4, 8, 16, 32, 64))) == 1
    assert input_channels(hand_scn(1, 37, (4, 8, 16, 32))) == 1
    assert input_channels(catheter_resnet_unet(1, 1, (8, 8, 8, 4, 4))) == 1
    assert input_channels(catheter_context_unet(3, 1, (4, 8, 16, 32, 64), coordinates=False)) == 3
