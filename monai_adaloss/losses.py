"""Per-landmark heatmap loss whose targets are rendered on the device from points and the live sigma."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .adaloss import SigmaSchedule
from .heatmaps import HeatmapNormalization, check_points, render_gaussian_heatmaps

__all__ = ["HEATMAP_CRITERIA", "AdalossHeatmapLoss"]

HEATMAP_CRITERIA = ("mse", "cross_entropy")


class AdalossHeatmapLoss(nn.Module):
    """Per-landmark loss between predicted heatmaps and Gaussian targets rendered from points.

    Two criteria:

    - ``"mse"`` (the paper's): spatial-mean squared error between a linear heatmap ``(B, L, *spatial)``
      and the target (normalised by ``normalize``, scaled by ``target_scale``);
    - ``"cross_entropy"``: the prediction is a log-probability map per channel (a network with
      ``output="log_probability"``, :class:`~monai_adaloss.networks.SpatialLogSoftmax`) and the
      loss is the Kullback-Leibler divergence ``sum t log(t / p)`` from the target ``t`` normalised to
      sum 1 over the voxels (``normalize`` and ``target_scale`` do not apply): 0 for a perfect
      prediction, and every voxel competes for the landmark's one unit of probability, so a peak on a
      distractor is penalised by the mass it takes. Sigma still sets the target's width, and the
      all-uniform prediction is the reference loss (``sum t log t + log N``).

    Targets are rendered inside ``forward`` on ``pred``'s device with the schedule's current sigma,
    so nothing upstream (CacheDataset, persistent workers) can hold a stale target. Landmarks that are
    absent in a sample (all instances NaN) are masked out of the loss of that sample.

    Args:
        schedule: the sigma schedule whose ``sigma`` is used (an :class:`~monai_adaloss.adaloss.AdalossSchedule`
            or any :class:`~monai_adaloss.adaloss.SigmaSchedule`); give ``sigma`` instead for a fixed-sigma
            baseline. A :class:`~monai_adaloss.schedules.LearnedSigma` becomes a sub-module: the targets are
            rendered with its differentiable sigma, its size penalty is added to the loss, and
            ``loss.parameters()`` must go into the optimiser.
        sigma: fixed sigma, a float or ``(L,)``; only when ``schedule`` is None.
        normalize: target normalisation, ``None``, ``"peak"`` or ``"mean"`` (see
            :func:`~monai_adaloss.heatmaps.render_gaussian_heatmaps`).
        spacing: optional per-axis voxel size of the target grid when sigma is in mm.
        target_scale: factor applied to the rendered targets after normalisation (> 0). With
            ``normalize="mean"`` a target's peak is ``N / (2 pi sigma^2)`` in 2D (N voxels): 290 at
            sigma 3 on a 128 x 128 grid, more than a freshly initialised network's output reaches in a
            short training; ``target_scale = gamma / N`` gives targets of integral ``gamma`` (Payer et
            al. / landmarker's ``gamma``; 100 gives a peak of 1.8 at sigma 3). Decoding is scale-free.

        criterion: ``"mse"`` or ``"cross_entropy"`` (see above; :data:`HEATMAP_CRITERIA`).

    After each call, ``last_channel_sums`` ``(L,)`` holds the per-landmark sum over the batch of
    each present sample's loss (spatial-mean squared error, or KL divergence), and
    ``last_channel_counts`` ``(L,)`` the number of samples in which the landmark is present (both
    detached, on ``pred``'s device), so that an epoch mean per landmark is ``sum(sums) / sum(counts)``;
    ``last_channel_losses`` is their ratio for the last batch (NaN for a landmark absent from the
    whole batch). ``last_channel_reference_sums`` ``(L,)`` is the same sum for the all-zero prediction
    (the spatial mean of target^2; for cross-entropy the uniform prediction), so that
    ``sums / reference_sums`` is the relative loss that some schedules use (it does not jump when sigma
    moves the loss scale).
    """

    def __init__(
        self,
        schedule: SigmaSchedule | None = None,
        sigma: float | Sequence[float] | None = None,
        normalize: HeatmapNormalization = None,
        spacing: Sequence[float] | None = None,
        target_scale: float = 1.0,
        criterion: str = "mse",
    ) -> None:
        super().__init__()
        if criterion not in HEATMAP_CRITERIA:
            raise ValueError(f"Argument `criterion` must be one of {HEATMAP_CRITERIA}, got {criterion!r}.")
        self.criterion = criterion
        if not (target_scale > 0 and math.isfinite(target_scale)):
            raise ValueError(f"Argument `target_scale` must be a finite number > 0, got {target_scale}.")
        self.target_scale = float(target_scale)
        if (schedule is None) == (sigma is None):
            raise ValueError(
                f"Exactly one of the arguments `schedule` and `sigma` must be given, got schedule={schedule!r}, "
                f"sigma={sigma!r}."
            )
        self.schedule = schedule
        self.fixed_sigma = None if sigma is None else torch.as_tensor(sigma, dtype=torch.float64)
        self.normalize = normalize
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.last_channel_sums: torch.Tensor | None = None
        self.last_channel_counts: torch.Tensor | None = None
        self.last_channel_reference_sums: torch.Tensor | None = None

    @property
    def sigma(self) -> torch.Tensor:
        """The sigma used by the next call: a scalar or ``(L,)`` float64 tensor on the CPU."""
        return self.schedule.sigma if self.schedule is not None else self.fixed_sigma  # type: ignore[return-value]

    @property
    def last_channel_losses(self) -> torch.Tensor | None:
        """``(L,)`` mean loss per landmark over the present samples of the last batch (NaN if none)."""
        if self.last_channel_sums is None or self.last_channel_counts is None:
            return None
        return self.last_channel_sums / self.last_channel_counts

    def forward(self, pred: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            pred: ``(B, L, *spatial)`` predicted heatmaps (log-probabilities for ``"cross_entropy"``),
                1 to 3 spatial dims.
            points: ``(B, L, K, D)`` target points in voxel indices of ``pred``'s grid, spatial-axis
                order, NaN for absent instances.

        Returns:
            scalar: mean over present (sample, landmark) pairs of the spatial-mean squared error or
            of the KL divergence (0 with a gradient path when no landmark is present). For
            cross-entropy a landmark whose target has (almost) no mass inside the grid (a point far
            outside it) counts as absent.
        """
        check_points(points)
        points = torch.as_tensor(points, device=pred.device)
        if pred.ndim != points.shape[-1] + 2 or pred.shape[:2] != points.shape[:2]:
            raise ValueError(
                f"Argument `pred` must have shape (B, L, *spatial) with B, L = {tuple(points.shape[:2])} and "
                f"{points.shape[-1]} spatial dims to match the points, got {tuple(pred.shape)}."
            )
        # half-precision predictions (AMP) are compared in float32: targets and errors keep full precision
        dtype = pred.dtype if pred.dtype in (torch.float32, torch.float64) else torch.float32
        learned = getattr(self.schedule, "differentiable_sigma", None)
        sigma = learned() if learned is not None else self.sigma
        present = ~torch.isnan(points).any(dim=-1).all(dim=-1)  # (B, L): any instance present
        if self.criterion == "cross_entropy":
            per_sample, reference, inside = self._kl_divergence(pred, points, sigma, dtype)
            present = present & inside
        else:
            target = render_gaussian_heatmaps(
                points.to(dtype),
                sigma.to(device=pred.device, dtype=dtype),
                pred.shape[2:],
                normalize=self.normalize,
                spacing=self.spacing,
            )
            if self.target_scale != 1.0:
                target = target * self.target_scale
            per_sample = (pred.to(dtype) - target).pow(2).flatten(2).mean(dim=2)  # (B, L)
            reference = target.detach().pow(2).flatten(2).mean(dim=2)  # (B, L): loss of the all-zero prediction
        masked = torch.where(present, per_sample, torch.zeros_like(per_sample))
        sums = masked.sum(dim=0)
        counts = present.sum(dim=0).to(sums.dtype)
        with torch.no_grad():
            self.last_channel_reference_sums = torch.where(present, reference, torch.zeros_like(reference)).sum(0)
        self.last_channel_sums = sums.detach()
        self.last_channel_counts = counts.detach()
        loss = masked.sum() / counts.sum().clamp(min=1.0)
        penalty = getattr(self.schedule, "penalty", None)
        return loss + penalty().to(loss.device, loss.dtype) if penalty is not None else loss

    def _kl_divergence(
        self, pred: torch.Tensor, points: torch.Tensor, sigma: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``KL(t || exp(pred))`` per (sample, landmark), the uniform prediction's KL, and which targets lie inside.

        ``t`` is the Gaussian target (peak 1 before normalisation) divided by its sum over the voxels;
        it is "inside" when that sum is at least 1 % of the full Gaussian's mass (a point less than
        about 2.3 sigma outside the grid on one axis).
        """
        sigma = sigma.to(device=pred.device, dtype=dtype)
        peak_one = render_gaussian_heatmaps(points.to(dtype), sigma, pred.shape[2:], spacing=self.spacing)
        mass = peak_one.flatten(2).sum(dim=2)  # (B, L)
        ndim = points.shape[-1]
        voxel = torch.ones(ndim, dtype=dtype, device=pred.device)
        if self.spacing is not None:
            voxel = torch.as_tensor(self.spacing, dtype=dtype, device=pred.device)
        sigma_lk = sigma.reshape(-1) if sigma.ndim else sigma.reshape(1)
        full = (math.sqrt(2 * math.pi) * sigma_lk[:, None] / voxel).prod(dim=-1)  # (L,) or (1,) mass of one instance
        inside = mass >= 0.01 * full
        target = peak_one.flatten(2) / mass.clamp(min=torch.finfo(dtype).tiny)[..., None]
        log_target = torch.log(target.clamp(min=torch.finfo(dtype).tiny))
        entropy_term = (target * log_target).sum(dim=2)  # (B, L): sum t log t
        cross = -(target * pred.to(dtype).flatten(2)).sum(dim=2)  # (B, L): - sum t log p
        reference = entropy_term.detach() + math.log(target.shape[-1])
        return entropy_term + cross, reference, inside
