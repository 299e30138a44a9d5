"""What the node accepts: image storage SOP classes, modalities, instance and spool sizes, UIDs.

Each check returns the reason an instance is refused (for the log line) or ``None``; the C-STORE
handler (:mod:`.scp`) maps a reason to the DIMSE status the standard gives for it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from pydicom import uid as dicom_uid

from ..io.modalities import modality_allowed, modality_code
from ..io.modalities import parse_modalities as io_parse_modalities

__all__ = [
    "IMAGE_STORAGE_SOP_CLASSES",
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_SOP_CLASS_NOT_SUPPORTED",
    "STATUS_SUCCESS",
    "modality_refusal",
    "parse_modalities",
    "valid_uid",
]

STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.4.2.1.4: "Refused: SOP Class not supported"
STATUS_OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: "Refused: Out of Resources" (too large, spool full)
STATUS_CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3: "Error: Cannot understand" (bad UID, modality not served)

IMAGE_STORAGE_SOP_CLASSES: frozenset[str] = frozenset(
    str(value)
    for value in (
        dicom_uid.ComputedRadiographyImageStorage,
        dicom_uid.DigitalXRayImageStorageForPresentation,
        dicom_uid.DigitalXRayImageStorageForProcessing,
        dicom_uid.DigitalMammographyXRayImageStorageForPresentation,
        dicom_uid.DigitalMammographyXRayImageStorageForProcessing,
        dicom_uid.DigitalIntraOralXRayImageStorageForPresentation,
        dicom_uid.DigitalIntraOralXRayImageStorageForProcessing,
        dicom_uid.XRayAngiographicImageStorage,
        dicom_uid.EnhancedXAImageStorage,
        dicom_uid.XRayRadiofluoroscopicImageStorage,
        dicom_uid.EnhancedXRFImageStorage,
        dicom_uid.SecondaryCaptureImageStorage,
        dicom_uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        dicom_uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        dicom_uid.UltrasoundImageStorage,
        dicom_uid.UltrasoundMultiFrameImageStorage,
    )
)
"""2D image storage SOP classes the node accepts (projection X-ray, secondary capture, ultrasound).

Everything else (SR, presentation states, CT/MR volumes, encapsulated documents, ...) is refused with
``0x0122``. Whether the checkpoint's reader can decode a particular image (e.g. colour) is decided by
the batch runner's decoder, as for ``monai-adaloss infer``: such a file gets an error record.
"""

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def valid_uid(value: str) -> bool:
    """A DICOM UID: digits and dots, no empty component, at most 64 characters."""
    return 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


def parse_modalities(text: str | Iterable[str] | None) -> frozenset[str] | None:
    """``"XA,RF"`` (or a list of such strings) -> ``{"XA", "RF"}``; ``None`` or empty: every modality
    (:func:`monai_adaloss.io.modalities.parse_modalities`, as a set)."""
    codes = io_parse_modalities(text)
    return None if codes is None else frozenset(codes)


def modality_refusal(modality: str | None, allowed: Collection[str] | None) -> str | None:
    """Why an instance of ``modality`` is not inferred under ``--modalities allowed``, or ``None``.

    The rule of ``monai-adaloss infer --modalities`` (:mod:`monai_adaloss.io.modalities`): the
    (0008,0060) Modality value, case-insensitive, must be one of the listed codes; no list: everything passes.
    """
    if modality_allowed(modality, allowed):
        return None
    shown = modality_code(modality) or "(none)"
    return f"modality {shown} is not one of --modalities {','.join(sorted(allowed))}"
