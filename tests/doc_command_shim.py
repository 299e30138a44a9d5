"""Stand-in for ``python``, ``torchrun`` and ``monai-adaloss`` while a test runs the commands of a document.

``tests/test_bundle_readme_commands.py`` writes tiny executables named ``python``, ``torchrun`` and
``monai-adaloss`` in front of ``PATH`` that call ``doc_command_shim.py NAME ARGS...``; the document's shell text
then runs unchanged. This module replaces the process (``os.execv``) with:

- ``python ARGS``: this test run's interpreter;
- ``torchrun ARGS``: ``python -m torch.distributed.run --master_port=<a free port> ARGS``;
- ``monai-adaloss ARGS``: the ``monai-adaloss`` script next to the interpreter;

and adds the tiny overrides of the environment variable ``DOC_TRAIN_OVERRIDES`` (a JSON object of
``--key: value``) to every ``monai.bundle run`` of a training config (``train.json`` without ``evaluate.json`` or
``inference.json``): a value the command sets is replaced, the others are appended. Evaluation, inference and
export commands run exactly as written, so they must find what they need in the trained model.

``DOC_SCRIPT_OVERRIDES`` (a JSON object ``{script: {--key: value or [values]}}``) gives the tiny arguments of
a long-running script (``python benchmarks/x.py ...``): each option is replaced with all its values.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_training_run(argv: list[str]) -> bool:
    if not ("monai.bundle" in argv and "run" in argv and "--config_file" in argv):
        return False
    configs = argv[argv.index("--config_file") + 1]
    return "train.json" in configs and "evaluate.json" not in configs and "inference.json" not in configs


def with_overrides(argv: list[str], overrides: dict[str, str | list[str]]) -> list[str]:
    """``argv`` with each option of ``overrides`` set to its value(s).

    A ``str`` value replaces the one token after the key (``--max_epochs 50`` -> ``--max_epochs 1``); a list
    replaces every value up to the next ``--option`` (``--channels 8 16 32`` -> ``--channels 4 8``). Options
    the command does not have are appended.
    """
    argv = list(argv)
    for key, value in overrides.items():
        if key not in argv:
            argv += [key, *([value] if isinstance(value, str) else value)]
        elif isinstance(value, str):
            argv[argv.index(key) + 1] = value
        else:
            start = end = argv.index(key) + 1
            while end < len(argv) and not argv[end].startswith("--"):
                end += 1
            argv[start:end] = value
    return argv


def command(
    name: str,
    argv: list[str],
    overrides: dict[str, str | list[str]],
    script_overrides: dict[str, dict[str, str | list[str]]] | None = None,
) -> list[str]:
    """The real command line for ``name argv``."""
    if _is_training_run(argv):
        argv = with_overrides(argv, overrides)
    elif argv and argv[0] in (script_overrides or {}):
        argv = with_overrides(argv, (script_overrides or {})[argv[0]])
    if name == "python":
        return [sys.executable, *argv]
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--master_port={_free_port()}", *argv]
    if name == "monai-adaloss":
        return [str(Path(sys.executable).parent / "monai-adaloss"), *argv]
    raise SystemExit(f"doc_command_shim: unknown command {name!r}")


def main() -> None:
    name, argv = sys.argv[1], sys.argv[2:]
    overrides = json.loads(os.environ.get("DOC_TRAIN_OVERRIDES", "{}"))
    real = command(name, argv, overrides, json.loads(os.environ.get("DOC_SCRIPT_OVERRIDES", "{}")))
    os.execv(real[0], real)


if __name__ == "__main__":
    main()
