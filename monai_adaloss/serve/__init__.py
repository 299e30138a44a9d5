"""``monai-adaloss serve``: a DICOM node that receives images (C-STORE), infers them with the batch
runner's code and sends one DICOM SR per image to a PACS (C-STORE) or a DICOMweb server (STOW-RS).

Modules, one job each: :mod:`.policy` (what is accepted), :mod:`.spool` (durable queue and retry
state), :mod:`.scp` (the Storage SCP), :mod:`.worker` (inference), :mod:`.sender` (SR delivery),
:mod:`.status` (status file), :mod:`.node` (wiring, life cycle), :mod:`.command` (CLI).
See ``docs/dicom_node.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; imported on first use (PEP 562), so that the `serve` argument parser in .command
# does not import pydicom, pynetdicom and torch
_EXPORTS = {
    "IMAGE_STORAGE_SOP_CLASSES": "policy",
    "CStoreDestination": "sender",
    "DicomNode": "node",
    "NodeConfig": "node",
    "StowDestination": "sender",
    "modality_refusal": "policy",
    "parse_destination": "sender",
    "parse_modalities": "policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
