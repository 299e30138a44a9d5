"""Readers for the files monai_adaloss trains and infers on (DICOM X-ray frames first)."""

from .dicom import (
    DEFAULT_MAX_PIXELS,
    MAGNIFICATION_RANGE,
    SPACING_RANGE_MM,
    DicomDecoderUnavailableError,
    DicomReadError,
    DicomSkippedError,
    DicomSpacingError,
    LoadDicomFrame,
    LoadDicomFrameD,
    LoadDicomFramed,
    LoadDicomFrameDict,
    XRayDicomReader,
    XRayDicomSource,
    read_all_frames,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAGNIFICATION_RANGE",
    "SPACING_RANGE_MM",
    "DicomDecoderUnavailableError",
    "DicomReadError",
    "DicomSkippedError",
    "DicomSpacingError",
    "LoadDicomFrame",
    "LoadDicomFrameD",
    "LoadDicomFrameDict",
    "LoadDicomFramed",
    "XRayDicomReader",
    "XRayDicomSource",
    "read_all_frames",
]
