"""Hand radiographs with 37 landmarks: the landmark names and a datalist builder for the folder layout.

Folder layout (``root``)::

    images/<id>.png      greyscale radiographs (any size; the shared copy: longer side 512 px)
    images.csv           image,split,orig_width,orig_height,width,height   one row per image
    landmarks.csv        image,split,landmark,x,y                            one row per landmark

``landmark`` is the landmark index 0..36 (:data:`HAND_XRAY_LANDMARKS` gives the names in that
order), ``split`` is ``train``, ``valid`` or ``test``, and ``x, y`` = (column, row) are pixel
coordinates of ``images/<id>.png`` with the pixel-centre convention (the centre of the top-left
pixel is ``(0, 0)``), the order of MONAI's 2D readers (DESIGN.md section 2). ``orig_width`` and
``orig_height`` are the size of the source radiograph the PNG was downscaled from; ``width`` and
``height`` the PNG's own size.

:func:`hand_xray_datalist` turns the folder into a MONAI datalist
``{"training": [...], "validation": [...], "test": [...]}`` whose entries are::

    {"image": "/abs/root/images/3143.png", "label": {"radius_ulna_carpal_00": [[83.28, 486.425]], ...},
     "image_size": [354, 512], "source_size": [1350, 1950]}

(sizes are ``(width, height)``), the format :func:`monai_adaloss.bundles.load_datalist` and the
``hand_xray_landmarks`` bundle read. A point in PNG pixels maps to source-radiograph pixels by
``p_source = (p + 0.5) * source_size / image_size - 0.5`` per axis (:func:`to_source_pixels`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "HAND_XRAY_GROUPS",
    "HAND_XRAY_LANDMARKS",
    "HAND_XRAY_SPLITS",
    "hand_xray_datalist",
    "to_source_pixels",
    "write_hand_xray_datalist",
]

_FINGERS = ("little", "ring", "middle", "index")

HAND_XRAY_LANDMARKS: tuple[str, ...] = (
    *(f"radius_ulna_carpal_{i:02d}" for i in range(13)),
    *(f"metacarpal_base_{finger}" for finger in (*_FINGERS, "thumb")),
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    *(f"{finger}_{joint}" for finger in reversed(_FINGERS) for joint in ("mcp", "pip", "dip", "tip")),
)
"""The 37 landmark names in the order of the ``landmark`` index 0..36 (the dataset README's grouping:
0-12 distal radius / ulna and carpal bones, 13-17 metacarpal bases from the little finger to the thumb,
18-20 thumb MCP / IP / tip, then index, middle, ring and little finger MCP / PIP / DIP / tip)."""

HAND_XRAY_GROUPS: dict[str, tuple[int, ...]] = {
    "radius / ulna / carpals": tuple(range(13)),
    "metacarpal bases": tuple(range(13, 18)),
    "thumb": (18, 19, 20),
    "index": (21, 22, 23, 24),
    "middle": (25, 26, 27, 28),
    "ring": (29, 30, 31, 32),
    "little": (33, 34, 35, 36),
}
"""Landmark indices grouped by finger (and the wrist), for plots and tables."""

HAND_XRAY_SPLITS = {"train": "training", "valid": "validation", "test": "test"}
"""The ``split`` values of the CSV files and the datalist key each one goes to."""

_IMAGE_COLUMNS = ("image", "split", "orig_width", "orig_height", "width", "height")
_LANDMARK_COLUMNS = ("image", "split", "landmark", "x", "y")


def _read_rows(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` pairs of a CSV file with a header holding at least ``columns``."""
    if not path.is_file():
        raise FileNotFoundError(f"Hand X-ray file `{path}` does not exist (expected columns: {','.join(columns)}).")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"Hand X-ray file `{path}` misses the columns {missing}; its header is {reader.fieldnames}."
            )
        return [(line, row) for line, row in enumerate(reader, start=2)]


def _number(path: Path, line: int, row: dict[str, str], column: str, kind: type = float) -> Any:
    text = (row.get(column) or "").strip()
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(
            f"Hand X-ray file `{path}` line {line}: column {column!r} must be a number, got {text!r}."
        ) from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"Hand X-ray file `{path}` line {line}: column {column!r} must be finite, got {text!r}.")
    return value


def _split(path: Path, line: int, row: dict[str, str]) -> str:
    split = (row.get("split") or "").strip()
    if split not in HAND_XRAY_SPLITS:
        raise ValueError(
            f"Hand X-ray file `{path}` line {line}: split must be one of {sorted(HAND_XRAY_SPLITS)}, got {split!r}."
        )
    return split


def hand_xray_datalist(root: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """Build the MONAI datalist of a hand X-ray folder (layout in the module docstring).

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, entries in the order of
        ``images.csv``, with absolute image paths, all 37 landmarks as ``{name: [[x, y]]}``
        (PNG pixels), ``image_size`` and ``source_size`` as ``[width, height]``.

    Raises:
        FileNotFoundError: naming ``images.csv``, ``landmarks.csv`` or an image file that does not exist.
        ValueError: naming the CSV file (and line) on a missing column, a non-numeric or non-finite
            value, an unknown split, a landmark index outside 0..36, a duplicate row, an image of
            ``landmarks.csv`` not in ``images.csv`` (or with another split), or an image without all
            37 landmarks.
    """
    root = Path(root)
    images_csv, landmarks_csv = root / "images.csv", root / "landmarks.csv"
    images: dict[str, dict[str, Any]] = {}
    for line, row in _read_rows(images_csv, _IMAGE_COLUMNS):
        image_id = (row["image"] or "").strip()
        if not image_id or image_id in images:
            raise ValueError(f"Hand X-ray file `{images_csv}` line {line}: empty or duplicate image {image_id!r}.")
        sizes = [_number(images_csv, line, row, c, int) for c in _IMAGE_COLUMNS[2:]]
        if min(sizes) < 1:
            raise ValueError(f"Hand X-ray file `{images_csv}` line {line}: sizes must be positive, got {sizes}.")
        path = root / "images" / f"{image_id}.png"
        if not path.is_file():
            raise FileNotFoundError(f"Image `{path}` listed in `{images_csv}` line {line} does not exist.")
        images[image_id] = {
            "split": _split(images_csv, line, row),
            "entry": {
                "image": str(path.resolve()),
                "label": {},
                "image_size": sizes[2:],
                "source_size": sizes[:2],
            },
        }
    for line, row in _read_rows(landmarks_csv, _LANDMARK_COLUMNS):
        image_id = (row["image"] or "").strip()
        if image_id not in images:
            raise ValueError(
                f"Hand X-ray file `{landmarks_csv}` line {line}: image {image_id!r} is not in `{images_csv}`."
            )
        split = _split(landmarks_csv, line, row)
        if split != images[image_id]["split"]:
            raise ValueError(
                f"Hand X-ray file `{landmarks_csv}` line {line}: image {image_id!r} has split {split!r} here but "
                f"{images[image_id]['split']!r} in `{images_csv}`."
            )
        index = _number(landmarks_csv, line, row, "landmark", int)
        if not 0 <= index < len(HAND_XRAY_LANDMARKS):
            raise ValueError(
                f"Hand X-ray file `{landmarks_csv}` line {line}: landmark must be in "
                f"0..{len(HAND_XRAY_LANDMARKS) - 1}, got {index}."
            )
        label = images[image_id]["entry"]["label"]
        name = HAND_XRAY_LANDMARKS[index]
        if name in label:
            raise ValueError(
                f"Hand X-ray file `{landmarks_csv}` line {line}: landmark {index} of {image_id!r} repeated."
            )
        label[name] = [[_number(landmarks_csv, line, row, "x"), _number(landmarks_csv, line, row, "y")]]
    datalist: dict[str, list[dict[str, Any]]] = {key: [] for key in HAND_XRAY_SPLITS.values()}
    for image_id, image in images.items():
        label = image["entry"]["label"]
        if len(label) != len(HAND_XRAY_LANDMARKS):
            missing = [i for i, name in enumerate(HAND_XRAY_LANDMARKS) if name not in label]
            raise ValueError(
                f"Hand X-ray file `{landmarks_csv}` has no rows for image {image_id!r} landmarks {missing}."
            )
        image["entry"]["label"] = {name: label[name] for name in HAND_XRAY_LANDMARKS}
        datalist[HAND_XRAY_SPLITS[image["split"]]].append(image["entry"])
    return datalist


def write_hand_xray_datalist(root: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write :func:`hand_xray_datalist` of ``root`` as JSON to ``output`` (folders are created); returns its path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(hand_xray_datalist(root), indent=1), encoding="utf-8")
    return output


def to_source_pixels(
    points: torch.Tensor, image_size: Sequence[float] | torch.Tensor, source_size: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Map points ``(..., 2)`` from image pixels to source-radiograph pixels (pixel-centre convention).

    ``p_source = (p + 0.5) * source_size / image_size - 0.5`` per axis; sizes are ``(width, height)``,
    broadcast against the points (e.g. ``(B, 1, 1, 2)`` for points ``(B, L, K, 2)``).
    """
    points = torch.as_tensor(points, dtype=torch.float64)
    scale = torch.as_tensor(source_size, dtype=torch.float64) / torch.as_tensor(image_size, dtype=torch.float64)
    return (points + 0.5) * scale - 0.5
