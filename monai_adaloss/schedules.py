"""Sigma schedules to compare Adaloss with: fixed sigma, the paper's naive constant decay, geometric decay,
and sigma learned by gradient (Payer et al.'s SpatialConfiguration-Net, ``landmarker``'s learnable Gaussian).

All follow :class:`~monai_adaloss.adaloss.SigmaSchedule` (``update(epoch_losses) -> sigma``, ``sigma``,
``sigma_history``, ``clipped_history``, plain-value ``state_dict``), so
:class:`~monai_adaloss.losses.AdalossHeatmapLoss`, :class:`~monai_adaloss.handlers.AdalossHandler` and the
bundles take any of them in place of :class:`~monai_adaloss.adaloss.AdalossSchedule`.
:func:`make_schedule` builds one by name.

Learned sigma needs one more thing from the trainer: its ``log_sigma`` parameter must be in the
optimiser. The loss module registers the schedule as a sub-module, so
``torch.optim.Adam([{"params": net.parameters()}, {"params": loss.parameters(), "lr": sigma_lr}])``
(or ``itertools.chain(net.parameters(), loss.parameters())``) trains it; in a bundle config,
``"params": "$list(@network.parameters()) + list(@loss.parameters())"``. A loss whose schedule has no
parameters returns none, so the same optimiser expression serves every schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .adaloss import SIGMA_0, AdalossSchedule, SigmaSchedule, _positive, initial_sigma

__all__ = ["SCHEDULE_NAMES", "FixedSigma", "GeometricDecay", "LearnedSigma", "LinearDecay", "make_schedule"]


class FixedSigma(SigmaSchedule):
    """A constant sigma per landmark (the fixed-sigma baseline with the schedule interface)."""

    name = "fixed"

    def __init__(self, sigma: float | Sequence[float] | torch.Tensor, num_landmarks: int | None = None) -> None:
        sigma_t = torch.as_tensor(sigma, dtype=torch.float64).flatten()
        super().__init__(sigma_t, num_landmarks, sigma_min=float(sigma_t.min()), sigma_max=SIGMA_0)

    def _next_sigma(self, losses: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        return self._sigma.clone(), [""] * self.num_landmarks


class LinearDecay(SigmaSchedule):
    """The paper's "naive" schedule: ``sigma_{t+1} = max(sigma_t - step, sigma_min)`` after every epoch.

    Args:
        sigma_0: initial sigma, a float or ``(L,)``.
        num_landmarks: L when ``sigma_0`` is a float.
        step: k, the decrease per epoch (> 0, same unit as sigma).
        sigma_min: floor (an update the floor limits counts as clipped).
    """

    name = "linear"

    def __init__(
        self,
        sigma_0: float | Sequence[float] | torch.Tensor,
        num_landmarks: int | None = None,
        step: float = 1.0,
        sigma_min: float = 2.0,
    ) -> None:
        super().__init__(sigma_0, num_landmarks, sigma_min=sigma_min, sigma_max=SIGMA_0)
        self.step = _positive("step", step)

    @classmethod
    def matched(
        cls, sigma_0: float, sigma_final: float, epochs: int, num_landmarks: int, sigma_min: float = 2.0
    ) -> LinearDecay:
        """The decay that reaches ``sigma_final`` after ``epochs`` updates."""
        return cls(sigma_0, num_landmarks, step=(sigma_0 - sigma_final) / epochs, sigma_min=sigma_min)

    def _next_sigma(self, losses: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        clip = [""] * self.num_landmarks
        return self._clamp(self._sigma - self.step, clip), clip

    def _settings(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "step": self.step}


class GeometricDecay(SigmaSchedule):
    """``sigma_t = max(sigma_0 * rate^(t / period), sigma_min)`` after epoch t: a fixed geometric decay.

    This is what the bounded Adaloss rule degenerates to when every ``period``-th step is the bound
    (``rate = 1 - max_step_fraction``); :meth:`matched` picks the rate that ends at a given sigma.

    Args:
        sigma_0: initial sigma, a float or ``(L,)``.
        num_landmarks: L when ``sigma_0`` is a float.
        rate: r in (0, 1].
        period: w, epochs per factor r (> 0).
        sigma_min: floor (an update the floor limits counts as clipped).
    """

    name = "geometric"

    def __init__(
        self,
        sigma_0: float | Sequence[float] | torch.Tensor,
        num_landmarks: int | None = None,
        rate: float = 0.8,
        period: float = 3.0,
        sigma_min: float = 2.0,
    ) -> None:
        super().__init__(sigma_0, num_landmarks, sigma_min=sigma_min, sigma_max=SIGMA_0)
        self.rate = float(rate)
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f"Argument `rate` must be in (0, 1], got {rate}.")
        self.period = _positive("period", period)

    @classmethod
    def matched(
        cls, sigma_0: float, sigma_final: float, epochs: int, num_landmarks: int, period: float = 3.0,
        sigma_min: float = 2.0,
    ) -> GeometricDecay:  # fmt: skip
        """The decay that reaches ``sigma_final`` (>= ``sigma_min``) after ``epochs`` updates."""
        rate = (max(sigma_final, sigma_min) / sigma_0) ** (period / epochs)
        return cls(sigma_0, num_landmarks, rate=min(rate, 1.0), period=period, sigma_min=sigma_min)

    def _next_sigma(self, losses: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        clip = [""] * self.num_landmarks
        proposed = self.sigma_0 * self.rate ** (self.epochs_seen / self.period)
        return self._clamp(proposed, clip), clip

    def _settings(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "rate": self.rate, "period": self.period}


class LearnedSigma(nn.Module, SigmaSchedule):
    """Per-landmark sigma learned by gradient with a penalty on its size (Payer et al., SCN).

    The loss renders its targets with :meth:`differentiable_sigma` and adds :meth:`penalty`
    (``weight * mean_l sigma_l^2``), so the optimiser that owns ``log_sigma`` moves sigma: the data
    term widens a landmark's target where a wide target fits better (annotation noise), the penalty
    pulls all of them in. Use it with ``normalize="mean"`` (targets of constant integral, like Payer's
    ``gamma / (2 pi sigma^2)`` scaling): with peak-1 targets the data term alone already shrinks sigma.
    :meth:`update` only records the epoch (``sigma_history`` row t + 1 is sigma at the end of epoch t).

    Args:
        sigma_0: initial sigma, a float or ``(L,)``.
        num_landmarks: L when ``sigma_0`` is a float.
        penalty_weight: alpha, weight of the size penalty (>= 0).
        sigma_min: floor applied in :meth:`differentiable_sigma` (a soft clamp is not used: below the
            floor the gradient of the data term is cut; an epoch ending at the floor counts as clipped).
    """

    name = "learned"

    def __init__(
        self,
        sigma_0: float | Sequence[float] | torch.Tensor,
        num_landmarks: int | None = None,
        penalty_weight: float = 1e-3,
        sigma_min: float = 1.0,
    ) -> None:
        nn.Module.__init__(self)
        SigmaSchedule.__init__(self, sigma_0, num_landmarks, sigma_min=sigma_min, sigma_max=None)
        self.penalty_weight = float(penalty_weight)
        if not (math.isfinite(self.penalty_weight) and self.penalty_weight >= 0):
            raise ValueError(f"Argument `penalty_weight` must be >= 0, got {penalty_weight}.")
        self.log_sigma = nn.Parameter(self.sigma_0.log().to(torch.float32))

    def differentiable_sigma(self) -> torch.Tensor:
        """``(L,)`` float32 sigma with a gradient path to ``log_sigma`` (floored at ``sigma_min``)."""
        return self.log_sigma.exp().clamp(min=self.sigma_min)

    def penalty(self) -> torch.Tensor:
        """Scalar ``penalty_weight * mean_l sigma_l^2`` (differentiable)."""
        return self.penalty_weight * self.differentiable_sigma().pow(2).mean()

    @property
    def sigma(self) -> torch.Tensor:  # type: ignore[override]
        """The current sigma per landmark, ``(L,)`` float64 on the CPU, detached."""
        return self.differentiable_sigma().detach().cpu().to(torch.float64)

    def _next_sigma(self, losses: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        sigma = self.sigma
        clip = ["floor" if float(v) <= self.sigma_min else "" for v in self.log_sigma.detach().exp().tolist()]
        return sigma, clip

    def _settings(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "penalty_weight": self.penalty_weight}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """The schedule's plain-value state plus ``log_sigma`` as a list (loads with ``weights_only=True``)."""
        state = SigmaSchedule.state_dict(self)
        state["log_sigma"] = self.log_sigma.detach().cpu().tolist()
        return state

    def load_state_dict(self, state: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        SigmaSchedule.load_state_dict(self, state)
        if "log_sigma" in state:
            with torch.no_grad():
                self.log_sigma.copy_(torch.as_tensor(state["log_sigma"], dtype=self.log_sigma.dtype))

    def __repr__(self) -> str:
        return f"LearnedSigma(num_landmarks={self.num_landmarks}, penalty_weight={self.penalty_weight})"


SCHEDULE_NAMES = ("paper", "bounded", "relative_restart", "spread", "fixed", "linear", "geometric", "learned")
"""Names :func:`make_schedule` knows; ``"bounded"`` is what ``AdalossSchedule`` does with its default arguments."""


def make_schedule(
    name: str, spatial_shape: Sequence[int], num_landmarks: int, sigma_0: float | None = None, **kwargs: Any
) -> SigmaSchedule:
    """Build a schedule by name, starting from ``sigma_0`` (default: the paper's ``min(spatial_shape) / 4``).

    ``paper``: eq. 5 without bound or cap; ``bounded``: ``AdalossSchedule`` defaults; ``relative_restart``:
    bounded eq. 5 on the relative loss with a window restarted at every sigma change; ``spread``: the
    spread rule; ``fixed`` (``sigma=``), ``linear`` (``step=``), ``geometric`` (``rate=``, ``period=``),
    ``learned`` (``penalty_weight=``). ``kwargs`` go to the class.
    """
    sigma_0 = initial_sigma(spatial_shape) if sigma_0 is None else float(sigma_0)
    if name == "paper":
        kwargs = {"max_step_fraction": None, "sigma_max": None, "sigma_min": 0.5, **kwargs}
        return AdalossSchedule(sigma_0, num_landmarks, **kwargs)
    if name == "bounded":
        return AdalossSchedule(sigma_0, num_landmarks, **kwargs)
    if name == "relative_restart":
        return AdalossSchedule(sigma_0, num_landmarks, statistic="relative", restart_window=True, **kwargs)
    if name == "spread":
        kwargs = {"spatial_dims": len(spatial_shape), **kwargs}
        return AdalossSchedule(sigma_0, num_landmarks, rule="spread", **kwargs)
    if name == "fixed":
        return FixedSigma(kwargs.pop("sigma", sigma_0), num_landmarks, **kwargs)
    if name == "linear":
        return LinearDecay(sigma_0, num_landmarks, **kwargs)
    if name == "geometric":
        return GeometricDecay(sigma_0, num_landmarks, **kwargs)
    if name == "learned":
        return LearnedSigma(sigma_0, num_landmarks, **kwargs)
    raise ValueError(f"Argument `name` must be one of {SCHEDULE_NAMES}, got {name!r}.")
