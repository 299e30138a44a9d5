"""The node's counters and its status (health) file.

The status file (default ``SPOOL/status.json``, ``--status`` elsewhere) is rewritten atomically every
``interval`` seconds: a monitor reads a complete JSON object at any time::

    {"state": "running" | "stopping" | "stopped", "pid", "ae_title", "address", "started_at", "updated_at",
     "queue": instances received and not yet inferred, "queued_bytes", "outbox": SRs not yet sent,
     "received", "rejected", "inferred", "failed", "sent", "send_failures", "last_error", "last_error_at"}

Times are UNIX epoch seconds. ``failed`` counts received instances that could not be inferred (their
reasons are in ``SPOOL/errors.jsonl``); ``send_failures`` counts failed send attempts (each retried).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..inference.outputs import atomic_write

__all__ = ["Counters", "StatusWriter"]

logger = logging.getLogger(__name__)


class Counters:
    """Thread-safe counts and the last error, for the status file and the progress line."""

    FIELDS = ("received", "rejected", "inferred", "failed", "sent", "send_failures")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = dict.fromkeys(self.FIELDS, 0)
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                self.values[key] += value

    def set_error(self, error: str) -> None:
        with self._lock:
            self.last_error, self.last_error_at = error, time.time()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.values, "last_error": self.last_error, "last_error_at": self.last_error_at}


class StatusWriter(threading.Thread):
    """Thread: rewrite the status file every ``interval`` seconds, and log a progress line when counts change.

    Args:
        path: the status file.
        fixed: values that do not change (pid, AE title, address, started_at).
        gather: returns the changing values (queue lengths, counters, state).
        interval: seconds between rewrites.
    """

    def __init__(
        self, path: Path, fixed: dict[str, Any], gather: Callable[[], dict[str, Any]], interval: float = 1.0
    ) -> None:
        super().__init__(name="adaloss-status", daemon=True)
        self.path = path
        self.fixed = fixed
        self.gather = gather
        self.interval = interval
        self.stopping = threading.Event()
        self._last_counts: tuple | None = None

    def write(self) -> dict[str, Any]:
        """Write the status file now; return what was written."""
        status = {**self.fixed, **self.gather(), "updated_at": time.time(), "pid": os.getpid()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, (json.dumps(status, indent=1) + "\n").encode())
        counts = tuple(status[k] for k in (*Counters.FIELDS, "queue", "outbox"))
        if counts != self._last_counts:
            self._last_counts = counts
            logger.info(
                "progress: received %d, rejected %d, inferred %d, failed %d, sent %d, send failures %d; "
                "queue %d, outbox %d",
                *counts,
            )
        return status

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.write()
            except OSError as err:  # a full disk must not stop the node; the next write may succeed
                logger.warning("cannot write the status file %s: %s", self.path, err)
