"""Decode heatmaps into landmark points (1D, 2D or 3D): the inverse of :mod:`monai_adaloss.heatmaps`.

Pure torch functions: batched over samples, landmarks and instances, device- and dtype-agnostic.
Coordinates follow DESIGN.md section 2: a point is in the voxel-index space of the heatmap, in the
order of the tensor's spatial axes (for a 2D MONAI image ``(x, y)`` = (column, row)), and a
voxel's centre has integer coordinates.

Sub-voxel refinement fits the axis-aligned Gaussian ``h(x) = exp(a + sum_d (b_d x_d + c_d x_d^2))``
around each peak and returns its vertex ``x_d = -b_d / (2 c_d)``, in two weighted least-squares
solves of the same separable quadratic:

1. the log-domain fit of ``log h`` with weights ``h^2`` (the inverse variance of ``log h`` under
   additive noise: Caruana's and Guo's weighted Gaussian fit), over the voxels above
   ``_FIT_FLOOR`` of the peak inside a window whose half-width follows the peak's measured width;
2. one Gauss-Newton step of the plain least-squares Gaussian fit from there, over the voxels where
   the fitted model is above the same floor.

Both are exact for a clean Gaussian of any sigma (the round trip with the renderer is within
1e-4 voxel in float32), and both use the whole peak, so the estimate stays near the Cramér-Rao
bound under noise, where a 3-point log-parabola fails for wide peaks (their curvature across three
voxels is tiny). The second step removes the bias that the logarithm of noisy values gives when
the grid's border cuts the peak.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.simplelayers import median_filter

__all__ = ["decode_multi_instance", "decode_single_instance"]

# voxels below this fraction of the peak are left out of the fit (their logarithm is noise-dominated)
_FIT_FLOOR = 0.2
# the fit window's half-width, in multiples of the peak's measured half width at half maximum
_WINDOW_PER_HALF_WIDTH = 2.0


def decode_single_instance(
    heatmaps: torch.Tensor, refine: bool = True, log_probabilities: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one point per heatmap channel: integer argmax, then sub-voxel refinement.

    Args:
        heatmaps: ``(B, L, *spatial)`` with 1, 2 or 3 spatial dims; one channel per landmark.
            NaN values are ignored.
        refine: refine the integer argmax to sub-voxel precision with the weighted Gaussian fit
            described in the module docstring. Along an axis where the fit is degenerate (fewer than
            three voxels above the floor, a non-positive peak, or no downward curvature) the integer
            coordinate is kept.
        log_probabilities: the heatmaps are per-channel log-probability maps (a network with
            ``output="log_probability"``); they are decoded from their ``exp``, so the confidence is
            the probability of the peak voxel.

    Returns:
        ``points`` ``(B, L, 1, D)`` in voxel indices, spatial-axis order, and ``confidence``
        ``(B, L, 1)``: the heatmap's value at the argmax voxel. A channel that is constant (all zeros
        included) or has no finite maximum gives a NaN point and confidence 0. Both are floating
        (the heatmaps' dtype, or float32 for integer heatmaps) on the heatmaps' device.

    Raises:
        ValueError: when the heatmaps do not have 1, 2 or 3 spatial dims.
    """
    spatial_shape = _check_heatmaps(heatmaps)
    heatmaps = heatmaps.as_subclass(torch.Tensor)  # points carry no image metadata (a MetaTensor's affine)
    if log_probabilities:
        heatmaps = heatmaps.exp()
    batch, num_landmarks = heatmaps.shape[:2]
    out_dtype = _output_dtype(heatmaps)
    flat = heatmaps.reshape(batch * num_landmarks, -1).to(out_dtype)
    nan = torch.isnan(flat)
    peak, flat_index = flat.masked_fill(nan, -torch.inf).max(dim=1)
    lowest = flat.masked_fill(nan, torch.inf).amin(dim=1)
    valid = torch.isfinite(peak) & (peak > lowest)

    points = _unravel(flat_index, spatial_shape).to(torch.float64)  # (N, D)
    if refine:  # only the valid channels: an empty one would widen every channel's fit window
        channels = valid.nonzero().squeeze(1)
        points[channels] = _refine_peaks(flat.reshape(-1, *spatial_shape), channels, points[channels], None)
    points = torch.where(valid[:, None], points, torch.nan)
    confidence = torch.where(valid, peak, 0.0)
    return (
        points.reshape(batch, num_landmarks, 1, len(spatial_shape)).to(out_dtype),
        confidence.reshape(batch, num_landmarks, 1).to(out_dtype),
    )


def decode_multi_instance(
    heatmaps: torch.Tensor,
    max_instances: int,
    median_kernel: int | Sequence[int] | None = 7,
    nms_kernel: int = 11,
    threshold: float = 0.5,
    refine: bool = True,
    log_probabilities: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode up to ``max_instances`` points per heatmap channel (the paper's EndoVis decoding).

    The heatmaps are median filtered, and a voxel is a peak when it is the maximum of the
    ``nms_kernel`` window around it (non-maximum suppression) and its filtered value is above
    ``threshold``. Equal-valued peaks within one window of each other (a plateau, common after the
    median filter) are merged into one, at their centre. The ``max_instances`` highest peaks of
    each channel are kept and, with ``refine``, moved to the sub-voxel vertex of the weighted
    Gaussian fit (module docstring) on the *unfiltered* heatmap, in a window no wider than the NMS
    window; where that fit is degenerate the peak keeps its voxel (or plateau centre) coordinate.

    Args:
        heatmaps: ``(B, L, *spatial)`` with 1, 2 or 3 spatial dims; one channel per landmark type.
            Non-finite values count as 0 in the peak search and are left out of the refinement.
        max_instances: ``K_max`` >= 1, the number of instance slots per channel.
        median_kernel: odd median filter size, one int for every axis or one per spatial axis;
            ``None`` skips the filter. Its memory is ``prod(median_kernel)`` times the heatmaps'.
        nms_kernel: odd window size of the non-maximum suppression, along every axis.
        threshold: absolute minimum of a peak's filtered value (its score).
        refine: refine each peak to sub-voxel precision; otherwise return the voxel (or plateau
            centre) coordinates.
        log_probabilities: the heatmaps are log-probability maps, decoded from their ``exp``
            (``threshold`` then applies to probabilities).

    Returns:
        ``points`` ``(B, L, K_max, D)`` in voxel indices, spatial-axis order, NaN in unused slots,
        and ``scores`` ``(B, L, K_max)``: the filtered value at each peak, 0 in unused slots; sorted
        by score, highest first. Floating (the heatmaps' dtype, or float32) on the heatmaps' device.

    Raises:
        ValueError: on heatmaps without 1, 2 or 3 spatial dims, ``max_instances`` < 1, an even or
            non-positive ``nms_kernel``, or a ``median_kernel`` that is not odd and positive or whose
            length differs from the number of spatial dims.
    """
    spatial_shape = _check_heatmaps(heatmaps)
    heatmaps = heatmaps.as_subclass(torch.Tensor)  # points carry no image metadata (a MetaTensor's affine)
    if log_probabilities:
        heatmaps = heatmaps.exp()
    ndim = len(spatial_shape)
    if isinstance(max_instances, bool) or not isinstance(max_instances, int) or max_instances < 1:
        raise ValueError(f"Argument `max_instances` must be a positive integer, got {max_instances}.")
    if not _is_odd_positive(nms_kernel):
        raise ValueError(f"Argument `nms_kernel` must be an odd positive integer, got {nms_kernel}.")
    if median_kernel is not None:
        kernel = (median_kernel,) * ndim if isinstance(median_kernel, int) else tuple(median_kernel)
        if len(kernel) != ndim or not all(_is_odd_positive(k) for k in kernel):
            raise ValueError(
                f"Argument `median_kernel` must be an odd positive integer or {ndim} of them, got {median_kernel}."
            )
    batch, num_landmarks = heatmaps.shape[:2]
    num_channels = batch * num_landmarks
    out_dtype = _output_dtype(heatmaps)
    maps = heatmaps.reshape(num_channels, *spatial_shape).to(out_dtype)

    filtered = maps.to(torch.promote_types(out_dtype, torch.float32))  # half precision: filter in float32
    filtered = torch.nan_to_num(filtered, nan=0.0, posinf=0.0, neginf=0.0)
    if median_kernel is not None:
        filtered = median_filter(filtered, kernel, spatial_dims=ndim)
    channel, points, score = _plateau_peaks(filtered, nms_kernel, threshold)
    channel, points, score, slot = _keep_highest(channel, points, score, num_channels, max_instances)
    if refine:
        points = _refine_peaks(maps, channel, points, max_radius=nms_kernel // 2)
    out_points = points.new_full((num_channels, max_instances, ndim), torch.nan)
    out_scores = score.new_zeros((num_channels, max_instances))
    out_points[channel, slot] = points
    out_scores[channel, slot] = score
    return (
        out_points.reshape(batch, num_landmarks, max_instances, ndim).to(out_dtype),
        out_scores.reshape(batch, num_landmarks, max_instances).to(out_dtype),
    )


def _check_heatmaps(heatmaps: torch.Tensor) -> tuple[int, ...]:
    """Return the spatial shape of ``(B, L, *spatial)`` heatmaps, raising unless 1 to 3 spatial dims."""
    if not isinstance(heatmaps, torch.Tensor):
        raise ValueError(f"Argument `heatmaps` must be a torch.Tensor, got {type(heatmaps)}.")
    if heatmaps.ndim not in (3, 4, 5):
        raise ValueError(
            f"Argument `heatmaps` must have shape (B, L, *spatial) with 1, 2 or 3 spatial dims, "
            f"got shape {tuple(heatmaps.shape)}."
        )
    if heatmaps.numel() == 0:
        raise ValueError(f"Argument `heatmaps` must not be empty, got shape {tuple(heatmaps.shape)}.")
    return tuple(heatmaps.shape[2:])


def _output_dtype(heatmaps: torch.Tensor) -> torch.dtype:
    return heatmaps.dtype if heatmaps.is_floating_point() else torch.float32


def _is_odd_positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0 and value % 2 == 1


def _unravel(flat_index: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """``(M,)`` flat indices -> ``(M, D)`` voxel indices (long), spatial-axis order."""
    coords = []
    for size in reversed(spatial_shape):
        coords.append(flat_index % size)
        flat_index = flat_index // size
    return torch.stack(coords[::-1], dim=-1)


def _half_width(maps: torch.Tensor, channel: torch.Tensor, voxel: torch.Tensor) -> torch.Tensor:
    """Half width at half maximum ``(M, D)`` of each peak, along each axis, in voxels.

    Measured on the profile through the peak voxel: the distance to the first voxel below half the
    peak value on either side (the larger side, so that a noisy dip or the border does not shrink
    it), less half a voxel.
    """
    spatial_shape = maps.shape[1:]
    peak = maps[(channel, *voxel.unbind(-1))]
    widths = []
    for axis, size in enumerate(spatial_shape):
        index: list[torch.Tensor | slice] = [channel, *voxel.unbind(-1)]
        index[1 + axis] = slice(None)
        profile = maps[tuple(index)]  # (M, size)
        position = torch.arange(size, device=maps.device)
        below = ~(profile >= 0.5 * peak[:, None])
        centre = voxel[:, axis, None]
        right = torch.where(below & (position > centre), position - centre, size - centre).amin(dim=1)
        left = torch.where(below & (position < centre), centre - position, centre + 1).amin(dim=1)
        widths.append(torch.maximum(left, right) - 0.5)
    return torch.stack(widths, dim=-1)


def _refine_peaks(
    maps: torch.Tensor, channel: torch.Tensor, centre: torch.Tensor, max_radius: int | None
) -> torch.Tensor:
    """Sub-voxel centres ``(M, D)`` (float64) of the peaks near ``centre`` ``(M, D)`` of ``maps[channel]``.

    ``maps`` is ``(N, *spatial)``. The fit is anchored at the voxel nearest ``centre``; its window's
    half-width along each axis is ``_WINDOW_PER_HALF_WIDTH`` times the peak's half width (at most
    ``max_radius``), and the vertex is clamped to the window and to the grid (``-0.5 .. size - 0.5``).
    An axis whose fit is degenerate keeps its coordinate from ``centre``.
    """
    num_peaks, ndim = centre.shape
    if num_peaks == 0:
        return centre
    voxel = centre.round().long()
    radius = (_WINDOW_PER_HALF_WIDTH * _half_width(maps, channel, voxel)).ceil().long().clamp(min=1)
    if max_radius is not None:
        radius = radius.clamp(max=max_radius)
    values, offsets, inside = _gather_windows(maps, channel, voxel, radius)
    inside = inside & torch.isfinite(values)
    limit = radius.to(torch.float64)
    powers = [_powers(offset.to(torch.float64) / limit[:, axis, None]) for axis, offset in enumerate(offsets)]

    peak = maps[(channel, *voxel.unbind(-1))].to(torch.float64).reshape(-1, *[1] * ndim)
    used = inside & (values > _FIT_FLOOR * peak) & (peak > 0)
    weight = torch.where(used, values * values, 0.0)
    coef, fitted = _fit_separable_quadratic(weight, weight * torch.where(used, values, 1.0).log(), powers, None)
    # one Gauss-Newton step of min sum (values - m)^2 with m = exp(q), from the log-domain fit: the new q
    # is the fit of q + (values - m) / m with weights m^2. It removes the log's noise bias (which shifts
    # the vertex when the border cuts the peak), and the voxels are chosen on the model, not the noise.
    log_model = _evaluate_separable_quadratic(coef, powers)
    model = log_model.exp()
    used = inside & (model > _FIT_FLOOR * model.flatten(1).amax(dim=1).reshape(-1, *[1] * ndim))
    weight = torch.where(used, model * model, 0.0)
    weighted_target = torch.where(used, model * (model * log_model + values - model), 0.0)
    coef, fitted = _fit_separable_quadratic(weight, weighted_target, powers, fitted)
    slope, curvature = coef[:, 1::2], coef[:, 2::2]
    vertex = (-slope / (2 * torch.where(fitted, curvature, -1.0)) * limit).clamp(min=-limit, max=limit)
    # a flat, wide peak (an untrained network) can put the vertex beyond the border: keep it on the grid
    upper = torch.tensor(maps.shape[1:], dtype=torch.float64, device=maps.device) - 0.5
    refined = torch.minimum(torch.maximum(voxel + vertex, torch.full_like(upper, -0.5)), upper)
    return torch.where(fitted, refined, centre)


def _gather_windows(
    maps: torch.Tensor, channel: torch.Tensor, voxel: torch.Tensor, radius: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Crop a box around each peak, the same size for all peaks and inside the grid.

    Returns the window ``values`` ``(M, *window)`` as float64, the ``offsets`` of the window's
    voxels from the peak voxel along each axis (D tensors ``(M, window[d])``), and ``inside``
    (broadcastable to ``(M, *window)``): the voxels within the peak's own ``radius``.
    """
    spatial_shape = maps.shape[1:]
    ndim = len(spatial_shape)
    flat_index = channel.reshape(-1, *[1] * ndim)
    offsets, inside = [], torch.ones((), dtype=torch.bool, device=maps.device)
    for axis, size in enumerate(spatial_shape):
        width = min(2 * int(radius[:, axis].max()) + 1, size)
        start = (voxel[:, axis] - width // 2).clamp(min=0, max=size - width)
        coord = start[:, None] + torch.arange(width, device=maps.device)  # (M, width)
        offset = coord - voxel[:, axis, None]
        shape = [-1] + [1] * ndim
        shape[1 + axis] = width
        flat_index = flat_index * size + coord.reshape(shape)
        inside = inside & (offset.abs() <= radius[:, axis, None]).reshape(shape)
        offsets.append(offset)
    values = maps.reshape(-1)[flat_index].to(torch.float64)
    return values, offsets, inside


def _powers(u: torch.Tensor) -> torch.Tensor:
    """``(M, W)`` -> ``(M, W, 3)``: ``1, u, u^2``."""
    return torch.stack([torch.ones_like(u), u, u * u], dim=-1)


def _fit_separable_quadratic(
    weight: torch.Tensor, weighted_target: torch.Tensor, powers: list[torch.Tensor], fitted: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least squares of ``target ~ a + sum_d (b_d u_d + c_d u_d^2)`` over a window.

    The normal equations are assembled from the weights' 1D and 2D marginals (the model is
    separable), so no ``(M, *window, features)`` design tensor is built.

    Args:
        weight: ``(M, *window)`` non-negative weights, 0 for voxels left out.
        weighted_target: ``(M, *window)`` the weights times the values to fit.
        powers: per axis ``(M, window[d], 3)``, the ``1, u, u^2`` of each window position.
        fitted: ``(M, D)`` the axes to fit (``None``: all); other axes get ``b_d = c_d = 0``.

    Returns:
        ``coef`` ``(M, 1 + 2 D)`` ordered ``a, b_0, c_0, b_1, c_1, ...``, and ``fitted`` ``(M, D)``:
        the axes with at least three distinct weighted positions and a downward curvature ``c_d < 0``.
    """
    num_peaks, ndim = weight.shape[0], len(powers)
    normal = weight.new_zeros(num_peaks, 3 * ndim, 3 * ndim)
    rhs = weight.new_zeros(num_peaks, 3 * ndim)
    enough = []
    for d in range(ndim):
        block_d = slice(3 * d, 3 * d + 3)
        weight_d = _marginal(weight, (d,))
        enough.append((weight_d > 0).sum(dim=1) >= 3)
        rhs[:, block_d] = torch.einsum("mi,mia->ma", _marginal(weighted_target, (d,)), powers[d])
        normal[:, block_d, block_d] = torch.einsum("mi,mia,mib->mab", weight_d, powers[d], powers[d])
        for e in range(d + 1, ndim):
            block_e = slice(3 * e, 3 * e + 3)
            cross = torch.einsum("mij,mia,mjb->mab", _marginal(weight, (d, e)), powers[d], powers[e])
            normal[:, block_d, block_e] = cross
            normal[:, block_e, block_d] = cross.transpose(1, 2)
    active_axes = torch.stack(enough, dim=-1)
    if fitted is not None:
        active_axes = active_axes & fitted
    # one intercept (axis 0's) and the linear and quadratic terms of every axis
    features = [0, *(3 * d + p for d in range(ndim) for p in (1, 2))]
    normal, rhs = normal[:, features][:, :, features], rhs[:, features]
    active = torch.cat([active_axes.new_ones(num_peaks, 1), active_axes.repeat_interleave(2, dim=1)], dim=1)
    normal = normal * (active[:, :, None] & active[:, None, :])
    rhs = rhs * active
    # inactive features get a unit diagonal (their coefficient solves to 0), active ones a tiny ridge
    diagonal = normal.diagonal(dim1=1, dim2=2)
    ridge = 1e-12 * diagonal.amax(dim=1, keepdim=True).clamp(min=torch.finfo(normal.dtype).tiny)
    coef, info = torch.linalg.solve_ex(normal + torch.diag_embed(torch.where(active, ridge, 1.0)), rhs)
    curvature = coef[:, 2::2]
    active_axes = active_axes & (curvature < 0) & torch.isfinite(coef).all(dim=1, keepdim=True) & (info == 0)[:, None]
    coef = coef * torch.cat([active_axes.new_ones(num_peaks, 1), active_axes.repeat_interleave(2, dim=1)], dim=1)
    return coef, active_axes


def _evaluate_separable_quadratic(coef: torch.Tensor, powers: list[torch.Tensor]) -> torch.Tensor:
    """``a + sum_d (b_d u_d + c_d u_d^2)`` on the window: ``(M, *window)``."""
    ndim = len(powers)
    total = coef[:, 0].reshape(-1, *[1] * ndim)
    for d, power in enumerate(powers):
        shape = [power.shape[0]] + [1] * ndim
        shape[1 + d] = power.shape[1]
        total = total + (power[..., 1:] @ coef[:, 1 + 2 * d : 3 + 2 * d, None]).reshape(shape)
    return total


def _marginal(tensor: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Sum ``(M, *window)`` over every spatial axis not in ``axes``: ``(M, *window[axes])``."""
    other = [1 + a for a in range(tensor.ndim - 1) if a not in axes]
    return tensor.sum(dim=other) if other else tensor


def _plateau_peaks(
    filtered: torch.Tensor, nms_kernel: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local maxima of ``filtered`` ``(N, *spatial)`` above ``threshold``, one per plateau.

    A voxel is a candidate when it equals the maximum of its ``nms_kernel`` window and exceeds the
    threshold. Candidates within one window of each other are necessarily equal-valued; they are
    grouped (connected components, by repeated max-pooling of labels) and each group gives one peak
    at the mean of its voxels.

    Returns ``channel`` ``(P,)``, ``centre`` ``(P, D)`` float64 and ``score`` ``(P,)`` of every peak.
    """
    spatial_shape = filtered.shape[1:]
    ndim = len(spatial_shape)
    num_voxels = filtered[0].numel()
    max_pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[ndim - 1]

    def window_max(x: torch.Tensor) -> torch.Tensor:
        return max_pool(x[:, None], nms_kernel, stride=1, padding=nms_kernel // 2)[:, 0]

    candidate = (filtered == window_max(filtered)) & (filtered > threshold)
    voxel_id = torch.arange(1, num_voxels + 1, device=filtered.device, dtype=torch.float64)
    label = torch.where(candidate, voxel_id.reshape(spatial_shape), 0.0)
    while True:
        spread = torch.where(candidate, window_max(label), 0.0)
        if torch.equal(spread, label):
            break
        label = spread

    channel, *coords = candidate.nonzero(as_tuple=True)
    group_key = channel * (num_voxels + 1) + label[candidate].long()
    groups, group_of = torch.unique(group_key, return_inverse=True)
    members = torch.zeros(groups.shape[0], dtype=torch.float64, device=filtered.device)
    members.index_add_(0, group_of, torch.ones_like(group_of, dtype=torch.float64))
    centre = torch.zeros(groups.shape[0], ndim, dtype=torch.float64, device=filtered.device)
    centre.index_add_(0, group_of, torch.stack(coords, dim=-1).to(torch.float64))
    centre = centre / members[:, None]
    score = filtered.new_zeros(groups.shape[0]).scatter_(0, group_of, filtered[candidate])
    return groups // (num_voxels + 1), centre, score


def _keep_highest(
    channel: torch.Tensor, centre: torch.Tensor, score: torch.Tensor, num_channels: int, max_instances: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``max_instances`` highest-scoring peaks of each channel, with their slot (rank)."""
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(channel[order], stable=True)]
    channel, centre, score = channel[order], centre[order], score[order]
    counts = torch.bincount(channel, minlength=num_channels)
    first = torch.cumsum(counts, dim=0) - counts
    slot = torch.arange(channel.shape[0], device=channel.device) - first[channel]
    keep = slot < max_instances
    return channel[keep], centre[keep], score[keep], slot[keep]
