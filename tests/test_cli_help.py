"""``monai-adaloss --help`` and each sub-command's ``--help`` answer fast: no torch or MONAI import on the way."""

from __future__ import annotations

import subprocess
import sys

import pytest

SUB_COMMANDS = ("synth", "infer", "export", "demo")

_CHECK = """
import sys
from monai_adaloss import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "monai", "numpy", "pydicom", "ignite") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("command", [(), *((c,) for c in SUB_COMMANDS)])
def test_help_imports_no_heavy_module(command: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHECK, *command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout[-500:]
    assert "usage: monai-adaloss" in result.stdout


def test_top_level_help_lists_the_sub_commands_that_exist() -> None:
    from monai_adaloss import cli

    text = cli.build_parser().format_help()
    for command in SUB_COMMANDS:
        assert command in text.split("Sub-commands:")[1], command
