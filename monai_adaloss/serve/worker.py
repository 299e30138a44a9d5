"""The node's inference thread: queued instances -> the batch runner's decode pool, batching, records and SR.

It reuses :mod:`monai_adaloss.inference` as it is: :class:`~monai_adaloss.inference.pool.DecodePool`
(crash-contained decoding workers, kept for the node's lifetime), :func:`~monai_adaloss.inference.runner.infer_outcomes`
(frames of several instances batched through the network), :class:`~monai_adaloss.inference.runner.FileTracker`
(records, and the SR written by :func:`~monai_adaloss.inference.sr.write_structured_report` into
``SPOOL/sr``) and :class:`~monai_adaloss.inference.outputs.PartWriter` (``SPOOL/records.jsonl``,
``errors.jsonl``, ``manifest.jsonl``). A queue file is deleted once its batch is done (records or error
line committed, :class:`_NodeWriter`, and SR written); see :meth:`InferenceWorker._recover` for a crash
in between.

Batching: when an instance arrives the thread waits ``batch_window`` seconds (or until
``max_batch_files`` are queued) and infers everything queued in one pass, so frames of instances
received close together share network calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from monai.inferers import SimpleInferer

from ..inference.decode import DecodeSettings, decode_file
from ..inference.heatmap_points import HeatmapDecoder
from ..inference.model import LandmarkModel
from ..inference.outputs import RECORDS, PartWriter
from ..inference.pool import DecodePool
from ..inference.runner import FileTracker, InferenceSummary, infer_outcomes, read_records, sr_written
from ..inference.sr import source_header, sr_file_name
from .spool import Spool
from .status import Counters

__all__ = ["InferenceWorker"]

logger = logging.getLogger(__name__)


class _NodeWriter(PartWriter):
    """The runner's append-only logs in the spool, calling ``on_commit(path, ok, frames, records, detail)`` after
    each commit (``detail``: the SOP Instance UID, or the failure's reason)."""

    def __init__(
        self, directory: Path, run_info: dict[str, Any], on_commit: Callable[[str, bool, int, int, str], None]
    ) -> None:
        super().__init__(directory, run_info, resume=True)
        self.on_commit = on_commit

    def write_records(self, path: str, num_frames: int, records: list[dict[str, Any]]) -> None:
        super().write_records(path, num_frames, records)
        self.on_commit(path, True, num_frames, len(records), records[0]["sop_instance_uid"] if records else "?")

    def write_error(self, path: str, reason: str, error: str) -> None:
        super().write_error(path, reason, error)
        self.on_commit(path, False, 0, 0, reason)


class _NodeTracker(FileTracker):
    """The runner's per-file collector, with one SR file name (and SR UID) per SOP instance.

    The batch runner may give a second *file* with an already used SOPInstanceUID its own SR; for the node,
    a second reception of an instance is the same instance again, so its SR must replace the first one
    (``_sr_name`` is the runner's hook for the name, where it has one).
    """

    def _sr_name(self, path: str, sop_instance_uid: str) -> str:
        return sr_file_name(sop_instance_uid)


class InferenceWorker(threading.Thread):
    """Thread: infer the spool's queued instances in batches (module docstring).

    Args:
        spool: the spool.
        model: the loaded model.
        counters: the node's counters.
        batch_size: frames per network call.
        num_workers: decoding worker processes (0: decode in this thread, no crash containment).
        batch_window: seconds to wait after an instance arrives for more to batch with it.
        max_batch_files: infer at once when this many instances are queued.
        device: torch device.
        decode_timeout: seconds one instance may take to decode.
        on_sr_written: called after an instance's SR is in ``SPOOL/sr`` (wakes the sender).
    """

    def __init__(
        self,
        spool: Spool,
        model: LandmarkModel,
        counters: Counters,
        batch_size: int = 16,
        num_workers: int = 2,
        batch_window: float = 2.0,
        max_batch_files: int = 64,
        device: str | torch.device = "cpu",
        decode_timeout: float | None = 300.0,
        on_sr_written: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="adaloss-infer", daemon=True)
        self.spool = spool
        self.model = model
        self.counters = counters
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.max_batch_files = max_batch_files
        self.device = torch.device(device)
        self.on_sr_written = on_sr_written or (lambda: None)
        self.settings = DecodeSettings.from_model_info(model.info, keep_header=True)
        self.decoder = HeatmapDecoder(model.info)
        self.writer = _NodeWriter(spool.root, {"model": model.identity(), "rank": 0, "world_size": 1}, self._commit)
        self.summary = InferenceSummary(str(spool.root))
        self.pool = DecodePool(decode_file, self.settings, num_workers, decode_timeout)
        self.pool.__enter__()  # fork the decoding workers now, before the node starts its network threads
        self._todo: deque[Path] = deque()
        self._known: set[Path] = set()
        self._cond = threading.Condition()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._recover()

    @property
    def queue_length(self) -> int:
        with self._cond:
            return len(self._todo)

    def submit(self, path: Path) -> None:
        """Queue an instance the SCP has written to the spool."""
        with self._cond:
            if path not in self._known:
                self._known.add(path)
                self._todo.append(path)
                self._cond.notify_all()

    def stop(self) -> None:
        """Finish the current batch, then stop; queued instances stay in the spool for the next start."""
        self.stopping.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Release the decoding workers and the logs (after the thread has ended)."""
        self.pool.close()
        self.writer.close(finished=False)

    def run(self) -> None:
        try:
            network = self.model.network.to(self.device).eval()
            inferer = SimpleInferer()
            while not self.stopping.is_set():
                batch = self._next_batch()
                if not batch:
                    continue
                started = time.perf_counter()
                frames = 0
                with torch.inference_mode():
                    outcomes = self.pool.imap_unordered([str(p) for p in batch])
                    use_amp = self.device.type == "cuda"
                    for count in infer_outcomes(
                        outcomes, self._tracker(), network, inferer, self.decoder, self.batch_size, self.device, use_amp
                    ):
                        frames += count
                self._finish_batch(batch)
                logger.debug("batch of %d instances, %d frames in %.2f s", len(batch), frames,
                             time.perf_counter() - started)  # fmt: skip
        except BaseException as err:  # a bug: record it in the status file; the instances stay queued
            self.error = err
            logger.exception("the inference loop failed")
            self.counters.set_error(f"inference loop failed: {type(err).__name__}: {err}")

    def _tracker(self) -> FileTracker:
        return _NodeTracker(self.writer, self.model, self.spool.root, True, False, self.summary)

    def _next_batch(self) -> list[Path]:
        with self._cond:
            while not self._todo and not self.stopping.is_set():
                self._cond.wait(0.5)
            if self.stopping.is_set() or not self._todo:
                return []
            deadline = time.monotonic() + self.batch_window
            while len(self._todo) < self.max_batch_files and not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            count = min(len(self._todo), self.max_batch_files)
            return [self._todo.popleft() for _ in range(count)]

    def _recover(self) -> None:
        """Queue the instances a previous run acknowledged but did not commit; finish the committed ones.

        A queue file is deleted only after its whole batch is done (records and SR), so a file whose records
        are committed may still lack its SR (a kill in between, when the runner commits records first): its
        SR is written again from the committed records and the file's header (same SR UID: a resend of an
        SR already sent replaces it).
        """
        done = self.writer.done
        finished = [path for path in self.spool.queued() if str(path) in done]
        for path in self.spool.queued():
            if str(path) not in done:
                self.submit(path)
        ok = {  # records committed, SR not committed
            str(path) for path in finished if done[str(path)].get("status") == "ok" and not sr_written(done[str(path)])
        }
        records: dict[str, list[dict[str, Any]]] = {path: [] for path in ok}
        if ok:
            for row in read_records(self.spool.root / RECORDS):
                if row.get("path") in records:
                    records[row["path"]].append(row)
        for path in finished:
            if str(path) in ok:
                try:
                    self._tracker().write_sr(str(path), source_header(str(path)), records[str(path)])
                    logger.info("resuming: SR of %s written again from its committed records", path.name)
                except Exception as err:  # the records stay; the SR of this instance cannot be made
                    logger.warning("resuming: cannot write the SR of %s: %s: %s", path.name, type(err).__name__, err)
                    self.counters.set_error(f"{path.name}: cannot write the SR: {err}")
            self.spool.remove(path)
        if self._todo:
            logger.info("resuming: %d received instance(s) queued from before", len(self._todo))

    def _commit(self, path: str, ok: bool, frames: int, records: int, detail: str) -> None:
        """The runner committed an instance's records (or error line); its queue file goes at the batch's end."""
        queue_path = Path(path)
        if ok:
            self.counters.add(inferred=1)
            logger.info("inferred %s (%s): %d frame(s), %d record(s)", detail, queue_path.name, frames, records)
            self.on_sr_written()
        else:
            self.counters.add(failed=1)
            self.counters.set_error(f"{queue_path.name}: {detail}")

    def _finish_batch(self, batch: list[Path]) -> None:
        """Delete the queue files of the batch's committed instances (their SRs are written by now)."""
        committed = [path for path in batch if str(path) in self.writer.done]
        for path in committed:
            self.spool.remove(path)
        with self._cond:
            self._known.difference_update(committed)
        self.on_sr_written()
