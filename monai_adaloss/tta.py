"""Test-time augmentation for single-instance heatmaps: shifted / flipped copies, points mapped back and combined.

Every augmented copy of the input is run through the network and decoded on its own grid; its
points are mapped back to the un-augmented grid (a shift by ``s`` voxels is undone by ``-s``, a flip
of an axis of size ``n`` by ``n - 1 - x``) and the copies are combined per landmark:

- the point is the mean of the largest group of agreeing copies: the copy with the most other
  copies within ``agree_radius`` voxels (ties: the first copy, the un-augmented one by default) and
  those copies (robust to a copy that jumped to another structure, unlike a coordinate-wise median,
  which can mix the coordinates of two structures);
- ``agreement`` is the share of copies in that group: a detection that moves when the image moves by
  a few voxels is not one to trust;
- the confidence is the copies' mean decoder confidence times ``agreement``.

Coordinates follow DESIGN.md section 2: voxel indices of the network's input grid, tensor-axis order.
Flips are only meaningful for a network trained with flip augmentation (the catheter bundle is; the
hand X-ray bundle is not, so its default here is shifts only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["DEFAULT_SHIFTS", "TestTimeAugmentation"]

DEFAULT_SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (4, 0), (-4, 0), (0, 4), (0, -4))
"""The identity and four 4-voxel shifts of a 2D input grid."""


def _shift(images: torch.Tensor, shift: Sequence[int]) -> torch.Tensor:
    """Move the content of ``(B, C, *spatial)`` by ``shift`` voxels per spatial axis, filling with zeros."""
    out = images
    for axis, step in enumerate(shift):
        if step == 0:
            continue
        dim = 2 + axis
        size = images.shape[dim]
        if abs(step) >= size:
            return torch.zeros_like(images)
        out = torch.roll(out, shifts=int(step), dims=dim)
        band = torch.arange(0, step, device=images.device) if step > 0 else torch.arange(size + step, size)
        out = out.index_fill(dim, band.to(images.device), 0.0)
    return out


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Shift / flip test-time augmentation with robust combination (module docstring).

    Args:
        shifts: voxel shifts of the input grid, one ``D``-tuple per copy; include the zero shift to
            keep the plain prediction among the copies.
        flip_axes: spatial axes (0-based); each adds one copy flipped along that axis (unshifted).
        agree_radius: voxels of the input grid within which a copy agrees with the combined point.
    """

    __test__ = False  # not a pytest test class despite its name

    shifts: Sequence[Sequence[int]] = DEFAULT_SHIFTS
    flip_axes: Sequence[int] = ()
    agree_radius: float = 2.0

    def __post_init__(self) -> None:
        if not self.shifts and not self.flip_axes:
            raise ValueError("TestTimeAugmentation needs at least one shift or flip axis.")
        if self.agree_radius <= 0:
            raise ValueError(f"Argument `agree_radius` must be positive, got {self.agree_radius}.")

    @property
    def num_copies(self) -> int:
        return len(self.shifts) + len(self.flip_axes)

    def __call__(
        self,
        images: torch.Tensor,
        forward: Callable[[torch.Tensor], torch.Tensor],
        decode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict with every copy and combine.

        Args:
            images: ``(B, C, *spatial)`` network inputs.
            forward: images -> heatmaps ``(B, L, *spatial)`` (the network or an inferer around it).
            decode: heatmaps -> points ``(B, L, 1, D)`` in voxels of the heatmap grid and confidence
                ``(B, L, 1)`` (single instance).

        Returns:
            ``points`` ``(B, L, 1, D)`` (NaN where no copy found the landmark), ``confidence``
            ``(B, L, 1)`` and ``agreement`` ``(B, L, 1)`` in [0, 1].

        Raises:
            ValueError: when a shift has the wrong length, a flip axis is out of range, or the
                decoder returns more than one instance slot.
        """
        spatial = images.shape[2:]
        ndim = len(spatial)
        copies_points, copies_conf = [], []
        for shift in self.shifts:
            if len(shift) != ndim:
                raise ValueError(f"Shift {tuple(shift)} must have {ndim} values for {ndim} spatial dims.")
            points, conf = decode(forward(_shift(images, shift)))
            copies_points.append(points - torch.as_tensor(shift, dtype=points.dtype, device=points.device))
            copies_conf.append(conf)
        for axis in self.flip_axes:
            if not 0 <= axis < ndim:
                raise ValueError(f"Flip axis {axis} is out of range for {ndim} spatial dims.")
            points, conf = decode(forward(torch.flip(images, dims=(2 + axis,))))
            points = points.clone()
            points[..., axis] = (spatial[axis] - 1) - points[..., axis]
            copies_points.append(points)
            copies_conf.append(conf)
        if copies_points[0].shape[2] != 1:
            raise ValueError("TestTimeAugmentation combines single-instance predictions (K = 1) only.")
        stacked = torch.stack(copies_points)  # (A, B, L, 1, D)
        conf = torch.stack(copies_conf).to(stacked.dtype)  # (A, B, L, 1)
        # pairwise agreement between copies: (A, A, B, L, 1); a copy without a point agrees with none
        pairwise = torch.linalg.vector_norm(stacked[:, None] - stacked[None, :], dim=-1) <= self.agree_radius
        votes = pairwise.sum(dim=1)  # (A, B, L, 1)
        anchor = votes.argmax(dim=0)  # first maximum: the earliest copy wins ties
        members = torch.gather(pairwise, 0, anchor[None, None].expand(1, *pairwise.shape[1:]))[0]  # (A, B, L, 1)
        weight = members.to(stacked.dtype)
        count = weight.sum(dim=0)
        summed = (torch.nan_to_num(stacked, nan=0.0) * weight[..., None]).sum(dim=0)
        combined = torch.where(count[..., None] > 0, summed / count.clamp(min=1)[..., None], torch.nan)
        agreement = count / stacked.shape[0]
        confidence = torch.nan_to_num(conf, nan=0.0).mean(dim=0) * agreement
        return combined, confidence, agreement
