"""DICOM Structured Reports of the found landmarks: one Comprehensive SR (TID 1500) per image.

Each found landmark instance is a TID 1410 "Planar ROI Measurements" group whose region is a
SCOORD POINT referencing the source image (SOP Class/Instance UID) and, for multi-frame images,
the frame (Referenced Frame Number = ``frame + 1``), with the landmark as the coded finding
(local scheme ``99MONAIADALOSS``, code ``LM{channel}``, meaning the landmark name), the
decoder's confidence as a "Certainty of Finding" measurement (no units) and the model as the
algorithm (name, version, checkpoint SHA-256). A landmark not found in a frame is a TID 1501
group with the same finding, source image and frame, and the qualitative evaluation
"Presence (SCT 705057003) = Absent", so the report accounts for every frame and landmark.

Coordinates: a SCOORD is ``(column, row)`` with ``(0, 0)`` at the top-left *corner* of the
top-left pixel, so that pixel's centre is ``(0.5, 0.5)`` (DICOM PS3.3 C.18.6.1.2). Records use
``(x, y)`` = (column, row) with pixel centres at integers, so ``SCOORD = (x + 0.5, y + 0.5)``.

UIDs are derived from the model and the source UIDs (``pydicom.uid.generate_uid`` with entropy
sources), so rerunning a model on an image rewrites the same SR instance rather than adding one.

Real-world sources (issue 13): the SR is built from what is valid in the source header
(:func:`clean_source`). References to the source (SOP Class / Instance, Study / Series UIDs) are
kept exactly as the source has them, so that a PACS links them: highdicom builds the document from
placeholder UIDs (and a SOP Class it knows, X-Ray Angiographic Image, whatever the source's class),
and the source's own strings are put back in every element afterwards. A missing Study or Series
Instance UID is derived from the SOP Instance UID (``generate_uid`` with entropy sources), and a
missing or unusable SOP Class / Instance UID (not 1-64 digits and dots) raises
:class:`SRSourceError`. Type 2 patient / study attributes that are invalid for their VR are emptied,
except a TM with colons (``08:30:00``), which is repaired (``083000``); PatientSex other than M, F
or O is emptied; nothing else of the source is copied.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from highdicom._standard_utils import is_attribute_in_iod  # the IOD table highdicom validates references with
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import XRayAngiographicImageStorage, generate_uid
from pydicom.valuerep import validate_value

from .. import __version__
from .outputs import atomic_write
from .records import safe_name

__all__ = [
    "SCOORD_OFFSET",
    "SRSourceError",
    "clean_source",
    "source_header",
    "sr_file_name",
    "write_structured_report",
]

SCOORD_OFFSET = 0.5
"""Added to record coordinates ``(x, y)`` to give SCOORD ``(column, row)`` values."""

_SCHEME = "99MONAIADALOSS"  # local coding scheme for landmark names (DICOM PS3.16 8.2: "99" prefix)
_MAX_MEANING = 64  # Code Meaning is LO
_PRESENCE = hd.sr.CodedConcept("705057003", "SCT", "Presence")
_UID_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_USABLE_UID = re.compile(r"[0-9][0-9.]{0,63}")  # kept as the source has it (a PACS matches the string)
# type 2 patient / study attributes highdicom copies into the SR, with their VRs
_TYPE2 = {"PatientName": "PN", "PatientID": "LO", "PatientBirthDate": "DA", "PatientSex": "CS",
          "AccessionNumber": "SH", "StudyID": "SH", "StudyDate": "DA", "StudyTime": "TM",
          "ReferringPhysicianName": "PN"}  # fmt: skip
_SOURCE_KEYWORDS = (*_UID_KEYWORDS, "NumberOfFrames", "SpecificCharacterSet", *_TYPE2)


class SRSourceError(ValueError):
    """The source image cannot be referenced by an SR (its SOP Class or Instance UID is missing or unusable)."""


def source_header(path: str | os.PathLike) -> Dataset:
    """The attributes of the image ``path`` that its SR uses (read with ``force=True``, pixel data skipped)."""
    full = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    header = Dataset()
    for keyword in _SOURCE_KEYWORDS:
        if keyword in full:
            header[keyword] = full[keyword]
    return header


def clean_source(source: Dataset) -> tuple[Dataset, dict[str, str], list[str]]:
    """What highdicom is given as the SR's evidence, the UIDs to put back, and what was changed.

    Returns:
        ``(evidence, originals, notes)``: ``evidence`` holds placeholder UIDs, the SOP Class
        X-Ray Angiographic Image Storage, ``NumberOfFrames`` when references to the source need a
        frame number (its IOD is multi-frame; for a SOP Class highdicom does not know, when it has
        more than one frame), and the cleaned type 2 attributes; ``originals`` maps each
        placeholder UID to the source's string; ``notes`` lists the repairs
        (``"StudyTime '08:30:00' -> '083000'"``, ``"PatientSex '?' invalid for CS: emptied"``).

    Raises:
        SRSourceError: the SOP Class or Instance UID is missing or not 1-64 digits and dots.
    """
    notes: list[str] = []
    uids = {k: str(source.get(k, "") or "").strip() for k in _UID_KEYWORDS}
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not _USABLE_UID.fullmatch(uids[keyword]):
            shown = repr(uids[keyword][:64]) if uids[keyword] else "missing"
            raise SRSourceError(f"the source's {keyword} is {shown}; an SR cannot reference it")
    for keyword, kind in (("StudyInstanceUID", "study"), ("SeriesInstanceUID", "series")):
        if not _USABLE_UID.fullmatch(uids[keyword]):
            derived = generate_uid(entropy_srcs=[uids["SOPInstanceUID"], kind])
            notes.append(f"{keyword} {uids[keyword][:64]!r} unusable: derived {derived}")
            uids[keyword] = derived
    evidence = Dataset()
    originals: dict[str, str] = {}
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        placeholder = generate_uid(entropy_srcs=["placeholder", keyword, uids[keyword]])
        originals[placeholder] = uids[keyword]
        setattr(evidence, keyword, placeholder)
    evidence.SOPClassUID = XRayAngiographicImageStorage  # a multi-frame IOD highdicom knows; put back later
    if _is_multi_frame(uids["SOPClassUID"], source):
        evidence.NumberOfFrames = source.NumberOfFrames
    charset = source.get("SpecificCharacterSet")
    if charset:
        try:
            pydicom.charset.convert_encodings(charset)
            evidence.SpecificCharacterSet = charset
        except (LookupError, ValueError):
            notes.append(f"SpecificCharacterSet {charset!r} unknown: dropped")
    for keyword, vr in _TYPE2.items():
        setattr(evidence, keyword, _clean_value(keyword, vr, source.get(keyword), notes))
    return evidence, originals, notes


def _is_multi_frame(sop_class_uid: str, source: Dataset) -> bool:
    """Whether references to the source need a frame number: its IOD is multi-frame (highdicom's table),
    or, for a SOP Class highdicom does not know, it has more than one frame."""
    if "NumberOfFrames" not in source:
        return False
    try:
        return bool(is_attribute_in_iod("NumberOfFrames", sop_class_uid))
    except KeyError:
        try:
            return int(source.NumberOfFrames) > 1
        except (TypeError, ValueError):
            return False


def _clean_value(keyword: str, vr: str, value: Any, notes: list[str]) -> Any:
    """``value`` if valid for ``vr`` (a TM with colons repaired), else ``""`` (a note says why)."""
    if value is None or value == "":
        return ""
    text = str(value).strip()
    if vr == "TM" and ":" in text:
        repaired = text.replace(":", "")
        notes.append(f"{keyword} {text!r} -> {repaired!r}")
        text = repaired
    valid = True
    if vr == "CS" and keyword == "PatientSex":
        valid = text in ("M", "F", "O")
    elif vr in ("DA", "TM"):
        pattern = r"\d{8}" if vr == "DA" else r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"
        valid = re.fullmatch(pattern, text) is not None
    try:
        if valid:
            validate_value(vr, value if vr == "PN" else text, pydicom_config.RAISE)
    except (ValueError, TypeError):
        valid = False
    if not valid:
        notes.append(f"{keyword} {str(value)[:64]!r} invalid for {vr}: emptied")
        return ""
    return value if vr == "PN" else text


def _restore(dataset: Dataset, originals: Mapping[str, str], sop_class_uid: str) -> None:
    """Put the source's UID strings back in place of the placeholders, recursively."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                _restore(item, originals, sop_class_uid)
        elif element.VR == "UI" and isinstance(element.value, str):
            if element.value in originals:
                element.value = originals[element.value]
            elif element.keyword == "ReferencedSOPClassUID" and element.value == XRayAngiographicImageStorage:
                element.value = sop_class_uid


def sr_file_name(sop_instance_uid: str) -> str:
    """The SR's file name for a source image: ``{SOPInstanceUID}.sr.dcm`` (sanitised)."""
    return f"{safe_name(sop_instance_uid)}.sr.dcm"


def write_structured_report(
    directory: Path,
    source: Dataset,
    records: Sequence[Mapping[str, Any]],
    landmark_names: Sequence[str],
    model_sha256: str,
    file_name: str | None = None,
) -> Path:
    """Write the SR of one source image into ``directory`` (atomically) and return its path.

    Args:
        directory: the SR folder (created if needed).
        source: the source image's header attributes (``DecodedFile.header`` or :func:`source_header`);
            cleaned by :func:`clean_source`, its UIDs referenced exactly.
        records: the image's records (:func:`~.records.file_records`), each one group: a SCOORD
            POINT with its certainty when found, else a TID 1501 group "Presence: Absent".
        landmark_names: the model's landmark names, in channel order (finding codes ``LM{index}``).
        model_sha256: the checkpoint's SHA-256.
        file_name: the file name in ``directory``; default :func:`sr_file_name` of the SOP Instance UID.

    Raises:
        SRSourceError: the source's SOP Class or Instance UID cannot be referenced.
    """
    sop_class_uid = str(source.get("SOPClassUID", "") or "").strip()
    evidence, originals, _ = clean_source(source)
    source_uid = originals[evidence.SOPInstanceUID]
    frames_referenced = "NumberOfFrames" in evidence
    algorithm = hd.sr.AlgorithmIdentification(
        name="monai_adaloss", version=__version__, parameters=[f"checkpoint sha256 {model_sha256}"]
    )
    groups: list[Any] = []
    for index, record in enumerate(records):
        frame_numbers = [record["frame"] + 1] if frames_referenced else None
        common = {
            "tracking_identifier": hd.sr.TrackingIdentifier(
                uid=generate_uid(entropy_srcs=[model_sha256, source_uid, "group", str(index)]),
                identifier=f"{record['landmark']} {record['instance']} frame {record['frame']}"[:_MAX_MEANING],
            ),
            "finding_type": hd.sr.CodedConcept(
                f"LM{list(landmark_names).index(record['landmark'])}", _SCHEME, str(record["landmark"])[:_MAX_MEANING]
            ),
            "algorithm_id": algorithm,
        }
        if record["x"] is None:  # not found in this frame: say so
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    **common,
                    qualitative_evaluations=[hd.sr.QualitativeEvaluation(_PRESENCE, codes.SCT.Absent)],
                    source_images=[
                        hd.sr.SourceImageForMeasurementGroup(
                            evidence.SOPClassUID, evidence.SOPInstanceUID, referenced_frame_numbers=frame_numbers
                        )
                    ],
                )
            )
            continue
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POINT,
            graphic_data=np.array([[record["x"] + SCOORD_OFFSET, record["y"] + SCOORD_OFFSET]]),
            source_image=hd.sr.SourceImageForRegion(
                evidence.SOPClassUID, evidence.SOPInstanceUID, referenced_frame_numbers=frame_numbers
            ),
        )
        certainty = hd.sr.Measurement(
            name=codes.DCM.CertaintyOfFinding, value=float(record["confidence"]), unit=codes.UCUM.NoUnits
        )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                **common, referenced_region=region, measurements=[certainty]
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[model_sha256, "device"]), name="monai_adaloss", model_name=model_sha256[:16]
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    series_uid = originals[evidence.SeriesInstanceUID]
    document = hd.sr.ComprehensiveSR(
        evidence=[evidence],
        content=report[0],
        series_instance_uid=generate_uid(entropy_srcs=[model_sha256, series_uid, "sr series"]),
        series_number=1,
        sop_instance_uid=generate_uid(entropy_srcs=[model_sha256, source_uid, "sr", file_name or ""]),
        instance_number=1,
        manufacturer="monai_adaloss",
        series_description="monai_adaloss landmarks",
        is_complete=True,
    )
    _restore(document, originals, sop_class_uid)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (file_name or sr_file_name(source_uid))
    buffer = io.BytesIO()
    with pydicom_config.disable_value_validation():  # source UIDs are written as the source has them
        document.save_as(buffer, enforce_file_format=True)
    atomic_write(path, buffer.getvalue())
    return path
