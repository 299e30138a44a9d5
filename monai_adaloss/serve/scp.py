"""The node's DICOM Storage SCP (pynetdicom): C-ECHO, and C-STORE into the spool.

A C-STORE is answered only after the instance is durably in the spool (:meth:`~.spool.Spool.store`).
Refusals, each with a log line and nothing spooled:

- calling AE title not in ``--allowed-aet``: the association is rejected (A-ASSOCIATE-RJ, "calling AE
  title not recognised"), before any DIMSE message;
- a SOP class that is not a 2D image storage class (:data:`~.policy.IMAGE_STORAGE_SOP_CLASSES`):
  ``0x0122`` Refused: SOP Class not supported;
- an instance over ``max_instance_bytes``, or one that would take the spool over its limit:
  ``0xA700`` Refused: Out of resources;
- an invalid SOP Instance UID, or a modality outside ``--modalities``: ``0xC000`` Error: Cannot understand;
- the spool cannot be written (disk full, ...): ``0xA700``.

Every storage SOP class is offered in the presentation contexts (so that a non-image instance gets a
DIMSE refusal its sender can log, not an association failure); C-ECHO (Verification) is answered.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from .policy import (
    IMAGE_STORAGE_SOP_CLASSES,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    STATUS_SUCCESS,
    modality_refusal,
    valid_uid,
)
from .spool import Spool
from .status import Counters

__all__ = ["StorageSCP"]

logger = logging.getLogger(__name__)


class StorageSCP:
    """The Storage SCP of the node (module docstring).

    Args:
        spool: where received instances go.
        on_stored: called with the queue path of each instance stored (queues it for inference).
        counters: the node's counters.
        ae_title: the node's AE title.
        host, port: where to listen (default loopback only).
        allowed_aets: calling AE titles accepted; empty: any.
        modalities: modalities accepted; ``None``: any.
        max_instance_bytes: the largest data set accepted.
        ssl_context: server TLS context, or ``None``.
        max_associations: concurrent associations.
    """

    def __init__(
        self,
        spool: Spool,
        on_stored: Callable[[Path], None],
        counters: Counters,
        ae_title: str = "ADALOSS",
        host: str = "127.0.0.1",
        port: int = 11112,
        allowed_aets: Collection[str] = (),
        modalities: Collection[str] | None = None,
        max_instance_bytes: int = 256 * 2**20,
        ssl_context: ssl.SSLContext | None = None,
        max_associations: int = 16,
    ) -> None:
        self.spool = spool
        self.on_stored = on_stored
        self.counters = counters
        self.ae_title = ae_title
        self.address = (host, port)
        self.modalities = modalities
        self.max_instance_bytes = max_instance_bytes
        self.ssl_context = ssl_context
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = max_associations
        self.ae.require_calling_aet = [a.strip() for a in allowed_aets]
        self.ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:  # refusals of non-image classes happen per message
            self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Start listening (in pynetdicom's server threads)."""
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        self._server = self.ae.start_server(
            self.address, block=False, evt_handlers=handlers, ssl_context=self.ssl_context
        )

    def stop(self) -> None:
        """Stop listening and end the open associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self.address[1]

    def _on_echo(self, event: evt.Event) -> int:
        logger.info("C-ECHO from %s", _peer(event))
        return STATUS_SUCCESS

    def _on_rejected(self, event: evt.Event) -> None:
        self.counters.add(rejected=1)
        allowed = self.ae.require_calling_aet
        if allowed and event.assoc.requestor.ae_title.strip() not in allowed:
            reason = f"calling AE title not in --allowed-aet {','.join(allowed)}"
        else:
            reason = f"too many associations (at most {self.ae.maximum_associations}) or a failed negotiation"
        logger.warning("rejected association from %s: %s", _peer(event), reason)

    def _on_store(self, event: evt.Event) -> int:
        request = event.request
        sop_class = str(request.AffectedSOPClassUID)
        sop_uid = str(request.AffectedSOPInstanceUID)
        peer = _peer(event)
        shown = sop_uid if valid_uid(sop_uid) else repr(sop_uid[:64])
        if sop_class not in IMAGE_STORAGE_SOP_CLASSES:
            return self._refuse(STATUS_SOP_CLASS_NOT_SUPPORTED, peer, shown, f"SOP class {sop_class} is not an image "
                                "storage class this node infers")  # fmt: skip
        if not valid_uid(sop_uid):
            return self._refuse(STATUS_CANNOT_UNDERSTAND, peer, shown, "the SOP Instance UID is not a valid UID")
        data: bytes = request.DataSet.getvalue()
        if len(data) > self.max_instance_bytes:
            return self._refuse(STATUS_OUT_OF_RESOURCES, peer, shown, f"{len(data)} bytes is over the "
                                f"per-instance limit of {self.max_instance_bytes} bytes")  # fmt: skip
        if self.modalities:
            try:
                modality = event.dataset.get("Modality")
            except Exception as err:  # a data set pydicom cannot parse: infer could not read it either
                return self._refuse(STATUS_CANNOT_UNDERSTAND, peer, shown, f"cannot parse the data set: {err}")
            reason = modality_refusal(None if modality is None else str(modality), self.modalities)
            if reason is not None:
                return self._refuse(STATUS_CANNOT_UNDERSTAND, peer, shown, reason)
        if not self.spool.reserve(len(data)):
            return self._refuse(STATUS_OUT_OF_RESOURCES, peer, shown, f"the spool is full ({self.spool.queued_bytes} "
                                f"of {self.spool.max_bytes} bytes queued)")  # fmt: skip
        try:
            path = self.spool.store(sop_uid, event.file_meta, data)
        except Exception as err:
            self.spool.release(len(data))
            self.counters.set_error(f"cannot spool {sop_uid}: {type(err).__name__}: {err}")
            return self._refuse(STATUS_OUT_OF_RESOURCES, peer, shown, f"cannot write the spool: {err}")
        self.counters.add(received=1)
        logger.info("received %s (%s, %d bytes) from %s -> %s", sop_uid, sop_class, len(data), peer, path.name)
        self.on_stored(path)
        return STATUS_SUCCESS

    def _refuse(self, status: int, peer: str, sop_uid: str, reason: str) -> int:
        self.counters.add(rejected=1)
        logger.warning("refused %s from %s with status 0x%04X: %s", sop_uid, peer, status, reason)
        return status


def _peer(event: evt.Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title.strip()}@{requestor.address}:{requestor.port}"
