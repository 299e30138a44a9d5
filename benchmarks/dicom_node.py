"""Throughput, latency and delivery of ``monai-adaloss serve`` into a real Orthanc, against ``infer``.

Writes ``--frames`` single-frame 512 x 512 XA files, saves a randomly initialised catheter U-Net
checkpoint (``--size`` input grid; weights do not change the speed), starts Orthanc (tests/orthanc_support:
own config, loopback, temporary storage) and then, in the same run:

1. ``infer``: ``InferenceRunner(write_sr=True)`` over the files (the code of ``monai-adaloss infer --sr``;
   timed around ``run()``, checkpoint loading included), frames/s;
2. the node: ``monai-adaloss serve`` (already listening) receives the files from ``--senders`` concurrent
   dcmtk ``storescu`` processes and sends each SR to Orthanc by C-STORE. Frames/s = frames / (first
   storescu start -> last SR stored in Orthanc). Latency per image = the node's "sent SR" log time (Orthanc's
   C-STORE success response: the SR is stored) - its "received" log time (the moment it answered the
   image's C-STORE), both from the node's log clock (ms);
3. delivery, through Orthanc's REST API: every SR instance's evidence (``/instances/{id}/simplified-tags``)
   names its source; lost = images without an SR, duplicates = SRs beyond one per image.

With ``--paced S`` the images go one at a time, ``S`` seconds apart: the latency of a node that is not
saturated (frames/s then measures the pace). Run: ``flock /tmp/cpu-heavy.lock python benchmarks/dicom_node.py
--frames 300`` and ``... --frames 30 --paced 2`` (needs ``orthanc`` and ``dcmtk``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage, generate_uid

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import orthanc_support as osup
from infer_throughput import save_checkpoint  # this folder is sys.path[0] when the script runs

from monai_adaloss.inference import InferenceRunner

_LOG_LINE = re.compile(
    r"^(\S+ \S+) INFO monai_adaloss\.serve\.(?:scp|sender): (received|sent SR) (\S+)(?: \(source (\S+)\))?"
)


def write_files(folder: Path, count: int, size: int = 512) -> list[Path]:
    """``count`` single-frame 12-bit XA files of ``size`` x ``size`` with a bright spot."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for index in range(count):
        pixels = rng.integers(200, 1200, size=(size, size), dtype=np.uint16)
        row, col = rng.integers(20, size - 20, size=2)
        pixels[row - 3 : row + 4, col - 3 : col + 4] = 4000
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = XRayAngiographicImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName, ds.Modality = "BENCH", "Bench^Mark", "XA"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelSpacing = [0.3, 0.3]
        ds.PixelData = pixels.tobytes()
        path = folder / f"im{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def log_times(log: str) -> tuple[dict[str, float], dict[str, float]]:
    """Node log -> (source SOP UID -> received time, source SOP UID -> SR sent time), epoch seconds."""
    received, sent = {}, {}
    for line in log.splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            continue
        stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if match[2] == "received":
            received.setdefault(match[3], stamp)
        else:
            sent.setdefault(match[4], stamp)
    return received, sent


def sr_sources(orthanc: osup.OrthancServer) -> Counter:
    """Source SOP UID -> number of SR instances in Orthanc that reference it (SR evidence)."""
    counts: Counter = Counter()
    for instance in orthanc.sr_instances():
        tags = orthanc.get(f"/instances/{instance['ID']}/simplified-tags")
        evidence = tags["CurrentRequestedProcedureEvidenceSequence"][0]["ReferencedSeriesSequence"][0]
        counts[evidence["ReferencedSOPSequence"][0]["ReferencedSOPInstanceUID"]] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="network input grid (default 256)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batch-window", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--paced", type=float, metavar="SECONDS",
        help="send one image at a time, this many seconds apart (latency of an idle node; frames/s then "
        "measures the pace, not the node)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tools = {"Orthanc": osup.find_orthanc(), "storescu": osup.find_dcmtk("storescu")}
    if None in tools.values():
        sys.exit(f"needs Orthanc and dcmtk: {osup.INSTALL_HINT}")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="adaloss-node-bench-") as tmp_name:
        tmp = Path(tmp_name)
        files = write_files(tmp / "in", args.frames)
        checkpoint = save_checkpoint(tmp / "model.pt", args.size)
        orthanc = osup.OrthancServer(
            tmp / "orthanc", tools["Orthanc"], modalities={"node": ["ADALOSS", "127.0.0.1", 1]}
        )
        orthanc.start()
        node = None
        try:
            started = time.perf_counter()
            summary = InferenceRunner(checkpoint, files, tmp / "infer", batch_size=args.batch_size,
                                      num_workers=args.num_workers, write_sr=True, progress=False).run()  # fmt: skip
            infer_s = time.perf_counter() - started
            assert summary.failed == 0, summary.line()
            infer_fps = summary.frames / infer_s

            port = osup.free_port()
            log_path = tmp / "node.log"
            spool = tmp / "spool"
            code = "import sys; from monai_adaloss.cli import main; sys.exit(main(sys.argv[1:]))"
            command = [sys.executable, "-c", code, "serve", "--checkpoint", str(checkpoint), "--port", str(port),
                       "--spool", str(spool),
                       "--destination", orthanc.destination, "--batch-window", str(args.batch_window),
                       "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers)]  # fmt: skip
            with log_path.open("wb") as log:
                node = subprocess.Popen(command, stdout=log, stderr=log, env=env)
            while not (spool / "status.json").exists():
                if node.poll() is not None:
                    sys.exit(log_path.read_text())
                time.sleep(0.1)
            chunks = [files[k :: args.senders] for k in range(args.senders)]
            t0_epoch, t0 = time.time(), time.perf_counter()
            if args.paced is None:  # a burst: each sender one association with all its files
                senders = [subprocess.Popen([tools["storescu"], "-aec", "ADALOSS", "127.0.0.1", str(port),
                                             *map(str, chunk)]) for chunk in chunks]  # fmt: skip
                codes = [s.wait() for s in senders]
            else:  # paced: one image every `paced` seconds (round-robin over the senders' AE connections)
                codes = []
                for path in files:
                    codes.append(subprocess.run([tools["storescu"], "-aec", "ADALOSS", "127.0.0.1", str(port),
                                                 str(path)]).returncode)  # fmt: skip
                    time.sleep(args.paced)
                codes = sorted(set(codes))
            sent_s = time.perf_counter() - t0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                _, sent = log_times(log_path.read_text())
                if len(sent) >= len(files):
                    break
                time.sleep(0.2)
            time.sleep(2.0)  # let anything late (a duplicate) arrive
            received, sent = log_times(log_path.read_text())
            node_s = max(sent.values()) - t0_epoch
            node_fps = len(sent) / node_s
            latencies = sorted(sent[uid] - received[uid] for uid in sent if uid in received)
            counts = sr_sources(orthanc)
            sources = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
            lost = len(sources - set(counts))
            duplicates = sum(n - 1 for n in counts.values() if n > 1)
        finally:
            if node is not None and node.poll() is None:
                node.terminate()
                node.wait(60)
            orthanc.stop()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    print(f"frames: {args.frames} single-frame 512x512 XA files, network grid {args.size}, batch {args.batch_size}, "
          f"{args.num_workers} decode workers, {args.threads} torch threads, "
          f"batch window {args.batch_window} s")  # fmt: skip
    print(f"infer (InferenceRunner, --sr): {summary.frames} frames in {infer_s:.1f} s = {infer_fps:.2f} frames/s")
    how = f"{args.senders} storescu senders" if args.paced is None else f"1 storescu per image every {args.paced} s"
    print(f"node: {how} (exit codes {codes}) done in {sent_s:.1f} s; last SR stored "
          f"{node_s:.1f} s after the first send = {node_fps:.2f} frames/s")  # fmt: skip
    if args.paced is None:
        print(f"ratio node / infer: {node_fps / infer_fps:.2f}")
    else:
        print("ratio node / infer: not meaningful with --paced (the pace sets the node's frames/s)")
    print(f"latency last C-STORE of an image -> its SR stored in Orthanc: median {statistics.median(latencies):.2f} s, "
          f"p95 {p95:.2f} s (n={len(latencies)})")  # fmt: skip
    print(
        f"Orthanc: {sum(counts.values())} SR instances for {len(sources)} images; lost {lost}, duplicates {duplicates}"
    )


if __name__ == "__main__":
    main()
