"""Heatmaps -> landmarks as a MONAI post-transform, for the bundles' standard ``postprocessing``.

A generic bundle consumer (MONAI Deploy's ``MonaiBundleInferenceOperator``, MONAI Label's
``BundleInferTask``, ``monai.bundle run``) runs ``preprocessing -> inferer(network) -> postprocessing``
from ``inference.json``. :class:`DecodeLandmarksd` is the decoding step of that chain: it decodes with
the same :class:`~monai_adaloss.inference.HeatmapDecoder` (the model info's ``max_instances``,
``decoding`` and confidence scale) as ``monai-adaloss infer`` and binds the points to the
pre-processed image's grid, so that :class:`~monai_adaloss.writers.SaveLandmarksd` maps them back
to the file's pixels (and world / mm) through the image affines, which undo the ``Resized`` exactly
as :func:`~monai_adaloss.inference.network_to_original` does for the batch runner.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from ..model_info import LandmarkModelInfo
from ..transforms import _BOUND_KEY
from .heatmap_points import HeatmapDecoder

__all__ = ["DecodeLandmarksd"]


class DecodeLandmarksd(MapTransform):
    """Decode heatmaps ``(L, *spatial)`` (or ``(1, L, *spatial)``) into points bound to the image grid.

    Args:
        keys: keys of the network outputs (heatmaps on the network's input grid).
        model_info: the model info (``LandmarkModelInfo`` or its ``state_dict()``) that gives the decoding.
        image_key: key of the pre-processed image (a MetaTensor on the network grid) whose affine the
            points get; when absent or not a MetaTensor, the heatmaps' own affine is used if they have one.
        points_key: output key of the points ``(L, K, D)``, voxel indices of the network grid, NaN = not found.
        confidence_key: output key of the confidence ``(L, K)``.
        allow_missing_keys: don't raise an exception when a key is missing.

    Raises (from ``__call__``):
        ValueError: the heatmaps have a batch of more than one, or a shape that does not fit the model info.
    """

    def __init__(
        self,
        keys: KeysCollection,
        model_info: LandmarkModelInfo | Mapping[str, Any],
        image_key: str = "image",
        points_key: str = "pred_points",
        confidence_key: str = "pred_confidence",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not isinstance(model_info, LandmarkModelInfo):
            model_info = LandmarkModelInfo.from_state_dict(model_info)
        info = self.info = model_info
        self.decoder = HeatmapDecoder(info)
        self.image_key = image_key
        self.points_key = points_key
        self.confidence_key = confidence_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        spatial_dims = len(self.info.input_size)
        num_landmarks = len(self.info.landmark_names)
        for key in self.key_iterator(d):
            heatmaps = d[key]
            maps = heatmaps.as_tensor() if isinstance(heatmaps, MetaTensor) else torch.as_tensor(heatmaps)
            if maps.ndim == spatial_dims + 2:
                if maps.shape[0] != 1:
                    raise ValueError(f"DecodeLandmarksd decodes one sample at a time, got a batch of {maps.shape[0]}.")
                maps = maps[0]
            if maps.ndim != spatial_dims + 1 or maps.shape[0] != num_landmarks:
                raise ValueError(
                    f"DecodeLandmarksd: `{key}` has shape {tuple(maps.shape)}; the model has {num_landmarks} "
                    f"landmarks on a {spatial_dims}D grid."
                )
            points, confidence = self.decoder(maps[None].float())
            points, confidence = points[0].cpu(), confidence[0].cpu()
            image = d.get(self.image_key)
            reference = image if isinstance(image, MetaTensor) else heatmaps
            if isinstance(reference, MetaTensor):
                affine = reference.peek_pending_affine().detach().clone().cpu()
                points = MetaTensor(points, affine=affine, meta={_BOUND_KEY: True})
            d[self.points_key], d[self.confidence_key] = points, confidence
        return d
