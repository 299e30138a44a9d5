"""Real-world DICOM conformance of ``infer --sr`` (issue 13), on three corpora nobody tuned for it:

- pydicom's own test files (installed with pydicom, many deliberately odd);
- ``../shared/data/dicom_wild`` (public sample files; skipped when the folder is absent);
- this project's synthetic corpus (``test_inference_support``: good, bad and quirky files).

For every file: when an independent reference reader (pydicom ``force=True`` + ``pixel_array``, in a
forked process, with every installed decoder) decodes its pixels, ``infer`` must give records for
every frame and an SR that parses with pydicom and highdicom, references the source's SOP Instance
UID (and frame) exactly, and holds the records' coordinates; otherwise the file must fail with a
reason. No file may be missing from the summary. Where ``dciodvfy`` (dicom3tools) is installed, it
checks every SR and the test fails on its "Error" lines, except errors about a source UID value the
SR copies verbatim (the reference must match the source's string for a PACS to link them), and a
Referenced Frame Number for an image with several frames whose (retired) SOP Class dciodvfy lists as
single-frame (a reference without a frame would mean every frame).

Inference runs once for the module (a tiny random U-Net on a 32 x 32 grid; accuracy is irrelevant).
"""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
import test_inference_support as support
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_adaloss.inference import InferenceRunner, InputFiles
from monai_adaloss.inference.sr import SCOORD_OFFSET

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("no_orphans")]

WILD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom_wild"
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
_USABLE = re.compile(r"[0-9][0-9.]{0,63}")  # a source UID the SR keeps as it is
_UID_SHAPE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
REFERENCE_TIMEOUT_S = 60


def reference_frames(path: str) -> int | None:
    """Frames the reference reader decodes from ``path`` (pydicom ``force=True``), ``None`` if it cannot."""
    try:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" not in ds:
            return None
        if not ds.file_meta.get("TransferSyntaxUID"):
            implicit, little = ds.original_encoding
            syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else syntax
        array = ds.pixel_array
        if array.size == 0:
            return None
        return int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        return None


def _reference_child(path: str, conn) -> None:
    conn.send(reference_frames(path))


def reference_in_child(path: str) -> int | None:
    """:func:`reference_frames` in a forked process: a decoder that aborts costs the reference this file only."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_reference_child, args=(path, child), daemon=True)
    process.start()
    child.close()
    try:
        return parent.recv() if parent.poll(REFERENCE_TIMEOUT_S) else None
    except EOFError:
        return None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        parent.close()


@pytest.fixture(scope="module")
def conformance_run(tmp_path_factory):
    """One ``infer --sr`` run over the three corpora: ``(output folder, {path: reference frames or None})``."""
    root = tmp_path_factory.mktemp("conformance")
    inputs = root / "in"
    (inputs / "pydicom").mkdir(parents=True)
    for path in sorted(PYDICOM_FILES.glob("*.dcm")):
        shutil.copy(path, inputs / "pydicom" / path.name)
    if WILD.is_dir():
        shutil.copytree(WILD, inputs / "wild")
    support.good_files(inputs / "synthetic" / "good")
    support.bad_files(inputs / "synthetic" / "bad")
    support.quirky_files(inputs / "synthetic" / "quirky")
    files = InputFiles([inputs]).files()
    reference = {path: reference_in_child(path) for path in files}
    checkpoint = support.tiny_unet_checkpoint(root / "model.pt")
    summary = InferenceRunner(
        checkpoint, inputs, root / "out", num_workers=2, batch_size=16, progress=False, write_sr=True
    ).run()
    return root / "out", reference, summary


def summary_files(out: Path) -> dict[str, dict]:
    return {entry["path"]: entry for entry in json.loads((out / "summary.json").read_text())["files"]}


def records_by_path(out: Path) -> dict[str, list[dict]]:
    records: dict[str, list[dict]] = {}
    for line in (out / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        records.setdefault(record["path"], []).append(record)
    return records


def content_items(dataset: pydicom.Dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def test_every_file_is_in_the_summary_and_nothing_crashed(conformance_run):
    out, reference, summary = conformance_run
    files = summary_files(out)
    assert set(files) == set(reference)
    assert summary.final["complete"] and summary.final["counts"]["files"] == len(reference)
    assert len(reference) >= 50 + 30 + (15 if WILD.is_dir() else 0)  # pydicom 3.0.2 installs 78 test files
    assert sum(frames is not None for frames in reference.values()) >= 60


def test_decodable_files_have_records_for_every_frame_and_an_sr(conformance_run):
    out, reference, _ = conformance_run
    files, records = summary_files(out), records_by_path(out)
    problems = []
    for path, frames in reference.items():
        if frames is None:
            continue
        entry = files[path]
        mine = records.get(path, [])
        if entry["status"] != "ok" or sorted({r["frame"] for r in mine}) != list(range(frames)):
            problems.append(f"{path}: {entry['status']}, frames {sorted({r['frame'] for r in mine})}: {entry}")
        elif not str(entry.get("sr", "")).startswith("sr/") and "crafted_uid" not in path:
            problems.append(f"{path}: no SR: {entry.get('sr')}")
    assert not problems, "\n".join(problems)


def test_undecodable_files_fail_with_a_reason(conformance_run):
    out, reference, _ = conformance_run
    files = summary_files(out)
    lines = map(json.loads, (out / "errors.jsonl").read_text().splitlines())
    errors = {e["path"]: e for e in lines if "stage" not in e}
    for path, frames in reference.items():
        if frames is None and files[path]["status"] != "ok":
            assert files[path]["status"] == "error" and files[path]["reason"], path
            assert errors[path]["reason"] == files[path]["reason"] and len(errors[path]["reason"]) > 10, path


def test_every_sr_parses_and_references_the_source_exactly(conformance_run):
    out, _, _ = conformance_run
    files, records = summary_files(out), records_by_path(out)
    checked = 0
    for path, entry in files.items():
        if not str(entry.get("sr", "")).startswith("sr/"):
            continue
        sr_path = out / entry["sr"]
        sr = pydicom.dcmread(sr_path)
        assert isinstance(hd.sr.srread(sr_path), hd.sr.ComprehensiveSR), path
        source = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        frames = int(source.get("NumberOfFrames", 1) or 1)
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == str(
            source.SOPInstanceUID
        ), path
        if _USABLE.fullmatch(str(source.get("StudyInstanceUID", ""))):  # else derived (sr module docstring)
            assert sr.StudyInstanceUID == evidence.StudyInstanceUID == str(source.StudyInstanceUID), path
        if _USABLE.fullmatch(str(source.get("SeriesInstanceUID", ""))):
            assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == str(source.SeriesInstanceUID), path
        found = [r for r in records[path] if r["x"] is not None]
        scoords = [item for item in content_items(sr) if item.ValueType == "SCOORD"]
        assert len(scoords) == len(found), path
        for record, scoord in zip(found, scoords, strict=True):
            (image,) = scoord.ContentSequence
            reference = image.ReferencedSOPSequence[0]
            assert reference.ReferencedSOPInstanceUID == str(source.SOPInstanceUID), path
            assert reference.ReferencedSOPClassUID == str(source.SOPClassUID), path
            if frames > 1 or "ReferencedFrameNumber" in reference:  # only multi-frame IODs have it
                assert int(reference.ReferencedFrameNumber) == record["frame"] + 1, path
            else:
                assert record["frame"] == 0, path
            expected = [record["x"] + SCOORD_OFFSET, record["y"] + SCOORD_OFFSET]
            assert [float(v) for v in scoord.GraphicData] == pytest.approx(expected, abs=1e-3), path
        checked += 1
    assert checked >= 60


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not installed")
def test_dciodvfy_finds_no_errors_in_the_srs(conformance_run):
    out, _, _ = conformance_run
    files = summary_files(out)
    problems = []
    for path, entry in files.items():
        if not str(entry.get("sr", "")).startswith("sr/"):
            continue
        source = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        kept = [str(source.get(k, "")) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")]
        verbatim = [uid for uid in kept if _USABLE.fullmatch(uid)]  # copied exactly (sr module docstring)
        allowed = verbatim.copy()
        if any(not _UID_SHAPE.fullmatch(uid) for uid in verbatim):  # dciodvfy's summary of those UIDs' errors
            allowed.append("Dicom dataset contains invalid data values for Value Representations")
        if int(source.get("NumberOfFrames", 1) or 1) > 1:  # e.g. the retired US Multi-frame class dciodvfy
            allowed.append("Shall not be present for Referenced SOP Class that is not multi-frame")  # calls single
        result = subprocess.run(["dciodvfy", str(out / entry["sr"])], capture_output=True, text=True, timeout=60)
        for line in (result.stdout + result.stderr).splitlines():
            if line.startswith("Error") and not any(text in line for text in allowed):
                problems.append(f"{path}: {line}")
    assert not problems, "\n".join(problems[:40])
