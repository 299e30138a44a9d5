"""The Adaloss sigma schedule (Teixeira et al., eq. 3-5) with the guards described in DESIGN.md.

Pure Python + torch tensors: no ignite, no ``torch.nn``. After every epoch, the mean training loss of
each landmark channel is passed to :meth:`AdalossSchedule.update`, which returns the sigma to use
for the next epoch::

    H_t^l = the last w epoch losses of landmark l
    V_t^l = population variance of H_t^l
    dsigma = rho * (1 - V_{t-1}^l / V_t^l)
    sigma_{t+1}^l = clamp(sigma_t^l + dsigma, sigma_min, sigma_max)

The first update needs V_{t-1}, so it happens after ``window + 1`` epochs. With the non-increasing
rule (the paper's default), a positive step (the variance grew) is kept only when the training loss
grew too (``L_t > L_{t-1}``, a "step back"); otherwise it is dropped.

``max_step_fraction`` is ours, not the paper's: the literal rule collapses sigma within a few
epochs when the loss drops fast and then flattens (``V_{t-1} / V_t`` of 10-100 gives steps of -9 to
-90), so by default a step is bounded to 20 % of the current sigma: the best of the bounds
{none, 5 %, 10 %, 20 %} in the catheter sigma sweep (``docs/sigma_sweep.md``; DESIGN.md's probe
had chosen 10 %). ``AdalossSchedule(..., max_step_fraction=None, sigma_max=None)`` is the paper's eq. 5
with only the positive floor ``sigma_min``.

Units: sigma is in whatever unit the renderer is told (voxels of the target grid by default).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["SIGMA_0", "AdalossSchedule", "initial_sigma"]

logger = logging.getLogger(__name__)

SIGMA_0 = "sigma_0"
"""Sentinel for ``sigma_max``: cap each landmark's sigma at its own initial value (the default)."""


def initial_sigma(spatial_shape: Sequence[int]) -> float:
    """The paper's sigma_0: a quarter of the target resolution (of its smallest spatial size)."""
    if len(spatial_shape) == 0 or any(int(s) < 1 for s in spatial_shape):
        raise ValueError(f"Argument `spatial_shape` must hold positive sizes, got {tuple(spatial_shape)}.")
    return min(int(s) for s in spatial_shape) / 4.0


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"Argument `{name}` must be positive, got {value}.")
    return value


class AdalossSchedule:
    """Per-landmark adaptive Gaussian sigma, updated once per epoch from the training losses.

    Args:
        sigma_0: initial sigma, one float for all landmarks or one per landmark ``(L,)``.
        num_landmarks: L; required when ``sigma_0`` is a single float.
        window: w, the number of epoch losses whose variance is taken (>= 2; paper: 3).
        rho: step size (> 0; paper: 0.9).
        non_increasing: keep a positive step only when the loss grew too (paper's rule; on by default).
        max_step_fraction: bound on ``|dsigma|`` relative to the current sigma (ours; ``None`` = no bound).
        sigma_min: floor, > 0.
        sigma_max: cap; ``SIGMA_0`` (default) caps each landmark at its initial sigma, ``None`` removes
            the cap, a float caps all landmarks.

    Example::

        schedule = AdalossSchedule(sigma_0=initial_sigma((256, 256)), num_landmarks=1)
        for epoch in range(epochs):
            losses = train_one_epoch(sigma=schedule.sigma)  # (L,) mean loss per landmark
            schedule.update(losses)
    """

    def __init__(
        self,
        sigma_0: float | Sequence[float] | torch.Tensor,
        num_landmarks: int | None = None,
        window: int = 3,
        rho: float = 0.9,
        non_increasing: bool = True,
        max_step_fraction: float | None = 0.2,
        sigma_min: float = 2.0,
        sigma_max: float | str | None = SIGMA_0,
    ) -> None:
        sigma_0_t = torch.as_tensor(sigma_0, dtype=torch.float64).flatten()
        if sigma_0_t.numel() == 1 and num_landmarks is not None:
            sigma_0_t = sigma_0_t.expand(int(num_landmarks)).clone()
        if num_landmarks is not None and sigma_0_t.numel() != num_landmarks:
            raise ValueError(
                f"Argument `sigma_0` must hold one value or num_landmarks={num_landmarks} values, "
                f"got {sigma_0_t.numel()}."
            )
        if sigma_0_t.numel() < 1:
            raise ValueError("Argument `sigma_0` must hold at least one value, got none.")
        for value in sigma_0_t.tolist():
            _positive("sigma_0", value)
        if int(window) != window or window < 2:
            raise ValueError(f"Argument `window` must be an integer >= 2, got {window}.")
        self.window = int(window)
        self.rho = _positive("rho", rho)
        self.non_increasing = bool(non_increasing)
        self.max_step_fraction = (
            None if max_step_fraction is None else _positive("max_step_fraction", max_step_fraction)
        )
        self.sigma_min = _positive("sigma_min", sigma_min)
        if isinstance(sigma_max, str):
            if sigma_max != SIGMA_0:
                raise ValueError(f"Argument `sigma_max` must be a float, None or {SIGMA_0!r}, got {sigma_max!r}.")
            cap = sigma_0_t.clone()
        elif sigma_max is None:
            cap = torch.full_like(sigma_0_t, math.inf)
        else:
            cap = torch.full_like(sigma_0_t, _positive("sigma_max", sigma_max))
        if bool((sigma_0_t < self.sigma_min).any()):
            raise ValueError(f"Argument `sigma_0` must be >= sigma_min={self.sigma_min}, got {sigma_0_t.min().item()}.")
        if bool((cap < self.sigma_min).any()):
            raise ValueError(f"Argument `sigma_max` must be >= sigma_min={self.sigma_min}, got {cap.min().item()}.")
        self.sigma_0 = sigma_0_t
        self.sigma_max = cap
        self._sigma = sigma_0_t.clone()
        self._loss_history: list[list[float]] = []
        self._sigma_history: list[list[float]] = [sigma_0_t.tolist()]

    @classmethod
    def for_spatial_shape(cls, spatial_shape: Sequence[int], num_landmarks: int, **kwargs: Any) -> AdalossSchedule:
        """A schedule starting from the paper's sigma_0 = min(spatial_shape) / 4 for all landmarks."""
        return cls(initial_sigma(spatial_shape), num_landmarks=num_landmarks, **kwargs)

    @property
    def num_landmarks(self) -> int:
        return int(self._sigma.numel())

    @property
    def sigma(self) -> torch.Tensor:
        """The current sigma per landmark, ``(L,)`` float64 (a copy)."""
        return self._sigma.clone()

    @property
    def epochs_seen(self) -> int:
        """How many epoch losses :meth:`update` has received."""
        return len(self._loss_history)

    @property
    def loss_history(self) -> torch.Tensor:
        """``(T, L)``: the epoch losses passed to :meth:`update`, in order."""
        return torch.tensor(self._loss_history, dtype=torch.float64).reshape(-1, self.num_landmarks)

    @property
    def sigma_history(self) -> torch.Tensor:
        """``(T + 1, L)``: row t is the sigma used during epoch t (row 0 is sigma_0)."""
        return torch.tensor(self._sigma_history, dtype=torch.float64)

    def _variance(self, end: int) -> torch.Tensor:
        """Population variance ``(L,)`` of the ``window`` epoch losses ending at epoch index ``end``."""
        window = torch.tensor(self._loss_history[end - self.window + 1 : end + 1], dtype=torch.float64)
        return window.var(dim=0, unbiased=False)

    def _step(self) -> torch.Tensor:
        """The (guarded, bounded) step ``(L,)`` for the latest epoch; 0 where no update applies."""
        step = torch.zeros(self.num_landmarks, dtype=torch.float64)
        t = len(self._loss_history) - 1
        if t < self.window:  # V_{t-1} needs `window` losses before the latest one
            return step
        v_now, v_prev = self._variance(t), self._variance(t - 1)
        loss_now = torch.tensor(self._loss_history[t], dtype=torch.float64)
        loss_prev = torch.tensor(self._loss_history[t - 1], dtype=torch.float64)
        valid = torch.isfinite(v_now) & torch.isfinite(v_prev) & (v_now > 0)
        for landmark in (~valid).nonzero().flatten().tolist():
            logger.warning(
                "Adaloss: no sigma update for landmark %d after epoch %d (loss variance %s, previous %s).",
                landmark,
                t,
                v_now[landmark].item(),
                v_prev[landmark].item(),
            )
        ratio = torch.where(valid, v_prev / torch.where(valid, v_now, torch.ones_like(v_now)), torch.ones_like(v_now))
        step = self.rho * (1.0 - ratio)
        if self.non_increasing:
            step_back = loss_now > loss_prev
            step = torch.where((step > 0) & ~step_back, torch.zeros_like(step), step)
        if self.max_step_fraction is not None:
            bound = self.max_step_fraction * self._sigma
            step = torch.maximum(torch.minimum(step, bound), -bound)
        return torch.where(valid, step, torch.zeros_like(step))

    def update(self, epoch_losses: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Record one epoch's mean training loss per landmark and return the next sigma.

        Args:
            epoch_losses: ``(L,)`` mean training loss of each landmark channel over the epoch.
                A non-finite value gives no update for that landmark while it is in the window.

        Returns:
            ``(L,)`` float64 sigma for the next epoch.
        """
        losses = torch.as_tensor(epoch_losses, dtype=torch.float64).detach().cpu().flatten()
        if losses.numel() != self.num_landmarks:
            raise ValueError(
                f"Argument `epoch_losses` must have shape (L,)=({self.num_landmarks},), "
                f"got {tuple(torch.as_tensor(epoch_losses).shape)}."
            )
        self._loss_history.append(losses.tolist())
        new_sigma = self._sigma + self._step()
        self._sigma = torch.minimum(torch.clamp(new_sigma, min=self.sigma_min), self.sigma_max)
        self._sigma_history.append(self._sigma.tolist())
        return self.sigma

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values only, so it loads with ``torch.load(..., weights_only=True)``."""
        return {
            "sigma": self._sigma.tolist(),
            "loss_history": [list(row) for row in self._loss_history],
            "sigma_history": [list(row) for row in self._sigma_history],
            "sigma_0": self.sigma_0.tolist(),
            "window": self.window,
            "rho": self.rho,
            "non_increasing": self.non_increasing,
            "max_step_fraction": self.max_step_fraction,
            "sigma_min": self.sigma_min,
            "sigma_max": [v if math.isfinite(v) else None for v in self.sigma_max.tolist()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore sigma and the histories; the rule's settings stay those of this object.

        Raises:
            ValueError: when the state holds a different number of landmarks or misses a key.
        """
        missing = {"sigma", "loss_history", "sigma_history"} - set(state)
        if missing:
            raise ValueError(f"Argument `state` misses the keys {sorted(missing)}.")
        sigma = torch.as_tensor(state["sigma"], dtype=torch.float64).flatten()
        if sigma.numel() != self.num_landmarks:
            raise ValueError(
                f"Argument `state` holds {sigma.numel()} landmarks, this schedule has {self.num_landmarks}."
            )
        for key in ("window", "rho", "non_increasing", "max_step_fraction", "sigma_min"):
            if key in state and state[key] != getattr(self, key):
                logger.warning(
                    "Adaloss: resuming with %s=%s although the checkpoint was written with %s.",
                    key,
                    getattr(self, key),
                    state[key],
                )
        self._sigma = sigma
        self._loss_history = [[float(v) for v in row] for row in state["loss_history"]]
        self._sigma_history = [[float(v) for v in row] for row in state["sigma_history"]]
