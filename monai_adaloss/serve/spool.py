"""The node's durable spool: received instances, the work queue, SRs to send, send retries.

Layout of the spool folder (everything the node needs to continue after ``kill -9``)::

    tmp/          instances being received (emptied at start: never acknowledged)
    queue/        received, acknowledged, not yet inferred: ``{receive time ns:020d}-{sha1(SOP UID)[:16]}.dcm``
    sr/           SRs written by the batch runner's SR writer, not yet sent: ``{SOPInstanceUID}.sr.dcm``
    retry.json    failed sends: ``{sr file name: {"attempts", "next_attempt", "last_error"}}``
    records.jsonl, errors.jsonl, manifest.jsonl, run.json   (the batch runner's PartWriter, see
                  monai_adaloss.inference.outputs; ``path`` is the instance's queue file)
    status.json   counts, queue length, last error (rewritten atomically, see .node)

A received instance is written to ``tmp/``, ``fsync``\\ ed, renamed into ``queue/`` and the folder
``fsync``\\ ed before the C-STORE response is sent: an acknowledged instance is on disk. The queue
file is deleted only after its records (or error line) are committed, so after a crash an
instance is either in ``queue/`` (inferred again: the SR UID is deterministic, a resend replaces)
or committed in the manifest (its queue file, if still there, is dropped at start). File names
never contain a received string: the queue name is a hash of the validated UID.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info

from ..inference.outputs import atomic_write, fsync_dir

__all__ = ["RetryState", "Spool"]

QUEUE, SR, TMP = "queue", "sr", "tmp"
RETRY = "retry.json"


class Spool:
    """The spool folder (module docstring) and its size accounting.

    Args:
        root: the spool folder (created if needed).
        max_bytes: limit on the bytes of queued instances; a reception that would exceed it is refused.
    """

    def __init__(self, root: str | os.PathLike, max_bytes: int) -> None:
        self.root = Path(root).absolute()
        self.queue_dir, self.sr_dir, self.tmp_dir = self.root / QUEUE, self.root / SR, self.root / TMP
        for folder in (self.root, self.queue_dir, self.sr_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.iterdir():  # a reception a crash interrupted: it was never acknowledged
            stale.unlink()
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._bytes = sum(path.stat().st_size for path in self.queued())
        self._counter = 0

    @property
    def queued_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def queued(self) -> list[Path]:
        """The queue files, oldest reception first."""
        return sorted(self.queue_dir.glob("*.dcm"))

    def pending_srs(self) -> list[Path]:
        """The SR files not yet sent, by name."""
        return sorted(self.sr_dir.glob("*.sr.dcm"))

    def reserve(self, size: int) -> bool:
        """Count ``size`` bytes against the spool limit; ``False`` (nothing counted) when it would exceed it."""
        with self._lock:
            if self._bytes + size > self.max_bytes:
                return False
            self._bytes += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._bytes = max(0, self._bytes - size)

    def store(self, sop_instance_uid: str, file_meta: FileMetaDataset, dataset_bytes: bytes) -> Path:
        """Write a received instance as a DICOM file into the queue durably; return its queue path.

        ``dataset_bytes`` is the data set as received (in the negotiated transfer syntax, which
        ``file_meta`` names). The caller has validated ``sop_instance_uid`` and reserved the bytes.
        """
        with self._lock:
            self._counter += 1
            stamp = time.time_ns() * 1000 + self._counter % 1000  # unique and ordered within this process
        name = f"{stamp:023d}-{hashlib.sha1(sop_instance_uid.encode()).hexdigest()[:16]}.dcm"
        tmp = self.tmp_dir / name
        with tmp.open("wb") as stream:
            stream.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(stream, file_meta, enforce_standard=True)
            stream.write(dataset_bytes)
            stream.flush()
            os.fsync(stream.fileno())
        final = self.queue_dir / name
        os.replace(tmp, final)
        fsync_dir(self.queue_dir)
        with self._lock:  # count the file as it is on disk (meta and preamble too), as remove() releases it
            self._bytes += final.stat().st_size - len(dataset_bytes)
        return final

    def remove(self, path: Path) -> None:
        """Drop a queue file whose outcome is committed, and release its bytes."""
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)
        self.release(size)


class RetryState:
    """Send attempts per SR file, kept in ``retry.json`` so that backoff survives a restart.

    The delay before attempt ``n + 1`` after ``n`` failures is ``min(max_s, initial_s * 2 ** (n - 1))``.
    """

    def __init__(self, path: Path, initial_s: float, max_s: float) -> None:
        self.path = path
        self.initial_s = initial_s
        self.max_s = max_s
        self.entries: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                loaded = json.loads(path.read_text())
                self.entries = {k: v for k, v in loaded.items() if isinstance(v, dict)}
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                self.entries = {}  # written atomically, so only a hand edit gets here: start afresh

    def delay(self, attempts: int) -> float:
        return min(self.max_s, self.initial_s * 2 ** max(0, attempts - 1))

    def due(self, name: str, now: float) -> bool:
        entry = self.entries.get(name)
        return entry is None or now >= float(entry.get("next_attempt", 0.0))

    def failed(self, name: str, error: str, now: float) -> float:
        """Record a failed attempt; return the seconds until the next one."""
        attempts = int(self.entries.get(name, {}).get("attempts", 0)) + 1
        wait = self.delay(attempts)
        self.entries[name] = {"attempts": attempts, "next_attempt": now + wait, "last_error": error}
        self._save()
        return wait

    def succeeded(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            self._save()

    def forget_missing(self, names: set[str]) -> None:
        """Drop entries of SR files that no longer exist."""
        stale = set(self.entries) - names
        for name in stale:
            del self.entries[name]
        if stale:
            self._save()

    def next_due(self) -> float | None:
        """The earliest next-attempt time (epoch seconds) of the failed sends, ``None`` when there are none."""
        return min((float(e.get("next_attempt", 0.0)) for e in self.entries.values()), default=None)

    def _save(self) -> None:
        atomic_write(self.path, json.dumps(self.entries, indent=1, sort_keys=True).encode())
