"""Stand-in for ``python``, ``torchrun`` and ``monai-adaloss`` while a test runs the commands of a document.

``tests/test_bundle_readme_commands.py`` (and ``test_long_doc_commands.py``) write tiny executables named
``python``, ``torchrun`` and ``monai-adaloss`` in front of ``PATH`` that call ``doc_command_shim.py NAME ARGS...``;
the document's shell text then runs unchanged. This module replaces the process (``os.execv``) with:

- ``python ARGS``: this test run's interpreter;
- ``torchrun ARGS``: ``python -m torch.distributed.run --master_port=<a free port> ARGS``;
- ``monai-adaloss ARGS``: the ``monai-adaloss`` script next to the interpreter;

and adds the tiny overrides of the environment variable ``DOC_TRAIN_OVERRIDES`` (a JSON object of
``--key: value``) to every ``monai.bundle run`` of a training config (``train.json`` without ``evaluate.json`` or
``inference.json``): a value the command sets is replaced, the others are appended. Evaluation, inference and
export commands run exactly as written, so they must find what they need in the trained model.

``DOC_SCRIPT_OVERRIDES`` (a JSON object ``{script: {--key: value or [values]}}``) gives the tiny arguments of
a long-running script (``python benchmarks/x.py ...``): each option is replaced with all its values.

``DOC_RUN_LOG`` (a file path) turns on the record of those scripts' runs: a script command whose tiny command
line equals one that already ran in this document, all but its output folder (``-o`` / ``--output-dir``), is
written to the record as a repeat and not run again; its output folder becomes a link to the earlier run's,
so later commands that read it find the same files (a document's commands that differ only in what the tiny
arguments replace, e.g. the runs a benchmark reads, would run the same tiny job again).

``DOC_PRELOADED_PYTHON`` (a socket path) runs the real command in the preloaded interpreter of
``preloaded_python.py`` (a fork of a process that has imported torch, MONAI and ignite) when it can reproduce a
fresh start; otherwise, or without the variable, the real command replaces this process.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import preloaded_python  # this folder (the shim runs as a script)


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


OUTPUT_OPTIONS = ("-o", "--output-dir")
"""Options whose value is where a script writes: two commands that differ only there do the same work."""


def split_output(argv: list[str]) -> tuple[list[str], Path | None]:
    """``argv`` without its :data:`OUTPUT_OPTIONS` and their values, and the output folder (absolute: relative to
    the working folder), if it has one."""
    kept: list[str] = []
    output = None
    tokens = iter(argv)
    for token in tokens:
        if token in OUTPUT_OPTIONS:
            value = next(tokens, None)
            output = None if value is None else Path.cwd() / value
        else:
            kept.append(token)
    return kept, output


def earlier_run(log: Path, name: str, argv: list[str]) -> dict | None:
    """The record of the earlier run that ``name argv`` repeats (outputs aside), or ``None``; records this one.

    Records are JSON lines ``{"command", "argv", "output", "repeat"}`` (``output``: absolute, or ``null``).
    """
    rest, output = split_output(argv)
    key = [name, *rest]
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    earlier = next((run for run in runs if run["command"] == key and not run["repeat"]), None)
    with log.open("a") as handle:
        record = {"command": key, "argv": argv, "output": None if output is None else str(output)}
        handle.write(json.dumps({**record, "repeat": earlier is not None}) + "\n")
    return earlier


def main() -> None:
    name, argv = sys.argv[1], sys.argv[2:]
    overrides = json.loads(os.environ.get("DOC_TRAIN_OVERRIDES", "{}"))
    script_overrides = json.loads(os.environ.get("DOC_SCRIPT_OVERRIDES", "{}"))
    real = command(name, argv, overrides, script_overrides)
    log = os.environ.get("DOC_RUN_LOG")
    if log and argv and argv[0] in script_overrides:
        earlier = earlier_run(Path(log), name, real[1:])
        if earlier is not None:
            _, output = split_output(real[1:])
            if output is not None and earlier["output"] is not None and not output.exists():
                output.parent.mkdir(parents=True, exist_ok=True)
                output.symlink_to(earlier["output"], target_is_directory=True)
            print(f"doc_command_shim: the same tiny command ran before; its outputs are that run's: {' '.join(argv)}")
            return
    preloaded_python.run_or_exec(real)


if __name__ == "__main__":
    main()
