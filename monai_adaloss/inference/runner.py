"""The inference runner: files -> decoding workers -> batched network -> heatmap decoding -> records.

One code path serves ``monai-adaloss infer``, the Python API and the bundle's ``evaluator``:

1. The input files are listed (:class:`~.inputs.InputFiles`), sorted, and sharded by rank
   (``files[rank::world_size]``, ranks from ``torch.distributed`` or the ``RANK``/``WORLD_SIZE``
   variables ``torchrun`` sets). With ``resume``, files in a manifest are skipped.
2. :class:`~.pool.DecodePool` workers decode each file (every frame of a DICOM file, or one PNG/JPEG
   frame, as the checkpoint's preprocessing reader says) and resize it to the model's input size
   (:func:`~.decode.decode_file`); a crash, a hang or a corrupt file costs only that file.
3. A ``DataLoader`` batches the frames of consecutive files; the network runs under
   ``torch.inference_mode`` (AMP float16 on CUDA) through the ``inferer``; heatmaps are decoded
   (:class:`~.heatmap_points.HeatmapDecoder`) and the points are mapped back to the original pixels.
4. When all frames of a file are done, its records are committed (:class:`~.outputs.PartWriter`),
   then its SR and overlays (optional) are written and their outcome committed apart: an SR or
   overlay failure never costs the records (``sr: "error: ..."`` in the summary, exit code
   ``OUTPUTS_FAILED``). With ``resume``, files that have records but no SR get their SR (from the
   records and the source header, without inferring again). Files outside ``modalities`` are skipped.
5. At the end (on rank 0 after a barrier when sharded), :func:`~.outputs.merge_outputs` writes the
   final JSONL, CSV and JSON summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer, SimpleInferer
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from ..io.modalities import parse_modalities
from ..tta import TestTimeAugmentation
from .decode import DecodedFile, DecodeFailure, DecodeFn, DecodeSettings, decode_file
from .errors import ExitCode, InferenceConfigError
from .heatmap_points import HeatmapDecoder
from .inputs import InputFiles
from .model import DEFAULT_NETWORK_MODULES, LandmarkModel, check_frame_model, load_checkpoint
from .outputs import ERRORS, RECORDS, SUMMARY, PartWriter, merge_outputs, part_dirs, read_done
from .overlays import write_overlays
from .pool import DecodePool, Outcome
from .records import file_records, network_to_original, safe_name
from .sharding import ShardGroup, shard
from .sr import source_header, sr_file_name, write_structured_report

__all__ = ["FileTracker", "InferenceRunner", "InferenceSummary", "infer_outcomes", "read_records", "sr_written"]

logger = logging.getLogger(__name__)


_LOG_EVERY = 100
"""Without a progress bar (output not a terminal), one progress line per this many files."""


@dataclass
class InferenceSummary:
    """What one process's :meth:`InferenceRunner.run` did.

    Attributes:
        output_dir: the output folder.
        rank, world_size: this process's place in a sharded run (0, 1 otherwise).
        succeeded, failed: files of this run (this process) with records / with an error line.
        skipped: files of this shard skipped because an earlier run finished them (``resume``).
        skipped_by_policy: files of this run outside the ``modalities`` policy (not failures).
        sr_failed, overlays_failed: files of this run with records whose SR / overlays failed.
        sr_retried: files of an earlier run (``resume``) whose missing SR this run wrote.
        frames, records: frames inferred and records written by this run.
        elapsed_s: wall time of ``run()``.
        final: the merged summary (``summary.json``) on rank 0; ``None`` on other ranks.
        exit_code: :class:`ExitCode` of the process: on rank 0, ``FILES_FAILED`` when a file of the
            final outputs failed, else ``OUTPUTS_FAILED`` when an SR or overlays failed, else ``OK``
            (skipped files do not count); other ranks return ``OK`` when their shard is finished
            (``torchrun`` exits with rank 0's code then).
    """

    output_dir: str
    rank: int = 0
    world_size: int = 1
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_by_policy: int = 0
    sr_failed: int = 0
    overlays_failed: int = 0
    sr_retried: int = 0
    frames: int = 0
    records: int = 0
    elapsed_s: float = 0.0
    final: dict[str, Any] | None = None
    exit_code: int = ExitCode.OK

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """The one-line report the command prints."""
        who = f"rank {self.rank}/{self.world_size}: " if self.world_size > 1 else ""
        ran = self.succeeded + self.failed + self.skipped_by_policy
        text = (
            f"monai-adaloss infer: {who}{ran} files this run ({self.succeeded} succeeded, {self.failed} failed, "
            f"{self.skipped_by_policy} skipped by --modalities), {self.skipped} skipped (finished before); "
            f"{self.frames} frames, {self.records} records in {self.elapsed_s:.1f} s "
            f"({self.frames_per_second:.1f} frames/s)"
        )
        if self.sr_failed or self.overlays_failed or self.sr_retried:
            text += f"; {self.sr_failed} SR and {self.overlays_failed} overlay failures, {self.sr_retried} SRs retried"
        if self.final is not None:
            counts = self.final["counts"]
            text += (
                f"; outputs: {counts['files']} files, {counts['succeeded']} succeeded, {counts['failed']} failed, "
                f"{counts['skipped']} skipped, {counts['records']} records, {counts['sr_written']} SRs "
                f"({counts['sr_failed']} failed)"
            )
            if counts["failed"] or counts["sr_failed"] or counts["overlays_failed"]:
                text += f" (reasons in {Path(self.output_dir) / ERRORS})"
        return f"{text}; exit code {int(self.exit_code)}"


class InferenceRunner:
    """Run a trained landmark model over DICOM files or PNG/JPEG frames (module docstring); a bundle's ``evaluator``.

    The checkpoint's ``preprocessing["reader"]`` says which (:mod:`.decode`). Image files have no UIDs:
    their records have empty UID fields, their overlays are named after the file, and ``write_sr`` is
    refused.

    Args:
        checkpoint: the checkpoint (``models/model.pt`` of a bundle, or a training checkpoint).
        inputs: files, folders (searched recursively), or an :class:`InputFiles` (list files).
        output_dir: where the outputs go (see :mod:`.outputs`); SRs in ``sr/``, overlays in ``overlays/``.
        network: the network to load the weights into (a bundle's ``network``); ``None`` builds it
            from the checkpoint's model info.
        inferer: runs the network on a batch ``(B, C, *input_size) -> (B, L, *input_size)``;
            default ``monai.inferers.SimpleInferer()``.
        device: default ``cuda:{LOCAL_RANK}`` when CUDA is available, else CPU.
        batch_size: frames per network call.
        num_workers: decoding worker processes (0: decode in this process, without crash containment).
        amp: float16 autocast on CUDA (ignored on CPU).
        resume: skip the files the output folder's manifests list as finished, and continue its logs.
        write_sr: write a DICOM Comprehensive SR (TID 1500) per image (:mod:`.sr`; DICOM models only).
        write_overlays: write a PNG per frame with the found landmarks (:mod:`.overlays`).
        progress: show a progress bar (frames/s); default: when stderr is a terminal.
        decode_timeout: seconds one file may take to decode before it fails; ``None``: no limit.
        decode_fn: the per-file decoding function run in the workers (default :func:`decode_file`).
        network_modules: modules a checkpoint's network config may name (see :mod:`.model`).
        modalities: DICOM Modality values to infer (e.g. ``("XA", "RF", "CR", "DX")``); other files are
            skipped with the reason and counted apart from failures. ``None`` (default): every image.
        tta: test-time augmentation (:class:`~monai_adaloss.tta.TestTimeAugmentation`, single-instance
            models): the network runs on every shifted / flipped copy and the points are combined;
            ``None`` (default): one plain pass.

    Raises:
        InferenceConfigError: (from ``run``) the run cannot start; nothing was written then.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        inputs: InputFiles | str | os.PathLike | Sequence[str | os.PathLike],
        output_dir: str | os.PathLike,
        network: nn.Module | None = None,
        inferer: Inferer | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        num_workers: int = 2,
        amp: bool = True,
        resume: bool = False,
        write_sr: bool = False,
        write_overlays: bool = False,
        progress: bool | None = None,
        decode_timeout: float | None = 300.0,
        decode_fn: DecodeFn = decode_file,
        network_modules: Sequence[str] = DEFAULT_NETWORK_MODULES,
        modalities: Sequence[str] | None = None,
        tta: TestTimeAugmentation | None = None,
    ) -> None:
        if batch_size < 1:
            raise InferenceConfigError(f"Argument `batch_size` must be >= 1, got {batch_size}.")
        if num_workers < 0:
            raise InferenceConfigError(f"Argument `num_workers` must be >= 0, got {num_workers}.")
        if decode_timeout is not None and decode_timeout <= 0:
            raise InferenceConfigError(f"Argument `decode_timeout` must be positive or None, got {decode_timeout}.")
        self.checkpoint = checkpoint
        self.inputs = inputs if isinstance(inputs, InputFiles) else InputFiles(inputs)
        self.output_dir = Path(output_dir).absolute()
        self.network = network
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.amp = amp
        self.resume = resume
        self.write_sr = write_sr
        self.write_overlays = write_overlays
        self.progress = progress
        self.decode_timeout = decode_timeout
        self.decode_fn = decode_fn
        self.network_modules = tuple(network_modules)
        self.modalities = parse_modalities(modalities)
        if modalities is not None and self.modalities is None:
            raise InferenceConfigError("Argument `modalities` names no modality; pass None for every image.")
        self.tta = tta

    def run(self) -> InferenceSummary:
        """Infer every input file of this process's shard and write the outputs; see the module docstring."""
        started = time.perf_counter()
        model = load_checkpoint(self.checkpoint, self.network, self.network_modules)
        check_frame_model(model.info, str(self.checkpoint))
        settings = DecodeSettings.from_model_info(
            model.info, keep_header=self.write_sr, keep_display=self.write_overlays, modalities=self.modalities
        )
        decoder = HeatmapDecoder(model.info)
        if self.tta is not None and int(model.info.max_instances) != 1:
            raise InferenceConfigError(
                f"Test-time augmentation combines single-instance predictions; `{self.checkpoint}` has "
                f"max_instances={model.info.max_instances}."
            )
        files = self.inputs.with_exclude(self.output_dir).files()
        if not files:
            raise InferenceConfigError(f"No input files found in {[str(p) for p in self.inputs.paths]}.")
        with ShardGroup() as group:
            summary = InferenceSummary(str(self.output_dir), group.rank, group.world_size)
            part = self.output_dir if group.world_size == 1 else self.output_dir / f"part-{group.rank}"
            if not self.resume and (part_dirs(self.output_dir) or (self.output_dir / SUMMARY).exists()):
                raise InferenceConfigError(
                    f"`{self.output_dir}` already holds inference outputs; pass --resume to continue that run "
                    "(`--resume True` for `python -m monai.bundle run` of a bundle's inference.json), "
                    "or choose another output folder."
                )
            group.barrier()  # every rank has looked before any rank writes
            run_info = {"model": model.identity(), "rank": group.rank, "world_size": group.world_size}
            writer = PartWriter(part, run_info, self.resume)
            done = set(writer.done)
            if self.resume:  # files another rank (or an earlier run with another world size) finished
                done.update(path for other in part_dirs(self.output_dir) if other != part for path in read_done(other))
            todo = shard(files, group.rank, group.world_size)
            summary.skipped = sum(path in done for path in todo)
            todo = [path for path in todo if path not in done]
            finished = False
            try:
                if self.resume and self.write_sr:
                    self._retry_missing_srs(model, writer, summary)
                self._infer(model, decoder, settings, todo, writer, summary)
                finished = True
            finally:
                writer.close(finished)
            group.barrier()  # every shard is finished
            if group.rank == 0:
                summary.final = merge_outputs(self.output_dir)
                counts = summary.final["counts"]
                if counts["failed"]:
                    summary.exit_code = ExitCode.FILES_FAILED
                elif counts["sr_failed"] or counts["overlays_failed"]:
                    summary.exit_code = ExitCode.OUTPUTS_FAILED
            group.barrier()  # ranks end together: torchrun stops every rank when one exits early with an error
        summary.elapsed_s = time.perf_counter() - started
        logger.info(summary.line())
        return summary

    def _infer(
        self,
        model: LandmarkModel,
        decoder: HeatmapDecoder,
        settings: DecodeSettings,
        todo: list[str],
        writer: PartWriter,
        summary: InferenceSummary,
    ) -> None:
        device = self._device()
        tracker = _FileTracker(writer, model, self.output_dir, self.write_sr, self.write_overlays, summary)
        use_amp = self.amp and device.type == "cuda"
        show = sys.stderr.isatty() if self.progress is None else self.progress
        log_lines = self.progress is None and not show  # output to a file or pipe: a line per _LOG_EVERY files
        logged = 0
        with (
            DecodePool(self.decode_fn, settings, self.num_workers, self.decode_timeout) as pool,
            tqdm(unit="frame", disable=not show, desc="infer", dynamic_ncols=True) as bar,
            torch.inference_mode(),
        ):
            network = model.network.to(device).eval()  # after the workers have started: they need no CUDA state
            outcomes = pool.imap_unordered(todo)
            for frames in infer_outcomes(
                outcomes, tracker, network, self.inferer, decoder, self.batch_size, device, use_amp, self.tta
            ):
                bar.update(frames)
                bar.set_postfix(files=f"{summary.succeeded + summary.failed}/{len(todo)}", failed=summary.failed)
                done = summary.succeeded + summary.failed
                if log_lines and done // _LOG_EVERY > logged // _LOG_EVERY:
                    logged = done
                    print(f"infer: {done}/{len(todo)} files ({summary.failed} failed), {summary.frames} frames",
                          file=sys.stderr, flush=True)  # fmt: skip

    def _retry_missing_srs(self, model: LandmarkModel, writer: PartWriter, summary: InferenceSummary) -> None:
        """Write the SR of every file of this part that has records but no SR (killed before it, or it failed)."""
        missing = [e["path"] for e in writer.done.values() if e["status"] == "ok" and not sr_written(e)]
        if not missing:
            return
        records: dict[str, list[dict[str, Any]]] = {path: [] for path in missing}
        for line in read_records(writer.directory / RECORDS):
            if line["path"] in records:
                records[line["path"]].append(line)
        tracker = _FileTracker(writer, model, self.output_dir, True, False, summary)
        for path in missing:
            try:
                header = source_header(path)
            except Exception as err:
                tracker.sr_failed(path, f"cannot read the source header: {type(err).__name__}: {err}", err)
                continue
            if tracker.write_sr(path, header, records[path]):
                summary.sr_retried += 1

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")


def infer_outcomes(
    outcomes: Iterator[Outcome],
    tracker: _FileTracker,
    network: nn.Module,
    inferer: Inferer,
    decoder: HeatmapDecoder,
    batch_size: int,
    device: torch.device,
    use_amp: bool,
    tta: TestTimeAugmentation | None = None,
) -> Iterator[int]:
    """Batch the frames of decoded files across files, run the network, and hand the points to ``tracker``.

    The loop of :meth:`InferenceRunner.run`, reused by the DICOM node (:mod:`monai_adaloss.serve`): call it
    under ``torch.inference_mode()`` with ``network`` on ``device`` in eval mode. Frames ``(1, *input_size)``
    are batched ``(B, 1, *input_size)``; heatmaps ``(B, L, *input_size)`` are decoded by ``decoder``. The
    tracker commits each file when its last frame is done. With ``tta`` the network runs on every shifted /
    flipped copy of the batch and the decoded points are combined. Yields the number of frames of each batch.

    Raises:
        RuntimeError: a decoded file did not get all its frames inferred (a bug, not a bad input).
    """
    frames = _FrameStream(outcomes, tracker)
    loader = DataLoader(frames, batch_size=batch_size, num_workers=0, pin_memory=device.type == "cuda")
    for images, file_ids, frame_indices in loader:
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            if tta is None:
                points, confidence = decoder(inferer(images, network).float())
            else:
                points, confidence, _ = tta(images, lambda x: inferer(x, network).float(), decoder)
        tracker.add(file_ids.tolist(), frame_indices.tolist(), points.cpu(), confidence.cpu())
        yield len(images)
    if tracker.pending:
        raise RuntimeError(f"{len(tracker.pending)} file(s) were decoded but not inferred")


@dataclass
class _PendingFile:
    decoded: DecodedFile
    points: list[torch.Tensor | None] = field(default_factory=list)
    confidence: list[torch.Tensor | None] = field(default_factory=list)
    remaining: int = 0


class _FileTracker:
    """Collects each file's per-frame predictions and commits the file when its last frame is done."""

    def __init__(
        self,
        writer: PartWriter,
        model: LandmarkModel,
        output_dir: Path,
        write_sr: bool,
        write_overlays: bool,
        summary: InferenceSummary,
    ) -> None:
        self.writer = writer
        self.model = model
        self.output_dir = output_dir
        self.sr_dir = output_dir / "sr" if write_sr else None
        self.overlay_dir = output_dir / "overlays" if write_overlays else None
        self.summary = summary
        self.pending: dict[int, _PendingFile] = {}
        self._next_id = 0
        # SR file name -> source path, to give a second file with the same SOPInstanceUID its own SR
        self._sr_names = {e["sr"]: e["path"] for e in writer.done.values() if sr_written(e)}

    def start(self, outcome: Outcome) -> tuple[int, np.ndarray] | None:
        """Register a decoded file and return ``(file id, its frames)``; a failure is committed, ``None``."""
        if isinstance(outcome, DecodeFailure) and outcome.skipped:
            logger.info("%s: skipped: %s", outcome.path, outcome.reason)
            self.writer.write_skip(outcome.path, outcome.reason)
            self.summary.skipped_by_policy += 1
            return None
        if isinstance(outcome, DecodeFailure):
            self._fail(outcome.path, outcome.reason, outcome.error)
            return None
        if outcome.num_frames == 0:
            self._fail(outcome.path, "the decoder returned no frames", "NoFrames")
            return None
        file_id, self._next_id = self._next_id, self._next_id + 1
        count = outcome.num_frames
        self.pending[file_id] = _PendingFile(outcome, [None] * count, [None] * count, count)
        return file_id, outcome.images

    def add(self, file_ids: list[int], frames: list[int], points: torch.Tensor, confidence: torch.Tensor) -> None:
        """Store a batch's predictions (``points (B, L, K, 2)`` in the network grid, ``confidence (B, L, K)``)."""
        for row, (file_id, frame) in enumerate(zip(file_ids, frames, strict=True)):
            pending = self.pending[file_id]
            pending.points[frame], pending.confidence[frame] = points[row], confidence[row]
            pending.remaining -= 1
            if pending.remaining == 0:
                self._finish(self.pending.pop(file_id))

    def _finish(self, pending: _PendingFile) -> None:
        """Commit a file's records, then try its SR and overlays (their failures cost only themselves)."""
        decoded, info = pending.decoded, self.model.info
        points = network_to_original(torch.stack(pending.points), info.input_size, decoded.original_size)
        records = file_records(
            decoded,
            points,
            torch.stack(pending.confidence),
            info.landmark_names,
            self.model.model_id,
            info.confidence_threshold,
        )
        self.writer.write_records(decoded.path, decoded.num_frames, records)
        self.summary.succeeded += 1
        self.summary.frames += decoded.num_frames
        self.summary.records += len(records)
        if self.sr_dir is not None:
            self.write_sr(decoded.path, decoded.header, records)
        if self.overlay_dir is not None:
            try:
                write_overlays(self.overlay_dir, decoded.display, records, info.landmark_names, decoded.output_name)
            except Exception as err:  # a full disk, ...
                logger.warning("%s: cannot write the overlays: %s: %s", decoded.path, type(err).__name__, err)
                reason = f"error: {type(err).__name__}: {err}"
                self.writer.write_stage(decoded.path, "overlays", reason, type(err).__name__)
                self.summary.overlays_failed += 1
            else:
                self.writer.write_stage(decoded.path, "overlays", "ok")

    def write_sr(self, path: str, header: Any, records: list[dict[str, Any]]) -> bool:
        """Write the SR of ``path`` from its header and records and commit the outcome; ``True`` if written."""
        assert self.sr_dir is not None
        try:
            if header is None:
                raise ValueError("the source header was not kept")
            name = self._sr_name(path, str(header.get("SOPInstanceUID", "")))
            written = write_structured_report(
                self.sr_dir, header, records, self.model.info.landmark_names, self.model.sha256, file_name=name
            )
        except Exception as err:  # a source the SR cannot reference, a full disk, ...
            self.sr_failed(path, f"{type(err).__name__}: {err}", err)
            return False
        value = written.relative_to(self.output_dir).as_posix()
        self._sr_names[value] = path
        self.writer.write_stage(path, "sr", value)
        return True

    def sr_failed(self, path: str, reason: str, err: BaseException) -> None:
        """Commit an SR failure of a file whose records are kept."""
        logger.warning("%s: records kept, but no SR: %s", path, reason)
        self.writer.write_stage(path, "sr", f"error: {reason}", type(err).__name__)
        self.summary.sr_failed += 1

    def _sr_name(self, path: str, sop_instance_uid: str) -> str:
        """``{SOPInstanceUID}.sr.dcm``, or with 8 hex digits of the path's SHA-1 when another file of this
        part already has that name (files that share a SOPInstanceUID keep one SR each)."""
        name = sr_file_name(sop_instance_uid)
        owner = self._sr_names.get(f"sr/{name}")
        if owner is None or owner == path:
            return name
        return f"{safe_name(sop_instance_uid)}_{hashlib.sha1(path.encode()).hexdigest()[:8]}.sr.dcm"

    def _fail(self, path: str, reason: str, error: str) -> None:
        logger.warning("%s: %s", path, reason)
        self.writer.write_error(path, reason, error)
        self.summary.failed += 1


class _FrameStream(IterableDataset):
    """The frames of the decoded files, one ``(image (1, *input_size), file id, frame index)`` at a time."""

    def __init__(self, outcomes: Iterator[Outcome], tracker: _FileTracker) -> None:
        self.outcomes = outcomes
        self.tracker = tracker

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int]]:
        for outcome in self.outcomes:
            started = self.tracker.start(outcome)
            if started is None:
                continue
            file_id, images = started
            for frame in range(images.shape[0]):
                yield torch.from_numpy(images[frame]), file_id, frame


def sr_written(entry: dict[str, Any]) -> bool:
    """Whether a manifest entry says its file's SR was committed (``"sr": "sr/..."``)."""
    return str(entry.get("sr", "")).startswith("sr/")


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The complete record lines of a part's records file (a torn last line is skipped)."""
    if not path.exists():
        return
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            yield json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue


FileTracker = _FileTracker
"""Public name of the per-file collector that commits records (and the SR), reused by :mod:`monai_adaloss.serve`."""
