"""``monai-adaloss serve`` against a real Orthanc: SRs arrive once per image with infer's coordinates,
durability across SIGKILL and PACS outages, refusals, real-world files, STOW-RS, and the pieces.

Orthanc (Debian ``orthanc``) and dcmtk's ``storescu``/``echoscu`` must be installed: under ``CI=true``
their absence fails the tests, elsewhere they are skipped (see :mod:`orthanc_support`). Every test
ends the processes it starts (Orthanc, the node, storescu).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import orthanc_support as osup
import pydicom
import pytest
import test_inference_support as support
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from pydicom.dataset import Dataset
from pydicom.uid import (
    BasicTextSRStorage,
    DigitalXRayImageStorageForPresentation,
    ImplicitVRLittleEndian,
    XRayRadiofluoroscopicImageStorage,
    generate_uid,
)

from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.inference import InferenceRunner
from monai_adaloss.serve import modality_refusal, parse_destination, parse_modalities
from monai_adaloss.serve.spool import RetryState, Spool

NODE_AET = "ADALOSS"
WAIT_S = 90.0


# --- helpers --------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], object], timeout: float = WAIT_S, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def xray_files(folder: Path, count: int, start: int = 0) -> list[Path]:
    """``count`` synthetic XA / RF files (alternating), every third a 3-frame cine; 40 x 48 pixels."""
    files = []
    for index in range(start, start + count):
        frames = 3 if index % 3 == 0 else 1
        markers = [(4 + (5 * index + 3 * k) % 32, 4 + (2 * index + 5 * k) % 40) for k in range(frames)]
        pixels = support.marker_frames((40, 48), markers, seed=index)
        for k, (row, col) in enumerate(markers):  # a 3 x 3 spot, so that it survives the resize to 32 x 32
            pixels[k, max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = 4000
        tags: dict = {"PixelSpacing": [0.3, 0.3]}
        if index % 2:
            tags.update(SOPClassUID=XRayRadiofluoroscopicImageStorage, Modality="RF")
        ds = support.make_dataset(pixels if frames > 1 else pixels[0], **tags)
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        files.append(support.write(folder / f"im{index:03d}.dcm", ds))
    return files


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)


def sr_source(sr: Dataset) -> str:
    """The SOP Instance UID of the SR's evidence (its source image)."""
    return str(sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
               .ReferencedSOPSequence[0].ReferencedSOPInstanceUID)  # fmt: skip


def sr_summary(sr: Dataset) -> list[tuple]:
    """Per measurement group, in order: ``(referenced SOP UID, referenced frames, finding, SCOORD or None)``.

    A found landmark is a SCOORD ``(column, row)`` on its source image; a landmark not found is an
    IMAGE reference with the finding "Absent" (``None`` here).
    """
    rows = []

    def image_row(image: Dataset, finding: str | None, scoord: list | None) -> tuple:
        frames = [int(f) for f in np.atleast_1d(image.get("ReferencedFrameNumber", []))]
        return (str(image.ReferencedSOPInstanceUID), frames, finding, scoord)

    def walk(items: object, finding: str | None) -> None:
        for item in items or []:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if item.ValueType == "CODE" and name == "Finding":
                finding = item.ConceptCodeSequence[0].CodeMeaning
            if item.ValueType == "SCOORD":
                data = [round(float(v), 3) for v in item.GraphicData]
                rows.append(image_row(item.ContentSequence[0].ReferencedSOPSequence[0], finding, data))
                continue
            if item.ValueType == "IMAGE":
                rows.append(image_row(item.ReferencedSOPSequence[0], finding, None))
            walk(item.get("ContentSequence"), finding)

    walk(sr.ContentSequence, None)
    return rows


def infer_srs(checkpoint: Path, files: list[Path], out: Path) -> dict[str, Dataset]:
    """``monai-adaloss infer --sr`` on ``files``: source SOP UID -> its SR."""
    summary = InferenceRunner(checkpoint, files, out, num_workers=1, batch_size=4, write_sr=True, progress=False).run()
    assert summary.failed == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert all(r["x"] is not None for r in records), "the test model found no landmark: nothing to compare"
    srs = [pydicom.dcmread(p) for p in sorted((out / "sr").iterdir())]
    return {sr_source(sr): sr for sr in srs}


def orthanc_srs(orthanc: osup.OrthancServer) -> dict[str, list[Dataset]]:
    """Source SOP UID -> the SRs in Orthanc that reference it (read back through the REST API)."""
    found: dict[str, list[Dataset]] = {}
    for instance in orthanc.sr_instances():
        sr = pydicom.dcmread(BytesIO(orthanc.instance_file(instance["ID"])))
        found.setdefault(sr_source(sr), []).append(sr)
    return found


class NodeProcess:
    """``monai-adaloss serve`` in a subprocess, logging to a file; :meth:`close` always ends it."""

    def __init__(self, tmp: Path, checkpoint: Path, target: list[str], *extra: str, name: str = "node") -> None:
        self.spool = tmp / "spool"
        self.port = osup.free_port()
        self.log_path = tmp / f"{name}.log"
        self.args = ["serve", "--checkpoint", str(checkpoint), "--ae-title", NODE_AET, "--port", str(self.port),
                     "--spool", str(self.spool), *target, "--batch-window", "0.3", "--num-workers", "1",
                     "--batch-size", "8", *extra]  # fmt: skip
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> NodeProcess:
        code = "import sys; from monai_adaloss.cli import main; sys.exit(main(sys.argv[1:]))"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-c", code, *self.args], stdout=log, stderr=log,
                                            env=support.subprocess_env())  # fmt: skip
        self.starts += 1
        pid = self.process.pid
        wait_for(lambda: self.process.poll() is not None or (self.status().get("pid") == pid
                 and self.status().get("state") == "running"), 120, "the node to listen")  # fmt: skip
        assert self.process.poll() is None, f"the node exited: {self.log()[-3000:]}"
        return self

    def status(self) -> dict:
        try:
            return json.loads((self.spool / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(90)
        self.process = None
        return code

    def kill(self) -> list[int]:
        """SIGKILL the node; return the pids of its decoding workers (they must exit on their own)."""
        assert self.process is not None
        workers = children(self.process.pid)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.process = None
        return workers

    def idle(self) -> bool:
        """Nothing queued, nothing to send (status file, rewritten every second)."""
        status = self.status()
        return bool(status) and status["queue"] == 0 and status["outbox"] == 0 and not any(self.spool.glob("queue/*"))

    def close(self) -> None:
        """End the node (SIGTERM, SIGKILL after 60 s) and make sure none of its worker processes is left."""
        if self.process is not None and self.process.poll() is None:
            workers = children(self.process.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
            for pid in wait_gone(workers, 10.0):
                os.kill(pid, signal.SIGKILL)
        self.process = None


def children(pid: int) -> list[int]:
    """The pids of the direct children of ``pid`` (Linux ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until ``pids`` have exited (or are zombies); return those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _running(pid)]
        time.sleep(0.1)
    return alive


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    return osup.require_tools()


def trained_checkpoint(path: Path, steps: int = 30) -> Path:
    """A 1-landmark HeatmapUNet (channels 4, 8; 32 x 32 grid) trained for ``steps`` Adam steps (seconds) to put
    its heatmap peak on the brightest pixel: points well inside the images, so coordinates are compared for real."""
    torch.manual_seed(0)
    config = {**support.TINY_UNET, "out_channels": 1}
    network = ConfigParser({"n": config}).get_parsed_content("n")
    optimizer = torch.optim.Adam(network.parameters(), 1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        images = torch.rand(8, 1, 32, 32, generator=generator) * 0.3
        points = torch.randint(2, 30, (8, 2), generator=generator).float()
        for row, (x, y) in enumerate(points.long().tolist()):
            images[row, 0, x, y] = 1.0
        loss = F.mse_loss(network(images), render_gaussian_heatmaps(points[:, None, None], 1.5, (32, 32)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = support.save_checkpoint(path, config, landmark_names=("tip",))
    state = torch.load(path, weights_only=True)
    torch.save({**state, "model": network.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture
def orthanc(tools, tmp_path) -> Iterator[osup.OrthancServer]:
    server = osup.OrthancServer(tmp_path / "orthanc", tools["Orthanc"], modalities={"node": [NODE_AET, "127.0.0.1", 1]})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.close()


def new_node(nodes: list, tmp: Path, checkpoint: Path, target: list[str], *extra: str) -> NodeProcess:
    node = NodeProcess(tmp, checkpoint, target, *extra)
    nodes.append(node)
    return node.start()


def assert_one_sr_each_like_infer(orthanc, files: list[Path], checkpoint: Path, out: Path) -> None:
    """Every file has exactly one SR in Orthanc, with the SR UID, references and SCOORDs infer writes."""
    in_orthanc = orthanc_srs(orthanc)
    expected = infer_srs(checkpoint, files, out)
    assert sorted(in_orthanc) == sorted(expected) == sorted(sop_uid(f) for f in files)
    assert len(orthanc.sr_instances()) == len(files)
    for source, srs in in_orthanc.items():
        assert len(srs) == 1, f"{source} has {len(srs)} SRs"
        assert srs[0].SOPInstanceUID == expected[source].SOPInstanceUID
        rows = sr_summary(srs[0])
        assert rows == sr_summary(expected[source]) and {row[0] for row in rows} == {source}
        assert all(row[3] is not None for row in rows)  # found points: SCOORDs compared


# --- against Orthanc ------------------------------------------------------------------------------


def test_each_image_gets_one_sr_in_orthanc_with_the_coordinates_infer_writes(
    tools, checkpoint, orthanc, nodes, tmp_path
):
    files = xray_files(tmp_path / "in", 5)  # XA and RF, two of them 3-frame cines
    node = new_node(nodes, tmp_path, checkpoint, ["--destination", orthanc.destination], "--allowed-aet", "STORESCU")
    echo = subprocess.run([tools["echoscu"], "-aet", "STORESCU", "-aec", NODE_AET, "127.0.0.1", str(node.port)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert echo.returncode == 0, echo.stderr
    sent = osup.storescu(tools["storescu"], node.port, files)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_for(lambda: len(orthanc.sr_instances()) >= len(files) and node.idle(), what="5 SRs in Orthanc")
    assert_one_sr_each_like_infer(orthanc, files, checkpoint, tmp_path / "infer")
    cine = next(sr for sr in orthanc_srs(orthanc)[sop_uid(files[0])])
    assert sorted({f for row in sr_summary(cine) for f in row[1]}) == [1, 2, 3]  # frame references of the cine
    # the SR lands in the source's study, and the records file of the spool has every frame and landmark
    source = pydicom.dcmread(files[1], stop_before_pixels=True)
    study = orthanc.find_instances({"StudyInstanceUID": source.StudyInstanceUID})
    assert len(study) == 1 and study[0]["MainDicomTags"]["SOPInstanceUID"] != source.SOPInstanceUID
    records = [json.loads(line) for line in (node.spool / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 + 1 + 1 + 3 + 1  # one landmark, every frame
    frames = {sop_uid(f): pydicom.dcmread(f).pixel_array.reshape(-1, 40, 48) for f in files}
    for record in records:  # the trained model finds each 3 x 3 spot: (x, y) = (column, row) of its centre
        pixels = frames[record["sop_instance_uid"]][record["frame"]]
        row, col = np.unravel_index(np.argmax(pixels), pixels.shape)  # the spot's top-left pixel
        assert abs(record["x"] - (col + 1)) < 2 and abs(record["y"] - (row + 1)) < 2, record
    log = node.log()
    for path in files:
        uid = sop_uid(path)
        assert f"received {uid}" in log and f"inferred {uid}" in log and f"(source {uid})" in log
    assert node.terminate() == 0
    assert node.status()["state"] == "stopped" and node.status()["sent"] == len(files)


def test_sigkill_mid_stream_then_restart_sends_every_sr_once(tools, checkpoint, orthanc, nodes, tmp_path):
    files = xray_files(tmp_path / "in", 16)
    # a long batch window keeps acknowledged instances queued, so the kill finds some in the spool
    node = new_node(nodes, tmp_path, checkpoint, ["--destination", orthanc.destination], "--batch-window", "2")
    sender = subprocess.Popen([tools["storescu"], "-aec", NODE_AET, "127.0.0.1", str(node.port), *map(str, files)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: len(list(node.spool.glob("queue/*.dcm"))) >= 4, what="4 queued instances")
        workers = node.kill()
    finally:
        sender.kill()
        sender.wait()
    assert workers and wait_gone(workers, 10.0) == [], "decoding workers outlived the killed node"
    queued_at_kill = [sop_uid(p) for p in node.spool.glob("queue/*.dcm")]
    assert queued_at_kill, "nothing was queued at the kill"
    node.start()
    wait_for(node.idle, what="the restarted node to drain its spool")
    assert "queued from before" in node.log()
    in_orthanc = orthanc_srs(orthanc)
    assert set(queued_at_kill) <= set(in_orthanc), "an acknowledged instance was lost"
    # the PACS resends everything its broken association did not finish: here, every file
    sent = osup.storescu(tools["storescu"], node.port, files)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_for(lambda: len(orthanc_srs(orthanc)) == len(files) and node.idle(), what="16 SRs")
    time.sleep(1.5)  # nothing more arrives
    counts = Counter(source for source, srs in orthanc_srs(orthanc).items() for _ in srs)
    assert sorted(counts) == sorted(sop_uid(f) for f in files) and set(counts.values()) == {1}
    assert len(orthanc.sr_instances()) == len(files)


def test_orthanc_down_while_sending_srs_arrive_after_it_returns_across_a_node_restart(
    tools, checkpoint, orthanc, nodes, tmp_path
):
    files = xray_files(tmp_path / "in", 3)
    node = new_node(nodes, tmp_path, checkpoint, ["--destination", orthanc.destination],
                    "--retry-initial", "0.2", "--retry-max", "0.5")  # fmt: skip
    orthanc.stop()
    assert osup.storescu(tools["storescu"], node.port, files).returncode == 0
    wait_for(lambda: node.status().get("send_failures", 0) >= 3 and node.status()["outbox"] == 3, what="failed sends")
    assert "send of" in node.log() and node.status()["last_error"]
    assert node.terminate() == 0  # SIGTERM: clean stop, the unsent SRs stay in the spool
    retry = json.loads((node.spool / "retry.json").read_text())
    assert len(retry) == 3 and all(entry["attempts"] >= 1 for entry in retry.values())
    node.start()
    orthanc.start()
    wait_for(lambda: len(orthanc.sr_instances()) == 3 and node.idle(), what="the SRs after the outage")
    assert_one_sr_each_like_infer(orthanc, files, checkpoint, tmp_path / "infer")
    assert json.loads((node.spool / "retry.json").read_text()) == {}


def test_dicom_node_doc_command_runs_as_written(tools, checkpoint, orthanc, tmp_path):
    """docs/dicom_node.md's ``serve`` command, as its text, with the reader's paths and ports swapped for a tiny
    model (``models/model.pt`` in the run folder), a temporary spool, a free port and this test's Orthanc."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "dicom_node.md"
    (code,) = [block for block in re.findall(r"^```bash\n(.*?)^```", doc.read_text(), flags=re.S | re.M)
               if "monai-adaloss serve" in block]  # fmt: skip
    port = osup.free_port()
    for old, new in {"11112": str(port), "/var/lib/adaloss": str(tmp_path / "spool"),
                     "ORTHANC@127.0.0.1:4242": orthanc.destination}.items():  # fmt: skip
        assert old in code, f"{doc}: `{old}` is gone; update the test"
        code = code.replace(old, new)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(checkpoint.read_bytes())
    env = {**support.subprocess_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    files = xray_files(tmp_path / "in", 2)
    status = tmp_path / "spool" / "status.json"
    with (tmp_path / "node.log").open("wb") as log:
        node = subprocess.Popen(["bash", "-c", f"exec {code}"], cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: node.poll() is not None or (status.exists() and '"running"' in status.read_text()), 120,
                 "the node to listen")  # fmt: skip
        assert node.poll() is None, (tmp_path / "node.log").read_text()[-3000:]
        refused = osup.storescu(tools["storescu"], port, files[:1], calling="STORESCU")  # not --allowed-aet
        assert refused.returncode != 0
        sent = osup.storescu(tools["storescu"], port, files, calling="ORTHANC")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_for(lambda: len(orthanc.sr_instances()) >= len(files), what="2 SRs in Orthanc")
        assert sorted(orthanc_srs(orthanc)) == sorted(sop_uid(f) for f in files)
        node.send_signal(signal.SIGTERM)
        assert node.wait(90) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(30)
    assert json.loads(status.read_text())["state"] == "stopped"


def test_refusals_get_the_right_status_a_log_line_and_nothing_spooled(tools, checkpoint, orthanc, nodes, tmp_path):
    node = new_node(nodes, tmp_path, checkpoint, ["--destination", orthanc.destination], "--allowed-aet", "STORESCU",
                    "--max-instance-mb", "0.05", "--modalities", "XA,RF")  # fmt: skip
    echo = subprocess.run([tools["echoscu"], "-v", "-aet", "INTRUDER", "-aec", NODE_AET, "127.0.0.1", str(node.port)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert echo.returncode != 0 and "Association Rejected" in echo.stdout + echo.stderr
    text_sr = support.make_dataset(np.zeros((4, 4)))
    del text_sr.PixelData
    text_sr.SOPClassUID = text_sr.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    text_sr.Modality = "SR"
    big = support.make_dataset(np.zeros((256, 256)))  # 128 KiB of pixels > 0.05 MiB
    dx = support.make_dataset(np.zeros((16, 16)), Modality="DX", SOPClassUID=DigitalXRayImageStorageForPresentation)
    dx.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    cases = {"sr": (text_sr, "0x0122"), "big": (big, "0xa700"), "dx": (dx, "0xc000")}  # storescu -d: "DIMSE Status"
    for name, (ds, status) in cases.items():
        path = support.write(tmp_path / "in" / f"{name}.dcm", ds)
        sent = osup.storescu(tools["storescu"], node.port, [path], extra=("-d",))
        assert status in (sent.stdout + sent.stderr).lower(), (name, sent.stdout + sent.stderr)
        assert (
            f"refused {ds.SOPInstanceUID}" in node.log() and f"status {status.upper().replace('X', 'x')}" in node.log()
        )
    assert "rejected association from INTRUDER" in node.log()
    wait_for(lambda: node.status().get("rejected") == 4, what="4 refusals counted")
    assert (
        node.status()["received"] == 0 and not list(node.spool.glob("queue/*")) and not list(node.spool.glob("tmp/*"))
    )


def test_files_infer_reads_the_node_reads_legacy_and_nonconformant(tools, checkpoint, orthanc, nodes, tmp_path):
    """What ``infer --sr`` makes of real-world files, the node makes of them too (same records, same SR, a
    failure only where infer fails); a legacy file without Part 10 meta, which storescu sends as a plain data
    set, arrives as a proper instance and is inferred."""
    legacy = support.make_dataset(support.marker_frames((32, 40), [(9, 30)])[0], PixelSpacing=[0.2, 0.2])
    legacy_path = tmp_path / "in" / "legacy.dcm"
    legacy_path.parent.mkdir(parents=True)
    legacy_path.write_bytes(_without_meta(legacy))  # a pre-Part-10 file: no preamble, no meta, implicit VR
    odd = support.make_dataset(support.marker_frames((30, 30), [(3, 25)])[0], Modality="xa ")
    for keyword in ("PatientName", "PatientID"):
        delattr(odd, keyword)  # Type 2 attributes missing, a lower-case CS value
    bad_date = support.make_dataset(support.marker_frames((30, 30), [(20, 5)])[0], StudyDate="2020-01-01")
    files = [legacy_path, support.write(tmp_path / "in" / "odd.dcm", odd),
             support.write(tmp_path / "in" / "bad_date.dcm", bad_date)]  # fmt: skip
    node = new_node(nodes, tmp_path, checkpoint, ["--destination", orthanc.destination])
    assert osup.storescu(tools["storescu"], node.port, files[:1], extra=("-f",)).returncode == 0  # -f: no meta
    assert osup.storescu(tools["storescu"], node.port, files[1:]).returncode == 0
    wait_for(lambda: node.status().get("inferred", 0) + node.status().get("failed", 0) == 3 and node.idle(),
             what="the three instances processed")  # fmt: skip

    out = tmp_path / "infer"
    InferenceRunner(checkpoint, files, out, num_workers=1, batch_size=4, write_sr=True, progress=False).run()

    def records(folder: Path) -> dict[str, list[dict]]:
        rows: dict[str, list[dict]] = {}
        for line in (folder / "records.jsonl").read_text().splitlines():
            row = json.loads(line)
            del row["path"]  # the node's path is its queue file
            rows.setdefault(row["sop_instance_uid"], []).append(row)
        return rows

    def reasons(folder: Path) -> set[str]:
        return {json.loads(line)["reason"] for line in (folder / "errors.jsonl").read_text().splitlines()}

    by_node, by_infer = records(node.spool), records(out)
    assert sop_uid(files[1]) in by_infer, "infer reads the non-conformant file"
    assert all(by_node.get(uid) == rows for uid, rows in by_infer.items())
    assert sop_uid(legacy_path) in by_node and reasons(node.spool) <= reasons(out)
    infer_sr_sources = {sr_source(pydicom.dcmread(p)) for p in (out / "sr").iterdir()}
    assert infer_sr_sources <= set(orthanc_srs(orthanc)) and sop_uid(legacy_path) in orthanc_srs(orthanc)
    for source in infer_sr_sources:
        (in_orthanc,) = orthanc_srs(orthanc)[source]
        (expected,) = [pydicom.dcmread(p) for p in (out / "sr").iterdir() if sr_source(pydicom.dcmread(p)) == source]
        assert in_orthanc.SOPInstanceUID == expected.SOPInstanceUID and sr_summary(in_orthanc) == sr_summary(expected)


def _without_meta(ds: Dataset) -> bytes:
    """The data set alone, implicit VR little endian: how DICOM files were written before Part 10."""
    buffer = pydicom.filebase.DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = True, True
    clean = Dataset()
    clean.update(ds)
    pydicom.filewriter.write_dataset(buffer, clean)
    return buffer.getvalue()


def test_stow_rs_to_orthanc_dicomweb(tools, checkpoint, nodes, tmp_path):
    if not Path(osup.DICOMWEB_PLUGIN).exists():
        osup.unavailable(
            f"the Orthanc DICOMweb plugin {osup.DICOMWEB_PLUGIN} is missing: apt-get install orthanc-dicomweb"
        )
    orthanc = osup.OrthancServer(tmp_path / "orthanc", tools["Orthanc"], dicomweb=True)
    orthanc.start()
    try:
        files = xray_files(tmp_path / "in", 2)
        node = new_node(nodes, tmp_path, checkpoint, ["--dicomweb", orthanc.dicomweb_url])
        assert osup.storescu(tools["storescu"], node.port, files).returncode == 0
        wait_for(lambda: len(orthanc.sr_instances()) == 2 and node.idle(), what="2 SRs by STOW-RS")
        assert_one_sr_each_like_infer(orthanc, files, checkpoint, tmp_path / "infer")
    finally:
        orthanc.stop()


# --- pieces (no Orthanc) --------------------------------------------------------------------------


def test_destination_and_modality_parsing():
    dest = parse_destination("ORTHANC@127.0.0.1:4242", "ADALOSS")
    assert (dest.ae_title, dest.host, dest.port, dest.calling_ae_title) == ("ORTHANC", "127.0.0.1", 4242, "ADALOSS")
    assert parse_destination("PACS@[::1]:104", "A").host == "::1"
    for bad in ("ORTHANC@host", "@host:1", "A" * 17 + "@h:1", "X@h:70000", "X@h:p"):
        with pytest.raises(ValueError, match="AET@host:port"):
            parse_destination(bad, "A")
    allowed = parse_modalities(["xa, RF", "CR"])
    assert allowed == {"XA", "RF", "CR"} and parse_modalities("") is None and parse_modalities(None) is None
    assert modality_refusal("XA", allowed) is None and modality_refusal("xa ", allowed) is None
    assert modality_refusal("DX", allowed) == "modality DX is not one of --modalities CR,RF,XA"
    assert "(none)" in modality_refusal(None, allowed) and modality_refusal("MR", None) is None


def test_spool_store_is_a_readable_dicom_file_and_limits_hold(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1000)
    (spool.tmp_dir / "torn").write_bytes(b"x")
    spool = Spool(tmp_path / "spool", max_bytes=1000)  # a restart removes never-acknowledged receptions
    assert not list(spool.tmp_dir.iterdir())
    ds = support.make_dataset(np.arange(16, dtype=np.uint16).reshape(4, 4))
    data = _without_meta(ds)
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    assert spool.reserve(len(data)) and not spool.reserve(1000)
    path = spool.store(ds.SOPInstanceUID, meta, data)
    assert path.parent == spool.queue_dir and ds.SOPInstanceUID not in path.name and path.suffix == ".dcm"
    read = pydicom.dcmread(path)
    assert read.SOPInstanceUID == ds.SOPInstanceUID and np.array_equal(read.pixel_array, ds.pixel_array)
    assert Spool(tmp_path / "spool", 1000).queued_bytes == path.stat().st_size
    spool.remove(path)
    assert spool.queued() == [] and spool.queued_bytes == 0


def test_retry_backoff_doubles_caps_and_survives_a_restart(tmp_path):
    state = RetryState(tmp_path / "retry.json", initial_s=1.0, max_s=5.0)
    waits = [state.failed("a.sr.dcm", "refused", now=100.0) for _ in range(5)]
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    again = RetryState(tmp_path / "retry.json", initial_s=1.0, max_s=5.0)
    assert again.entries["a.sr.dcm"]["attempts"] == 5 and again.entries["a.sr.dcm"]["last_error"] == "refused"
    assert not again.due("a.sr.dcm", 104.0) and again.due("a.sr.dcm", 105.0) and again.due("new.sr.dcm", 0.0)
    again.succeeded("a.sr.dcm")
    assert RetryState(tmp_path / "retry.json", 1.0, 5.0).entries == {}


def test_uid_in_a_store_request_is_never_a_path(tmp_path):
    """A SOP Instance UID is validated before anything is named after it; the queue name is a hash."""
    from monai_adaloss.serve.policy import valid_uid

    assert valid_uid("1.2.840.10008.1.1") and not valid_uid("1.2/../../etc") and not valid_uid("1..2")
    assert not valid_uid("1" * 65) and not valid_uid("")
    assert valid_uid(str(generate_uid()))
    assert os.sep not in Spool(tmp_path / "s", 10).queue_dir.name


def test_tls_echo_with_certificate_and_plain_connection_refused(tools, checkpoint, nodes, tmp_path):
    """With --tls-cert/--tls-key the node speaks DICOM over TLS only."""
    import shutil
    import ssl

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)  # fmt: skip
    node = new_node(nodes, tmp_path, checkpoint, ["--destination", f"PACS@127.0.0.1:{osup.free_port()}"],
                    "--tls-cert", str(cert), "--tls-key", str(key))  # fmt: skip
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    client.check_hostname = False
    ae = AE(ae_title="TLSCLIENT")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AET, tls_args=(client, None))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    plain = subprocess.run([tools["echoscu"], "-aec", NODE_AET, "127.0.0.1", str(node.port)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert plain.returncode != 0
    assert node.terminate() == 0


def test_cli_configuration_errors_exit_2_and_start_nothing(tmp_path, checkpoint, capsys):
    from monai_adaloss import cli

    base = ["serve", "--spool", str(tmp_path / "spool"), "--port", str(osup.free_port())]
    assert cli.main([*base, "--checkpoint", str(tmp_path / "missing.pt"), "--destination", "PACS@127.0.0.1:4242"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main([*base, "--checkpoint", str(checkpoint), "--destination", "PACS@127.0.0.1"]) == 2
    assert "AET@host:port" in capsys.readouterr().err
    assert cli.main([*base, "--checkpoint", str(checkpoint), "--destination", "P@h:1", "--tls-cert", "x.pem"]) == 2
    assert "both --tls-cert and --tls-key" in capsys.readouterr().err
    # a spool holds the records of one model: another checkpoint is refused before anything listens
    other = support.tiny_unet_checkpoint(tmp_path / "other.pt")
    (tmp_path / "spool").mkdir(exist_ok=True)
    (tmp_path / "spool" / "run.json").write_text(json.dumps({"model": {"sha256": "0" * 64}, "finished": False}))
    assert cli.main([*base, "--checkpoint", str(other), "--destination", "PACS@127.0.0.1:4242"]) == 2
    assert "another model" in capsys.readouterr().err


def test_restart_writes_the_sr_of_an_instance_committed_but_not_finished(tools, checkpoint, nodes, tmp_path):
    """A kill after an instance's records are committed but before its SR is written and its queue file
    deleted: the restart writes the SR from the committed records (no second inference, same SR UID)."""
    files = xray_files(tmp_path / "in", 2)
    node = new_node(nodes, tmp_path, checkpoint, ["--destination", f"PACS@127.0.0.1:{osup.free_port()}"])  # nobody
    assert osup.storescu(tools["storescu"], node.port, files).returncode == 0
    wait_for(lambda: node.status().get("inferred") == 2 and node.status()["queue"] == 0, what="2 instances inferred")
    assert node.terminate() == 0
    srs = {p.name: pydicom.dcmread(p) for p in (node.spool / "sr").glob("*.sr.dcm")}
    assert len(srs) == 2
    manifest = [json.loads(line) for line in (node.spool / "manifest.jsonl").read_text().splitlines()]
    for path, source in zip(sorted({e["path"] for e in manifest}), files, strict=True):  # in reception order
        Path(path).write_bytes(source.read_bytes())  # the queue file a kill would have left
    for name in srs:
        (node.spool / "sr" / name).unlink()  # ... and no SR yet (nor, where the runner logs it, its SR stage)
    kept = [json.dumps(e) + "\n" for e in manifest if "sr" not in e]
    (node.spool / "manifest.jsonl").write_text("".join(kept))
    records_before = (node.spool / "records.jsonl").read_text()
    node.start()
    wait_for(lambda: len(list((node.spool / "sr").glob("*.sr.dcm"))) == 2 and not list(node.spool.glob("queue/*")),
             what="the SRs written again")  # fmt: skip
    again = {p.name: pydicom.dcmread(p) for p in (node.spool / "sr").glob("*.sr.dcm")}
    assert sorted(again) == sorted(srs)
    for name, sr in again.items():
        assert sr.SOPInstanceUID == srs[name].SOPInstanceUID and sr_summary(sr) == sr_summary(srs[name])
    assert (node.spool / "records.jsonl").read_text() == records_before and node.status()["inferred"] == 0
    assert "written again from its committed records" in node.log()
