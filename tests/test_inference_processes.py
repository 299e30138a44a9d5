"""Inference across processes: a run killed part-way resumes to the uninterrupted outputs, and
``torchrun`` with 2 CPU processes shards the files and merges to the one-process outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_inference_support as support
from conftest import _children
from test_inference import assert_same_outputs, read_jsonl

from monai_adaloss import cli
from monai_adaloss.inference import ExitCode, InferenceRunner

pytestmark = pytest.mark.usefixtures("no_orphans")
KILL_AFTER_FILES = 4
ORPHAN_GRACE_S = 5.0


def corpus(folder: Path, count: int) -> None:
    """``count`` small files, every fourth a 3-frame cine, one unreadable."""
    for index in range(count):
        frames = 3 if index % 4 == 0 else 1
        markers = [((5 * index + k) % 32, (7 * index + 3 * k) % 32) for k in range(frames)]
        pixels = support.marker_frames((32, 32), markers, seed=index)
        support.write(folder / f"im{index:03d}.dcm", support.make_dataset(pixels if frames > 1 else pixels[0]))
    (folder / "im999.dcm").write_bytes(b"\x00" * 200)


def reference_run(checkpoint: Path, inputs: Path, output_dir: Path) -> None:
    summary = InferenceRunner(checkpoint, inputs, output_dir, num_workers=1, batch_size=2, progress=False).run()
    assert summary.exit_code == ExitCode.FILES_FAILED and summary.failed == 1


def test_killed_run_resumes_to_the_uninterrupted_outputs(tmp_path):
    corpus(tmp_path / "in", 24)
    checkpoint = support.tiny_unet_checkpoint(tmp_path / "model.pt")
    reference_run(checkpoint, tmp_path / "in", tmp_path / "reference")
    out = tmp_path / "out"
    args = ["infer", str(tmp_path / "in"), "-o", str(out), "--checkpoint", str(checkpoint), "--num-workers", "1",
            "--batch-size", "2", "--quiet"]  # fmt: skip
    code = "import sys, test_inference_support as s; sys.exit(s.main_with_slow_decode(sys.argv[1:]))"
    process = subprocess.Popen([sys.executable, "-c", code, *args], env=support.subprocess_env())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        manifest = out / "manifest.jsonl"
        if manifest.exists() and manifest.read_bytes().count(b"\n") >= KILL_AFTER_FILES:
            break
        time.sleep(0.01)
    process.kill()
    process.wait()
    finished = len((out / "manifest.jsonl").read_text().splitlines())
    assert KILL_AFTER_FILES <= finished < 25 and not (out / "summary.json").exists(), "not killed part-way"
    records_before = read_jsonl(out / "records.jsonl")

    assert cli.main([*args, "--resume"]) == ExitCode.FILES_FAILED
    assert_same_outputs(tmp_path / "reference", out)
    keys = [(r["path"], r["frame"], r["landmark"], r["instance"]) for r in read_jsonl(out / "records.jsonl")]
    assert len(keys) == len(set(keys)) and len(keys) >= len(records_before)
    manifest = [json.loads(line)["path"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == len(set(manifest)) == 25


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_killed_run_leaves_no_orphan_worker(tmp_path):
    """SIGKILL the infer process while its two decoding workers are busy: they must exit, not linger."""
    corpus(tmp_path / "in", 24)
    checkpoint = support.tiny_unet_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "out"
    args = ["infer", str(tmp_path / "in"), "-o", str(out), "--checkpoint", str(checkpoint), "--num-workers", "2",
            "--batch-size", "2", "--quiet"]  # fmt: skip
    code = "import sys, test_inference_support as s; sys.exit(s.main_with_slow_decode(sys.argv[1:]))"
    process = subprocess.Popen([sys.executable, "-c", code, *args], env=support.subprocess_env())
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        workers |= _children(process.pid)
        manifest = out / "manifest.jsonl"
        if len(workers) >= 2 and manifest.exists() and manifest.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.01)
    assert len(workers) >= 2 and process.poll() is None, "the run ended before it could be killed part-way"
    process.kill()
    process.wait()
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [pid for pid in workers if alive(pid)]
    for pid in orphans:  # end them anyway, then fail
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"decoding workers {orphans} outlived the killed infer process"


def test_torchrun_two_cpu_processes_shard_and_merge(tmp_path):
    corpus(tmp_path / "in", 10)
    checkpoint = support.tiny_unet_checkpoint(tmp_path / "model.pt")
    reference_run(checkpoint, tmp_path / "in", tmp_path / "reference")
    entry = tmp_path / "infer_main.py"
    entry.write_text("import sys\nfrom monai_adaloss.cli import main\nsys.exit(main())\n")
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
        str(entry), "infer", str(tmp_path / "in"), "-o", str(out), "--checkpoint", str(checkpoint),
        "--num-workers", "1", "--batch-size", "2", "--quiet",
    ]  # fmt: skip
    result = subprocess.run(command, env=support.subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == ExitCode.FILES_FAILED, result.stderr[-3000:]
    assert "rank 0/2" in result.stdout and "rank 1/2" in result.stdout
    parts = [read_jsonl(out / f"part-{rank}" / "manifest.jsonl") for rank in (0, 1)]
    files = sorted(str(p) for p in (tmp_path / "in").iterdir())
    assert [sorted(e["path"] for e in part) for part in parts] == [files[0::2], files[1::2]]  # disjoint shards
    assert_same_outputs(tmp_path / "reference", out)
    assert all(json.loads((out / f"part-{rank}" / "run.json").read_text())["finished"] for rank in (0, 1))
