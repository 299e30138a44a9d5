"""Sigma schedules: the Adaloss rule (Teixeira et al., eq. 3-5) with the guards of DESIGN.md, its variants, and
the shared interface every sigma schedule of this package follows.

Pure Python + torch tensors: no ignite, no ``torch.nn``. After every epoch, the mean training loss of
each landmark channel is passed to :meth:`SigmaSchedule.update`, which returns the sigma to use for the
next epoch. :class:`AdalossSchedule` implements, per landmark::

    H_t^l = the last w epoch statistics of landmark l
    V_t^l = population variance of H_t^l
    dsigma = rho * (1 - V_{t-1}^l / V_t^l)
    sigma_{t+1}^l = clamp(sigma_t^l + dsigma, sigma_min, sigma_max)

The first update needs V_{t-1}, so it happens after ``window + 1`` epochs. With the non-increasing
rule (the paper's default), a positive step (the variance grew) is kept only when the training loss
grew too (``L_t > L_{t-1}``, a "step back"); otherwise it is dropped.

``max_step_fraction`` is ours, not the paper's: the literal rule collapses sigma within a few
epochs when the loss drops fast and then flattens (``V_{t-1} / V_t`` of 10-100 gives steps of -9 to
-90), so by default a step is bounded to 20 % of the current sigma (``docs/sigma_sweep.md``).
``AdalossSchedule(..., max_step_fraction=None, sigma_max=None)`` is the paper's eq. 5 with only the
positive floor ``sigma_min``. The bounded rule saturates (most steps are the bound; ``docs/adaloss.md``),
so the schedule also offers variants whose statistic does not jump when sigma moves:

- ``statistic="relative"``: the epoch loss divided by the loss of the all-zero prediction at that
  epoch's sigma (``reference_losses``, reported by :class:`~monai_adaloss.losses.AdalossHeatmapLoss`);
- ``restart_window=True``: the window holds only epochs trained at the current sigma of that landmark;
- ``rule="spread"`` (ours): "narrow the target while the prediction follows it". Every ``window`` epochs
  at one sigma, the last relative loss ``R`` gives the spread of the prediction around the target: for a
  Gaussian target of width sigma in ``d`` dimensions and a prediction that is the target blurred by an
  isotropic Gaussian error of std ``s`` (annotation noise, the network's own error),
  ``R = 1 - (sigma^2 / (sigma^2 + s^2))^(d / 2)``, so ``s = sigma * sqrt((1 - R)^(-2 / d) - 1)``. While
  ``spread_ratio * s < sigma`` sigma moves to ``spread_ratio * s`` (at most ``max_step_fraction`` per
  step); otherwise it holds, unless ``R`` is no higher than at the previous sigma (the network fits a
  narrower target better: a wide target is beyond its reach, not the annotation), in which case it
  narrows by ``max_step_fraction``. The first decision at ``sigma_0`` (the cap) is always a narrowing.
  Sigma never grows. A landmark annotated with noise ``s_n`` stops near ``spread_ratio * s_n``.

Every rule records per update what it did (:attr:`SigmaSchedule.clip_history`; for Adaloss also the
variance ratio, the raw step and whether the non-increasing rule dropped it: :attr:`AdalossSchedule.diagnostics`).

Units: sigma is in whatever unit the renderer is told (voxels of the target grid by default).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

__all__ = [
    "SIGMA_0",
    "AdalossSchedule",
    "SigmaSchedule",
    "initial_sigma",
]

logger = logging.getLogger(__name__)

SIGMA_0 = "sigma_0"
"""Sentinel for ``sigma_max``: cap each landmark's sigma at its own initial value (the default)."""

CLIP_CODES = ("", "bound", "floor", "cap")
"""What limited an update: nothing, the step bound, the floor ``sigma_min`` or the cap ``sigma_max``."""


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


def _as_vector(values: Sequence[float] | torch.Tensor | None, num_landmarks: int, name: str) -> torch.Tensor | None:
    if values is None:
        return None
    tensor = torch.as_tensor(values, dtype=torch.float64).detach().cpu().flatten()
    if tensor.numel() != num_landmarks:
        raise ValueError(
            f"Argument `{name}` must have shape (L,)=({num_landmarks},), got {tuple(torch.as_tensor(values).shape)}."
        )
    return tensor


class SigmaSchedule:
    """What every sigma schedule offers (the handler, the loss and the bundles rely on nothing else).

    - :meth:`update` ``(epoch_losses, reference_losses=None) -> sigma``: record one epoch and return the
      sigma ``(L,)`` for the next one; ``reference_losses`` ``(L,)`` is the epoch's mean loss of the
      all-zero prediction at that epoch's sigma (only schedules with ``needs_reference`` use it);
    - :attr:`sigma` ``(L,)``, :attr:`sigma_history` ``(T + 1, L)``, :attr:`loss_history` ``(T, L)``,
      :attr:`clipped_history` ``(T, L)`` bool (the update of epoch t was limited by a bound, floor or cap);
    - :meth:`state_dict` / :meth:`load_state_dict` of plain Python values (loads with ``weights_only=True``).

    Subclasses implement :meth:`_next_sigma`.

    Args:
        sigma_0: initial sigma, one float for all landmarks or one per landmark ``(L,)``.
        num_landmarks: L; required when ``sigma_0`` is a single float.
        sigma_min: floor, > 0.
        sigma_max: cap; ``SIGMA_0`` caps each landmark at its initial sigma, ``None`` removes the cap, a
            float caps all landmarks.
    """

    name = "schedule"
    needs_reference = False

    def __init__(
        self,
        sigma_0: float | Sequence[float] | torch.Tensor,
        num_landmarks: int | None = None,
        sigma_min: float = 2.0,
        sigma_max: float | str | None = SIGMA_0,
    ) -> None:
        sigma_0_t = torch.as_tensor(sigma_0, dtype=torch.float64).detach().cpu().flatten().clone()
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
        self._reference_history: list[list[float]] = []
        self._sigma_history: list[list[float]] = [sigma_0_t.tolist()]
        self._clip_history: list[list[str]] = []

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
    def reference_history(self) -> torch.Tensor:
        """``(T, L)``: the all-zero-prediction losses passed to :meth:`update` (NaN where none was given)."""
        return torch.tensor(self._reference_history, dtype=torch.float64).reshape(-1, self.num_landmarks)

    @property
    def sigma_history(self) -> torch.Tensor:
        """``(T + 1, L)``: row t is the sigma used during epoch t (row 0 is sigma_0)."""
        return torch.tensor(self._sigma_history, dtype=torch.float64)

    @property
    def clip_history(self) -> list[list[str]]:
        """``T`` rows of ``L`` codes from :data:`CLIP_CODES`: what limited the update after epoch t."""
        return [list(row) for row in self._clip_history]

    @property
    def clipped_history(self) -> torch.Tensor:
        """``(T, L)`` bool: the update after epoch t was limited by the step bound, the floor or the cap."""
        return torch.tensor([[code != "" for code in row] for row in self._clip_history], dtype=torch.bool).reshape(
            -1, self.num_landmarks
        )

    def _clamp(self, proposed: torch.Tensor, clip: list[str]) -> torch.Tensor:
        """Clamp ``proposed`` ``(L,)`` to [sigma_min, sigma_max], marking in ``clip`` where it bit (if unmarked)."""
        new_sigma = torch.minimum(torch.clamp(proposed, min=self.sigma_min), self.sigma_max)
        for landmark in range(self.num_landmarks):
            if clip[landmark] == "" and proposed[landmark] < self.sigma_min:
                clip[landmark] = "floor"
            elif clip[landmark] == "" and proposed[landmark] > self.sigma_max[landmark]:
                clip[landmark] = "cap"
        return new_sigma

    def _next_sigma(self, losses: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """The sigma ``(L,)`` after the epoch just recorded and one :data:`CLIP_CODES` entry per landmark."""
        raise NotImplementedError

    def update(
        self,
        epoch_losses: Sequence[float] | torch.Tensor,
        reference_losses: Sequence[float] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Record one epoch's mean training loss per landmark and return the next sigma.

        Args:
            epoch_losses: ``(L,)`` mean training loss of each landmark channel over the epoch.
                A non-finite value gives no update for that landmark while it is in the window.
            reference_losses: ``(L,)`` mean loss of the all-zero prediction at the epoch's sigma
                (``AdalossHeatmapLoss.last_channel_reference_sums`` summed over the epoch / counts);
                required when :attr:`needs_reference`.

        Returns:
            ``(L,)`` float64 sigma for the next epoch.
        """
        losses = _as_vector(epoch_losses, self.num_landmarks, "epoch_losses")
        references = _as_vector(reference_losses, self.num_landmarks, "reference_losses")
        if references is None:
            if self.needs_reference:
                raise ValueError(
                    f"Argument `reference_losses` is required by the {self.name!r} schedule (the loss of the "
                    "all-zero prediction per landmark, reported by AdalossHeatmapLoss), got None."
                )
            references = torch.full_like(losses, math.nan)
        self._loss_history.append(losses.tolist())
        self._reference_history.append(references.tolist())
        new_sigma, clip = self._next_sigma(losses, references)
        self._sigma = new_sigma
        self._sigma_history.append(self._sigma.tolist())
        self._clip_history.append(list(clip))
        return self.sigma

    def _settings(self) -> dict[str, Any]:
        """The rule's settings, as plain values (stored in the state, compared on load)."""
        return {"sigma_min": self.sigma_min}

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values only, so it loads with ``torch.load(..., weights_only=True)``."""
        return {
            "schedule": self.name,
            "sigma": self._sigma.tolist(),
            "loss_history": [list(row) for row in self._loss_history],
            "reference_history": [list(row) for row in self._reference_history],
            "sigma_history": [list(row) for row in self._sigma_history],
            "clip_history": [list(row) for row in self._clip_history],
            "sigma_0": self.sigma_0.tolist(),
            "sigma_max": [v if math.isfinite(v) else None for v in self.sigma_max.tolist()],
            **self._settings(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore sigma and the histories; the rule's settings stay those of this object.

        States written before the diagnostics existed (no ``clip_history`` / ``reference_history``) load
        with empty codes and NaN references.

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
        if "schedule" in state and state["schedule"] != self.name:
            logger.warning("Adaloss: resuming a %r schedule from a %r checkpoint.", self.name, state["schedule"])
        for key, value in self._settings().items():
            if key in state and state[key] != value:
                logger.warning(
                    "Adaloss: resuming with %s=%s although the checkpoint was written with %s.", key, value, state[key]
                )
        self._sigma = sigma
        self._loss_history = [[float(v) for v in row] for row in state["loss_history"]]
        self._sigma_history = [[float(v) for v in row] for row in state["sigma_history"]]
        epochs = len(self._loss_history)
        self._reference_history = [[float(v) for v in row] for row in state.get("reference_history", [])] or [
            [math.nan] * self.num_landmarks for _ in range(epochs)
        ]
        self._clip_history = [[str(v) for v in row] for row in state.get("clip_history", [])] or [
            [""] * self.num_landmarks for _ in range(epochs)
        ]
        self._load_extra_state(state)

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Subclasses restore what else they keep."""


AdalossRule = Literal["variance", "spread"]
AdalossStatistic = Literal["loss", "relative"]


class AdalossSchedule(SigmaSchedule):
    """Per-landmark adaptive Gaussian sigma, updated once per epoch from the training losses.

    Args:
        sigma_0: initial sigma, one float for all landmarks or one per landmark ``(L,)``.
        num_landmarks: L; required when ``sigma_0`` is a single float.
        window: w, the number of epoch statistics whose variance is taken (>= 2; paper: 3).
        rho: step size (> 0; paper: 0.9); ``rule="variance"`` only.
        non_increasing: keep a positive step only when the loss grew too (paper's rule; on by default);
            ``rule="variance"`` only.
        max_step_fraction: bound on ``|dsigma|`` relative to the current sigma (ours; ``None`` = no bound).
        sigma_min: floor, > 0.
        sigma_max: cap; ``SIGMA_0`` (default) caps each landmark at its initial sigma, ``None`` removes
            the cap, a float caps all landmarks.
        statistic: ``"loss"`` (the paper: the epoch loss) or ``"relative"`` (the epoch loss divided by the
            all-zero prediction's loss at the same sigma; needs ``reference_losses`` in :meth:`update`).
        restart_window: the window holds only epochs trained at the landmark's current sigma, so an
            update compares epochs of one sigma (ours); off by default (the paper).
        rule: ``"variance"`` (eq. 5, the paper) or ``"spread"`` (ours, see the module docstring; implies
            ``statistic="relative"`` and ``restart_window=True``, and needs ``spatial_dims``).
        spread_ratio: ``rule="spread"``: the sigma aimed at, in units of the estimated prediction spread.
        spatial_dims: d, the number of spatial dimensions of the heatmaps (``rule="spread"`` only).

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
        statistic: AdalossStatistic = "loss",
        restart_window: bool = False,
        rule: AdalossRule = "variance",
        spread_ratio: float = 1.5,
        spatial_dims: int | None = None,
    ) -> None:
        super().__init__(sigma_0, num_landmarks, sigma_min=sigma_min, sigma_max=sigma_max)
        if int(window) != window or window < 2:
            raise ValueError(f"Argument `window` must be an integer >= 2, got {window}.")
        if rule not in ("variance", "spread"):
            raise ValueError(f"Argument `rule` must be 'variance' or 'spread', got {rule!r}.")
        if statistic not in ("loss", "relative"):
            raise ValueError(f"Argument `statistic` must be 'loss' or 'relative', got {statistic!r}.")
        self.window = int(window)
        self.rho = _positive("rho", rho)
        self.non_increasing = bool(non_increasing)
        self.max_step_fraction = (
            None if max_step_fraction is None else _positive("max_step_fraction", max_step_fraction)
        )
        self.rule = rule
        self.statistic: AdalossStatistic = "relative" if rule == "spread" else statistic
        self.restart_window = True if rule == "spread" else bool(restart_window)
        self.spread_ratio = _positive("spread_ratio", spread_ratio)
        if rule == "spread":
            if spatial_dims not in (1, 2, 3):
                raise ValueError(f"Argument `spatial_dims` must be 1, 2 or 3 with rule='spread', got {spatial_dims}.")
            if self.max_step_fraction is not None and self.max_step_fraction >= 1.0:
                raise ValueError(
                    f"Argument `max_step_fraction` must be < 1 with rule='spread', got {max_step_fraction}."
                )
        self.spatial_dims = None if spatial_dims is None else int(spatial_dims)
        self._segment_start = [0] * self.num_landmarks  # first epoch index trained at the current sigma
        self._diagnostics: list[dict[str, list[Any]]] = []

    @property
    def name(self) -> str:  # type: ignore[override]
        if self.rule == "spread":
            return "spread"
        if self.max_step_fraction is None:
            return "paper" if self.statistic == "loss" and not self.restart_window else "unbounded_variant"
        if self.statistic == "relative" and self.restart_window:
            return "relative_restart"
        return "bounded" if self.statistic == "loss" and not self.restart_window else "bounded_variant"

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        return self.statistic == "relative"

    @classmethod
    def for_spatial_shape(cls, spatial_shape: Sequence[int], num_landmarks: int, **kwargs: Any) -> AdalossSchedule:
        """A schedule starting from the paper's sigma_0 = min(spatial_shape) / 4 for all landmarks.

        With ``rule="spread"``, ``spatial_dims`` defaults to ``len(spatial_shape)``.
        """
        if kwargs.get("rule") == "spread":
            kwargs.setdefault("spatial_dims", len(spatial_shape))
        return cls(initial_sigma(spatial_shape), num_landmarks=num_landmarks, **kwargs)

    @property
    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Per update (row t = the update after epoch t), ``(T, L)`` each:

        - ``ratio``: ``V_{t-1} / V_t`` (``rule="variance"``) or the estimated prediction spread over sigma
          (``rule="spread"``); NaN where no update was computed;
        - ``raw_step``: the step the rule asked for, before the bound, floor and cap (0 where none);
        - ``dropped``: the non-increasing rule dropped a positive step (``rule="spread"``: the rule held
          sigma because the prediction no longer follows a narrower target);
        - ``clipped``: the step bound, the floor or the cap limited the update (see :attr:`clip_history`).
        """
        rows = self._diagnostics
        width = self.num_landmarks
        return {
            "ratio": torch.tensor([r["ratio"] for r in rows], dtype=torch.float64).reshape(-1, width),
            "raw_step": torch.tensor([r["raw_step"] for r in rows], dtype=torch.float64).reshape(-1, width),
            "dropped": torch.tensor([r["dropped"] for r in rows], dtype=torch.bool).reshape(-1, width),
            "clipped": self.clipped_history,
        }

    def _statistics(self) -> torch.Tensor:
        """``(T, L)``: the per-epoch statistic the rule looks at."""
        losses = self.loss_history
        if self.statistic == "loss":
            return losses
        return losses / self.reference_history

    def _window_ready(self, t: int, landmark: int, needed: int) -> bool:
        start = self._segment_start[landmark] if self.restart_window else 0
        return t - start + 1 >= needed

    def _variance_step(self, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """eq. 5 per landmark: (raw step, ratio, dropped), zeros / NaN where no update applies."""
        width = self.num_landmarks
        raw = torch.zeros(width, dtype=torch.float64)
        ratio = torch.full((width,), math.nan, dtype=torch.float64)
        dropped = torch.zeros(width, dtype=torch.bool)
        t = stats.shape[0] - 1
        w = self.window
        for landmark in range(width):
            if not self._window_ready(t, landmark, w + 1):  # V_{t-1} needs `window` epochs before the latest one
                continue
            v_now = stats[t - w + 1 : t + 1, landmark].var(unbiased=False)
            v_prev = stats[t - w : t, landmark].var(unbiased=False)
            if not (torch.isfinite(v_now) and torch.isfinite(v_prev) and v_now > 0):
                logger.warning(
                    "Adaloss: no sigma update for landmark %d after epoch %d (loss variance %s, previous %s).",
                    landmark,
                    t,
                    v_now.item(),
                    v_prev.item(),
                )
                continue
            ratio[landmark] = v_prev / v_now
            step = self.rho * (1.0 - ratio[landmark])
            if self.non_increasing and step > 0 and not stats[t, landmark] > stats[t - 1, landmark]:
                dropped[landmark] = True
                step = torch.zeros((), dtype=torch.float64)
            raw[landmark] = step
        return raw, ratio, dropped

    def _spread_step(self, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The spread rule per landmark: (raw step, estimated spread / sigma, dropped: held)."""
        width = self.num_landmarks
        raw = torch.zeros(width, dtype=torch.float64)
        ratio = torch.full((width,), math.nan, dtype=torch.float64)
        dropped = torch.zeros(width, dtype=torch.bool)
        t = stats.shape[0] - 1
        d = float(self.spatial_dims or 1)
        fraction = 0.5 if self.max_step_fraction is None else self.max_step_fraction
        for landmark in range(width):
            if not self._window_ready(t, landmark, self.window):
                continue
            relative = float(stats[t, landmark])
            if not math.isfinite(relative) or relative < 0:
                logger.warning("Adaloss: no sigma update for landmark %d after epoch %d (relative loss %s).",
                               landmark, t, relative)  # fmt: skip
                continue
            spread = math.inf if relative >= 1.0 else math.sqrt(max((1.0 - relative) ** (-2.0 / d) - 1.0, 0.0))
            ratio[landmark] = spread
            sigma = float(self._sigma[landmark])
            start = self._segment_start[landmark]
            previous = float(stats[start - 1, landmark]) if start > 0 else math.inf  # R at the previous sigma
            if self.spread_ratio * spread < 1.0:
                raw[landmark] = sigma * (self.spread_ratio * spread - 1.0)
            elif relative <= previous:
                raw[landmark] = -fraction * sigma
            else:
                dropped[landmark] = True
        return raw, ratio, dropped

    def _next_sigma(self, losses: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        stats = self._statistics()
        raw, ratio, dropped = self._spread_step(stats) if self.rule == "spread" else self._variance_step(stats)
        step = raw.clone()
        clip = [""] * self.num_landmarks
        if self.max_step_fraction is not None:
            bound = self.max_step_fraction * self._sigma
            for landmark in range(self.num_landmarks):
                if step[landmark] != 0 and abs(step[landmark]) > bound[landmark]:
                    clip[landmark] = "bound"
            step = torch.maximum(torch.minimum(step, bound), -bound)
        step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        proposed = self._sigma + step
        new_sigma = self._clamp(proposed, clip)
        t = stats.shape[0] - 1
        for landmark in range(self.num_landmarks):
            if new_sigma[landmark] != self._sigma[landmark]:
                self._segment_start[landmark] = t + 1
        self._diagnostics.append(
            {"ratio": ratio.tolist(), "raw_step": raw.tolist(), "dropped": [bool(v) for v in dropped.tolist()]}
        )
        return new_sigma, clip

    def _settings(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "rho": self.rho,
            "non_increasing": self.non_increasing,
            "max_step_fraction": self.max_step_fraction,
            "sigma_min": self.sigma_min,
            "statistic": self.statistic,
            "restart_window": self.restart_window,
            "rule": self.rule,
            "spread_ratio": self.spread_ratio,
            "spatial_dims": self.spatial_dims,
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values only, so it loads with ``torch.load(..., weights_only=True)``."""
        state = super().state_dict()
        state["segment_start"] = list(self._segment_start)
        state["diagnostics"] = [{key: list(values) for key, values in row.items()} for row in self._diagnostics]
        return state

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        epochs = len(self._loss_history)
        self._segment_start = [int(v) for v in state.get("segment_start", [0] * self.num_landmarks)]
        self._diagnostics = [
            {"ratio": list(row["ratio"]), "raw_step": list(row["raw_step"]), "dropped": list(row["dropped"])}
            for row in state.get("diagnostics", [])
        ] or [
            {
                "ratio": [math.nan] * self.num_landmarks,
                "raw_step": [0.0] * self.num_landmarks,
                "dropped": [False] * self.num_landmarks,
            }
            for _ in range(epochs)
        ]
