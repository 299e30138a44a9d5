"""The paper's heatmap regression networks, built from MONAI blocks.

``HeatmapUNet`` is a plain U-Net whose number of convolution layers follows the paper's description:
with ``n = len(channels)`` levels it has ``2 (n - 1)`` encoder convolutions, one bottleneck
convolution and ``2 (n - 1)`` decoder convolutions (9 for the default three levels), each
convolution + normalisation + activation, then a 1x1 projection to one heatmap per landmark (not
counted, it is a linear read-out). Down-sampling is max pooling and up-sampling is parameter-free
(linear interpolation), so the counted layers are the only convolutions.

``DenseHeatmapUNet`` is the paper's face network (Dense U-Net: 23 convolution layers, kernel 11): a
U-Net whose levels are dense blocks, with the same parameter-free down- and up-sampling, so that
its counted convolutions are a stem convolution plus the dense layers (the 1x1 read-out is again
not counted).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

__all__ = [
    "HEATMAP_OUTPUTS",
    "AddCoordinates",
    "DenseHeatmapUNet",
    "HeatmapUNet",
    "ResNetHeatmapUNet",
    "SpatialConfigurationNet",
    "SpatialLogSoftmax",
    "catheter_context_unet",
    "catheter_resnet_unet",
    "catheter_unet",
    "endoscopy_unet",
    "face_dense_unet",
    "hand_scn",
]

HEATMAP_OUTPUTS = ("heatmap", "log_probability")
"""What a heatmap network's output holds: ``"heatmap"`` (linear, compared with Gaussian targets by a
squared error) or ``"log_probability"`` (a :class:`SpatialLogSoftmax` after the linear output: each
channel is a log-probability distribution over the voxels, trained by cross-entropy against the
normalised Gaussian target and decoded from ``exp`` of it)."""


class AddCoordinates(nn.Module):
    """CoordConv input channels: append one channel per spatial axis holding that axis' position.

    The position runs linearly from -1 (first voxel) to +1 (last voxel), so a network can tell the
    centre of the field from its border whatever the input size.

    Shapes: ``(B, C, *spatial) -> (B, C + D, *spatial)`` with ``D = len(spatial)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial: list[int] = list(x.shape[2:])
        channels = [x]
        for axis in range(len(spatial)):
            size = spatial[axis]
            position = torch.arange(size, dtype=x.dtype, device=x.device) * (2.0 / max(size - 1, 1)) - 1.0
            shape = [1, 1] + [1 for _ in spatial]
            shape[2 + axis] = size
            expanded = [x.shape[0], 1] + spatial  # noqa: RUF005 (TorchScript has no list unpacking)
            channels.append(position.reshape(shape).expand(expanded))
        return torch.cat(channels, dim=1)


class SpatialLogSoftmax(nn.Module):
    """Log-softmax over the spatial axes of each channel: every channel becomes a log-probability map.

    ``exp`` of the output sums to 1 over the voxels of each ``(sample, channel)``, so all voxels of a
    landmark compete for one unit of probability: a second peak on a distractor takes mass from the
    right one, which a cross-entropy loss penalises in proportion (a squared error against a Gaussian
    target barely sees a narrow false peak).

    Shapes: ``(B, C, *spatial) -> (B, C, *spatial)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x.flatten(2), dim=2).reshape(x.shape)


def _check_output(output: str) -> str:
    if output not in HEATMAP_OUTPUTS:
        raise ValueError(f"Argument `output` must be one of {HEATMAP_OUTPUTS}, got {output!r}.")
    return output


def _output_layer(output: str) -> nn.Module:
    return SpatialLogSoftmax() if _check_output(output) == "log_probability" else nn.Identity()


class _SkipConnectionUNet(nn.Module):
    """Shared U-Net pass: optional stem, encoders with skips and 2x pooling, bottleneck, decoders, head.

    Subclasses set ``stem``, ``encoders``, ``pool``, ``bottleneck``, ``decoders``, ``head``, ``levels``
    and ``_interp_mode``; each decoder takes the up-sampled features concatenated with its skip.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written for TorchScript: no generators, no zip(strict=...), no reversed() over a list of tensors
        divisor = 2 ** (self.levels - 1)
        for size in x.shape[2:]:
            if size % divisor != 0:
                raise ValueError(
                    f"Input spatial shape {x.shape[2:]} must be divisible by {divisor} for {self.levels} levels."
                )
        x = self.stem(x)
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        level = len(skips)
        for decoder in self.decoders:
            level -= 1
            skip = skips[level]
            x = nn.functional.interpolate(x, size=skip.shape[2:], mode=self._interp_mode, align_corners=False)
            x = decoder(torch.cat([x, skip], dim=1))
        return self.head(x)


class HeatmapUNet(_SkipConnectionUNet):
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
        coordinates: append CoordConv position channels (:class:`AddCoordinates`) to the input, so
            that the first convolution sees ``in_channels + spatial_dims`` channels (off by default:
            the paper's networks have none).
        output: ``"heatmap"`` (linear output, the paper's) or ``"log_probability"`` (a
            :class:`SpatialLogSoftmax` after it), see :data:`HEATMAP_OUTPUTS`.

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``; with ``output="heatmap"``
    the output is linear (no final activation), to be compared with Gaussian targets.

    Receptive field (measured from the input gradient of one output voxel, 1D): 69 voxels for the
    paper's three levels with kernel 5, 173 for five levels with kernel 3 and 329 for five levels
    with kernel 5; the paper's network sees about half of a 128 px input, five levels all of it.
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
        coordinates: bool = False,
        output: str = "heatmap",
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"Argument `spatial_dims` must be 1, 2 or 3, got {spatial_dims}.")
        if len(channels) < 2:
            raise ValueError(f"Argument `channels` must hold at least 2 levels, got {tuple(channels)}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Argument `kernel_size` must be an odd positive integer, got {kernel_size}.")
        _check_output(output)
        self.spatial_dims = spatial_dims
        self.levels = len(channels)
        self.stem = AddCoordinates() if coordinates else nn.Identity()

        def conv(cin: int, cout: int) -> Convolution:
            return Convolution(spatial_dims, cin, cout, kernel_size=kernel_size, act=act, norm=norm)

        self.encoders = nn.ModuleList()
        previous = in_channels + (spatial_dims if coordinates else 0)
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
        head = Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True)
        self.head = head if output == "heatmap" else nn.Sequential(head, _output_layer(output))
        self._interp_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]


def catheter_unet(
    in_channels: int = 1, out_channels: int = 1, channels: Sequence[int] = (16, 32, 64), output: str = "heatmap"
) -> HeatmapUNet:
    """The paper's catheter-tip U-Net: 9 conv layers, kernel 5, BatchNorm + ReLU (2D).

    ``output="log_probability"`` adds a :class:`SpatialLogSoftmax` (see :data:`HEATMAP_OUTPUTS`)."""
    return HeatmapUNet(
        2, in_channels, out_channels, channels=channels, kernel_size=5, act="relu", norm="batch", output=output
    )


def catheter_context_unet(
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (8, 16, 32, 64, 128),
    kernel_size: int = 3,
    coordinates: bool = True,
    output: str = "heatmap",
) -> HeatmapUNet:
    """The catheter U-Net made to see the whole frame: five levels, kernel 3 and CoordConv channels (ours).

    Same blocks as :func:`catheter_unet` (BatchNorm + ReLU, parameter-free down- and up-sampling)
    with two more levels and kernel 3 instead of 5: the receptive field grows from 69 to 173 input
    voxels, more than a 128 px input, so a line end can be told from *the* tip by where the catheter
    comes from, and a training step costs less than the paper's network (kernel 3; each level costs
    about the same because the channels double as the resolution halves; see docs/accuracy.md).
    The input size must be divisible by ``2 ** (len(channels) - 1)`` (16 by default).
    """
    return HeatmapUNet(
        2,
        in_channels,
        out_channels,
        channels=channels,
        kernel_size=kernel_size,
        act="relu",
        norm="batch",
        coordinates=coordinates,
        output=output,
    )


class ResNetHeatmapUNet(nn.Module):
    """A heatmap U-Net with a ResNet encoder: MONAI's ``FlexibleUNet``, trained from scratch (ours).

    The encoder is MONAI's ResNet (``backbone``: ``"resnet10"``, ``"resnet18"``, ...; no pre-trained
    weights, nothing is downloaded): a 7x7 stride-2 stem, max pooling and four stages of residual
    blocks down to 1/32 of the input, so every output pixel sees the whole frame, and most of the work
    runs at 1/4 resolution and below with 64-512 channels, where a CPU's convolutions are efficient.

    Args:
        in_channels: image channels.
        out_channels: heatmap channels, one per landmark type L.
        decoder_channels: the five decoder stages' widths, coarse to fine (the last at full resolution).
        backbone: a ResNet name of MONAI's ``FlexibleUNet`` encoders.
        output: ``"heatmap"`` or ``"log_probability"``, as in :class:`HeatmapUNet`.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``; ``H`` and ``W`` divisible by 32.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        decoder_channels: Sequence[int] = (64, 32, 16, 16, 8),
        backbone: str = "resnet10",
        output: str = "heatmap",
    ) -> None:
        super().__init__()
        from monai.networks.nets import FlexibleUNet

        if len(decoder_channels) != 5:
            raise ValueError(
                f"Argument `decoder_channels` must hold the 5 decoder widths, got {tuple(decoder_channels)}."
            )
        self.unet = FlexibleUNet(
            in_channels,
            out_channels,
            backbone,
            pretrained=False,
            decoder_channels=tuple(decoder_channels),
            spatial_dims=2,
        )
        self.output = _output_layer(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for size in x.shape[2:]:
            if size % 32 != 0:
                raise ValueError(f"Input spatial shape {x.shape[2:]} must be divisible by 32 for the ResNet encoder.")
        return self.output(self.unet(x))


def catheter_resnet_unet(
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (64, 32, 16, 16, 8),
    output: str = "heatmap",
) -> ResNetHeatmapUNet:
    """The catheter network with a ResNet-10 encoder (:class:`ResNetHeatmapUNet`); ``channels`` are the
    decoder widths. Its receptive field is the whole input; a training step on a 128 px input costs
    about 1.4 times the paper's U-Net's on a CPU (docs/accuracy.md)."""
    return ResNetHeatmapUNet(in_channels, out_channels, decoder_channels=channels, backbone="resnet10", output=output)


def endoscopy_unet(in_channels: int = 3, out_channels: int = 2, channels: Sequence[int] = (16, 32, 64)) -> HeatmapUNet:
    """The paper's endoscopy U-Net: 9 conv layers, BatchNorm + LeakyReLU (2D), kernel 5."""
    return HeatmapUNet(
        2,
        in_channels,
        out_channels,
        channels=channels,
        kernel_size=5,
        act=("leakyrelu", {"negative_slope": 0.1}),
        norm="batch",
    )


class _DenseBlock(nn.Module):
    """Dense block: layer ``i`` sees the block input concatenated with the outputs of layers ``0 .. i-1``.

    Each layer adds ``growth_rate`` channels. The block returns the block input and all new
    features concatenated (``keep_input``, ``in_channels + num_layers * growth_rate`` channels) or
    only the new features (``num_layers * growth_rate`` channels).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_layers: int,
        growth_rate: int,
        kernel_size: int,
        act: str | tuple,
        norm: str | tuple,
        keep_input: bool,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            Convolution(
                spatial_dims, in_channels + i * growth_rate, growth_rate, kernel_size=kernel_size, act=act, norm=norm
            )
            for i in range(num_layers)
        )
        self.keep_input = keep_input
        self.out_channels = num_layers * growth_rate + (in_channels if keep_input else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: list[torch.Tensor] = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        if self.keep_input:
            return torch.cat(features, dim=1)
        return torch.cat(features[1:], dim=1)


class DenseHeatmapUNet(_SkipConnectionUNet):
    """Dense U-Net (FC-DenseNet-style U-Net) for heatmap regression in 1D, 2D or 3D.

    With ``n = len(block_layers)`` levels:

    - a stem convolution ``in_channels -> init_channels``;
    - encoder levels ``0 .. n-2``: a dense block of ``block_layers[i]`` layers whose output keeps
      its input (``+ block_layers[i] * growth_rate`` channels), the skip connection, then 2x max
      pooling;
    - a bottleneck dense block of ``block_layers[-1]`` layers passing up only its new features;
    - decoder levels ``n-2 .. 0``: linear up-sampling, concatenation with the skip, a dense block of
      ``block_layers[i]`` layers passing up only its new features (the last one keeps its input,
      so the read-out also sees the full-resolution skip);
    - a 1x1 projection to one heatmap per landmark (not counted, a linear read-out).

    Every counted convolution is convolution + normalisation + activation with ``kernel_size``;
    there are ``1 + 2 * sum(block_layers[:-1]) + block_layers[-1]`` of them (23 for the default
    ``(3, 3, 3, 4)``). Down- and up-sampling have no parameters, so these are the only
    convolutions besides the read-out.

    Cost: kernel 11 is heavy (121 weights per channel pair in 2D), so widths are small: with the
    defaults (``init_channels=16``, ``growth_rate=12``) a dense layer has at most 196 input
    channels and the 2D network with 68 outputs has about 3.5 M parameters and about 58 G
    multiply-adds per 256x256 image, most of them at full resolution.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: image channels (3 for RGB faces).
        out_channels: heatmap channels, one per landmark type L (68 for 300-W).
        block_layers: dense layers per level, the last entry the bottleneck; the spatial size must
            be divisible by ``2 ** (len(block_layers) - 1)``.
        init_channels: channels of the stem convolution.
        growth_rate: channels each dense layer adds.
        kernel_size: odd convolution kernel size (the paper: 11).
        act: MONAI activation name or (name, args).
        norm: MONAI normalisation name, e.g. ``"batch"`` or ``"instance"``.
        output: ``"heatmap"`` or ``"log_probability"``, see :data:`HEATMAP_OUTPUTS`.

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``; with ``output="heatmap"``
    the output is linear (no final activation), to be compared with Gaussian targets.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        block_layers: Sequence[int] = (3, 3, 3, 4),
        init_channels: int = 16,
        growth_rate: int = 12,
        kernel_size: int = 11,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        output: str = "heatmap",
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"Argument `spatial_dims` must be 1, 2 or 3, got {spatial_dims}.")
        if len(block_layers) < 2 or any(n < 1 for n in block_layers):
            raise ValueError(
                f"Argument `block_layers` must hold at least 2 positive layer counts, got {tuple(block_layers)}."
            )
        for name, value in (("init_channels", init_channels), ("growth_rate", growth_rate)):
            if value < 1:
                raise ValueError(f"Argument `{name}` must be a positive integer, got {value}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Argument `kernel_size` must be an odd positive integer, got {kernel_size}.")
        _check_output(output)
        self.spatial_dims = spatial_dims
        self.levels = len(block_layers)

        def block(cin: int, num_layers: int, keep_input: bool) -> _DenseBlock:
            return _DenseBlock(spatial_dims, cin, num_layers, growth_rate, kernel_size, act, norm, keep_input)

        self.stem = Convolution(spatial_dims, in_channels, init_channels, kernel_size=kernel_size, act=act, norm=norm)
        self.encoders = nn.ModuleList()
        previous = init_channels
        for num_layers in block_layers[:-1]:
            self.encoders.append(block(previous, num_layers, keep_input=True))
            previous = self.encoders[-1].out_channels
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.bottleneck = block(previous, block_layers[-1], keep_input=False)
        self.decoders = nn.ModuleList()
        previous = self.bottleneck.out_channels
        for level in reversed(range(self.levels - 1)):
            skip_channels = self.encoders[level].out_channels
            self.decoders.append(block(previous + skip_channels, block_layers[level], keep_input=level == 0))
            previous = self.decoders[-1].out_channels
        head = Convolution(spatial_dims, previous, out_channels, kernel_size=1, conv_only=True)
        self.head = head if output == "heatmap" else nn.Sequential(head, _output_layer(output))
        self._interp_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]


def face_dense_unet(
    in_channels: int = 3, out_channels: int = 68, init_channels: int = 16, growth_rate: int = 12
) -> DenseHeatmapUNet:
    """The paper's 300-W face network: 2D Dense U-Net, 23 conv layers, kernel 11, BatchNorm + ReLU.

    68 heatmaps (the iBUG markup) from an RGB image by default; the widths are ours (the paper
    gives only depth and kernel), kept small because of the 11x11 kernels (see
    :class:`DenseHeatmapUNet`).
    """
    return DenseHeatmapUNet(
        2,
        in_channels,
        out_channels,
        block_layers=(3, 3, 3, 4),
        init_channels=init_channels,
        growth_rate=growth_rate,
        kernel_size=11,
        act="relu",
        norm="batch",
    )


class SpatialConfigurationNet(nn.Module):
    """Local appearance x spatial configuration heatmaps, in the spirit of Payer et al. (MedIA 2019).

    Two branches whose outputs are multiplied voxel by voxel:

    - **local appearance** ``H_LA``: a :class:`HeatmapUNet` from the image, one linear heatmap per
      landmark; precise, but it may answer on any structure that looks like the landmark;
    - **spatial configuration** ``H_SC``: ``H_LA`` average-pooled by ``sc_downsample`` (optionally
      with CoordConv channels), ``sc_layers`` convolutions with a large kernel and LeakyReLU at that
      low resolution, a linear convolution back to one channel per landmark, ``tanh`` (bounded to
      ``(-1, 1)``), and linear up-sampling to the input size. Each landmark's ``H_SC`` channel is
      computed from *all* landmarks' ``H_LA``, so a response that does not fit where the other
      landmarks are is suppressed.

    The output is ``H_LA * H_SC`` (linear, compared with Gaussian targets like any heatmap network).
    The last ``H_SC`` convolution starts with small weights and a bias of ``sc_initial_bias`` (ours,
    0.5: ``tanh`` = 0.46, so both branches receive gradients from the first step; Payer et al.
    start it at 0).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: image channels.
        out_channels: landmarks L.
        channels: feature channels per level of the local-appearance U-Net.
        kernel_size: convolution kernel of the local-appearance U-Net.
        sc_channels: feature channels of the spatial-configuration convolutions.
        sc_kernel_size: their (odd) kernel size.
        sc_layers: their number, >= 1 (plus the linear read-out).
        sc_downsample: pooling factor of the spatial-configuration branch; the input size must be
            divisible by it (and by ``2 ** (len(channels) - 1)``).
        coordinates: CoordConv channels at the input of both branches.
        norm: normalisation of the local-appearance U-Net.
        sc_initial_bias: initial bias of the last spatial-configuration convolution.
        output: ``"heatmap"`` (the product, linear) or ``"log_probability"`` (a
            :class:`SpatialLogSoftmax` of the product), see :data:`HEATMAP_OUTPUTS`.

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        kernel_size: int = 3,
        sc_channels: int = 64,
        sc_kernel_size: int = 7,
        sc_layers: int = 3,
        sc_downsample: int = 4,
        coordinates: bool = True,
        norm: str | tuple = "batch",
        sc_initial_bias: float = 0.5,
        output: str = "heatmap",
    ) -> None:
        super().__init__()
        self.output_layer = _output_layer(output)
        if sc_layers < 1:
            raise ValueError(f"Argument `sc_layers` must be >= 1, got {sc_layers}.")
        if sc_downsample < 1:
            raise ValueError(f"Argument `sc_downsample` must be >= 1, got {sc_downsample}.")
        if sc_kernel_size < 1 or sc_kernel_size % 2 == 0:
            raise ValueError(f"Argument `sc_kernel_size` must be an odd positive integer, got {sc_kernel_size}.")
        self.local_appearance = HeatmapUNet(
            spatial_dims, in_channels, out_channels, channels, kernel_size, "relu", norm, coordinates
        )
        self.sc_pool = Pool[Pool.AVG, spatial_dims](kernel_size=sc_downsample)
        self.sc_coordinates = AddCoordinates() if coordinates else nn.Identity()
        layers: list[nn.Module] = []
        previous = out_channels + (spatial_dims if coordinates else 0)
        act = ("leakyrelu", {"negative_slope": 0.1})
        for _ in range(sc_layers):
            layers.append(
                Convolution(spatial_dims, previous, sc_channels, kernel_size=sc_kernel_size, act=act, norm=None)
            )
            previous = sc_channels
        readout = Convolution(spatial_dims, previous, out_channels, kernel_size=sc_kernel_size, conv_only=True)
        layers.append(readout)
        self.spatial_configuration = nn.Sequential(*layers)
        conv = readout.conv
        nn.init.normal_(conv.weight, std=1e-4)
        nn.init.constant_(conv.bias, sc_initial_bias)
        self.sc_downsample = sc_downsample
        self._interp_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for size in x.shape[2:]:
            if size % self.sc_downsample != 0:
                raise ValueError(
                    f"Input spatial shape {x.shape[2:]} must be divisible by sc_downsample={self.sc_downsample}."
                )
        local = self.local_appearance(x)
        config = self.spatial_configuration(self.sc_coordinates(self.sc_pool(local)))
        config = nn.functional.interpolate(config, size=local.shape[2:], mode=self._interp_mode, align_corners=False)
        return self.output_layer(local * torch.tanh(config))


def hand_scn(
    in_channels: int = 1,
    out_channels: int = 37,
    channels: Sequence[int] = (16, 32, 64, 128),
    output: str = "heatmap",
) -> SpatialConfigurationNet:
    """The hand X-ray spatial-configuration network (ours): four-level local U-Net, kernel 3, CoordConv,
    three 7x7 spatial-configuration convolutions at a quarter of the input resolution."""
    return SpatialConfigurationNet(2, in_channels, out_channels, channels=channels, output=output)
