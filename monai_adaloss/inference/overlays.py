"""Overlay PNGs: each frame as displayed (MONOCHROME2-like, or in colour) with its found landmarks marked."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .outputs import atomic_write
from .records import safe_name

__all__ = ["overlay_file_name", "write_overlays"]

_COLOURS = ((255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 220, 0), (255, 64, 255), (0, 255, 255))


def overlay_file_name(name: str, frame: int) -> str:
    """``{name}_f{frame:04d}.png`` (sanitised); ``name`` is a DICOM file's SOPInstanceUID; ``frame`` is 0-based."""
    return f"{safe_name(name)}_f{frame:04d}.png"


def write_overlays(
    directory: Path,
    display: np.ndarray,
    records: Sequence[Mapping[str, Any]],
    landmark_names: Sequence[str],
    name: str,
) -> list[Path]:
    """Write one PNG per frame into ``directory`` (atomically); return their paths.

    Args:
        directory: the overlay folder (created if needed).
        display: ``(F, X, Y)`` or ``(F, X, Y, 3)`` (colour) uint8 frames, ``(X, Y)`` = (columns, rows).
        records: the file's records; a found point ``(x, y)`` gets a circle and a cross in its
            landmark's colour (channel order cycles through six colours).
        landmark_names: the model's landmark names, in channel order.
        name: names the files (:func:`overlay_file_name`): the file's
            :attr:`~.decode.DecodedFile.output_name`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    radius = max(3.0, min(display.shape[1:3]) / 64.0)
    names = list(landmark_names)
    paths = []
    for frame, pixels in enumerate(display):
        image = Image.fromarray(np.ascontiguousarray(np.swapaxes(pixels, 0, 1))).convert("RGB")  # rows first for PIL
        draw = ImageDraw.Draw(image)
        for record in records:
            if record["frame"] != frame or record["x"] is None:
                continue
            x, y = record["x"], record["y"]
            colour = _COLOURS[names.index(record["landmark"]) % len(_COLOURS)]
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour)
            draw.line((x - 2 * radius, y, x + 2 * radius, y), fill=colour)
            draw.line((x, y - 2 * radius, x, y + 2 * radius), fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        path = directory / overlay_file_name(name, frame)
        atomic_write(path, buffer.getvalue())
        paths.append(path)
    return paths
