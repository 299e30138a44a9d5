"""DICOM conformance of ``monai-adaloss infer --sr``: what a reference reader decodes vs what ``infer`` gives.

Usage::

    python benchmarks/dicom_conformance.py FOLDER... [--checkpoint model.pt] [--modalities XA,RF]
        [--work-dir DIR] [--per-file] [--json OUT.json]

For every input file ``infer`` would consider (the files of each FOLDER, searched recursively, as
:class:`monai_adaloss.inference.InputFiles` lists them):

1. **Reference**: an independent reader decodes the image pixels or not: ``pydicom.dcmread(path,
   force=True)`` then ``.pixel_array``, with every installed pixel data plugin (pylibjpeg,
   pylibjpeg-openjpeg, pyjpegls, python-gdcm, Pillow); a file whose File Meta lacks the Transfer
   Syntax UID gets the one its data set was read with (``ds.original_encoding``), as pydicom's
   documentation recommends. Each file is read in its own forked process, so a decoder that aborts
   costs only that file ("reference crashed").
2. **infer**: ``monai-adaloss infer FOLDER --sr`` runs once over all folders (a subprocess, exactly
   as a user runs it) with ``--checkpoint`` (default: a tiny model trained in a few seconds by
   ``monai-adaloss demo --tiny``; accuracy is irrelevant here). For each file: did it get records,
   did it get an SR that pydicom reads back (its Referenced SOP Instance UID is the source's), and
   the reason when not.

It prints a table by failure class (the first words of the reason, grouped), then the last line
``decodable N, records R, sr S``, where R and S count the reference-decodable files that got records
and an SR. ``--per-file`` also prints every file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom

from monai_adaloss.inference import InputFiles

REFERENCE_TIMEOUT_S = 60.0

# failure classes: (class name, regular expression on the reason), first match wins
CLASSES: tuple[tuple[str, str], ...] = (
    ("SR failed (records thrown away)", r"cannot write the SR"),
    ("skipped: modality policy", r"^skipped"),
    ("legacy: no preamble / File Meta", r"no 'DICM' prefix|not a DICOM file"),
    ("legacy: no Transfer Syntax UID", r"no Transfer Syntax UID"),
    ("decoder missing", r"no pixel data decoder"),
    ("UID", r"UID"),
    ("colour", r"SamplesPerPixel is [^1]|PhotometricInterpretation is|colour"),
    ("spacing", r"Spacing|Magnification|Distance"),
    ("missing type-1 attribute", r"^missing |is not an integer"),
    ("no pixel data", r"no Pixel Data|Pixel Data holds"),
    ("invalid dimensions", r"absurd dimensions|out of range"),
    ("empty / truncated / corrupt", r"empty file|truncated|corrupt|cannot decode"),
    ("decoder crash / timeout", r"decoder crashed|decoder timed out|decoder process exited"),
)


def reference_decode(path: str) -> tuple[bool, str]:
    """``(decodable, detail)`` by pydicom ``force=True`` + ``.pixel_array`` (run in a child process)."""
    try:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            return False, "no pixel data"
        if not ds.file_meta.get("TransferSyntaxUID"):
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                pydicom.uid.ImplicitVRLittleEndian
                if implicit
                else (pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
            )
        array = ds.pixel_array
        if array.size == 0:
            return False, "empty pixel array"
        return True, f"{ds.get('Modality', '?')} {tuple(array.shape)}"
    except Exception as err:
        return False, f"{type(err).__name__}: {str(err)[:120]}"


def _child(path: str, conn: Any) -> None:
    conn.send(reference_decode(path))
    conn.close()


def reference_in_child(path: str) -> tuple[bool, str]:
    """:func:`reference_decode` in a forked process: a crash or hang costs this file only."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(path, child), daemon=True)
    process.start()
    child.close()
    try:
        if parent.poll(REFERENCE_TIMEOUT_S):
            return parent.recv()
        return False, "reference timed out"
    except EOFError:
        return False, "reference crashed"
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        if process.exitcode is not None and process.exitcode < 0 and not parent.closed:
            parent.close()


def tiny_checkpoint(work: Path) -> Path:
    """Train the catheter bundle's tiny demo profile (seconds) and return its ``models/model.pt``."""
    command = [sys.executable, "-c", "import sys; from monai_adaloss.cli import main; sys.exit(main())",
               "demo", "--tiny", "-o", str(work / "demo"), "--threads", "1", "--quiet"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return work / "demo" / "bundle" / "models" / "model.pt"


def run_infer(folders: Sequence[str], checkpoint: Path, out: Path, modalities: str | None) -> int:
    """``monai-adaloss infer FOLDERS --sr`` in a subprocess; returns its exit code."""
    command = [sys.executable, "-c", "import sys; from monai_adaloss.cli import main; sys.exit(main())",
               "infer", *folders, "-o", str(out), "--checkpoint", str(checkpoint), "--sr", "--quiet",
               "--num-workers", "2", "--batch-size", "8", "--device", "cpu"]  # fmt: skip
    if modalities:
        command += ["--modalities", modalities]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:], file=sys.stderr)
    return result.returncode


def sr_of(out: Path, entry: dict[str, Any], records: list[dict[str, Any]]) -> tuple[bool, str]:
    """Whether ``infer`` wrote a readable SR for the file, and why not."""
    if not records:
        return False, "no records"
    sr = entry.get("sr")
    if isinstance(sr, str) and sr.startswith("error"):
        return False, sr
    uid = records[0]["sop_instance_uid"]
    candidates = [out / sr] if isinstance(sr, str) and sr else list((out / "sr").glob(f"{uid}*.sr.dcm"))
    for path in candidates:
        try:
            ds = pydicom.dcmread(path)
        except Exception as err:
            return False, f"unreadable SR: {type(err).__name__}: {err}"
        referenced = {
            item.ReferencedSOPInstanceUID
            for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        if uid in referenced:
            return True, ""
        return False, "SR does not reference the source"
    return False, "no SR file"


def classify(reason: str) -> str:
    for name, pattern in CLASSES:
        if re.search(pattern, reason):
            return name
    return "other"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", metavar="FOLDER")
    parser.add_argument("--checkpoint", help="model to run (default: train the tiny demo model)")
    parser.add_argument("--modalities", help="pass --modalities to infer")
    parser.add_argument("--work-dir", help="where infer writes (default: a temporary folder)")
    parser.add_argument("--per-file", action="store_true", help="print one line per file")
    parser.add_argument("--json", help="write the per-file results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        files = InputFiles(args.folders).files()
        checkpoint = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint(work)
        out = work / "infer"
        code = run_infer(args.folders, checkpoint, out, args.modalities)
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {"files": []}
        entries = {e["path"]: e for e in summary["files"]}
        records: dict[str, list[dict[str, Any]]] = {}
        if (out / "records.jsonl").exists():
            for line in (out / "records.jsonl").read_text().splitlines():
                record = json.loads(line)
                records.setdefault(record["path"], []).append(record)
        rows = []
        for path in files:
            decodable, detail = reference_in_child(path)
            entry = entries.get(path)
            mine = records.get(path, [])
            has_sr, sr_reason = sr_of(out, entry or {}, mine)
            if entry is None:
                reason = "missing from the summary"
            elif entry["status"] == "ok":
                reason = "" if has_sr else f"SR: {sr_reason}"
            else:
                reason = str(entry.get("reason", ""))
                if entry["status"] == "skipped":
                    reason = f"skipped: {reason}"
            rows.append(
                {
                    "path": path,
                    "decodable": decodable,
                    "reference": detail,
                    "records": bool(mine),
                    "sr": has_sr,
                    "status": entry["status"] if entry else "missing",
                    "reason": reason,
                    "class": "" if mine and has_sr else (classify(reason) if reason else "other"),
                }
            )
    if args.per_file:
        for row in rows:
            flags = f"{'D' if row['decodable'] else '-'}{'R' if row['records'] else '-'}{'S' if row['sr'] else '-'}"
            print(f"{flags} {Path(row['path']).name}: {row['reason'] or 'ok'}  [reference: {row['reference']}]")
        print()
    table: Counter[tuple[str, bool]] = Counter((row["class"], row["decodable"]) for row in rows if row["class"])
    print(f"infer exit code {code}; {len(files)} files")
    print("| failure class | files | of which reference-decodable |")
    print("|---|---|---|")
    for name in sorted({c for c, _ in table}):
        print(f"| {name} | {table[(name, True)] + table[(name, False)]} | {table[(name, True)]} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"exit_code": code, "files": rows}, indent=1))
    decodable = [row for row in rows if row["decodable"]]
    print(
        f"decodable {len(decodable)}, records {sum(r['records'] for r in decodable)}, "
        f"sr {sum(r['records'] and r['sr'] for r in decodable)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
