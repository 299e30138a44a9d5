"""``monai-adaloss serve``: a DICOM node that receives images (C-STORE), infers them with the batch
runner's code and sends one DICOM SR per image to a PACS (C-STORE) or a DICOMweb server (STOW-RS).

Modules, one job each: :mod:`.policy` (what is accepted), :mod:`.spool` (durable queue and retry
state), :mod:`.scp` (the Storage SCP), :mod:`.worker` (inference), :mod:`.sender` (SR delivery),
:mod:`.status` (status file), :mod:`.node` (wiring, life cycle), :mod:`.command` (CLI).
See ``docs/dicom_node.md``.
"""

from .node import DicomNode, NodeConfig
from .policy import IMAGE_STORAGE_SOP_CLASSES, modality_refusal, parse_modalities
from .sender import CStoreDestination, StowDestination, parse_destination

__all__ = [
    "IMAGE_STORAGE_SOP_CLASSES",
    "CStoreDestination",
    "DicomNode",
    "NodeConfig",
    "StowDestination",
    "modality_refusal",
    "parse_destination",
    "parse_modalities",
]
