"""Decode input files in worker processes, so that a decoder that crashes or hangs costs one file.

Native pixel-data decoders (JPEG, JPEG 2000, JPEG-LS, GDCM) can abort, segfault or loop forever on
corrupt data. A torch ``DataLoader`` cannot survive that: a dead worker ends the whole iteration.
:class:`DecodePool` keeps its own worker processes, each with a pipe to the parent:

- A dispatcher thread in the parent gives each idle worker the next path, receives the result and
  puts it on a bounded queue that the consumer reads (so decoding runs while the network computes).
- A worker that dies while decoding (its pipe reaches EOF and its exit code is set: ``-N`` for
  signal N) produces a :class:`DecodeFailure` "decoder crashed (signal N, SIGxxx)" for the file it
  held, and is replaced by a fresh worker; the other files are not affected.
- A worker that exceeds ``timeout`` seconds on one file is killed, the file fails with "decoder
  timed out", and the worker is replaced.
- Errors the decode function raises are caught in the worker and returned as failures.

Workers are started with ``fork`` where the platform has it (like the ``DataLoader``'s workers:
fast, no re-import), else ``spawn`` (then ``decode_fn`` must be importable). Each worker uses one
torch thread, ignores SIGINT (the parent handles Ctrl-C and stops them) and takes SIGTERM's default
action (not a handler the parent, e.g. the DICOM node, installed before forking).

No orphans: a worker never outlives its parent, even one killed with SIGKILL. A forked worker
closes the parent's end of its own pipe (which it inherits, and which would otherwise keep its
``recv`` from ever seeing EOF), asks Linux to kill it when the parent dies (``PR_SET_PDEATHSIG``),
and, on any platform, exits when its parent process id changes (checked every second while idle).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from ..io import DicomReadError, DicomSkippedError
from .decode import DecodedFile, DecodeFailure, DecodeFn, DecodeSettings
from .images import ImageReadError

__all__ = ["DecodePool", "Outcome"]

Outcome = DecodedFile | DecodeFailure
_END = object()
_POLL_S = 0.5  # how often the dispatcher checks timeouts and the stop flag while workers are busy
_JOIN_S = 5.0
_PARENT_CHECK_S = 1.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGKILL to this process when its parent dies (best effort elsewhere)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _worker_main(
    conn: Connection, decode_fn: DecodeFn, settings: DecodeSettings, parent_pid: int, parent_end: Connection | None
) -> None:
    """Worker loop: receive a path, decode it, send the DecodedFile or a DecodeFailure; ``None`` stops.

    It exits when its parent dies (module docstring): ``parent_end`` (the parent's end of this pipe,
    inherited by a forked worker) is closed first, so that the parent's death closes the pipe.
    """
    _die_with_parent()
    if parent_end is not None:
        parent_end.close()
    if os.getppid() != parent_pid:  # the parent died before PR_SET_PDEATHSIG took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler the parent installed before forking
    torch.set_num_threads(1)
    while True:
        try:
            while not conn.poll(_PARENT_CHECK_S):
                if os.getppid() != parent_pid:
                    return
            path = conn.recv()
        except (EOFError, OSError):
            return
        if path is None:
            return
        outcome: Outcome
        try:
            outcome = decode_fn(path, settings)
        except (DicomReadError, ImageReadError) as err:
            outcome = DecodeFailure(path, err.reason, type(err).__name__, isinstance(err, DicomSkippedError))
        except Exception as err:
            outcome = DecodeFailure(path, f"{type(err).__name__}: {err}", type(err).__name__)
        try:
            conn.send(outcome)
        except Exception as err:  # e.g. a result that does not pickle
            conn.send(DecodeFailure(path, f"cannot return the decoded file: {type(err).__name__}: {err}", "SendError"))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context: Any, decode_fn: DecodeFn, settings: DecodeSettings) -> None:
        self.conn, child = context.Pipe(duplex=True)
        inherited = self.conn if context.get_start_method() == "fork" else None  # a spawned child has no copy
        self.process = context.Process(
            target=_worker_main, args=(child, decode_fn, settings, os.getpid(), inherited), daemon=True
        )
        self.process.start()
        child.close()

    def request_stop(self) -> None:
        """Ask the worker to exit after its current file."""
        with contextlib.suppress(OSError):
            self.conn.send(None)

    def kill(self) -> None:
        """Kill the worker unless it has exited, and release its pipe."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(_JOIN_S)
        self.conn.close()


class DecodePool:
    """Decode files with ``decode_fn`` in ``num_workers`` crash-contained worker processes.

    Use as a context manager; :meth:`imap_unordered` yields one :class:`DecodedFile` or
    :class:`DecodeFailure` per path, in completion order.

    Args:
        decode_fn: module-level function ``(path, settings) -> DecodedFile``, raising on a bad file.
        settings: passed to every call.
        num_workers: worker processes; 0 decodes in the calling process (no crash containment, for
            debugging).
        timeout: seconds one file may take before its worker is killed; ``None``: no limit.
        max_ready: decoded files held ready for the consumer (memory bound); default
            ``2 * num_workers``.
    """

    def __init__(
        self,
        decode_fn: DecodeFn,
        settings: DecodeSettings,
        num_workers: int,
        timeout: float | None = None,
        max_ready: int | None = None,
    ) -> None:
        if num_workers < 0:
            raise ValueError(f"Argument `num_workers` must be >= 0, got {num_workers}.")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"Argument `timeout` must be positive or None, got {timeout}.")
        self.decode_fn = decode_fn
        self.settings = settings
        self.num_workers = num_workers
        self.timeout = timeout
        methods = multiprocessing.get_all_start_methods()
        self._context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._ready: queue.Queue = queue.Queue(maxsize=max_ready or max(2, 2 * num_workers))
        self._stop = threading.Event()
        self._workers: list[_Worker] = []

    def __enter__(self) -> DecodePool:
        self._workers = [self._new_worker() for _ in range(self.num_workers)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the dispatcher and every worker."""
        self._stop.set()
        for worker in self._workers:
            worker.request_stop()
        deadline = time.monotonic() + _JOIN_S
        for worker in self._workers:  # idle workers exit at once; a busy one is killed at the deadline
            worker.process.join(max(0.0, deadline - time.monotonic()))
            worker.kill()
        self._workers = []

    def imap_unordered(self, paths: Sequence[str]) -> Iterator[Outcome]:
        """Decode ``paths``; yield one outcome per path as soon as it is ready."""
        if self.num_workers == 0:
            yield from (self._decode_inline(path) for path in paths)
            return
        self._stop.clear()
        self._drain()  # anything an abandoned earlier iteration left
        failure: list[BaseException] = []
        thread = threading.Thread(target=self._dispatch, args=(list(paths), failure), daemon=True)
        thread.start()
        try:
            while True:
                item = self._ready.get()
                if item is _END:
                    break
                yield item
        finally:
            self._stop.set()
            thread.join()
        if failure:
            raise RuntimeError("the decoding dispatcher failed") from failure[0]

    def _decode_inline(self, path: str) -> Outcome:
        try:
            return self.decode_fn(path, self.settings)
        except (DicomReadError, ImageReadError) as err:
            return DecodeFailure(path, err.reason, type(err).__name__, isinstance(err, DicomSkippedError))
        except Exception as err:
            return DecodeFailure(path, f"{type(err).__name__}: {err}", type(err).__name__)

    def _new_worker(self) -> _Worker:
        return _Worker(self._context, self.decode_fn, self.settings)

    def _dispatch(self, paths: list[str], failure: list[BaseException]) -> None:
        """Dispatcher thread: keep every worker busy, collect outcomes, replace dead or stuck workers."""
        todo = deque(paths)
        busy: dict[int, tuple[str, float]] = {}  # worker slot -> (path, start time)
        try:
            while (todo or busy) and not self._stop.is_set():
                for slot in range(len(self._workers)):
                    if slot not in busy and todo:
                        path = todo.popleft()
                        self._send(slot, path)
                        busy[slot] = (path, time.monotonic())
                waitables = [self._workers[s].conn for s in busy] + [self._workers[s].process.sentinel for s in busy]
                wait(waitables, timeout=_POLL_S)
                for slot, (path, started) in list(busy.items()):
                    outcome = self._collect(slot, path, started)
                    if outcome is not None:
                        del busy[slot]
                        self._put(outcome)
        except BaseException as err:
            failure.append(err)
        finally:
            self._put(_END, force=True)

    def _send(self, slot: int, path: str) -> None:
        """Hand ``path`` to worker ``slot``, replacing the worker first if it has died since its last file."""
        try:
            self._workers[slot].conn.send(path)
        except OSError:
            self._workers[slot].kill()
            self._workers[slot] = self._new_worker()
            self._workers[slot].conn.send(path)

    def _collect(self, slot: int, path: str, started: float) -> Outcome | None:
        """The outcome of worker ``slot``'s file if it is finished, crashed or timed out, else ``None``."""
        worker = self._workers[slot]
        if worker.conn.poll():
            try:
                return worker.conn.recv()
            except Exception:  # EOF or a torn message: the worker died while sending
                return self._replace(slot, path, self._crash_reason(worker), "DecoderCrash")
        if not worker.process.is_alive():
            return self._replace(slot, path, self._crash_reason(worker), "DecoderCrash")
        if self.timeout is not None and time.monotonic() - started > self.timeout:
            return self._replace(
                slot, path, f"decoder timed out after {self.timeout:g} s (worker killed)", "DecoderTimeout"
            )
        return None

    def _crash_reason(self, worker: _Worker) -> str:
        worker.process.join(_JOIN_S)
        code = worker.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            return f"decoder crashed (signal {-code}, {name})"
        return f"decoder process exited with code {code} while decoding"

    def _replace(self, slot: int, path: str, reason: str, error: str) -> DecodeFailure:
        """Kill worker ``slot`` (if alive), start a fresh one in its place, and fail ``path``."""
        self._workers[slot].kill()
        self._workers[slot] = self._new_worker()
        return DecodeFailure(path, reason, error)

    def _put(self, item: object, force: bool = False) -> None:
        """Queue ``item`` for the consumer, waiting for room; give up when stopped unless ``force``."""
        while True:
            try:
                self._ready.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if self._stop.is_set() and not force:
                    return
                if self._stop.is_set():
                    self._drain()

    def _drain(self) -> None:
        """Empty the ready queue."""
        try:
            while True:
                self._ready.get_nowait()
        except queue.Empty:
            return
