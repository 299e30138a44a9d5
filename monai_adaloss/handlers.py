"""Training handlers: :class:`AdalossHandler` (the Adaloss schedule) and :class:`ModelInfoSaver` (model_info.json).

AdalossHandler applies the Adaloss schedule per landmark after every training epoch.

Works on any Ignite engine, MONAI's ``SupervisedTrainer`` included (its default decollation of the
outputs does not matter: the handler reads the per-landmark values the loss module keeps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from .losses import AdalossHeatmapLoss

__all__ = ["AdalossHandler", "ModelInfoSaver", "PruneEpochCheckpoints"]


class AdalossHandler:
    """Accumulate per-landmark training losses, then update sigma at ``EPOCH_COMPLETED``.

    Each iteration it adds the loss module's ``last_channel_sums`` / ``last_channel_counts`` /
    ``last_channel_reference_sums`` (kept on
    the loss's device, no host sync); at the end of the epoch it all-reduces the sums and counts
    across ranks with ``ignite.distributed`` (a no-op without a process group), so every rank feeds the
    same epoch loss ``(L,)`` to the schedule and keeps the same sigma. It then writes one scalar per
    landmark, ``sigma/<name>`` (the sigma for the next epoch), ``adaloss_loss/<name>`` (the epoch
    loss) and ``adaloss_clipped/<name>`` (1.0 when the step bound, the floor or the cap limited this
    update, else 0.0), into ``engine.state.metrics`` where MONAI's ``StatsHandler``, ``TensorBoardStatsHandler``
    and ``MLflowHandler`` pick them up.

    Order: :meth:`attach` puts this handler first among the engine's ``EPOCH_COMPLETED`` handlers
    (it re-orders Ignite's handler list), so sigma is updated and logged before any checkpoint,
    validation or stats handler of that epoch runs, whatever order the handlers were attached in.
    Handlers attached later run after it anyway. Likewise its ``ITERATION_COMPLETED`` part runs
    first, so an iteration-level checkpoint's running sums include the iteration it records as done.

    Checkpointing: ``state_dict()`` holds the schedule's state and the running sums as plain Python
    values, so ``CheckpointSaver(save_dict={"net": net, "opt": opt, "trainer": trainer,
    "adaloss": handler})`` and ``CheckpointLoader(load_dict=...)`` resume it, and the file loads with
    ``torch.load(..., weights_only=True)``.

    Args:
        loss: the :class:`~monai_adaloss.losses.AdalossHeatmapLoss` the trainer optimises; its
            ``schedule`` (any :class:`~monai_adaloss.adaloss.SigmaSchedule`: Adaloss, its controls or
            learned sigma) is the one updated; it receives the epoch's all-zero-prediction losses too.
        landmark_names: names used in the metric keys; defaults to ``landmark_0``, ``landmark_1``...
    """

    def __init__(self, loss: AdalossHeatmapLoss, landmark_names: Sequence[str] | None = None) -> None:
        if loss.schedule is None:
            raise ValueError("Argument `loss` must have a sigma schedule, got a fixed-sigma loss.")
        self.loss = loss
        self.schedule = loss.schedule
        num_landmarks = self.schedule.num_landmarks
        names = [f"landmark_{i}" for i in range(num_landmarks)] if landmark_names is None else list(landmark_names)
        if len(names) != num_landmarks:
            raise ValueError(f"Argument `landmark_names` must hold {num_landmarks} names, got {len(names)}: {names}.")
        self.landmark_names = names
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._reference_sums: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        """Register first on ``ITERATION_COMPLETED`` and first on ``EPOCH_COMPLETED``."""
        for event, handler in ((Events.ITERATION_COMPLETED, self.iteration_completed), (Events.EPOCH_COMPLETED, self)):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)
                event_handlers = engine._event_handlers[event]
                event_handlers.insert(0, event_handlers.pop())

    def iteration_completed(self, engine: Engine) -> None:
        """Add the last batch's per-landmark loss sums and counts to the epoch's running totals."""
        sums, counts = self.loss.last_channel_sums, self.loss.last_channel_counts
        if sums is None or counts is None:
            return
        sums, counts = sums.detach().to(torch.float64), counts.detach().to(torch.float64)
        reference = getattr(self.loss, "last_channel_reference_sums", None)
        reference = torch.full_like(sums, torch.nan) if reference is None else reference.detach().to(torch.float64)
        if self._sums is None or self._counts is None or self._reference_sums is None:
            self._sums, self._counts, self._reference_sums = sums.clone(), counts.clone(), reference.clone()
        else:
            self._sums = self._sums.to(sums.device) + sums
            self._counts = self._counts.to(counts.device) + counts
            self._reference_sums = self._reference_sums.to(reference.device) + reference

    def _epoch_totals(self) -> torch.Tensor:
        """``(3, L)`` float64: loss sums, counts and all-zero-prediction loss sums over all ranks."""
        num_landmarks = self.schedule.num_landmarks
        if self._sums is None or self._counts is None or self._reference_sums is None:
            totals = torch.zeros(3, num_landmarks, dtype=torch.float64)
        else:
            totals = torch.stack([self._sums, self._counts, self._reference_sums.to(self._sums.device)])
        return idist.all_reduce(totals).cpu()

    def epoch_losses(self) -> torch.Tensor:
        """``(L,)`` float64 mean loss per landmark over this epoch's samples on all ranks (NaN if none)."""
        totals = self._epoch_totals()
        return totals[0] / totals[1]

    def __call__(self, engine: Engine) -> None:
        """At ``EPOCH_COMPLETED``: update the schedule and log sigma, the epoch loss and clipping per landmark."""
        totals = self._epoch_totals()
        losses, references = totals[0] / totals[1], totals[2] / totals[1]
        sigma = self.schedule.update(losses, references)
        self._sums, self._counts, self._reference_sums = None, None, None
        clipped = self.schedule.clipped_history[-1].tolist()
        for name, value, loss, clip in zip(self.landmark_names, sigma.tolist(), losses.tolist(), clipped, strict=True):
            engine.state.metrics[f"sigma/{name}"] = value
            engine.state.metrics[f"adaloss_loss/{name}"] = loss
            engine.state.metrics[f"adaloss_clipped/{name}"] = float(clip)

    def state_dict(self) -> dict[str, Any]:
        """Schedule state plus the running sums of a partly finished epoch (plain Python values)."""
        return {
            "schedule": self.schedule.state_dict(),
            "landmark_names": list(self.landmark_names),
            "epoch_sums": None if self._sums is None else self._sums.cpu().tolist(),
            "epoch_counts": None if self._counts is None else self._counts.cpu().tolist(),
            "epoch_reference_sums": None if self._reference_sums is None else self._reference_sums.cpu().tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` wrote."""
        if "schedule" not in state:
            raise ValueError("Argument `state` misses the key 'schedule'.")
        self.schedule.load_state_dict(state["schedule"])
        sums, counts = state.get("epoch_sums"), state.get("epoch_counts")
        self._sums = None if sums is None else torch.tensor(sums, dtype=torch.float64)
        self._counts = None if counts is None else torch.tensor(counts, dtype=torch.float64)
        reference = state.get("epoch_reference_sums")
        if reference is None and sums is not None:  # a checkpoint from before the reference sums existed
            reference = [float("nan")] * len(sums)
        self._reference_sums = None if reference is None else torch.tensor(reference, dtype=torch.float64)


class ModelInfoSaver:
    """Write ``model_info.json`` next to the best model whenever the evaluator's key metric improves.

    Attach it to the validation evaluator together with the best-model ``CheckpointSaver``: both act
    on the epoch whose key metric is the best so far (``engine.state.best_metric_epoch``), so the
    JSON describes the weights of ``model.pt`` (same sigma). The file is what ``ckpt_export`` copies
    into ``model.ts`` (see :mod:`monai_adaloss.export`). Only rank 0 writes.

    Args:
        model_info: the :class:`~monai_adaloss.model_info.LandmarkModelInfo` (or anything with
            ``state_dict()``) of the run.
        save_dir: the folder of ``model.pt``.
        filename: the file's name.
    """

    def __init__(self, model_info: Any, save_dir: str, filename: str = "model_info.json") -> None:
        self.model_info = model_info
        self.save_dir = save_dir
        self.filename = filename

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from .export import write_model_info_json

        best_epoch = getattr(engine.state, "best_metric_epoch", -1)
        if idist.get_rank() == 0 and best_epoch == engine.state.epoch:
            write_model_info_json(self.model_info.state_dict(), f"{self.save_dir}/{self.filename}")


class PruneEpochCheckpoints:
    """Keep only the ``n_saved`` most recently written ``checkpoint_epoch=N.pt`` files, also across resumed runs.

    MONAI's ``CheckpointSaver`` counts ``n_saved`` among the files of its own run only, so a resumed run
    leaves the checkpoint it resumed from (and every earlier run's) behind. Attached after the saver, this
    deletes the older ones at the end of every epoch. Only rank 0 deletes.

    Args:
        save_dir: the saver's folder.
        n_saved: how many of the newest epoch checkpoints to keep (>= 1).
    """

    def __init__(self, save_dir: str, n_saved: int = 1) -> None:
        if n_saved < 1:
            raise ValueError(f"Argument `n_saved` must be >= 1, got {n_saved}.")
        self.save_dir = save_dir
        self.n_saved = n_saved

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        import re
        from pathlib import Path

        if idist.get_rank() != 0:
            return
        pattern = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
        # newest first by write time, not by N: a fresh run's files are newer than stale higher-numbered ones of
        # an earlier run, and the saver's own files (which it removes itself) are always among the newest
        found = sorted(
            (p for p in Path(self.save_dir).glob("checkpoint_epoch=*.pt") if pattern.search(p.name)),
            key=lambda p: p.stat().st_mtime_ns,
            reverse=True,
        )
        for path in found[self.n_saved :]:
            path.unlink(missing_ok=True)
