"""Read a PNG / JPEG (or other 8-bit Pillow) image as MONAI's ``PILReader`` + ``EnsureChannelFirst`` would.

The layout is MONAI's (DESIGN.md section 2): ``(C, X, Y)`` = (channels, columns, rows), so a file pixel at
``raster[row, column]`` is ``image[:, column, row]`` and a point is ``(x, y)`` = (column, row). Values are the
8-bit values divided by 255 (the ``"[0, 1]"`` intensity of a checkpoint's preprocessing). Every problem with a
file raises :class:`ImageReadError` naming the file, so that inference records it and goes on.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["IMAGE_MODES", "ImageReadError", "read_image"]

IMAGE_MODES = {1: "L", 3: "RGB"}
"""Pillow mode an image is converted to, per number of channels the model expects."""

_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB"})


class ImageReadError(ValueError):
    """An image file cannot be read as an 8-bit greyscale or colour image.

    Attributes:
        path: the file.
        problem: what is wrong with it.
        reason: the message for the errors file, naming the file.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.reason = f"cannot read `{self.path}` as an image: {problem}"
        super().__init__(self.reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.problem)


def read_image(path: str | os.PathLike, channels: int, max_pixels: int) -> np.ndarray:
    """Read ``path`` into a ``(channels, X, Y)`` float32 array in ``[0, 1]``.

    Greyscale, palette and colour files are converted to the expected channels (``"L"`` or ``"RGB"``; an
    alpha channel is dropped), as a model trained on RGB frames needs.

    Args:
        path: a PNG, JPEG or any other file Pillow reads.
        channels: 1 or 3.
        max_pixels: files with more pixels (columns x rows) are rejected before decoding.

    Raises:
        ImageReadError: the file is missing, not an image, truncated or corrupt, not 8-bit, or too large.
        ValueError: ``channels`` is not 1 or 3.
    """
    if channels not in IMAGE_MODES:
        raise ValueError(f"Argument `channels` must be one of {sorted(IMAGE_MODES)}, got {channels}.")
    try:
        with Image.open(path) as image:
            columns, rows = image.size
            if columns * rows > max_pixels:
                raise ImageReadError(path, f"{columns} x {rows} pixels is more than the limit of {max_pixels}")
            if image.mode not in _EIGHT_BIT_MODES:
                raise ImageReadError(path, f"pixel mode {image.mode!r} is not 8-bit; the model expects 8-bit images")
            raster = np.asarray(image.convert(IMAGE_MODES[channels]))  # (rows, columns[, 3]); decodes the file
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except Exception as err:  # Pillow raises UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        raise ImageReadError(path, f"{type(err).__name__}: {err}") from err
    raster = raster.reshape(rows, columns, channels)
    return np.ascontiguousarray(raster.transpose(2, 1, 0), dtype=np.float32) / np.float32(255.0)
