"""The paper's heatmap regression networks, built from MONAI blocks.

``HeatmapUNet`` is a plain U-Net whose number of convolution layers follows the paper's description:
with ``n = len(channels)`` levels it has ``2 (n - 1)`` encoder convolutions, one bottleneck
convolution and ``2 (n - 1)`` decoder convolutions (9 for the default three levels), each
convolution + normalisation + activation, then a 1x1 projection to one heatmap per landmark (not
counted, it is a linear read-out). Down-sampling is max pooling and up-sampling is parameter-free
(linear interpolation), so the counted layers are the only convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

__all__ = ["HeatmapUNet", "catheter_unet", "endoscopy_unet"]


class HeatmapUNet(nn.Module):
    """U-Net for heatmap regression in 1D, 2D or 3D.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: image channels (1 for X-ray, 3 for RGB endoscopy).
        out_channels: heatmap channels, one per landmark type L.
        channels: feature channels per level, e.g. ``(16, 32, 64)``; the spatial size must be
            divisible by ``2 ** (len(channels) - 1)``.
        kernel_size: odd convolution kernel size (the paper: 5 for the catheter U-Net).
        act: MONAI activation name or (name, args), e.g. ``"relu"`` or ``("leakyrelu", {"negative_slope": 0.1})``.
        norm: MONAI normalisation name, e.g. ``"batch"`` or ``"instance"``.

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``; the output is linear
    (no final activation), to be compared with Gaussian targets.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64),
        kernel_size: int = 5,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"Argument `spatial_dims` must be 1, 2 or 3, got {spatial_dims}.")
        if len(channels) < 2:
            raise ValueError(f"Argument `channels` must hold at least 2 levels, got {tuple(channels)}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Argument `kernel_size` must be an odd positive integer, got {kernel_size}.")
        self.spatial_dims = spatial_dims
        self.levels = len(channels)

        def conv(cin: int, cout: int) -> Convolution:
            return Convolution(spatial_dims, cin, cout, kernel_size=kernel_size, act=act, norm=norm)

        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in channels[:-1]:
            self.encoders.append(nn.Sequential(conv(previous, width), conv(width, width)))
            previous = width
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.bottleneck = conv(channels[-2], channels[-1])
        self.decoders = nn.ModuleList()
        previous = channels[-1]
        for width in reversed(channels[:-1]):
            self.decoders.append(nn.Sequential(conv(previous + width, width), conv(width, width)))
            previous = width
        self.head = Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True)
        self._interp_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        divisor = 2 ** (self.levels - 1)
        if any(s % divisor for s in x.shape[2:]):
            raise ValueError(
                f"Input spatial shape {tuple(x.shape[2:])} must be divisible by {divisor} for {self.levels} levels."
            )
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            x = nn.functional.interpolate(x, size=skip.shape[2:], mode=self._interp_mode, align_corners=False)
            x = decoder(torch.cat([x, skip], dim=1))
        return self.head(x)


def catheter_unet(in_channels: int = 1, out_channels: int = 1, channels: Sequence[int] = (16, 32, 64)) -> HeatmapUNet:
    """The paper's catheter-tip U-Net: 9 conv layers, kernel 5, BatchNorm + ReLU (2D)."""
    return HeatmapUNet(2, in_channels, out_channels, channels=channels, kernel_size=5, act="relu", norm="batch")


def endoscopy_unet(in_channels: int = 3, out_channels: int = 2, channels: Sequence[int] = (16, 32, 64)) -> HeatmapUNet:
    """The paper's endoscopy U-Net: 9 conv layers, BatchNorm + LeakyReLU (2D), kernel 5."""
    return HeatmapUNet(
        2, in_channels, out_channels, channels=channels, kernel_size=5, act=("leakyrelu", {"negative_slope": 0.1}),
        norm="batch",
    )
