"""The ``monai-adaloss export`` sub-command: ``model.pt`` -> ``model.onnx`` and/or ``model.ts`` with the model info."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_export_command", "run_export_command"]


def add_export_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export`` to the ``monai-adaloss`` sub-commands."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained model (model.pt) to ONNX and/or TorchScript, with its model info",
        description=(
            "Export models/model.pt to ONNX (opset 18, dynamic batch; needs the `onnx` extra) and/or TorchScript. "
            "Both carry the model info, so `monai-adaloss infer --checkpoint model.onnx|model.ts` needs nothing else. "
            "For a bundle's model.ts with MONAI's metadata use `python -m monai.bundle ckpt_export` (bundle README)."
        ),
    )
    parser.add_argument("--checkpoint", "-c", required=True, help="the model.pt (weights + model info)")
    parser.add_argument("--onnx", metavar="FILE", help="write the ONNX model here")
    parser.add_argument("--torchscript", metavar="FILE", help="write the TorchScript model here")
    parser.set_defaults(func=run_export_command)
    return parser


def run_export_command(args: argparse.Namespace) -> int:
    """Run ``export``; exit code 0 on success, 2 on a usage or model error."""
    from .export import export_onnx, export_torchscript, input_channels
    from .inference.errors import InferenceConfigError
    from .inference.model import load_checkpoint

    if not args.onnx and not args.torchscript:
        print("monai-adaloss export: error: give --onnx FILE and/or --torchscript FILE", file=sys.stderr)
        return 2
    try:
        model = load_checkpoint(args.checkpoint)
    except InferenceConfigError as err:
        print(f"monai-adaloss export: error: {err}", file=sys.stderr)
        return 2
    info = model.info.state_dict()
    if args.torchscript:
        print(f"wrote {export_torchscript(model.network, args.torchscript, info)}")
    if args.onnx:
        try:
            path = export_onnx(model.network, args.onnx, info, input_channels(model.network))
        except ImportError as err:
            print(f"monai-adaloss export: error: ONNX export needs pip install 'monai_adaloss[onnx]' ({err})",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(f"wrote {path}")
    return 0
