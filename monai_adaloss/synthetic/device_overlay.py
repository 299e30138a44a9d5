"""Synthetic device layers overlaid on X-ray frames: more distractor scenes for the same training frames.

A catheter detector's gross errors are answers on another device: an ECG lead's end, a clip, a
sternal wire, the end of a second tube (docs/accuracy.md). Each training frame shows only its own
few distractors, so a network can learn them by heart instead of learning what sets the catheter
tip apart. :class:`RandDeviceOverlayd` puts a different set of devices on top of a frame at every
draw, taken from a pool of layers rendered once by the fluoroscopy generator with the catheter and
the anatomy switched off (:func:`render_device_layers`).

Physics: X-ray attenuations along a ray add. A layer is the devices' attenuation ``mu`` (line
integral, >= 0, 0 where no device lies); a fluoroscopy frame is displayed on a log scale, about
linear in the total attenuation with a window of 1.5-2.5 attenuation units from black to white, so
the frame with the devices added is ``image * exp(-weight * mu)`` with ``weight`` (1 / window) drawn
per draw: a device's darkening scales with the frame's brightness and dense devices go black. It
needs no labels, so it applies to real frames as well; the landmark points do not move.

Layout: a layer has the image's spatial layout, MONAI's reader order ``(x, y)`` = (column, row).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type

from .fluoroscopy import FluoroscopyConfig, generate_attenuation

__all__ = ["DEVICE_LAYER_CONFIG", "RandDeviceOverlayd", "render_device_layers"]

DEVICE_LAYER_CONFIG = FluoroscopyConfig(
    catheter=False,
    guidewire_probability=0.0,
    background=False,
    soft_tissue_edges_probability=0.0,
    ribs_probability=0.0,
    spine_probability=0.0,
    vessels_probability=0.0,
    ecg_electrodes_probability=0.8,
    sternal_wires_probability=0.3,
    clips_probability=0.6,
    second_tube_probability=0.6,
    stents_probability=0.4,
    collimation=False,
)
"""Devices only (ECG electrodes and leads, sternal wires, clips, a second tube, stents), no catheter,
guidewire, anatomy, vessels or collimator; sizes in mm as the generator's defaults."""


def render_device_layers(
    n: int,
    spatial_shape: Sequence[int],
    pixel_spacing_mm: tuple[float, float] = (0.3, 0.4),
    seed: int = 0,
    config: FluoroscopyConfig = DEVICE_LAYER_CONFIG,
) -> np.ndarray:
    """Render ``n`` device transmission layers.

    Args:
        n: number of layers (>= 1).
        spatial_shape: ``(X, Y)`` = (columns, rows) of the frames the layers go on (>= 32 each).
        pixel_spacing_mm: range of the layers' pixel spacing at the patient plane, mm, i.e. the spacing
            of the frames they go on (the generator's 256 px frames: 0.3-0.4 mm; a 128 px input of them:
            0.6-0.8 mm), so that a device has its real size.
        seed: layer ``i`` is drawn from ``(seed, i)``.
        config: what a layer shows; :data:`DEVICE_LAYER_CONFIG` by default (its catheter must be off).

    Returns:
        float32 ``(n, X, Y)`` attenuation, >= 0 (0 where no device lies).
    """
    if n < 1:
        raise ValueError(f"Argument `n` must be >= 1, got {n}.")
    if len(spatial_shape) != 2:
        raise ValueError(f"Argument `spatial_shape` must be (X, Y), got {tuple(spatial_shape)}.")
    if config.catheter:
        raise ValueError("Argument `config` must have the catheter off: a layer must not add a second tip.")
    columns, rows = (int(s) for s in spatial_shape)
    layer_config = replace(config, rows=rows, columns=columns, pixel_spacing_mm=tuple(pixel_spacing_mm))
    layers = np.empty((n, columns, rows), dtype=np.float32)
    for i in range(n):
        layers[i] = np.maximum(generate_attenuation(layer_config, np.random.default_rng([seed, i])), 0.0)
    return layers


class RandDeviceOverlayd(RandomizableTransform, MapTransform):
    """Overlay a random synthetic device layer on X-ray frames (training augmentation).

    Example (after the frames are resized to the network's 128 px input)::

        RandDeviceOverlayd(keys="image", prob=0.5, pixel_spacing_mm=(0.6, 0.8))

    Args:
        keys: image keys; images ``(C, X, Y)`` with intensities in ``[0, 1]``, 0 displayed black
            (what :class:`monai_adaloss.io.LoadDicomFramed` gives); one layer multiplies every channel.
        prob: chance that a sample gets a layer.
        pool_size: layers rendered (once, at the first sample of each spatial shape); each draw also
            flips the layer at random along both axes, so a pool of ``n`` gives ``4 n`` layouts.
        pixel_spacing_mm: spacing range of the frames as they reach this transform (see
            :func:`render_device_layers`).
        weight: range of the factor on the attenuation, 1 / the display window in attenuation units
            (default 0.4-0.67: windows of 2.5-1.5).
        seed: seed of the pool (the draws follow ``set_random_state``).
        allow_missing_keys: skip missing keys.

    The landmark points are not touched: a layer adds devices, it moves nothing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        pool_size: int = 100,
        pixel_spacing_mm: tuple[float, float] = (0.3, 0.4),
        weight: tuple[float, float] = (0.4, 0.67),
        seed: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if pool_size < 1:
            raise ValueError(f"Argument `pool_size` must be >= 1, got {pool_size}.")
        if not 0.0 <= weight[0] <= weight[1]:
            raise ValueError(f"Argument `weight` must be a range (low, high) with 0 <= low <= high, got {weight}.")
        self.pool_size = pool_size
        self.pixel_spacing_mm = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
        self.weight = (float(weight[0]), float(weight[1]))
        self.seed = seed
        self._pools: dict[tuple[int, int], torch.Tensor] = {}
        self._index = 0
        self._flips: tuple[bool, bool] = (False, False)
        self._weight = 1.0

    def pool(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        """The layers for frames of ``spatial_shape`` ``(X, Y)``: float32 ``(pool_size, X, Y)``, rendered once."""
        key = (int(spatial_shape[0]), int(spatial_shape[1]))
        if key not in self._pools:
            layers = render_device_layers(self.pool_size, key, self.pixel_spacing_mm, self.seed)
            self._pools[key] = torch.from_numpy(layers)
        return self._pools[key]

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        self._index = int(self.R.randint(self.pool_size))
        self._flips = (bool(self.R.rand() < 0.5), bool(self.R.rand() < 0.5))
        self._weight = float(self.R.uniform(*self.weight))

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            if image.ndim != 3:
                raise ValueError(f"RandDeviceOverlayd expects 2D images (C, X, Y), got shape {tuple(image.shape)}.")
            layer = self.pool(image.shape[1:])[self._index]
            flip_axes = [axis for axis, flip in enumerate(self._flips) if flip]
            if flip_axes:
                layer = torch.flip(layer, flip_axes)
            transmission, *_ = convert_to_dst_type(torch.exp(-self._weight * layer)[None], image)
            d[key] = image * transmission
        return d


RandDeviceOverlayD = RandDeviceOverlayDict = RandDeviceOverlayd
