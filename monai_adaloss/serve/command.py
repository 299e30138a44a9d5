"""The ``monai-adaloss serve`` sub-command: argument parsing, TLS, signals, around :class:`~.node.DicomNode`."""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
import traceback
from typing import TYPE_CHECKING

from ..inference.errors import ExitCode, InferenceConfigError

if TYPE_CHECKING:  # the node, the policy and the senders import pydicom / pynetdicom / torch: only when it runs
    from .node import DicomNode, NodeConfig

__all__ = ["add_serve_command", "run_serve_command"]

_EPILOG = """\
spool folder (kept across restarts; see docs/dicom_node.md):
  queue/ received instances not yet inferred   sr/ SRs not yet sent   records.jsonl, errors.jsonl
  status.json (or --status FILE): queue length, counts, last error

exit codes:
  0    stopped by SIGTERM / SIGINT (queued instances and unsent SRs stay in the spool)
  2    usage or configuration error (bad checkpoint, port in use, ...); nothing was started
  3    stopped on an unexpected error (details in the log); restart continues from the spool
"""


def add_serve_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``monai-adaloss`` sub-commands; it sets ``func`` to :func:`run_serve_command`."""
    parser = subparsers.add_parser(
        "serve",
        help="run a DICOM node: receive images (C-STORE), infer, send one SR per image to a PACS",
        description=(
            "A DICOM Storage SCP that spools every received image durably before acknowledging it, runs a trained "
            "landmark model on it (the same code as `infer`), and sends one DICOM SR per image to a destination by "
            "C-STORE (--destination) or STOW-RS (--dicomweb), retrying failed sends."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", "-c", required=True, help="checkpoint (models/model.pt of a bundle)")
    parser.add_argument("--ae-title", default="ADALOSS", help="this node's AE title (default ADALOSS)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: loopback only)")
    parser.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    parser.add_argument("--spool", required=True, help="spool folder (durable queue, records, status)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--destination", metavar="AET@HOST:PORT", help="send SRs by C-STORE to this Storage SCP")
    target.add_argument("--dicomweb", metavar="URL", help="send SRs by STOW-RS to this DICOMweb service root")
    parser.add_argument(
        "--allowed-aet", nargs="+", action="extend", default=[], metavar="AET",
        help="accept associations from these calling AE titles only (default: any)",
    )  # fmt: skip
    parser.add_argument("--modalities", help="infer only these modalities, e.g. XA,RF,CR,DX (default: any)")
    parser.add_argument(
        "--batch-window", type=float, default=2.0, metavar="SECONDS",
        help="wait this long after an image arrives for more to batch with it (default 2)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="frames per network call (default 16)")
    parser.add_argument("--num-workers", type=int, default=2, help="decoding worker processes (default 2)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--decode-timeout", type=float, default=300.0, metavar="SECONDS", help="per image")
    parser.add_argument("--max-instance-mb", type=float, default=256.0, help="largest instance accepted (MiB)")
    parser.add_argument("--max-spool-gb", type=float, default=10.0, help="limit on queued instances (GiB)")
    parser.add_argument("--retry-initial", type=float, default=1.0, metavar="SECONDS", help="first retry delay")
    parser.add_argument("--retry-max", type=float, default=300.0, metavar="SECONDS", help="longest retry delay")
    parser.add_argument("--status", metavar="FILE", help="status file (default SPOOL/status.json)")
    parser.add_argument("--tls-cert", help="PEM certificate: serve (and send by C-STORE) over TLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-ca", help="PEM CA bundle: require and verify client certificates, verify the destination"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="warnings and errors only (no per-image lines)")
    parser.set_defaults(func=run_serve_command)
    return parser


def tls_contexts(
    cert: str | None, key: str | None, ca: str | None
) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """``(server context, client context)`` for ``--tls-cert/--tls-key[/--tls-ca]``; ``(None, None)`` without TLS.

    Raises:
        InferenceConfigError: only one of cert and key is given, or a file cannot be loaded.
    """
    if not cert and not key:
        if ca:
            raise InferenceConfigError("--tls-ca needs --tls-cert and --tls-key.")
        return None, None
    if not (cert and key):
        raise InferenceConfigError("TLS needs both --tls-cert and --tls-key.")
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
        server.load_cert_chain(cert, key)
        server.verify_mode = ssl.CERT_REQUIRED if ca else ssl.CERT_NONE
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        client.load_cert_chain(cert, key)
        if not ca:
            client.check_hostname = False
            client.verify_mode = ssl.CERT_NONE
    except (OSError, ssl.SSLError) as err:
        raise InferenceConfigError(f"Cannot load the TLS certificate/key/CA: {err}") from err
    return server, client


def build_config(args: argparse.Namespace) -> NodeConfig:
    """A :class:`NodeConfig` from parsed arguments.

    Raises:
        InferenceConfigError: a value is out of range or malformed.
    """
    from .node import NodeConfig
    from .policy import parse_modalities
    from .sender import StowDestination, parse_destination

    if not 0 < args.port < 65536:
        raise InferenceConfigError(f"--port must be 1..65535, got {args.port}.")
    if not 0 < len(args.ae_title.strip()) <= 16:
        raise InferenceConfigError(f"--ae-title must have 1..16 characters, got {args.ae_title!r}.")
    for name in ("batch_window", "retry_initial", "retry_max", "max_instance_mb", "max_spool_gb"):
        value = getattr(args, name)
        if value < 0 or (name != "batch_window" and value == 0):
            raise InferenceConfigError(f"--{name.replace('_', '-')} must be positive, got {value}.")
    if args.batch_size < 1 or args.num_workers < 0:
        raise InferenceConfigError("--batch-size must be >= 1 and --num-workers >= 0.")
    server_tls, client_tls = tls_contexts(args.tls_cert, args.tls_key, args.tls_ca)
    if args.dicomweb:
        destination = StowDestination(args.dicomweb)
    else:
        try:
            destination = parse_destination(args.destination, args.ae_title, client_tls)
        except ValueError as err:
            raise InferenceConfigError(str(err)) from err
    return NodeConfig(
        checkpoint=args.checkpoint, spool=args.spool, destination=destination, ae_title=args.ae_title.strip(),
        host=args.host, port=args.port, allowed_aets=args.allowed_aet, modalities=parse_modalities(args.modalities),
        batch_window=args.batch_window, batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
        decode_timeout=args.decode_timeout, max_instance_bytes=int(args.max_instance_mb * 2**20),
        max_spool_bytes=int(args.max_spool_gb * 2**30), retry_initial_s=args.retry_initial,
        retry_max_s=args.retry_max, status_path=args.status, ssl_context=server_tls,
    )  # fmt: skip


def run_serve_command(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM / SIGINT; return the exit code."""
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("pynetdicom", "highdicom"):  # their INFO lines are per message / per attribute module
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from .node import DicomNode

    stop = threading.Event()
    node: DicomNode | None = None
    try:
        node = DicomNode(build_config(args))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
        node.start()
        node.wait(stop)
    except InferenceConfigError as err:
        print(f"monai-adaloss serve: error: {err}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except OSError as err:
        print(f"monai-adaloss serve: error: cannot listen or use the spool: {err}", file=sys.stderr)
        if node is not None:
            node.stop()
        return int(ExitCode.USAGE)
    except Exception:
        traceback.print_exc()
        if node is not None:
            node.stop()
        return int(ExitCode.ABORTED)
    return int(ExitCode.ABORTED) if node.failed() is not None else int(ExitCode.OK)
