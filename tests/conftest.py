"""Fixtures shared by several test modules."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Tiny networks run faster, and much steadier on a busy machine, with one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children = set()
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.add(int(entry.parent.name))
    return children


@pytest.fixture
def no_orphans() -> Iterator[None]:
    """Fail a test that leaves a child process of the test process running (after 5 s of grace)."""
    before = _children(os.getpid())
    yield
    deadline = time.monotonic() + 5.0
    while (left := _children(os.getpid()) - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"the test left child processes running: {sorted(left)}"


PRELOADED_PYTHON = Path(__file__).resolve().parent / "preloaded_python.py"


def preloaded_command(argv: list[str]) -> list[str]:
    """``argv`` through the client of ``preloaded_python.py``: in the server named by ``DOC_PRELOADED_PYTHON`` (the
    :func:`preloaded_python` fixture's variables) where it can run as a fresh interpreter would, else as is."""
    return [sys.executable, str(PRELOADED_PYTHON), "--client", *argv]


@pytest.fixture(scope="session")
def preloaded_python() -> Iterator[dict[str, str]]:
    """Environment variables under which the documents' commands run in a preloaded interpreter.

    One server per test process (``tests/preloaded_python.py``: torch, MONAI and ignite imported once, a fork per
    command), started with ``OMP_NUM_THREADS=1`` like the commands; stopped when the session ends.
    """
    folder = Path(tempfile.mkdtemp(prefix="preloaded-", dir="/tmp"))  # short: a socket path holds 107 bytes
    socket_path = folder / "python.sock"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (folder / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, str(PRELOADED_PYTHON), str(socket_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 300.0
    while not socket_path.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            output = (folder / "server.log").read_text(errors="replace")
            shutil.rmtree(folder, ignore_errors=True)
            pytest.fail(f"the preloaded python did not start:\n{output[-3000:]}")
        time.sleep(0.1)
    yield {"DOC_PRELOADED_PYTHON": str(socket_path), "OMP_NUM_THREADS": "1"}
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    shutil.rmtree(folder, ignore_errors=True)
