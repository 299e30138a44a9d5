"""Without a terminal, ``infer`` shows no progress bar (no carriage returns) and logs one line per N files."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_inference_support import good_files, tiny_unet_checkpoint

from monai_adaloss.inference import InferenceRunner
from monai_adaloss.inference import runner as runner_module


def test_progress_lines_instead_of_a_bar_when_stderr_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = good_files(tmp_path / "in")
    monkeypatch.setattr(runner_module, "_LOG_EVERY", 2)
    checkpoint = tiny_unet_checkpoint(tmp_path / "model.pt")
    runner = InferenceRunner(checkpoint, tmp_path / "in", tmp_path / "out", num_workers=0, batch_size=1)
    summary = runner.run()  # progress=None: a bar only on a terminal
    err = capsys.readouterr().err
    assert summary.succeeded == len(files)
    lines = [line for line in err.splitlines() if line.startswith("infer: ")]
    done = [int(line.split()[1].split("/")[0]) for line in lines]
    assert len(done) >= 2 and done == sorted(done) and done[0] >= 2, lines
    assert all(line.endswith("frames") and f"/{len(files)} files" in line for line in lines)
    assert "\r" not in err  # no progress bar redraws in a log file
