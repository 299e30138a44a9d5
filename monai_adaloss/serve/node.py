"""The DICOM node: Storage SCP -> durable spool -> batched inference -> SR sent to the destination.

:class:`DicomNode` wires the parts, each in its own module: :mod:`.scp` (receive, refuse), :mod:`.spool`
(durable queue), :mod:`.worker` (the batch runner's decoding, batching, records and SR writer),
:mod:`.sender` (C-STORE / STOW-RS with retries), :mod:`.status` (status file, progress lines).

Life cycle: :meth:`DicomNode.start` loads the checkpoint, recovers the spool (instances acknowledged
but not committed before a crash are queued again; unsent SRs are sent), forks the decoding workers,
then starts the sender, the inference thread and finally the SCP. :meth:`DicomNode.stop` (SIGTERM,
SIGINT) stops the SCP first (no new instances), lets the inference thread finish its current batch
and the sender its current round; what is left stays in the spool for the next start.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..inference.model import DEFAULT_NETWORK_MODULES, load_checkpoint
from .scp import StorageSCP
from .sender import CStoreDestination, SendLoop, StowDestination
from .spool import Spool
from .status import Counters, StatusWriter
from .worker import InferenceWorker

__all__ = ["DicomNode", "NodeConfig"]

logger = logging.getLogger(__name__)
_JOIN_S = 60.0


@dataclass
class NodeConfig:
    """Everything ``monai-adaloss serve`` takes (see :mod:`.command` for the meaning of each)."""

    checkpoint: str
    spool: str
    destination: CStoreDestination | StowDestination
    ae_title: str = "ADALOSS"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_aets: Sequence[str] = ()
    modalities: Collection[str] | None = None
    batch_window: float = 2.0
    batch_size: int = 16
    num_workers: int = 2
    device: str | None = None
    decode_timeout: float | None = 300.0
    max_instance_bytes: int = 256 * 2**20
    max_spool_bytes: int = 10 * 2**30
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0
    status_path: str | None = None
    status_interval: float = 1.0
    ssl_context: ssl.SSLContext | None = None
    network_modules: Sequence[str] = field(default_factory=lambda: DEFAULT_NETWORK_MODULES)


class DicomNode:
    """The node (module docstring). Use :meth:`start`, then :meth:`wait` or :meth:`stop`."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.counters = Counters()
        self.spool = Spool(config.spool, config.max_spool_bytes)
        self.state = "starting"
        self.stopped = threading.Event()
        self.worker: InferenceWorker | None = None
        self.sender: SendLoop | None = None
        self.scp: StorageSCP | None = None
        self.status: StatusWriter | None = None

    def start(self) -> None:
        """Load the model, recover the spool, start every thread; the SCP listens when this returns.

        Raises:
            InferenceConfigError: the checkpoint cannot be used (nothing was started).
            OSError: the port cannot be bound.
        """
        config = self.config
        model = load_checkpoint(config.checkpoint, network_modules=config.network_modules)
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.sender = SendLoop(self.spool, config.destination, self.counters, config.retry_initial_s,
                               config.retry_max_s)  # fmt: skip
        self.worker = InferenceWorker(
            self.spool, model, self.counters, batch_size=config.batch_size, num_workers=config.num_workers,
            batch_window=config.batch_window, device=device, decode_timeout=config.decode_timeout,
            on_sr_written=self.sender.wake.set,
        )  # fmt: skip
        self.scp = StorageSCP(
            self.spool, self.worker.submit, self.counters, ae_title=config.ae_title, host=config.host,
            port=config.port, allowed_aets=config.allowed_aets, modalities=config.modalities,
            max_instance_bytes=config.max_instance_bytes, ssl_context=config.ssl_context,
        )  # fmt: skip
        status_path = Path(config.status_path) if config.status_path else self.spool.root / "status.json"
        fixed = {
            "ae_title": config.ae_title,
            "address": f"{config.host}:{config.port}",
            "destination": config.destination.describe(),
            "model_sha256": model.sha256,
            "started_at": time.time(),
        }
        self.status = StatusWriter(status_path, fixed, self._gather, config.status_interval)
        self.sender.start()
        self.worker.start()
        try:
            self.scp.start()
        except OSError:
            self._stop_threads()
            raise
        self.state = "running"
        self.status.write()
        self.status.start()
        logger.info(
            "monai-adaloss serve: %s listening on %s:%d (TLS %s), sending SRs to %s; spool %s; model %s",
            config.ae_title, config.host, config.port, "on" if config.ssl_context else "off",
            config.destination.describe(), self.spool.root, model.sha256[:16],
        )  # fmt: skip

    def failed(self) -> BaseException | None:
        """The error that ended the inference or send thread, if one did (a bug)."""
        for thread in (self.worker, self.sender):
            if thread is not None and thread.error is not None:
                return thread.error
        return None

    def wait(self, stop_event: threading.Event) -> None:
        """Run until ``stop_event`` is set or a thread fails, then :meth:`stop`."""
        while not stop_event.wait(0.5):
            if self.failed() is not None:
                break
        self.stop()

    def stop(self) -> None:
        """Stop receiving, finish the current batch and send round, keep the rest in the spool."""
        if self.stopped.is_set():
            return
        self.state = "stopping"
        logger.info("stopping: no new associations; finishing the current batch")
        if self.scp is not None:
            self.scp.stop()
        self._stop_threads()
        self.state = "stopped"
        if self.status is not None:
            self.status.stop()
            self.status.write()
        snapshot = self.counters.snapshot()
        logger.info(
            "stopped: received %d, inferred %d, failed %d, sent %d; %d instance(s) queued and %d SR(s) unsent "
            "stay in %s", snapshot["received"], snapshot["inferred"], snapshot["failed"], snapshot["sent"],
            len(self.spool.queued()), len(self.spool.pending_srs()), self.spool.root,
        )  # fmt: skip
        self.stopped.set()

    def _stop_threads(self) -> None:
        for thread in (self.worker, self.sender):
            if thread is not None:
                thread.stop()
        for thread in (self.worker, self.sender):
            if thread is not None and thread.is_alive():
                thread.join(_JOIN_S)
        if self.worker is not None:
            self.worker.close()

    def _gather(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "queue": len(self.spool.queued()),
            "queued_bytes": self.spool.queued_bytes,
            "outbox": len(self.spool.pending_srs()),
            **self.counters.snapshot(),
        }
