"""DenseHeatmapUNet: the paper's face network (23 conv layers, kernel 11), dense connectivity, shapes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from monai_adaloss.networks import DenseHeatmapUNet, face_dense_unet


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Kernel-11 convolutions on CPU: stay on one core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def convs(module: nn.Module) -> list[nn.Conv1d | nn.Conv2d | nn.Conv3d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]


def test_face_dense_unet_has_23_conv_layers_of_kernel_11_and_a_1x1_read_out() -> None:
    net = face_dense_unet()
    layers = convs(net)
    assert sum(1 for m in layers if m.kernel_size == (11, 11)) == 23
    assert len(layers) == 24 and layers[-1] is net.head.conv and layers[-1].kernel_size == (1, 1)
    assert layers[0].in_channels == 3 and layers[-1].out_channels == 68
    assert sum(1 for m in net.modules() if isinstance(m, nn.BatchNorm2d)) == 23
    assert sum(1 for m in net.modules() if isinstance(m, nn.ReLU)) == 23
    num_parameters = sum(p.numel() for p in net.parameters())
    print(f"face_dense_unet parameters: {num_parameters}")
    assert 3_000_000 < num_parameters < 4_000_000


def test_face_dense_unet_output_shape_for_a_64x64_image() -> None:
    net = face_dense_unet().eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 68, 64, 64) and torch.isfinite(out).all()


def test_dense_layers_see_the_concatenation_of_all_previous_features() -> None:
    growth, init = 4, 6
    net = DenseHeatmapUNet(2, 1, 2, block_layers=(2, 3), init_channels=init, growth_rate=growth, kernel_size=3)
    # stem; encoder block (keeps its input); bottleneck (new features only); decoder block (keeps its input)
    expected_inputs = [1, init, init + growth, init + 2 * growth, init + 3 * growth, init + 4 * growth]
    skip = init + 2 * growth
    expected_inputs += [3 * growth + skip, 3 * growth + skip + growth, 3 * growth + skip + 2 * growth]
    assert [m.in_channels for m in convs(net)] == expected_inputs
    assert sum(1 for m in convs(net) if m.kernel_size == (3, 3)) == 1 + 2 * 2 + 3


@pytest.mark.parametrize(("dims", "shape"), [(1, (16,)), (2, (16, 8)), (3, (8, 4, 8))])
def test_output_shape_in_1d_2d_3d(dims: int, shape: tuple[int, ...]) -> None:
    net = DenseHeatmapUNet(dims, 2, 3, block_layers=(1, 1, 1), init_channels=4, growth_rate=2, kernel_size=3).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 2, *shape)).shape == (2, 3, *shape)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`spatial_dims` must be 1, 2 or 3, got 4"):
        DenseHeatmapUNet(4, 1, 1)
    with pytest.raises(ValueError, match="`kernel_size` must be an odd positive integer, got 10"):
        DenseHeatmapUNet(2, 1, 1, kernel_size=10)
    with pytest.raises(ValueError, match="`block_layers` must hold at least 2 positive layer counts"):
        DenseHeatmapUNet(2, 1, 1, block_layers=(3,))
    with pytest.raises(ValueError, match="`block_layers` must hold at least 2 positive layer counts"):
        DenseHeatmapUNet(2, 1, 1, block_layers=(3, 0))
    with pytest.raises(ValueError, match="`growth_rate` must be a positive integer, got 0"):
        DenseHeatmapUNet(2, 1, 1, growth_rate=0)
    with pytest.raises(ValueError, match="must be divisible by 8"):
        DenseHeatmapUNet(2, 1, 1, block_layers=(1, 1, 1, 1), init_channels=2, growth_rate=2)(torch.zeros(1, 1, 12, 16))
