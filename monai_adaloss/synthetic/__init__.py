"""Realistic synthetic data with known ground truth and known per-landmark annotation noise."""

from .dicom_writer import SOP_CLASS_UIDS, SPACING_SOURCES, DicomWriteOptions, lossless_transfer_syntaxes, write_dicom
from .fluoroscopy import (
    AcquisitionParameters,
    FluoroscopyConfig,
    FluoroscopyFrame,
    MarkerLandmark,
    ProjectionGeometry,
    generate_frame,
    generate_sequence,
    make_dataset,
    save_preview_grid,
)

__all__ = [
    "SOP_CLASS_UIDS",
    "SPACING_SOURCES",
    "AcquisitionParameters",
    "DicomWriteOptions",
    "FluoroscopyConfig",
    "FluoroscopyFrame",
    "MarkerLandmark",
    "ProjectionGeometry",
    "generate_frame",
    "generate_sequence",
    "lossless_transfer_syntaxes",
    "make_dataset",
    "save_preview_grid",
    "write_dicom",
]
