"""The ``monai-adaloss`` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import __version__
from .demo_command import add_demo_command, add_synth_command
from .export_command import add_export_command
from .inference.command import add_infer_command
from .serve.command import add_serve_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="monai-adaloss",
        description=(
            "Adaloss heatmap landmark detection on MONAI. Sub-commands: synth (synthetic fluoroscopy DICOMs), "
            "infer (batch inference from model.pt / model.ts / model.onnx), export (ONNX / TorchScript), "
            "demo (synthetic data -> train -> infer -> report). Training and evaluation run the bundles with "
            "`python -m monai.bundle run` (see each bundle's README)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_synth_command(subparsers)
    add_infer_command(subparsers)
    add_serve_command(subparsers)
    add_export_command(subparsers)
    add_demo_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args))
