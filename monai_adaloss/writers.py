"""Writing decoded landmarks from a MONAI post-processing pipeline (the bundles' ``inference.json``).

:class:`SaveLandmarks` (and its dictionary twin :class:`SaveLandmarksd`) is to points what MONAI's
``SaveImage`` is to images: a post-transform with a side effect, one JSON file per sample.
Coordinates follow DESIGN.md section 2: voxel indices of the image file as MONAI's reader loads it,
in tensor-axis order (a 2D image: ``(x, y)`` = (column, row); a volume: ``(i, j, k)``), voxel
centres at integers; world coordinates are the reader's affine applied to them (NIfTI: RAS mm as
``NibabelReader`` reports the sform).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, ensure_tuple

__all__ = ["SaveLandmarks", "SaveLandmarksD", "SaveLandmarksDict", "SaveLandmarksd"]

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg")


def _stem(path: Path) -> str:
    """File name without its image suffix (``.nii.gz`` counts as one)."""
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _point_lists(points: torch.Tensor, names: Sequence[str]) -> dict[str, list[list[float]] | list]:
    """``{name: [[c0, c1, ...], ...]}`` of the present instances of ``(L, K, D)`` points."""
    return {
        name: [[float(c) for c in instance] for instance in channel if all(math.isfinite(float(c)) for c in instance)]
        for name, channel in zip(names, points, strict=True)
    }


class SaveLandmarks(Transform):
    """Write one sample's points to ``<output_dir>/<image stem><output_postfix>.json``.

    The points must be bound to the grid they index (a MetaTensor whose ``affine`` maps them to
    world, as :class:`~monai_adaloss.transforms.DecodeHeatmap` returns them for the network grid).
    The file's voxel indices are ``inv(A_file) @ A_points @ p``, with ``A_file`` the image's
    ``meta[affine_key]`` (the affine of the file as read: ``original_affine`` for MONAI's NIfTI,
    ITK and DICOM readers), or the identity when ``affine_key`` is None (MONAI's ``PILReader``
    loads 2D pictures with the identity affine, so world = pixels there).

    Output::

        {"image": "/data/ct_001.nii.gz", "landmark_names": ["a", "b"],
         "points_voxel": {"a": [[i, j, k]], "b": []},       # [] = not found (NaN)
         "points_world": {"a": [[x, y, z]], "b": []},
         "confidence": {"a": [0.93], "b": []}}              # when a confidence is given

    Args:
        landmark_names: the L channel names.
        output_dir: folder of the JSON files (created).
        affine_key: meta key of the file's affine in the image meta, or None for the identity.
        data_root_dir: when set, the image's folder relative to it is kept under ``output_dir`` (files of
            the same name in different folders stay apart), as MONAI's ``SaveImage`` does.
        output_postfix: appended to the image stem.

    Raises (from ``__call__``):
        KeyError: when the image meta has no ``affine_key``.
        ValueError: when the points are not bound to a grid or their number of channels is not L.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(
        self,
        landmark_names: Sequence[str],
        output_dir: str | os.PathLike,
        affine_key: str | None = "original_affine",
        data_root_dir: str | os.PathLike | None = None,
        output_postfix: str = "_landmarks",
    ) -> None:
        self.landmark_names = [str(name) for name in landmark_names]
        if not self.landmark_names:
            raise ValueError("Argument `landmark_names` must hold at least one name, got none.")
        self.output_dir = Path(output_dir)
        self.affine_key = affine_key
        self.data_root_dir = None if data_root_dir is None else Path(data_root_dir)
        self.output_postfix = output_postfix

    def _file_affine(self, image_meta: Mapping, ndim: int) -> torch.Tensor:
        if self.affine_key is None:
            return torch.eye(ndim + 1, dtype=torch.float64)
        if self.affine_key not in image_meta:
            raise KeyError(f"SaveLandmarks needs the image meta[{self.affine_key!r}], which is missing.")
        return to_affine_nd(ndim, torch.as_tensor(image_meta[self.affine_key], dtype=torch.float64))

    def output_path(self, filename: str, postfix: str = "") -> Path:
        """Where the points of the image ``filename`` go; ``postfix`` follows ``output_postfix``."""
        source = Path(filename)
        folder = self.output_dir
        if self.data_root_dir is not None:
            relative = os.path.relpath(source.parent, self.data_root_dir)
            if not relative.startswith(".."):
                folder = folder / relative
        return folder / f"{_stem(source)}{self.output_postfix}{postfix}.json"

    def __call__(
        self,
        points: torch.Tensor,
        image_meta: Mapping[str, Any],
        confidence: torch.Tensor | None = None,
        postfix: str = "",
    ) -> torch.Tensor:
        """Write ``points`` ``(L, K, D)`` and ``confidence`` ``(L, K)`` of the image of ``image_meta``.

        ``postfix`` is appended to the file name after ``output_postfix``. Returns the points unchanged.
        """
        if not isinstance(points, MetaTensor) or points.ndim != 3:
            raise ValueError(f"Argument `points` must be a (L, K, D) MetaTensor bound to its grid, got {type(points)}.")
        if points.shape[0] != len(self.landmark_names):
            raise ValueError(
                f"Argument `points` has {points.shape[0]} channels, `landmark_names` {len(self.landmark_names)}."
            )
        ndim = points.shape[-1]
        grid = to_affine_nd(ndim, torch.as_tensor(points.affine, dtype=torch.float64))
        homogeneous = torch.cat([points.as_tensor().double(), torch.ones_like(points[..., :1]).double()], dim=-1)
        world = homogeneous @ grid.T
        voxel = world @ torch.linalg.inv(self._file_affine(image_meta, ndim)).T
        filename = str(image_meta.get("filename_or_obj", ""))
        record: dict[str, Any] = {
            "image": filename,
            "landmark_names": self.landmark_names,
            "points_voxel": _point_lists(voxel[..., :ndim], self.landmark_names),
            "points_world": _point_lists(world[..., :ndim], self.landmark_names),
        }
        if confidence is not None:
            scores = torch.as_tensor(confidence).double().reshape(points.shape[:2])
            present = torch.isfinite(voxel).all(dim=-1)
            record["confidence"] = {
                name: [float(score) for score, found in zip(row, mask, strict=True) if found]
                for name, row, mask in zip(self.landmark_names, scores, present, strict=True)
            }
        path = self.output_path(filename, postfix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
        return points


class SaveLandmarksd(MapTransform):
    """Dictionary-based wrapper of :class:`SaveLandmarks`: one JSON file per sample and key.

    Args:
        keys: keys of the points ``(L, K, D)``; the files of the second key on get the postfix ``_<key>``.
        landmark_names, output_dir, affine_key, data_root_dir, output_postfix: see :class:`SaveLandmarks`.
        image_key: key of the image whose ``meta`` gives ``filename_or_obj`` and the file's affine.
        confidence_keys: keys of ``(L, K)`` confidences written next to the points, one per key, or None.
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    backend = SaveLandmarks.backend

    def __init__(
        self,
        keys: KeysCollection,
        landmark_names: Sequence[str],
        output_dir: str | os.PathLike,
        image_key: str = "image",
        affine_key: str | None = "original_affine",
        confidence_keys: KeysCollection | None = None,
        data_root_dir: str | os.PathLike | None = None,
        output_postfix: str = "_landmarks",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.writer = SaveLandmarks(landmark_names, output_dir, affine_key, data_root_dir, output_postfix)
        self.image_key = image_key
        confidence = (None,) * len(self.keys) if confidence_keys is None else ensure_tuple(confidence_keys)
        if len(confidence) != len(self.keys):
            raise ValueError(
                f"Argument `confidence_keys` must have one key per key ({len(self.keys)}), got {confidence}."
            )
        self.confidence_keys = tuple(confidence)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d.get(self.image_key)
        if not isinstance(image, MetaTensor):
            raise KeyError(f"SaveLandmarksd needs a MetaTensor image under {self.image_key!r}.")
        for index, (key, confidence_key) in enumerate(self.key_iterator(d, self.confidence_keys)):
            confidence = None if confidence_key is None else d[confidence_key]
            d[key] = self.writer(d[key], image.meta, confidence, "" if index == 0 else f"_{key}")
        return d


SaveLandmarksD = SaveLandmarksDict = SaveLandmarksd
