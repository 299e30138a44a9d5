"""Small numpy image primitives shared by the synthetic generators (2D rasters indexed ``[row, column]``)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["motion_blur_kernel", "pixel_grid", "smooth_noise", "smooth_step"]


def pixel_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` pixel-centre coordinates, each of shape ``(rows, columns)``."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return x, y


def smooth_step(signed_distance: np.ndarray, edge: float) -> np.ndarray:
    """0 below ``-edge``, 1 above ``+edge``, a smooth cubic ramp between (a collimator penumbra)."""
    t = np.clip(0.5 + signed_distance / (2.0 * edge), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _upsample_axis(values: np.ndarray, n_out: int, factor: int, axis: int) -> np.ndarray:
    """Linear interpolation along `axis` from a grid `factor` times coarser (offset by one coarse cell)."""
    position = np.arange(n_out) / factor + 1.0
    low = np.floor(position).astype(int)
    frac = (position - low).astype(values.dtype)
    shape = [1, 1]
    shape[axis] = n_out
    frac = frac.reshape(shape)
    return np.take(values, low, axis=axis) * (1 - frac) + np.take(values, low + 1, axis=axis) * frac


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], correlation_px: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field ``(rows, columns)`` with the given correlation length.

    Filtered on a coarse grid, then upsampled linearly (fast at any scale).
    """
    h, w = shape
    factor = max(1, int(correlation_px // 4))
    small = rng.standard_normal((h // factor + 4, w // factor + 4))
    small = ndimage.gaussian_filter(small, correlation_px / factor, mode="wrap").astype(np.float32)
    big = _upsample_axis(_upsample_axis(small, h, factor, 0), w, factor, 1)
    return (big - big.mean()) / (big.std() + 1e-12)


def motion_blur_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised, centred linear motion-blur kernel of `length` pixels at `angle` (rad)."""
    half = math.ceil(length / 2) + 1
    t = np.linspace(-length / 2, length / 2, 8 * half)
    px, py = half + t * math.cos(angle), half + t * math.sin(angle)
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), wgt)
    return kernel / kernel.sum()
