"""Render isotropic Gaussian heatmap targets from landmark points (1D, 2D or 3D).

Pure torch functions: batched, device- and dtype-agnostic, no Python loop over landmarks or
instances. Coordinates follow DESIGN.md section 2: a point is given in the voxel-index space of
the target grid, in the order of the tensor's spatial axes, and a voxel's centre has integer
coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["HeatmapNormalization", "check_points", "render_gaussian_heatmaps", "sigma_per_sample"]

HeatmapNormalization = Literal["peak", "mean"] | None
_NORMALIZATIONS = (None, "peak", "mean")


def check_points(points: torch.Tensor, name: str = "points") -> None:
    """Raise ``ValueError`` unless ``points`` is a float tensor of shape ``(B, L, K, D)``, D in {1, 2, 3}."""
    if not isinstance(points, torch.Tensor):
        raise ValueError(f"Argument `{name}` must be a torch.Tensor of shape (B, L, K, D), got {type(points)}.")
    if points.ndim != 4:
        raise ValueError(f"Argument `{name}` must have shape (B, L, K, D), got shape {tuple(points.shape)}.")
    if points.shape[-1] not in (1, 2, 3):
        raise ValueError(f"Argument `{name}` must have D (last dim) in {{1, 2, 3}}, got D={points.shape[-1]}.")


def sigma_per_sample(
    sigma: float | Sequence[float] | torch.Tensor,
    batch_size: int,
    num_landmarks: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Broadcast ``sigma`` (a float, ``(L,)`` or ``(B, L)``) to a ``(B, L)`` tensor, checking it is > 0.

    Raises:
        ValueError: when the shape does not broadcast or a value is not finite and positive.
    """
    sigma_t = torch.as_tensor(sigma, dtype=dtype, device=device)
    if sigma_t.ndim == 0:
        sigma_t = sigma_t.expand(batch_size, num_landmarks)
    elif sigma_t.ndim == 1:
        if sigma_t.shape[0] != num_landmarks:
            raise ValueError(f"Argument `sigma` must have shape (L,)=({num_landmarks},), got {tuple(sigma_t.shape)}.")
        sigma_t = sigma_t.unsqueeze(0).expand(batch_size, num_landmarks)
    elif sigma_t.ndim == 2:
        if tuple(sigma_t.shape) != (batch_size, num_landmarks):
            raise ValueError(
                f"Argument `sigma` must have shape (B, L)=({batch_size}, {num_landmarks}), got {tuple(sigma_t.shape)}."
            )
    else:
        raise ValueError(f"Argument `sigma` must be a float, (L,) or (B, L), got shape {tuple(sigma_t.shape)}.")
    if not bool(torch.isfinite(sigma_t).all()) or bool((sigma_t <= 0).any()):
        bad = sigma_t[~(torch.isfinite(sigma_t) & (sigma_t > 0))].flatten()[0].item()
        raise ValueError(f"Argument `sigma` must be finite and positive, got {bad}.")
    return sigma_t


def render_gaussian_heatmaps(
    points: torch.Tensor,
    sigma: float | Sequence[float] | torch.Tensor,
    spatial_shape: Sequence[int],
    normalize: HeatmapNormalization = None,
    spacing: Sequence[float] | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Render one isotropic Gaussian target channel per landmark.

    ``T[b, l](x) = max_k exp(-sum_d (x_d - p[b, l, k, d])^2 / (2 s_d^2))`` with ``s_d = sigma[b, l]``
    in voxels, or ``sigma[b, l] / spacing[d]`` when ``spacing`` is given (sigma in mm).

    Args:
        points: ``(B, L, K, D)`` float points in voxel indices of the target grid, spatial-axis order
            (for a 2D MONAI image ``(x, y)`` = (column, row)). Centres are exact (no rounding); points
            outside the grid still contribute their in-grid tail. An instance with any NaN
            coordinate is absent; a channel whose instances are all absent is all zeros.
        sigma: standard deviation, a float, ``(L,)`` (one per landmark) or ``(B, L)``; > 0.
        spatial_shape: the target's spatial shape, ``len(spatial_shape) == D``.
        normalize: ``None`` keeps the Gaussian's continuous peak at 1; ``"peak"`` divides each
            non-empty channel by its maximum voxel so that the hottest voxel is exactly 1;
            ``"mean"`` divides each non-empty channel by its mean over the grid (the paper's
            normalisation for multi-landmark problems, so wide and narrow targets weigh alike).
        spacing: optional per-axis voxel size (length D); when given, ``sigma`` is in the same unit
            (e.g. mm) and the per-axis sigma in voxels is ``sigma / spacing[d]``.
        dtype: output float dtype; defaults to ``points.dtype`` when it is floating, else float32.

    Returns:
        ``(B, L, *spatial_shape)`` heatmaps on ``points.device``.

    Raises:
        ValueError: on a wrong points shape, D not in {1, 2, 3}, ``sigma`` <= 0, a ``spatial_shape``
            whose rank differs from D, non-positive spacing or an unknown ``normalize``.
    """
    check_points(points)
    batch, num_landmarks, _, ndim = points.shape
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if len(spatial_shape) != ndim:
        raise ValueError(f"Argument `spatial_shape` must have rank D={ndim} to match the points, got {spatial_shape}.")
    if any(s < 1 for s in spatial_shape):
        raise ValueError(f"Argument `spatial_shape` must be positive, got {spatial_shape}.")
    if normalize not in _NORMALIZATIONS:
        raise ValueError(f"Argument `normalize` must be one of {_NORMALIZATIONS}, got {normalize!r}.")
    if dtype is None:
        dtype = points.dtype if points.is_floating_point() else torch.float32
    device = points.device
    sigma_bl = sigma_per_sample(sigma, batch, num_landmarks, device=device, dtype=dtype)
    if spacing is None:
        spacing_t = torch.ones(ndim, dtype=dtype, device=device)
    else:
        spacing_t = torch.as_tensor(spacing, dtype=dtype, device=device).flatten()
        if spacing_t.numel() != ndim or not bool((spacing_t > 0).all()) or not bool(torch.isfinite(spacing_t).all()):
            raise ValueError(
                f"Argument `spacing` must hold D={ndim} finite positive values, got {list(spacing_t.tolist())}."
            )

    pts = points.to(dtype)
    present = ~torch.isnan(pts).any(dim=-1)  # (B, L, K)
    pts = torch.nan_to_num(pts, nan=0.0)
    # per-axis sigma in voxels: (B, L, 1, D)
    sigma_vox = sigma_bl[:, :, None, None] / spacing_t
    heatmap: torch.Tensor | None = None
    for axis, size in enumerate(spatial_shape):
        coords = torch.arange(size, dtype=dtype, device=device)
        diff = coords - pts[..., axis, None]  # (B, L, K, N_axis)
        if axis == 0:  # absent instances get an all-zero profile on the first axis
            gauss = torch.exp(-(diff * diff) / (2.0 * sigma_vox[..., axis, None] ** 2)) * present[..., None]
        else:
            gauss = torch.exp(-(diff * diff) / (2.0 * sigma_vox[..., axis, None] ** 2))
        shape = [batch, num_landmarks, pts.shape[2]] + [1] * ndim
        shape[3 + axis] = size
        gauss = gauss.reshape(shape)
        # separable product of 1D profiles: exp() is evaluated on O(sum N_d) values, not the grid
        heatmap = gauss if heatmap is None else heatmap * gauss
    if heatmap is None:
        raise AssertionError("unreachable: D >= 1")
    heatmap = heatmap.amax(dim=2)  # merge instances by max: (B, L, *spatial)

    if normalize is not None:
        flat = heatmap.reshape(batch, num_landmarks, -1)
        scale = flat.amax(dim=-1) if normalize == "peak" else flat.mean(dim=-1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        heatmap = heatmap / scale.reshape(batch, num_landmarks, *([1] * ndim))
    return heatmap
