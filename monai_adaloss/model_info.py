"""What a trained landmark model carries so that inference never asks the user to re-type it.

A :class:`LandmarkModelInfo` goes into the training checkpoint next to the network weights
(``CheckpointSaver(save_dict={"network": net, ..., "model_info": info})``). Its ``state_dict()``
holds plain Python values only (loads with ``torch.load(..., weights_only=True)``) and reads the
final per-landmark sigma from the live schedule (any :class:`~monai_adaloss.adaloss.SigmaSchedule`) at save time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .adaloss import SigmaSchedule

__all__ = ["LandmarkModelInfo", "load_model_info"]


@dataclass
class LandmarkModelInfo:
    """Everything decoding and pre-processing need, stored with the weights.

    Attributes:
        landmark_names: one name per heatmap channel, in channel order (L names).
        input_size: spatial size of the network's input grid, tensor-axis order (e.g. ``[256, 256]``);
            images are resized to it and decoded points are mapped back to the original image.
        network: a MONAI-config-style dict (``{"_target_": "monai_adaloss.networks.HeatmapUNet", ...}``)
            that rebuilds the network with ``monai.bundle.ConfigParser``.
        preprocessing: how an image becomes the network input (reader, intensity mapping, channels,
            resize mode), as plain values.
        normalize: target normalisation used in training (``None``, ``"peak"`` or ``"mean"``).
        max_instances: K; 1 for single-instance tasks (argmax decoding), > 1 for multi-instance
            (median filter + NMS decoding).
        decoding: keyword arguments of the decoder (e.g. ``median_kernel``, ``nms_kernel``, ``threshold``).
        sigma: final sigma per landmark in voxels of the input grid; read from ``schedule`` when one is
            attached.
        schedule: the live schedule during training (not saved itself).
        confidence_threshold: records whose confidence is below it get ``flag: low_confidence`` at
            inference (chosen on validation data, e.g. by ``monai-adaloss demo``); ``None``: no flag.
    """

    landmark_names: Sequence[str]
    input_size: Sequence[int]
    network: Mapping[str, Any]
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    normalize: str | None = None
    max_instances: int = 1
    decoding: Mapping[str, Any] = field(default_factory=dict)
    sigma: Sequence[float] | None = None
    schedule: SigmaSchedule | None = None
    confidence_threshold: float | None = None

    def __post_init__(self) -> None:
        if len(self.landmark_names) < 1:
            raise ValueError("Argument `landmark_names` must hold at least one name, got none.")
        if len(self.input_size) not in (1, 2, 3):
            raise ValueError(f"Argument `input_size` must have 1 to 3 sizes, got {list(self.input_size)}.")
        if int(self.max_instances) < 1:
            raise ValueError(f"Argument `max_instances` must be >= 1, got {self.max_instances}.")
        if self.schedule is not None and self.schedule.num_landmarks != len(self.landmark_names):
            raise ValueError(
                f"Argument `schedule` has {self.schedule.num_landmarks} landmarks, "
                f"`landmark_names` {len(self.landmark_names)}."
            )

    def current_sigma(self) -> list[float] | None:
        """The schedule's live sigma when attached, else the stored one."""
        if self.schedule is not None:
            return self.schedule.sigma.tolist()
        return None if self.sigma is None else [float(s) for s in self.sigma]

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values only (safe for ``weights_only=True``)."""
        return {
            "landmark_names": [str(n) for n in self.landmark_names],
            "input_size": [int(s) for s in self.input_size],
            "network": copy.deepcopy(dict(self.network)),
            "preprocessing": copy.deepcopy(dict(self.preprocessing)),
            "normalize": self.normalize,
            "max_instances": int(self.max_instances),
            "decoding": copy.deepcopy(dict(self.decoding)),
            "sigma": self.current_sigma(),
            "sigma_unit": "voxel",
            "confidence_threshold": None if self.confidence_threshold is None else float(self.confidence_threshold),
            "monai_adaloss_version": __version__,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Overwrite every field from a saved state (the schedule, if any, is left alone)."""
        restored = self.from_state_dict(state)
        for name in ("landmark_names", "input_size", "network", "preprocessing", "normalize", "max_instances",
                     "decoding", "sigma", "confidence_threshold"):  # fmt: skip
            setattr(self, name, getattr(restored, name))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> LandmarkModelInfo:
        """Build from what :meth:`state_dict` wrote.

        Raises:
            ValueError: when a required key is missing.
        """
        missing = {"landmark_names", "input_size", "network"} - set(state)
        if missing:
            raise ValueError(f"Model info misses the keys {sorted(missing)}.")
        return cls(
            landmark_names=list(state["landmark_names"]),
            input_size=list(state["input_size"]),
            network=dict(state["network"]),
            preprocessing=dict(state.get("preprocessing") or {}),
            normalize=state.get("normalize"),
            max_instances=int(state.get("max_instances", 1)),
            decoding=dict(state.get("decoding") or {}),
            sigma=state.get("sigma"),
            confidence_threshold=state.get("confidence_threshold"),
        )


def load_model_info(checkpoint: str | Path | Mapping[str, Any], key: str = "model_info") -> LandmarkModelInfo:
    """Read the model info from a checkpoint file (loaded with ``weights_only=True``) or dict.

    Raises:
        ValueError: naming the file when the checkpoint holds no model info.
    """
    if isinstance(checkpoint, str | Path):
        source, state = str(checkpoint), torch.load(checkpoint, map_location="cpu", weights_only=True)
    else:
        source, state = "checkpoint dict", checkpoint
    if key not in state:
        raise ValueError(f"Checkpoint `{source}` holds no `{key}` entry (keys: {sorted(state)}).")
    return LandmarkModelInfo.from_state_dict(state[key])
