"""The ``synth`` and ``demo`` sub-commands' arguments; the heavy modules are imported when a command runs."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .demo_profiles import (
    BUNDLE_NAME,
    DATASET_SPLITS,
    DEFAULT_DATASET_DIR,
    LR_SCHEDULES,
    NETWORKS,
    PROFILES,
    DemoProfile,
    profile_with_overrides,
)

__all__ = ["add_demo_command", "add_synth_command"]


def add_synth_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``synth`` to the ``monai-adaloss`` sub-commands."""
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic fluoroscopy DICOM dataset with a datalist",
        description=(
            "Write synthetic X-ray fluoroscopy DICOM files (one catheter tip per frame) and datalist.json "
            f"(training / validation / test). The default output is the `dataset_dir` of the {BUNDLE_NAME} "
            "bundle when it is run from this folder."
        ),
    )
    parser.add_argument("--output-dir", "-o", default=DEFAULT_DATASET_DIR, help=f"default {DEFAULT_DATASET_DIR}")
    parser.add_argument("--n-train", type=int, default=300, help="training frames (default 300)")
    parser.add_argument("--n-val", type=int, default=60, help="validation frames (default 60)")
    parser.add_argument("--n-test", type=int, default=60, help="test frames (default 60)")
    parser.add_argument("--size", type=int, default=256, help="frame rows and columns (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same files (default 0)")
    parser.add_argument(
        "--multiframe-splits",
        nargs="*",
        choices=DATASET_SPLITS,
        default=list(DATASET_SPLITS),
        metavar="SPLIT",
        help="splits that may hold multi-frame cine files (default: all three); the others hold single-frame files "
        "only, one scene per frame; a listed split's files do not depend on the others",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_synth_command)
    return parser


def _run_synth_command(args: argparse.Namespace) -> int:
    from .demo import make_synthetic_dataset

    path = make_synthetic_dataset(
        args.output_dir,
        args.n_train,
        args.n_val,
        args.n_test,
        args.size,
        args.seed,
        progress=not args.quiet,
        multiframe_splits=tuple(args.multiframe_splits),
    )
    print(f"monai-adaloss synth: {args.n_train}/{args.n_val}/{args.n_test} frames, datalist {path}")
    return 0


def add_demo_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``demo`` to the ``monai-adaloss`` sub-commands."""
    parser = subparsers.add_parser(
        "demo",
        help="synthetic data -> train the catheter bundle on the CPU -> infer on the test DICOMs -> report",
        description=(
            f"Generate synthetic fluoroscopy DICOMs, train the {BUNDLE_NAME} bundle (configs/train.json with a "
            "CPU-sized profile), infer on the test DICOMs, and report tip errors against guessing the image centre. "
            "Exits 1 when the model is not better than the centre guess; --tiny is a smoke test of every step "
            "(exit 0 when all ran). Progress bars only on a terminal; otherwise one line per epoch."
        ),
    )
    parser.add_argument("--output-dir", "-o", default="runs/demo", help="default runs/demo")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="sizes (default cpu)")
    parser.add_argument("--tiny", dest="profile", action="store_const", const="tiny", help="same as --profile tiny")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs")
    parser.add_argument("--n-train", type=int, help="override the profile's training frames")
    parser.add_argument("--input-size", type=int, help="override the profile's network input size")
    parser.add_argument("--batch-size", type=int, help="override the profile's training batch size")
    parser.add_argument(
        "--heatmap-output",
        choices=("heatmap", "log_probability"),
        help="override the profile's network output and loss: linear heatmaps with a squared error (the paper's) "
        "or spatial log-softmax with cross-entropy",
    )
    parser.add_argument(
        "--network",
        choices=NETWORKS,
        help="override the profile's network (the paper's three-level U-Net, the five-level one with CoordConv, or "
        "the U-Net with a ResNet-10 encoder)",
    )
    parser.add_argument(
        "--channels", type=int, nargs="+", metavar="C", help="override the profile's feature channels per level"
    )
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="override the profile's learning-rate schedule")
    parser.add_argument(
        "--multiframe-splits",
        nargs="*",
        choices=DATASET_SPLITS,
        metavar="SPLIT",
        help="override the profile's splits that may hold multi-frame files (training, validation, test); the "
        "others hold single-frame files only (one scene per frame); the listed splits' files are unchanged",
    )
    parser.add_argument(
        "--device-overlay",
        type=float,
        metavar="P",
        help="override the profile's chance that a training frame gets a random layer of synthetic devices "
        "(distractors) multiplied onto it",
    )
    parser.add_argument(
        "--ema-momentum",
        type=float,
        metavar="M",
        help="override the profile's momentum of the moving average of the weights that is validated and saved "
        "(0 <= M < 1; 0: off, the raw weights)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data and training seed (default 0)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: at most 2)")
    parser.add_argument(
        "--tta", action="store_true", help="test-time augmentation at inference (4-px shifts and flips, combined)"
    )
    parser.add_argument(
        "--schedule",
        help="train with monai_adaloss.schedules.make_schedule(NAME) instead of the bundle's default AdalossSchedule "
        "(paper, bounded, relative_restart, spread, fixed, linear, geometric, learned; learned also uses "
        "mean-normalised targets)",
    )
    parser.add_argument(
        "--schedule-arg",
        type=_key_value,
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="keyword arguments of the schedule (--schedule's, else the profile's), numbers as numbers "
        "(e.g. sigma=3 for fixed)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run_demo_command)
    return parser


def _key_value(text: str) -> tuple[str, float | str]:
    """``key=value`` -> ``(key, value)``, the value a float when it parses as one."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, float(value)
    except ValueError:
        return key, value


def _profile_from_args(args: argparse.Namespace) -> DemoProfile:
    """The chosen profile with the command line's overrides.

    Raises:
        ValueError: an override out of range (e.g. ``--device-overlay 2``).
    """
    return profile_with_overrides(
        args.profile,
        epochs=args.epochs,
        n_train=args.n_train,
        input_size=args.input_size,
        batch_size=args.batch_size,
        heatmap_output=args.heatmap_output,
        network=args.network,
        channels=args.channels,
        lr_schedule=args.lr_schedule,
        multiframe_splits=args.multiframe_splits,
        device_overlay_prob=args.device_overlay,
        ema_momentum=args.ema_momentum,
    )


def _run_demo_command(args: argparse.Namespace) -> int:
    import torch

    from .demo import run_demo
    from .schedules import SCHEDULE_NAMES

    if args.schedule is not None and args.schedule not in SCHEDULE_NAMES:
        print(f"monai-adaloss demo: unknown --schedule {args.schedule!r}; use one of {', '.join(SCHEDULE_NAMES)}")
        return 2
    if args.schedule_arg and args.schedule is None and PROFILES[args.profile].schedule is None:
        print("monai-adaloss demo: --schedule-arg needs --schedule (the profile has no schedule of its own)")
        return 2

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    try:
        profile = _profile_from_args(args)
    except ValueError as err:
        print(f"monai-adaloss demo: {err}")
        return 2
    try:
        report = run_demo(
            args.output_dir,
            profile,
            seed=args.seed,
            progress=not args.quiet and sys.stderr.isatty(),
            tta=args.tta,
            schedule=args.schedule,
            schedule_args=dict(args.schedule_arg),
        )
    except FileExistsError as err:
        print(f"monai-adaloss demo: {err}")
        return 2
    print(report.table())
    print("outputs: " + ", ".join(f"{k} {v}" for k, v in report.outputs.items()))
    return 0 if report.succeeded else 1
