"""Send the spool's SRs to the destination: C-STORE (pynetdicom SCU) or STOW-RS (dicomweb-client).

:class:`SendLoop` (a thread) sends every SR file in ``spool/sr``; a sent file is deleted, a failed send
is retried with exponential backoff (:class:`~.spool.RetryState`, kept on disk, so it survives a
restart). SR SOP Instance UIDs are deterministic (model + source UID), so a send repeated after a
crash (sent, killed before the file was deleted) stores the same instance again: the PACS keeps one.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .spool import RETRY, RetryState, Spool
from .status import Counters

__all__ = ["CStoreDestination", "SendLoop", "StowDestination", "parse_destination"]

logger = logging.getLogger(__name__)

_DESTINATION = re.compile(r"(?P<aet>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>[0-9]{1,5})")


class SendError(Exception):
    """A send failed; the message says why (for the log, the status file and the retry state)."""


@dataclass
class CStoreDestination:
    """A DICOM Storage SCP: C-STORE with a pynetdicom association (one per round of sends).

    Attributes:
        ae_title: the destination's (called) AE title.
        host, port: its address.
        calling_ae_title: the node's AE title.
        ssl_context: client TLS context, or ``None``.
        timeout: seconds for the connection, ACSE and each DIMSE exchange.
    """

    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "ADALOSS"
    ssl_context: ssl.SSLContext | None = None
    timeout: float = 30.0

    def describe(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def send(self, datasets: Sequence[tuple[str, Dataset]], on_result: Callable[[str, str | None], None]) -> None:
        """Send ``(name, dataset)`` pairs over one association; ``on_result(name, error or None)`` for each."""
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        ae.add_requested_context(ComprehensiveSRStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        tls = (self.ssl_context, self.host) if self.ssl_context is not None else None
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title, tls_args=tls)
        if not assoc.is_established:
            raise SendError(f"no association with {self.describe()} (rejected, aborted or unreachable)")
        try:
            for name, dataset in datasets:
                status = assoc.send_c_store(dataset)
                code = int(getattr(status, "Status", -1)) if status else -1
                if code == -1:
                    on_result(name, f"no C-STORE response from {self.describe()}")
                    if not assoc.is_established:
                        break
                elif code == 0x0000 or 0xB000 <= code <= 0xBFFF:  # success or warning: stored
                    on_result(name, None)
                else:
                    on_result(name, f"{self.describe()} answered C-STORE status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()


@dataclass
class StowDestination:
    """A DICOMweb server: STOW-RS with ``dicomweb-client`` (one request per SR).

    Attributes:
        url: the DICOMweb service root (e.g. ``http://127.0.0.1:8042/dicom-web``).
        timeout: not used by dicomweb-client's session directly; kept for symmetry.
    """

    url: str
    timeout: float = 30.0

    def describe(self) -> str:
        return self.url

    def send(self, datasets: Sequence[tuple[str, Dataset]], on_result: Callable[[str, str | None], None]) -> None:
        from dicomweb_client.api import DICOMwebClient

        client = DICOMwebClient(url=self.url)
        for name, dataset in datasets:
            try:
                response = client.store_instances([dataset])
            except Exception as err:  # HTTP errors, refused connections, ...
                on_result(name, f"STOW-RS to {self.url} failed: {type(err).__name__}: {err}")
                continue
            failed = response.get("FailedSOPSequence") if response is not None else None
            on_result(name, None if not failed else f"STOW-RS to {self.url}: the server lists the SR as failed")


def parse_destination(text: str, calling_ae_title: str, ssl_context: ssl.SSLContext | None = None) -> CStoreDestination:
    """``AET@host:port`` -> :class:`CStoreDestination`.

    Raises:
        ValueError: the text is not ``AET@host:port`` with a 1..16 character AE title and a port 1..65535.
    """
    match = _DESTINATION.fullmatch(text.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"--destination must be AET@host:port (e.g. ORTHANC@127.0.0.1:4242), got {text!r}")
    return CStoreDestination(
        match["aet"], match["host"].strip("[]"), int(match["port"]), calling_ae_title, ssl_context=ssl_context
    )


class SendLoop(threading.Thread):
    """Thread: send the spool's SRs, delete each one sent, back off and retry the failed ones.

    Args:
        spool: the spool.
        destination: a :class:`CStoreDestination` or :class:`StowDestination`.
        counters: the node's counters (``sent``, ``send_failures``, ``last_error``), updated under its lock.
        retry_initial_s, retry_max_s: backoff (see :class:`~.spool.RetryState`).
        max_per_round: SRs sent per association.
    """

    def __init__(
        self,
        spool: Spool,
        destination: CStoreDestination | StowDestination,
        counters: Counters,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 300.0,
        max_per_round: int = 64,
    ) -> None:
        super().__init__(name="adaloss-send", daemon=True)
        self.spool = spool
        self.destination = destination
        self.counters = counters
        self.retry = RetryState(spool.root / RETRY, retry_initial_s, retry_max_s)
        self.max_per_round = max_per_round
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        """Stop after the current round of sends; unsent SRs stay in the spool."""
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                sent_any = self._round()
                if not sent_any:
                    self.wake.wait(self._idle_wait())
                    self.wake.clear()
        except BaseException as err:  # a bug: make it visible in the status file and stop the node
            self.error = err
            logger.exception("the send loop failed")
            self.counters.set_error(f"send loop failed: {type(err).__name__}: {err}")

    def _idle_wait(self) -> float:
        due = self.retry.next_due()
        return 1.0 if due is None else min(1.0, max(0.05, due - time.time()))

    def _round(self) -> bool:
        """Send the due SRs (at most ``max_per_round``); ``True`` when one was sent successfully."""
        files = self.spool.pending_srs()
        self.retry.forget_missing({f.name for f in files})
        now = time.time()
        due = [f for f in files if self.retry.due(f.name, now)][: self.max_per_round]
        if not due:
            return False
        batch: list[tuple[str, Dataset]] = []
        stamps: dict[str, tuple[int, int]] = {}
        for path in due:
            try:
                stamps[path.name] = (path.stat().st_ino, path.stat().st_mtime_ns)
                batch.append((path.name, pydicom.dcmread(path)))
            except FileNotFoundError:
                continue
            except Exception as err:  # an SR this node wrote cannot be read back: keep it, say so
                self._failed(path.name, f"cannot read {path.name}: {type(err).__name__}: {err}")
        results: dict[str, str | None] = {}
        try:
            self.destination.send(batch, lambda name, error: results.__setitem__(name, error))
        except Exception as err:
            reason = str(err) if isinstance(err, SendError) else f"{type(err).__name__}: {err}"
            for name, _ in batch:
                results.setdefault(name, reason)
        success = False
        for name, dataset in batch:
            error = results.get(name, f"not sent to {self.destination.describe()} (association ended)")
            if error is None:
                self._sent(name, dataset, stamps[name])
                success = True
            else:
                self._failed(name, error)
        return success

    def _sent(self, name: str, dataset: Dataset, stamp: tuple[int, int]) -> None:
        path = self.spool.sr_dir / name
        try:
            current = path.stat()
            if (current.st_ino, current.st_mtime_ns) == stamp:  # not rewritten since it was read
                path.unlink()
        except FileNotFoundError:
            pass
        self.retry.succeeded(name)
        source = _referenced_source(dataset)
        logger.info("sent SR %s (source %s) to %s", dataset.SOPInstanceUID, source, self.destination.describe())
        self.counters.add(sent=1)

    def _failed(self, name: str, error: str) -> None:
        wait = self.retry.failed(name, error, time.time())
        logger.warning("send of %s failed (retry in %.1f s): %s", name, wait, error)
        self.counters.add(send_failures=1)
        self.counters.set_error(error)


def _referenced_source(sr: Dataset) -> str:
    """The SOP Instance UID of the SR's first evidence image (for the log line)."""
    try:
        return str(sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                   .ReferencedSOPSequence[0].ReferencedSOPInstanceUID)  # fmt: skip
    except (AttributeError, IndexError):
        return "?"
