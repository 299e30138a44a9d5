"""HeatmapUNet: shapes in 1D/2D/3D, the paper's conv-layer count, argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_adaloss.networks import HeatmapUNet, catheter_unet, endoscopy_unet


def count_convs(module: nn.Module, kernel_size: int) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    return sum(1 for m in convs if m.kernel_size[0] == kernel_size)


@pytest.mark.parametrize(("dims", "shape"), [(1, (32,)), (2, (32, 24)), (3, (16, 8, 12))])
def test_output_shape(dims: int, shape: tuple[int, ...]) -> None:
    net = HeatmapUNet(dims, 2, 3, channels=(4, 8, 16), kernel_size=3).eval()
    assert net(torch.zeros(2, 2, *shape)).shape == (2, 3, *shape)


def test_paper_networks_have_nine_conv_layers() -> None:
    catheter = catheter_unet()
    assert count_convs(catheter, 5) == 9
    assert any(isinstance(m, nn.BatchNorm2d) for m in catheter.modules())
    assert any(isinstance(m, nn.ReLU) for m in catheter.modules())
    endoscopy = endoscopy_unet()
    assert count_convs(endoscopy, 5) == 9
    assert any(isinstance(m, nn.LeakyReLU) for m in endoscopy.modules())
    assert endoscopy(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`spatial_dims` must be 1, 2 or 3, got 4"):
        HeatmapUNet(4, 1, 1)
    with pytest.raises(ValueError, match="`kernel_size` must be an odd positive integer, got 4"):
        HeatmapUNet(2, 1, 1, kernel_size=4)
    with pytest.raises(ValueError, match="must be divisible by 4"):
        catheter_unet()(torch.zeros(1, 1, 30, 32))
