"""Records: one row per frame, landmark and instance, in pixels of the original image (and mm).

Coordinates follow DESIGN.md section 2: ``(x, y)`` = (column, row) of the original frame, with a
pixel's centre at integer coordinates (the top-left pixel's centre is ``(0, 0)``). DICOM SR SCOORDs
put ``(0.5, 0.5)`` there instead (see :mod:`.sr`). ``x_mm = x * column spacing`` and
``y_mm = y * row spacing``: millimetres in the detector plane from the top-left pixel's centre,
``null`` when the file has no spacing; ``spacing_source`` names the tag (rule) that gave the spacing
(``"none"``, or ``"none (<why>)"`` when a spacing tag is malformed). ``colour_conversion`` says how a
colour file became the network's greyscale input (``"BT.601 luminance of RGB"``, ...), ``null`` for
greyscale files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from .decode import DecodedFile

__all__ = [
    "LOW_CONFIDENCE",
    "RECORD_FIELDS",
    "check_uids",
    "file_records",
    "network_to_original",
    "safe_name",
]

RECORD_FIELDS: tuple[str, ...] = (
    "path",
    "sop_instance_uid",
    "series_instance_uid",
    "study_instance_uid",
    "frame",
    "landmark",
    "instance",
    "x",
    "y",
    "x_mm",
    "y_mm",
    "spacing_source",
    "colour_conversion",
    "confidence",
    "model_sha256",
    "flag",
)
"""The keys of every record, in the CSV's column order. ``flag`` is ``"low_confidence"`` for a found
point whose confidence is below the model's validation-chosen threshold, else ``null``."""

LOW_CONFIDENCE = "low_confidence"

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_MAX_LENGTH = 64
_UNSAFE = re.compile(r"[^0-9A-Za-z._-]")
_PIXEL_DECIMALS = 4
_CONFIDENCE_DECIMALS = 6


def network_to_original(
    points: torch.Tensor, network_size: Sequence[int], original_size: Sequence[int]
) -> torch.Tensor:
    """Map points from the network's input grid back to the original image, undoing MONAI's ``Resize``.

    ``Resize`` (``align_corners=False``) scales about the grid's outer edges, so its affine update
    maps a network voxel ``p_net`` to ``p_orig = (p_net + 0.5) * original_size / network_size - 0.5``
    along each axis (``monai.transforms.utils.scale_affine(original, network, centered=True)``).

    Args:
        points: ``(..., D)`` voxel coordinates of the network grid, tensor-axis order; NaN stays NaN.
        network_size: the network's input size, ``D`` values.
        original_size: the original image's size, ``D`` values, same axis order.

    Returns:
        ``(..., D)`` float64 coordinates in the original image.
    """
    scale = torch.tensor([o / n for o, n in zip(original_size, network_size, strict=True)], dtype=torch.float64)
    return (points.to(torch.float64) + 0.5) * scale - 0.5


def check_uids(uids: dict[str, str]) -> str | None:
    """Why the file's UIDs are unusable, or ``None`` when all three are valid DICOM UIDs.

    A UID must be present, at most 64 characters of digits and dots (no empty component). Output
    names are derived from UIDs, so a crafted value (``../x``, control characters, kilobytes of
    text) is refused here, and :func:`safe_name` sanitises names again.
    """
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        value = uids.get(keyword, "")
        if not value:
            return f"missing {keyword}"
        if len(value) > _UID_MAX_LENGTH or not _UID.fullmatch(value):
            shown = repr(value[:_UID_MAX_LENGTH]) + ("..." if len(value) > _UID_MAX_LENGTH else "")
            return f"{keyword} {shown} is not a valid DICOM UID (digits and dots, at most {_UID_MAX_LENGTH} characters)"
    return None


def safe_name(text: str, max_length: int = 128) -> str:
    """A file name made from ``text``: only ``[0-9A-Za-z._-]``, no leading dot, at most ``max_length``."""
    name = _UNSAFE.sub("_", text)[:max_length].lstrip(".")
    return name or "_"


def file_records(
    decoded: DecodedFile,
    points: torch.Tensor,
    confidence: torch.Tensor,
    landmark_names: Sequence[str],
    model_sha256: str,
    confidence_threshold: float | None = None,
) -> list[dict[str, Any]]:
    """The records of one file, ordered by frame, landmark channel and instance slot.

    A found instance gives one record. A landmark with no instance in a frame gives one record with
    ``instance`` 0, null coordinates and confidence 0 (so every frame and landmark is accounted for).

    Args:
        decoded: the file.
        points: ``(F, L, K, 2)`` in the original image's pixels, ``(x, y)``; NaN for empty slots.
        confidence: ``(F, L, K)``.
        landmark_names: ``L`` names.
        model_sha256: the model's identity.
        confidence_threshold: found points with a lower confidence get ``flag: low_confidence``.
    """
    spacing = decoded.spacing
    base = {
        "path": decoded.path,
        "sop_instance_uid": decoded.uids["SOPInstanceUID"],
        "series_instance_uid": decoded.uids["SeriesInstanceUID"],
        "study_instance_uid": decoded.uids["StudyInstanceUID"],
    }
    records = []
    points_list, confidence_list = points.tolist(), confidence.tolist()
    for frame, (frame_points, frame_confidence) in enumerate(zip(points_list, confidence_list, strict=True)):
        for landmark, slots, scores in zip(landmark_names, frame_points, frame_confidence, strict=True):
            found = [(k, p, c) for k, (p, c) in enumerate(zip(slots, scores, strict=True)) if _finite(p)]
            for instance, point, score in found or [(0, [math.nan, math.nan], 0.0)]:
                x, y = _rounded(point[0]), _rounded(point[1])
                records.append(
                    {
                        **base,
                        "frame": frame,
                        "landmark": str(landmark),
                        "instance": instance,
                        "x": x,
                        "y": y,
                        "x_mm": None if spacing is None or x is None else _rounded(point[0] * spacing[0]),
                        "y_mm": None if spacing is None or y is None else _rounded(point[1] * spacing[1]),
                        "spacing_source": decoded.spacing_source,
                        "colour_conversion": decoded.colour_conversion,
                        "confidence": round(score, _CONFIDENCE_DECIMALS) if math.isfinite(score) else None,
                        "model_sha256": model_sha256,
                        "flag": LOW_CONFIDENCE
                        if confidence_threshold is not None and x is not None and score < confidence_threshold
                        else None,
                    }
                )
    return records


def _finite(point: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in point)


def _rounded(value: float) -> float | None:
    return round(value, _PIXEL_DECIMALS) if math.isfinite(value) else None
