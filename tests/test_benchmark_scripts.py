"""The benchmark scripts that no document test runs still run, with tiny arguments, and print their figures.

(The benchmark commands written in ``docs/`` run in ``test_long_doc_commands.py``; the sweep in
``test_benchmark_sweep.py``.) Each script runs in its own process (a fork of the preloaded interpreter of
``preloaded_python.py``, as a fresh ``python`` would run it) from the repository root with one thread; the test
checks the exit code and the lines that carry the figures, not the figures themselves (timings belong to the
benchmarks, not to tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import preloaded_command

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _preloaded(preloaded_python: dict[str, str]) -> Iterator[None]:
    """The scripts run in the preloaded interpreter (``preloaded_python.py``), with one thread."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in preloaded_python.items():
            patch.setenv(key, value)
        yield


def run_script(*argv: str, cwd: Path = ROOT) -> str:
    """Run ``python benchmarks/...`` with one thread; return its stdout (fails with the output on error)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = preloaded_command([sys.executable, *argv])
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_render_speed_prints_both_renderers_and_their_errors() -> None:
    out = run_script(str(ROOT / "benchmarks/render_speed.py"), "--repeats", "1", "--batch", "2", "--threads", "1",
                     "--cases", "0")  # fmt: skip
    assert "68 landmarks, 256x256, sigma 2" in out and "sigma 64" not in out
    assert "monai GenerateHeatmap (per sample)" in out and "ours, batched" in out


def test_handler_overhead_prints_the_overhead_and_the_handler_time() -> None:
    out = run_script(str(ROOT / "benchmarks/handler_overhead.py"), "--size", "32", "--batch", "2", "--iterations",
                     "2", "--repeats", "1", "--channels", "4", "8", "--threads", "1")  # fmt: skip
    assert "overhead, median with / median without" in out and "handler's own time per epoch" in out


def test_demo_epoch_time_splits_each_epoch() -> None:
    out = run_script(str(ROOT / "benchmarks/demo_epoch_time.py"), "--profile", "tiny", "--threads", "1")
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all("data" in line and "step" in line and "validation" in line for line in lines)
    assert "last epoch:" in out and "per iteration: data" in out


def test_infer_throughput_prints_the_three_model_formats_side_by_side() -> None:
    out = run_script(str(ROOT / "benchmarks/infer_throughput.py"), "--frames", "4", "--size", "64", "--batch-size",
                     "2", "--num-workers", "0", "--repeats", "1", "--device", "cpu")  # fmt: skip
    rows = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert {"pt", "ts", "onnx"} <= set(rows), out


def test_catheter_schedule_study_runs_demos_and_pairs_them(tmp_path: Path) -> None:
    """Two schedules x one seed of the tiny demo, then the table with the paired row; a rerun reuses the runs."""
    argv = [str(ROOT / "benchmarks/catheter_schedule_study.py"), "--output-dir", str(tmp_path / "study"), "--seeds",
            "0", "--schedules", "default", "fixed_3", "--", "--tiny", "--threads", "1"]  # fmt: skip
    out = run_script(*argv)
    assert "| default | 1 |" in out and "| fixed_3 | 1 |" in out and "Paired per seed against `default`" in out
    fixed = json.loads((tmp_path / "study" / "fixed_3" / "seed0" / "results.json").read_text())
    assert fixed["schedule"] == {"name": "fixed", "sigma": 3.0} and fixed["final_sigma"] == [3.0]
    default = json.loads((tmp_path / "study" / "default" / "seed0" / "results.json").read_text())
    assert default["schedule"] is None
    assert "+ " not in run_script(*argv)  # both runs exist: nothing is trained again
