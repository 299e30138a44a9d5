"""Heatmaps -> points and confidence, with what the checkpoint says about decoding and targets.

Confidence is the decoder's heatmap value at a peak divided by the peak of a clean training target
of that landmark: 1 for ``normalize`` None or ``"peak"``; for ``"mean"``, the peak of a mean-normalised
Gaussian of the landmark's final sigma on the input grid. So about 1 means "as sure as a training
target", whatever the normalisation.
"""

from __future__ import annotations

import inspect
import logging
from functools import partial

import torch

from ..decoding import decode_multi_instance, decode_single_instance
from ..heatmaps import render_gaussian_heatmaps
from ..model_info import LandmarkModelInfo
from .errors import InferenceConfigError

__all__ = ["HeatmapDecoder"]

logger = logging.getLogger(__name__)


class HeatmapDecoder:
    """Heatmaps -> points and confidence with the checkpoint's decoding settings.

    ``max_instances == 1`` and decoding arguments that :func:`decode_single_instance` takes: argmax
    + sub-voxel refinement; otherwise :func:`decode_multi_instance` with ``max_instances`` slots.

    Raises:
        InferenceConfigError: the checkpoint's decoding arguments fit neither decoder.
    """

    def __init__(self, info: LandmarkModelInfo) -> None:
        kwargs = dict(info.decoding)
        single = set(inspect.signature(decode_single_instance).parameters) - {"heatmaps"}
        multi = set(inspect.signature(decode_multi_instance).parameters) - {"heatmaps", "max_instances"}
        if info.max_instances == 1 and set(kwargs) <= single:
            self._decode = partial(decode_single_instance, **kwargs)
        elif set(kwargs) <= multi:
            self._decode = partial(decode_multi_instance, max_instances=int(info.max_instances), **kwargs)
        else:
            raise InferenceConfigError(
                f"The checkpoint's decoding arguments {sorted(kwargs)} are not arguments of the decoder "
                f"(single instance: {sorted(single)}; multi-instance: {sorted(multi)})."
            )
        self._target_peak = _target_peaks(info)

    def __call__(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, *spatial)`` -> points ``(B, L, K, D)`` in the heatmap grid and confidence ``(B, L, K)``."""
        points, score = self._decode(heatmaps)
        return points, score / self._target_peak.to(score)[None, :, None]


def _target_peaks(info: LandmarkModelInfo) -> torch.Tensor:
    """``(L,)`` peak value of a clean training target per landmark.

    1 for peak-1 targets; the peak of the mean-normalised target for ``normalize="mean"``; the peak
    probability of the normalised target for log-probability networks (``decoding`` has
    ``log_probabilities``), so that the confidence is about 1 for a prediction as sharp as the target.
    """
    num_landmarks = len(info.landmark_names)
    sigma = info.current_sigma()
    log_probabilities = bool(info.decoding.get("log_probabilities", False))
    if info.normalize != "mean" and not log_probabilities:
        return torch.ones(num_landmarks)
    if sigma is None:
        logger.warning("The model's targets are normalised but it stores no sigma: confidence is the raw peak.")
        return torch.ones(num_landmarks)
    centre = torch.tensor([s // 2 for s in info.input_size], dtype=torch.float64)  # on a voxel: sampled peak 1
    points = centre.expand(1, num_landmarks, 1, len(info.input_size))
    sigma_tensor = torch.tensor(sigma, dtype=torch.float64)
    if log_probabilities:
        target = render_gaussian_heatmaps(points, sigma_tensor, info.input_size)
        return (1.0 / target.flatten(2).sum(dim=2)[0]).float()
    target = render_gaussian_heatmaps(points, sigma_tensor, info.input_size, "mean")
    return target.flatten(2).amax(dim=2)[0].float()
