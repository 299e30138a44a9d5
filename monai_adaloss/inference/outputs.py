"""Crash-safe output files: append-only logs while running, atomic summaries at the end.

One process writes one *part* folder (the output folder itself for a one-process run,
``part-{rank}`` under it for a sharded one):

- ``run.json``: the model's identity, rank and world size, and whether the shard is finished.
- ``records.jsonl``: the records of every finished file, one JSON object a line.
- ``errors.jsonl``: one line per failed file: ``{"path", "reason", "error"}``, and one per file whose
  SR or overlays failed: ``{"path", "reason", "error", "stage": "sr" | "overlays"}``.
- ``manifest.jsonl``: one line per finished file: ``{"path", "status": "ok" | "error" | "skipped",
  "frames", "records"}`` (``"reason"`` for skipped files). For a file with records, a later line of the
  same path adds ``"sr"`` (``"sr/<name>.sr.dcm"`` or ``"error: ..."``) and ``"overlays"`` (``"ok"`` or
  ``"error: ..."``) once they were tried; the last line of a path wins.

Records never depend on the SR or the overlays: a file's records are committed first, its SR and
overlays are written after, and their outcome is committed by a further manifest line.

A file's records (or its error line) are written with one ``write`` and ``fsync``\\ ed before its
manifest line is appended (and ``fsync``\\ ed): the manifest is the commit. On ``--resume``, lines of
files that are not in the manifest (a kill between the two writes) and a torn last line (a kill
inside a write) are dropped, so the logs hold each file once, completely or not at all.

:func:`merge_outputs` reads every part, keeps the committed lines only, and writes, each atomically
(temporary file in the same folder, ``fsync``, ``os.replace``): ``records.jsonl`` (sorted by path,
then frame, landmark channel and instance), ``errors.jsonl`` (sorted by path), ``records.csv``
(the same records, columns :data:`RECORD_FIELDS`) and ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import InferenceConfigError
from .records import RECORD_FIELDS

__all__ = ["STAGES", "PartWriter", "atomic_write", "merge_outputs", "part_dirs", "read_done"]

STAGES = ("sr", "overlays")
"""Outputs written after a file's records, each with its own status in the manifest and summary."""

RECORDS, ERRORS, MANIFEST, RUN_INFO = "records.jsonl", "errors.jsonl", "manifest.jsonl", "run.json"
CSV_NAME, SUMMARY = "records.csv", "summary.json"
TMP_SUFFIX = ".tmp-infer"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers (and a crash) see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    with tmp.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a folder's entries (new files, renames) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_line(value: Mapping[str, Any]) -> bytes:
    """One JSON Lines line (strict JSON: no NaN)."""
    return (json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")


def part_dirs(output_dir: Path) -> list[Path]:
    """The part folders of ``output_dir`` that hold a manifest: itself and its ``part-*`` folders."""
    parts = [output_dir] if (output_dir / MANIFEST).exists() else []
    return parts + sorted(p for p in output_dir.glob("part-*") if (p / MANIFEST).exists())


def read_done(part: Path) -> dict[str, dict[str, Any]]:
    """The committed manifest entries of a part folder (path -> entry); a torn last line is ignored."""
    return {entry["path"]: entry for entry in _read_jsonl(part / MANIFEST)}


class PartWriter:
    """The append-only logs of one process (see the module docstring).

    Args:
        directory: the part folder (created if needed).
        run_info: plain values for ``run.json`` (must hold ``model.sha256``).
        resume: continue the logs of an earlier run of the same model; otherwise the folder must
            not hold a run yet.

    Raises:
        InferenceConfigError: the folder holds a run and ``resume`` is false, or it holds a run of a
            different model.
    """

    def __init__(self, directory: Path, run_info: Mapping[str, Any], resume: bool) -> None:
        self.directory = directory
        self.run_info = dict(run_info)
        directory.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict[str, Any]] = {}
        if (directory / MANIFEST).exists() or (directory / RUN_INFO).exists():
            if not resume:
                raise InferenceConfigError(
                    f"`{directory}` already holds an inference run; pass --resume (`--resume True` for a bundle run) "
                    "to continue it, or choose another output folder."
                )
            self._check_same_model()
            self._clean()
        self._write_run_info(finished=False)
        self._fds = {
            name: os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            for name in (RECORDS, ERRORS, MANIFEST)
        }
        fsync_dir(directory)

    def write_records(self, path: str, num_frames: int, records: list[dict[str, Any]]) -> None:
        """Commit one finished file's records (before its SR and overlays are tried)."""
        self._append(RECORDS, b"".join(json_line(r) for r in records))
        self._commit({"path": path, "status": "ok", "frames": num_frames, "records": len(records)})

    def write_stage(self, path: str, stage: str, value: str, error: str = "") -> None:
        """Commit the outcome of a file's ``stage`` (``"sr"`` or ``"overlays"``): ``value`` is ``"sr/<name>"``
        / ``"ok"``, or ``"error: <reason>"`` (then ``error``, the exception's name, goes to the errors file too)."""
        if value.startswith("error"):
            line = {"path": path, "reason": value.removeprefix("error: "), "error": error, "stage": stage}
            self._append(ERRORS, json_line(line))
        self._commit({**self.done[path], stage: value})

    def write_error(self, path: str, reason: str, error: str) -> None:
        """Commit one failed file's error line."""
        self._append(ERRORS, json_line({"path": path, "reason": reason, "error": error}))
        self._commit({"path": path, "status": "error", "frames": 0, "records": 0})

    def write_skip(self, path: str, reason: str) -> None:
        """Commit one file skipped by the modality policy."""
        self._commit({"path": path, "status": "skipped", "frames": 0, "records": 0, "reason": reason})

    def close(self, finished: bool) -> None:
        """Close the logs; ``finished`` marks the shard as complete in ``run.json``."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if finished:
            self._write_run_info(finished=True)

    def _commit(self, entry: dict[str, Any]) -> None:
        self._append(MANIFEST, json_line(entry))
        self.done[entry["path"]] = entry

    def _append(self, name: str, data: bytes) -> None:
        fd = self._fds[name]
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)

    def _write_run_info(self, finished: bool) -> None:
        atomic_write(self.directory / RUN_INFO, json.dumps({**self.run_info, "finished": finished}, indent=1).encode())

    def _check_same_model(self) -> None:
        info_path = self.directory / RUN_INFO
        if not info_path.exists():
            return
        before = json.loads(info_path.read_text())["model"]["sha256"]
        if before != self.run_info["model"]["sha256"]:
            raise InferenceConfigError(
                f"`{self.directory}` holds a run of another model (checkpoint sha256 {before[:16]}...); "
                "--resume continues a run with the same checkpoint only."
            )

    def _clean(self) -> None:
        """Keep the committed lines only (module docstring), and remove stale temporary files."""
        self.done = read_done(self.directory)
        atomic_write(self.directory / MANIFEST, b"".join(json_line(e) for e in self.done.values()))
        kept = [line for line in _read_jsonl(self.directory / RECORDS) if _owns(self.done.get(line["path"]), line)]
        atomic_write(self.directory / RECORDS, b"".join(json_line(line) for line in kept))
        errors = {_error_key(line): line for line in _read_jsonl(self.directory / ERRORS)}  # the last line wins
        kept = [line for line in errors.values() if _owns(self.done.get(line["path"]), line)]
        atomic_write(self.directory / ERRORS, b"".join(json_line(line) for line in kept))
        for stale in self.directory.rglob(f".*{TMP_SUFFIX}"):
            stale.unlink()


def merge_outputs(output_dir: str | os.PathLike) -> dict[str, Any]:
    """Merge the parts of ``output_dir`` into the final outputs (module docstring); return the summary.

    The summary (also ``summary.json``): ``model`` (identity), ``complete`` (every part finished
    its shard), ``counts`` (files, succeeded, failed, skipped, frames, records, sr_written, sr_failed,
    overlays_written, overlays_failed) and ``files`` (one entry per file, sorted by path: ``path``,
    ``status`` (``ok``, ``error`` or ``skipped``), ``frames``, ``records``, ``reason`` for failed and
    skipped files, and ``sr`` / ``overlays`` (``"sr/<name>.sr.dcm"`` / ``"ok"`` or ``"error: ..."``)
    for files whose SR / overlays were asked for).

    Raises:
        InferenceConfigError: ``output_dir`` holds no part, or parts of different models.
    """
    output_dir = Path(output_dir)
    parts = part_dirs(output_dir)
    if not parts:
        raise InferenceConfigError(f"`{output_dir}` holds no inference outputs to merge.")
    infos = [json.loads((part / RUN_INFO).read_text()) for part in parts]
    models = {info["model"]["sha256"] for info in infos}
    if len(models) > 1:
        raise InferenceConfigError(f"`{output_dir}` holds parts of different models: {sorted(models)}.")
    entries: dict[str, dict[str, Any]] = {}  # path -> manifest entry of the first part that finished it
    records: dict[str, list[dict[str, Any]]] = {}
    errors: dict[tuple[str, str], dict[str, Any]] = {}  # (path, stage) -> error line
    for part in parts:
        owned = {path: entry for path, entry in read_done(part).items() if path not in entries}
        entries.update(owned)
        for line in _read_jsonl(part / RECORDS):
            if _owns(owned.get(line["path"]), line):
                records.setdefault(line["path"], []).append(line)
        for line in _read_jsonl(part / ERRORS):
            if _owns(owned.get(line["path"]), line):
                errors[_error_key(line)] = line
    paths = sorted(entries)
    ordered = [r for path in paths for r in records.get(path, [])]
    failed = [errors[key] for key in sorted(errors, key=lambda k: (k[0], k[1] != "", k[1]))]
    atomic_write(output_dir / RECORDS, b"".join(json_line(r) for r in ordered))
    atomic_write(output_dir / ERRORS, b"".join(json_line(e) for e in failed))
    atomic_write(output_dir / CSV_NAME, _csv(ordered))
    files = [_file_summary(entries[p], errors.get((p, ""))) for p in paths]
    summary = {
        "model": infos[0]["model"],
        "complete": all(info.get("finished", False) for info in infos),
        "counts": {
            "files": len(files),
            "succeeded": sum(f["status"] == "ok" for f in files),
            "failed": sum(f["status"] == "error" for f in files),
            "skipped": sum(f["status"] == "skipped" for f in files),
            "frames": sum(f["frames"] for f in files),
            "records": len(ordered),
            **{
                f"{stage}_{outcome}": sum(str(f.get(stage, "")).startswith(prefix) for f in files)
                for stage in STAGES
                for outcome, prefix in (("written", "sr/" if stage == "sr" else "ok"), ("failed", "error"))
            },
        },
        "files": files,
    }
    atomic_write(output_dir / SUMMARY, (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return summary


def _owns(entry: Mapping[str, Any] | None, line: Mapping[str, Any]) -> bool:
    """Whether a records / errors ``line`` belongs to the committed manifest ``entry`` of its file."""
    if entry is None:
        return False
    stage = line.get("stage")
    if stage is not None:  # an SR / overlays error line: kept while the manifest says that stage failed
        return str(entry.get(stage, "")).startswith("error")
    if "reason" in line:  # a file's error line
        return entry["status"] == "error"
    return entry["status"] == "ok"


def _error_key(line: Mapping[str, Any]) -> tuple[str, str]:
    return line["path"], str(line.get("stage", ""))


def _file_summary(entry: Mapping[str, Any], error: Mapping[str, Any] | None) -> dict[str, Any]:
    summary = {"path": entry["path"], "status": entry["status"], "frames": entry["frames"], "records": entry["records"]}
    if entry["status"] == "error":
        summary["reason"] = error["reason"] if error else "unknown (its error line is missing)"
    if entry["status"] == "skipped":
        summary["reason"] = entry.get("reason", "")
    for stage in STAGES:
        if stage in entry:
            summary[stage] = entry[stage]
    return summary


def _csv(records: Iterable[Mapping[str, Any]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=RECORD_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    return buffer.getvalue().encode("utf-8")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON object lines of ``path`` (none if it does not exist); a torn last line is skipped."""
    if not path.exists():
        return
    for line in path.read_bytes().split(b"\n")[:-1]:  # the last item is "" or a line torn by a kill
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(value, dict) and "path" in value:
            yield value
