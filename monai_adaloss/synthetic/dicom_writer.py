"""Write synthetic projection X-ray frames as real DICOM files with pydicom.

SOP classes:

- ``"XA"``: X-Ray Angiographic Image Storage (1.2.840.10008.5.1.4.1.1.12.1), single- or multi-frame.
- ``"RF"``: X-Ray Radiofluoroscopic Image Storage (1.2.840.10008.5.1.4.1.1.12.2), single- or multi-frame.
- ``"DX"``: Digital X-Ray Image Storage - For Presentation (1.2.840.10008.5.1.4.1.1.1.1), single-frame.

The X-Ray Image module of XA and RF allows only MONOCHROME2 (PS3.3 C.8.7.1.1), so MONOCHROME1 frames are
written as DX, whose DX Image module allows both (with Presentation LUT Shape INVERSE). A MONOCHROME1 file
stores ``2**BitsStored - 1 - value``: it displays like its MONOCHROME2 twin (devices dark), and a reader that
ignores PhotometricInterpretation sees it inverted. XA/RF files carry Pixel Intensity Relationship DISP
(display-processed), so no Modality LUT; DX files carry the identity rescale (slope 1, intercept 0) that the
DX Image module requires.

The pixel raster in the file is rows x columns (``pixel_array[row, column]``, multi-frame
``pixel_array[frame, row, column]``). Spacing tags (`SPACING_SOURCES`), consistent with the frames' geometry:

- ``"PixelSpacing"``: PixelSpacing (calibrated at the patient plane, type GEOMETRY), plus ImagerPixelSpacing,
  DistanceSourceToDetector and DistanceSourceToPatient.
- ``"ImagerPixelSpacing/DistanceSourceToDetector/DistanceSourceToPatient"``: spacing at the patient plane is
  ImagerPixelSpacing * DistanceSourceToPatient / DistanceSourceToDetector.
- ``"ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"``: spacing is ImagerPixelSpacing / factor.

UIDs come from `pydicom.uid.generate_uid` with a caller-given entropy source, so files are reproducible
byte for byte; dates and times are fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    XRayAngiographicImageStorage,
    XRayRadiofluoroscopicImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

if TYPE_CHECKING:
    from .fluoroscopy import FluoroscopyFrame, ProjectionGeometry

__all__ = [
    "SOP_CLASS_UIDS",
    "SPACING_SOURCES",
    "DicomWriteOptions",
    "lossless_transfer_syntaxes",
    "write_dicom",
]

SopClass = Literal["XA", "RF", "DX"]
SOP_CLASS_UIDS: dict[str, UID] = {
    "XA": XRayAngiographicImageStorage,
    "RF": XRayRadiofluoroscopicImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
}
SpacingSource = Literal[
    "PixelSpacing",
    "ImagerPixelSpacing/DistanceSourceToDetector/DistanceSourceToPatient",
    "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
]
SPACING_SOURCES: tuple[SpacingSource, ...] = (
    "PixelSpacing",
    "ImagerPixelSpacing/DistanceSourceToDetector/DistanceSourceToPatient",
    "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
)
_SYNTAXES = (ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless)
_DATE, _TIME = "20000101", "080000"


@dataclass(frozen=True)
class DicomWriteOptions:
    """How `write_dicom` encodes a file."""

    sop_class: SopClass = "XA"
    """``"XA"``, ``"RF"`` (single or multi-frame) or ``"DX"`` (single frame, needed for MONOCHROME1)."""
    photometric_interpretation: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2"
    """MONOCHROME1 stores inverted values and requires ``sop_class="DX"``."""
    spacing_source: SpacingSource = "PixelSpacing"
    """Which spacing tags the file carries (see the module docstring)."""
    voi_lut: bool = False
    """Write WindowCenter / WindowWidth (always required for DX For Presentation)."""
    transfer_syntax: str = ExplicitVRLittleEndian
    """Explicit VR Little Endian, RLE Lossless, JPEG-LS Lossless or JPEG 2000 Lossless (lossless only)."""

    def __post_init__(self) -> None:
        if self.sop_class not in SOP_CLASS_UIDS:
            raise ValueError(f"Argument `sop_class` must be one of {tuple(SOP_CLASS_UIDS)}, got {self.sop_class!r}.")
        if self.photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2"):
            raise ValueError(
                "Argument `photometric_interpretation` must be 'MONOCHROME1' or 'MONOCHROME2', "
                f"got {self.photometric_interpretation!r}."
            )
        if self.photometric_interpretation == "MONOCHROME1" and self.sop_class != "DX":
            raise ValueError(
                "Argument `photometric_interpretation` MONOCHROME1 needs `sop_class` 'DX' "
                "(the X-Ray Image module of XA/RF allows MONOCHROME2 only)."
            )
        if self.sop_class == "DX" and not self.voi_lut:
            raise ValueError("Argument `voi_lut` must be True for `sop_class` 'DX' (For Presentation needs a VOI LUT).")
        if self.spacing_source not in SPACING_SOURCES:
            raise ValueError(
                f"Argument `spacing_source` must be one of {SPACING_SOURCES}, got {self.spacing_source!r}."
            )
        if self.transfer_syntax not in _SYNTAXES:
            raise ValueError(f"Argument `transfer_syntax` must be one of {_SYNTAXES}, got {self.transfer_syntax!r}.")


def lossless_transfer_syntaxes() -> tuple[UID, ...]:
    """Compressed lossless transfer syntaxes that pydicom can encode here.

    RLE Lossless always (pydicom's own encoder); JPEG-LS Lossless with ``pyjpegls``; JPEG 2000 Lossless with
    ``pylibjpeg`` + ``pylibjpeg-openjpeg``. None of those packages is required.
    """
    return tuple(uid for uid in (RLELossless, JPEGLSLossless, JPEG2000Lossless) if get_encoder(uid).is_available)


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters."""
    return format_number_as_ds(float(value))


def _stored_pixels(frames: Sequence[FluoroscopyFrame], options: DicomWriteOptions) -> np.ndarray:
    """``(F, rows, columns)`` unsigned stored values, inverted for MONOCHROME1."""
    bits = frames[0].bits_stored
    raster = np.stack([f.raster for f in frames])
    max_value = 2**bits - 1
    if raster.min() < 0 or raster.max() > max_value:
        raise ValueError(f"Frame values must lie in [0, {max_value}] for BitsStored {bits}.")
    values = np.rint(raster)
    if options.photometric_interpretation == "MONOCHROME1":
        values = max_value - values
    return values.astype(np.uint8 if bits == 8 else np.uint16)


def _patient_study_series(ds: Dataset, options: DicomWriteOptions, uid_entropy: Sequence[str]) -> None:
    ds.SOPClassUID = SOP_CLASS_UIDS[options.sop_class]
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[*uid_entropy, "instance"])
    ds.PatientName = "SYNTHETIC^CATHETER"
    ds.PatientID = ("SYNTH-" + "-".join(uid_entropy))[:64]
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*uid_entropy, "study"])
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _DATE
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _TIME
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.StudyDescription = "SYNTHETIC CATHETER FLUOROSCOPY"
    ds.Modality = options.sop_class
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*uid_entropy, "series"])
    ds.SeriesNumber = 1
    ds.SeriesDescription = "monai_adaloss synthetic fluoroscopy"
    ds.InstanceNumber = 1
    ds.Manufacturer = "monai_adaloss (synthetic)"
    ds.ManufacturerModelName = "synthetic fluoroscopy generator"


def _spacing(ds: Dataset, geometry: ProjectionGeometry, source: SpacingSource) -> None:
    ds.ImagerPixelSpacing = [_ds(geometry.imager_pixel_spacing_mm)] * 2
    if source == "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor":
        ds.EstimatedRadiographicMagnificationFactor = _ds(geometry.magnification)
        return
    ds.DistanceSourceToDetector = _ds(geometry.source_to_detector_mm)
    ds.DistanceSourceToPatient = _ds(geometry.source_to_patient_mm)
    if source == "PixelSpacing":
        ds.PixelSpacing = [_ds(geometry.pixel_spacing_mm)] * 2
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Imager pixel spacing corrected for geometric magnification"


def _xray_image(ds: Dataset, frames: Sequence[FluoroscopyFrame], options: DicomWriteOptions) -> None:
    """X-Ray Image, X-Ray Acquisition, positioner and (multi-frame) Cine modules of XA / RF."""
    acq = frames[0].acquisition
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.PixelIntensityRelationship = "DISP"
    ds.KVP = _ds(acq.kvp)
    ds.XRayTubeCurrent = round(acq.tube_current_ma)
    ds.XRayTubeCurrentInmA = float(acq.tube_current_ma)
    ds.ExposureTime = 8
    ds.RadiationSetting = "SC"
    if options.sop_class == "XA":
        ds.PositionerPrimaryAngle = _ds(acq.primary_angle_deg)
        ds.PositionerSecondaryAngle = _ds(acq.secondary_angle_deg)
    if len(frames) > 1:
        frame_time = Tag("FrameTime")
        ds.FrameIncrementPointer = frame_time
        ds.FrameTime = _ds(1000.0 / acq.frame_rate_fps)
        ds.CineRate = round(acq.frame_rate_fps)
        if options.sop_class == "XA":
            ds.PositionerMotion = "STATIC"


def _dx_image(ds: Dataset, options: DicomWriteOptions) -> None:
    """DX Series, DX Anatomy Imaged, DX Image, DX Detector and Acquisition Context modules."""
    mono1 = options.photometric_interpretation == "MONOCHROME1"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = DicomSequence([])
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if mono1 else 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if mono1 else "IDENTITY"
    ds.DetectorType = "SCINTILLATOR"
    ds.AcquisitionContextSequence = DicomSequence([])


def _window(ds: Dataset, stored: np.ndarray, bits: int, monochrome1: bool) -> None:
    """WindowCenter / WindowWidth over the exposed field (values are MONOCHROME2-like before inversion)."""
    max_value = 2**bits - 1
    values = (max_value - stored if monochrome1 else stored).astype(np.float64)
    exposed = values[values > 0.02 * max_value]
    low, high = np.percentile(exposed if exposed.size else values, [1.0, 99.5])
    centre = (low + high) / 2
    ds.WindowCenter = _ds(round(max_value - centre if monochrome1 else centre, 1))
    ds.WindowWidth = _ds(round(max(high - low, 1.0) * 1.1, 1))
    ds.WindowCenterWidthExplanation = "FIELD"


def write_dicom(
    path: str | Path,
    frames: Sequence[FluoroscopyFrame],
    options: DicomWriteOptions,
    uid_entropy: Sequence[str],
) -> Path:
    """Write frames of one scene as one DICOM file (multi-frame if more than one frame).

    Args:
        path: output file; parent folders are created.
        frames: frames sharing size, BitsStored and geometry; their ``raster`` (rows, columns) is stored.
        options: SOP class, photometric interpretation, spacing tags, VOI LUT and transfer syntax.
        uid_entropy: strings that determine the Study/Series/SOP Instance UIDs (e.g. seed, split, index).

    Returns:
        `path` as a Path.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("Argument `frames` must hold at least one frame.")
    first = frames[0]
    if any(
        (f.raster.shape, f.bits_stored, f.geometry) != (first.raster.shape, first.bits_stored, first.geometry)
        for f in frames
    ):
        raise ValueError("Argument `frames` must share shape, bits_stored and geometry (one scene).")
    if options.sop_class == "DX" and len(frames) > 1:
        raise ValueError(f"DX images hold one frame, got {len(frames)}.")
    if options.transfer_syntax != ExplicitVRLittleEndian and not get_encoder(options.transfer_syntax).is_available:
        raise ValueError(f"No pydicom encoder is installed for transfer syntax {options.transfer_syntax}.")
    stored = _stored_pixels(frames, options)
    ds = Dataset()
    _patient_study_series(ds, options, uid_entropy)
    ds.BurnedInAnnotation = "YES" if any(f.burned_in_annotation for f in frames) else "NO"
    ds.LossyImageCompression = "00"
    if options.sop_class == "DX":
        _dx_image(ds, options)
    else:
        ds.PatientOrientation = ""
        _xray_image(ds, frames, options)
    if any(f.contrast for f in frames):
        ds.ContrastBolusAgent = "IODINATED CONTRAST"
    _spacing(ds, first.geometry, options.spacing_source)
    if options.voi_lut:
        _window(ds, stored, first.bits_stored, options.photometric_interpretation == "MONOCHROME1")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "MONAI_ADALOSS"
    ds.set_pixel_data(
        stored if len(frames) > 1 else stored[0],
        options.photometric_interpretation,
        first.bits_stored,
        generate_instance_uid=False,
    )
    if options.transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(options.transfer_syntax, generate_instance_uid=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
