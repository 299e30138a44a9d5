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
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from .. import __version__
from .outputs import atomic_write
from .records import safe_name

__all__ = ["SCOORD_OFFSET", "sr_file_name", "write_structured_report"]

SCOORD_OFFSET = 0.5
"""Added to record coordinates ``(x, y)`` to give SCOORD ``(column, row)`` values."""

_SCHEME = "99MONAIADALOSS"  # local coding scheme for landmark names (DICOM PS3.16 8.2: "99" prefix)
_MAX_MEANING = 64  # Code Meaning is LO
_PRESENCE = hd.sr.CodedConcept("705057003", "SCT", "Presence")


def sr_file_name(sop_instance_uid: str) -> str:
    """The SR's file name for a source image: ``{SOPInstanceUID}.sr.dcm`` (sanitised)."""
    return f"{safe_name(sop_instance_uid)}.sr.dcm"


def write_structured_report(
    directory: Path,
    source: Dataset,
    records: Sequence[Mapping[str, Any]],
    landmark_names: Sequence[str],
    model_sha256: str,
) -> Path:
    """Write the SR of one source image into ``directory`` (atomically) and return its path.

    Args:
        directory: the SR folder (created if needed).
        source: the source image's header attributes (``DecodedFile.header``).
        records: the image's records (:func:`~.records.file_records`), each one group: a SCOORD
            POINT with its certainty when found, else a TID 1501 group "Presence: Absent".
        landmark_names: the model's landmark names, in channel order (finding codes ``LM{index}``).
        model_sha256: the checkpoint's SHA-256.
    """
    frames_referenced = "NumberOfFrames" in source
    algorithm = hd.sr.AlgorithmIdentification(
        name="monai_adaloss", version=__version__, parameters=[f"checkpoint sha256 {model_sha256}"]
    )
    groups: list[Any] = []
    for index, record in enumerate(records):
        frame_numbers = [record["frame"] + 1] if frames_referenced else None
        common = {
            "tracking_identifier": hd.sr.TrackingIdentifier(
                uid=generate_uid(entropy_srcs=[model_sha256, source.SOPInstanceUID, "group", str(index)]),
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
                            source.SOPClassUID, source.SOPInstanceUID, referenced_frame_numbers=frame_numbers
                        )
                    ],
                )
            )
            continue
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POINT,
            graphic_data=np.array([[record["x"] + SCOORD_OFFSET, record["y"] + SCOORD_OFFSET]]),
            source_image=hd.sr.SourceImageForRegion(
                source.SOPClassUID, source.SOPInstanceUID, referenced_frame_numbers=frame_numbers
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
    document = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report[0],
        series_instance_uid=generate_uid(entropy_srcs=[model_sha256, source.SeriesInstanceUID, "sr series"]),
        series_number=1,
        sop_instance_uid=generate_uid(entropy_srcs=[model_sha256, source.SOPInstanceUID, "sr"]),
        instance_number=1,
        manufacturer="monai_adaloss",
        series_description="monai_adaloss landmarks",
        is_complete=True,
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / sr_file_name(source.SOPInstanceUID)
    buffer = io.BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    atomic_write(path, buffer.getvalue())
    return path
