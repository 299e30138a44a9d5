"""Fixtures shared by several test modules."""

from __future__ import annotations

import contextlib
import os
import signal
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
