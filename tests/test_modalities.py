"""One ``--modalities`` rule: ``monai-adaloss infer`` (the DICOM reader) and ``serve`` (the SCP) decide alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_inference_support as support

from monai_adaloss.io import DicomSkippedError, XRayDicomReader, read_all_frames
from monai_adaloss.io.modalities import modality_allowed, modality_code, parse_modalities
from monai_adaloss.serve.policy import modality_refusal
from monai_adaloss.serve.policy import parse_modalities as serve_parse_modalities


def test_parse_keeps_the_order_drops_repeats_and_reads_nothing_as_every_modality() -> None:
    assert parse_modalities("xa, RF,xa") == ("XA", "RF")
    assert parse_modalities(["XA", "rf,CR", " "]) == ("XA", "RF", "CR")
    assert parse_modalities(None) is parse_modalities("") is parse_modalities([]) is parse_modalities(" , ") is None
    assert serve_parse_modalities("xa,RF") == frozenset({"XA", "RF"})
    assert modality_code(None) == modality_code("") == "" and modality_code(" xa ") == "XA"
    assert modality_allowed("CT", None) and modality_allowed(None, ()) and not modality_allowed(None, ("XA",))


@pytest.mark.parametrize("value", ["XA", "xa ", "RF", "CT", "", None])
def test_the_reader_skips_exactly_what_the_node_refuses(value: str | None, tmp_path: Path) -> None:
    ds = support.make_dataset(support.marker_frames((16, 16), [(8, 8)])[0])
    if value is None:
        del ds.Modality
    else:
        ds.Modality = value
    path = support.write(tmp_path / "image.dcm", ds)
    refused = modality_refusal(value, serve_parse_modalities("XA,RF")) is not None
    try:
        read_all_frames(path, XRayDicomReader(modalities=["XA", "RF"]))
        skipped = False
    except DicomSkippedError:
        skipped = True
    assert skipped == refused == (value is None or value.strip().upper() not in ("XA", "RF"))
