"""Every shell command of the catheter bundle's README and of docs/catheter_bundle.md runs as written.

The commands are read from the ```bash blocks (continuation lines joined) and run in order in a folder laid
out like a checkout (``bundles/catheter_tip_fluoro``, ``data/...`` written by the README's own ``synth``
command), with tiny overrides: a smaller dataset, a 32x32 input, 4-8-16 channels, 1-2 epochs, no loader
workers, ``demo --tiny`` for the 10-minute demo. Commands the README gives "from the bundle folder" run there.
Other bundles' READMEs need their datasets and are not covered here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import preloaded_command

from monai_adaloss.bundles import bundle_path

ROOT = Path(__file__).resolve().parents[1]
DOCS = (bundle_path("catheter_tip_fluoro") / "docs" / "README.md", ROOT / "docs" / "catheter_bundle.md")
BIN = Path(sys.executable).parent
TINY_BUNDLE = {
    "--input_size": "[32,32]",
    "--network_channels": "[4,8,16]",
    "--num_workers": "0",
    "--train_batch_size": "2",
    "--val_batch_size": "2",
}
TINY_SYNTH = {"--n-train": "6", "--n-val": "2", "--n-test": "2", "--size": "64"}

pytestmark = pytest.mark.slow


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                argv = shlex.split(line, comments=True)
                if argv:
                    found.append((doc.name, argv))
    return found


def _override(argv: list[str], values: dict[str, str]) -> list[str]:
    """Set ``--key value`` pairs: replace the value where the command has the key, else append."""
    argv = list(argv)
    for key, value in values.items():
        if key in argv:
            argv[argv.index(key) + 1] = value
        else:
            argv += [key, value]
    return argv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runnable(argv: list[str], epochs: dict[str, int]) -> list[str]:
    """The command with the tiny overrides and this environment's executables."""
    head, rest = argv[0], argv[1:]
    if head == "python":
        head_argv = [sys.executable]
    elif head == "torchrun":
        head_argv = [sys.executable, "-m", "torch.distributed.run", f"--master_port={_free_port()}"]
    elif head == "monai-adaloss":
        head_argv = [str(BIN / "monai-adaloss")]
    else:
        raise AssertionError(f"unexpected command {argv}")
    if "monai.bundle" in rest and "run" in rest:
        values = dict(TINY_BUNDLE)
        if any("train.json" in a for a in rest) and not any("evaluate.json" in a for a in rest):
            epochs["n"] += 1 if "--resume" in rest else 0
            values["--max_epochs"] = str(epochs["n"])
        if any("inference.json" in a for a in rest):
            values = {}
        rest = _override(rest, values)
    elif rest[:1] == ["synth"]:
        rest = [*_override(rest, TINY_SYNTH), "--quiet"]
    elif rest[:1] == ["demo"]:
        rest = [*rest, "--tiny", "--threads", "1", "--quiet"]
    return head_argv + rest


def test_catheter_docs_commands_run_as_written(tmp_path: Path, preloaded_python: dict[str, str]) -> None:
    shutil.copytree(bundle_path("catheter_tip_fluoro"), tmp_path / "bundles" / "catheter_tip_fluoro")
    bundle = tmp_path / "bundles" / "catheter_tip_fluoro"
    commands = _commands()
    assert any("ckpt_export" in argv for _, argv in commands) and any(argv[0] == "torchrun" for _, argv in commands)
    epochs = {"n": 1}
    env = {**os.environ, **preloaded_python}  # each command in a fork of an interpreter that imported torch once
    for doc, argv in commands:
        cwd = bundle if argv[-1] == "." or ("models/model.pt" in argv and "--checkpoint" in argv[:3]) else tmp_path
        if "ckpt_export" in argv:
            cwd = bundle
        runnable = preloaded_command(_runnable(argv, epochs))
        result = subprocess.run(runnable, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, f"{doc}: {' '.join(argv)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert (bundle / "models" / "model.ts").is_file() and (bundle / "models" / "model.onnx").is_file()
    assert (bundle / "eval" / "metrics.csv").is_file() and (tmp_path / "predictions" / "records.jsonl").is_file()
