"""The ``monai-adaloss infer`` sub-command: argument parsing and exit codes around :class:`InferenceRunner`."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Any

from .errors import ExitCode, InferenceConfigError

__all__ = ["add_infer_command", "run_infer_command"]

_EPILOG = """\
exit codes:
  0    every input file has its records (and SR / overlays when asked for); files skipped by
       --modalities do not count
  1    the run completed and some input files failed (reasons in OUTPUT_DIR/errors.jsonl)
  2    usage or configuration error; nothing was run
  3    the run stopped on an unexpected error; rerun with --resume
  4    every file has its records, but some SRs or overlays failed (records are kept; the summary
       says `sr: "error: ..."`; rerun with --resume --sr to retry the missing SRs)
  130  interrupted (Ctrl-C); rerun with --resume

sharded over processes or nodes (each rank writes OUTPUT_DIR/part-RANK, rank 0 merges):
  torchrun --nproc-per-node 4 --no-python monai-adaloss infer ... (same arguments)
"""


def add_infer_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``infer`` to the ``monai-adaloss`` sub-commands; it sets ``func`` to :func:`run_infer_command`."""
    parser = subparsers.add_parser(
        "infer",
        help="run a trained landmark model over DICOM files or PNG/JPEG frames",
        description=(
            "Run a trained landmark model over DICOM files (every frame) or PNG/JPEG frames, as the checkpoint's "
            "preprocessing reader says; write records (JSON Lines, CSV), a JSON summary, an errors file, and "
            "optionally DICOM SRs (DICOM inputs only) and overlay PNGs."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="input files and folders (searched recursively)")
    parser.add_argument(
        "--list",
        dest="list_files",
        action="append",
        default=[],
        metavar="FILE",
        help="text file with one input path per line (repeatable)",
    )
    parser.add_argument("--checkpoint", "-c", help="checkpoint with model weights and model info (models/model.pt)")
    parser.add_argument("--output-dir", "-o", help="output folder")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per network call (default 16)")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=2,
        help="decoding worker processes; 0 decodes in the main process without crash containment",
    )
    parser.add_argument("--device", help="torch device (default: cuda:LOCAL_RANK when available, else cpu)")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="no float16 autocast on CUDA")
    parser.add_argument("--resume", action="store_true", help="skip files finished by an earlier run of this output")
    parser.add_argument(
        "--sr", dest="write_sr", action="store_true", help="write a DICOM SR (TID 1500) per DICOM image"
    )
    parser.add_argument("--overlays", dest="write_overlays", action="store_true", help="write a PNG per frame")
    parser.add_argument(
        "--modalities",
        metavar="LIST",
        help="comma-separated DICOM Modality values to infer, e.g. XA,RF,CR,DX; other files are skipped and "
        "counted apart from failures (default: every image)",
    )
    parser.add_argument(
        "--decode-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="seconds one file may take to decode before it fails (default 300)",
    )
    parser.add_argument(
        "--tta",
        choices=("shifts", "shifts-flips"),
        help="test-time augmentation (single-instance models): 4-px shifts, optionally both flips (only for models "
        "trained with flips); the copies' points are mapped back and combined",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no per-file warnings")
    parser.add_argument(
        "--merge",
        metavar="OUTPUT_DIR",
        help="only merge the part-* folders of a sharded run in OUTPUT_DIR into the final outputs",
    )
    parser.set_defaults(func=run_infer_command)
    return parser


def run_infer_command(args: argparse.Namespace) -> int:
    """Run ``infer`` from parsed arguments, print the summary line, and return the exit code."""
    from .inputs import InputFiles  # imported here: `monai-adaloss --help` must not import torch
    from .outputs import merge_outputs
    from .runner import InferenceRunner

    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(levelname)s %(message)s")
    # pydicom logs every failed decoder plugin with a traceback; the file's reason is in errors.jsonl already
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    try:
        if args.merge:
            summary = merge_outputs(args.merge)
            counts = summary["counts"]
            print(
                f"monai-adaloss infer --merge: {counts['files']} files, {counts['succeeded']} succeeded, "
                f"{counts['failed']} failed, {counts['skipped']} skipped, {counts['records']} records, "
                f"{counts['sr_failed']} SR failures; complete: {summary['complete']}"
            )
            if counts["failed"]:
                return int(ExitCode.FILES_FAILED)
            return int(ExitCode.OUTPUTS_FAILED if counts["sr_failed"] or counts["overlays_failed"] else ExitCode.OK)
        if not args.checkpoint or not args.output_dir or not (args.inputs or args.list_files):
            raise InferenceConfigError("infer needs INPUT (or --list), --checkpoint and --output-dir.")
        runner = InferenceRunner(
            checkpoint=args.checkpoint,
            inputs=InputFiles(args.inputs, args.list_files),
            output_dir=args.output_dir,
            device=args.device,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            amp=args.amp,
            resume=args.resume,
            write_sr=args.write_sr,
            write_overlays=args.write_overlays,
            progress=False if args.quiet else None,
            decode_timeout=args.decode_timeout,
            modalities=None if args.modalities is None else args.modalities.split(","),
            tta=None if args.tta is None else _test_time_augmentation(args.tta),
        )
        summary = runner.run()
    except InferenceConfigError as err:
        print(f"monai-adaloss infer: error: {err}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        print("monai-adaloss infer: interrupted; finished files are kept, rerun with --resume", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception:
        traceback.print_exc()
        print("monai-adaloss infer: aborted; finished files are kept, rerun with --resume", file=sys.stderr)
        return int(ExitCode.ABORTED)
    print(summary.line())
    return int(summary.exit_code)


def _test_time_augmentation(kind: str) -> Any:
    """The ``--tta`` option as a :class:`~monai_adaloss.tta.TestTimeAugmentation` (imported here: it needs torch)."""
    from ..tta import TestTimeAugmentation

    return TestTimeAugmentation(flip_axes=(0, 1) if kind == "shifts-flips" else ())
