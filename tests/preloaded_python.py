"""A Python that has imported torch, MONAI and ignite once, and forks a process per documented command.

The tests that run the documents' commands (``test_bundle_readme_commands.py``, ``test_long_doc_commands.py``,
``test_readme_commands.py``) start a fresh interpreter for each of a hundred-odd commands, and each spends about
5 s of a CPU core (10 s on a busy one) importing torch, MONAI and ignite before a job of a second or two. This
module is the server those commands can run in instead:

- ``serve(socket_path)`` imports :data:`PRELOADED` once and listens on a Unix socket;
- ``run(socket_path, argv)`` (the client, called by ``doc_command_shim.py``) sends the command line, the working
  folder, the environment and its own stdin / stdout / stderr (the file descriptors themselves, ``SCM_RIGHTS``);
  the server forks, the child takes them over and runs the command as ``python`` would (``runpy``: a script, ``-m
  module``, ``-c code``, or a console script such as ``monai-adaloss``), with ``sys.argv``, ``sys.path[0]``,
  ``__main__`` and the exit status of a fresh interpreter; the client exits with that status (or dies of the
  same signal).

The command runs in its own process group; when its client dies (killed, or the server's handler fails), the
group is killed (a child that starts a session of its own, as torchrun's workers do, is not in it).
What a forked interpreter cannot reproduce is refused, and the client then starts a fresh interpreter as before
(:func:`request_for`, :data:`STARTUP_VARIABLES`): an interpreter option other than ``-m`` / ``-c``, or an
environment variable read when the interpreter or a preloaded library starts (``PYTHONPATH``, the thread
counts, the locale, ...) whose value differs from the server's. ``python tests/preloaded_python.py --client
ARGV...`` runs ``ARGV`` the same way (through the server named by ``DOC_PRELOADED_PYTHON`` when it can).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
import types
from pathlib import Path
from typing import NoReturn

SOCKET_VARIABLE = "DOC_PRELOADED_PYTHON"
"""The environment variable that holds the server's socket path for ``doc_command_shim.py``."""
PRELOADED = (
    "numpy",
    "scipy.signal",
    "torch",
    "monai",
    "monai.bundle",
    "ignite.engine",
    "ignite.handlers",
    "pydicom",
    "highdicom",
    "pynetdicom",
    "matplotlib",
    "monai_adaloss",
    "monai_adaloss.cli",
    "monai_adaloss.demo",
    "monai_adaloss.inference",
)
"""Imported once by the server (each one that is installed)."""
STARTUP_VARIABLES = (
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "MPLBACKEND",
    "FORCE_COLOR",
    "NO_COLOR",
)
STARTUP_PREFIXES = ("PYTHON", "TORCH_", "PYTORCH_", "MONAI_", "KMP_", "GOMP_", "MKL_")
"""Variables read when the interpreter or a preloaded library starts: a command whose values differ from the
server's is refused (it runs in a fresh interpreter). ``TORCH_`` with its underscore: torch writes
``TORCHINDUCTOR_CACHE_DIR`` into a running process' environment itself (read when used, as the command's own
environment gives it), so a test process that once exported a model would have its commands refused."""


def startup_environment(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """The :data:`STARTUP_VARIABLES` and the variables with a :data:`STARTUP_PREFIXES` prefix that ``environ`` sets."""
    return {k: v for k, v in environ.items() if k in STARTUP_VARIABLES or k.startswith(STARTUP_PREFIXES)}


def request_for(argv: list[str]) -> dict | None:
    """What the server runs for the command line ``argv``, or ``None`` when only a fresh interpreter can run it.

    ``argv[0]`` is this interpreter (``sys.executable``) or a console script next to it whose ``#!`` line names
    it (``monai-adaloss``); the request is ``{"kind": "script" | "module" | "code", "target": ..., "argv": sys.argv
    of the command}``.
    """
    if not argv:
        return None
    head, rest = argv[0], argv[1:]
    if head == sys.executable:
        if not rest:
            return None
        if rest[0] == "-m" and len(rest) > 1:
            return {"kind": "module", "target": rest[1], "argv": [rest[1], *rest[2:]]}
        if rest[0] == "-c" and len(rest) > 1:
            return {"kind": "code", "target": rest[1], "argv": ["-c", *rest[2:]]}
        if rest[0].startswith("-"):
            return None
        return {"kind": "script", "target": rest[0], "argv": rest}
    script = Path(head)
    if script.parent == Path(sys.executable).parent and script.is_file():
        with script.open("rb") as handle:
            shebang = handle.readline().rstrip()
        interpreter = shebang[2:].decode(errors="replace").strip()
        if shebang.startswith(b"#!") and os.path.realpath(interpreter) == os.path.realpath(sys.executable):
            return {"kind": "script", "target": head, "argv": argv}
    return None


# ----------------------------------------------------------------------------------------------------- the client


def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    payload = struct.pack("!I", len(data)) + data
    if fds:
        sent = sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        payload = payload[sent:]
    sock.sendall(payload)


def _receive(sock: socket.socket, with_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (``None`` when the peer closed first) and the file descriptors sent with it."""
    fds: list[int] = []
    buffer = b""
    while len(buffer) < 4 or len(buffer) < 4 + struct.unpack("!I", buffer[:4])[0]:
        if with_fds and not fds:
            chunk, received, _, _ = socket.recv_fds(sock, 1 << 16, with_fds)
            fds = list(received)
        else:
            chunk = sock.recv(1 << 16)
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None, []
        buffer += chunk
    return json.loads(buffer[4 : 4 + struct.unpack("!I", buffer[:4])[0]]), fds


def run(socket_path: str, argv: list[str]) -> int | None:
    """Run ``argv`` in the server at ``socket_path`` with this process' stdio, folder and environment.

    Returns the command's exit status; dies of the signal that killed the command; ``None`` when the server is
    not there or does not accept the command (the caller then runs it in a fresh interpreter). Once accepted, a
    command is never run a second time: a server that dies before it reports gives status 1 and a message.
    """
    request = request_for(argv)
    if request is None:
        return None
    request.update(cwd=os.getcwd(), environ=dict(os.environ))
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(socket_path)
    except OSError:
        return None
    with sock:
        try:
            _send(sock, request, [0, 1, 2])  # OSError: e.g. this process has no stdin to pass
        except OSError:
            return None
        accepted, _ = _receive(sock)
        if accepted is None or "refused" in accepted:
            return None
        reply, _ = _receive(sock)
    if reply is None:
        print(f"preloaded_python: the server lost the command {argv}", file=sys.stderr)
        return 1
    if "signal" in reply:
        with contextlib.suppress(OSError):  # SIGKILL / SIGSTOP cannot be set
            signal.signal(reply["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), reply["signal"])
        return 128 + int(reply["signal"])
    return int(reply["exit"])


# ----------------------------------------------------------------------------------------------------- the server


def _exit_status(error: SystemExit) -> int:
    """What a fresh interpreter exits with for an uncaught ``SystemExit``."""
    code = error.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _new_main(file: str | None = None) -> types.ModuleType:
    """A fresh ``__main__`` module in ``sys.modules`` (``file``: the script's absolute path)."""
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__  # type: ignore[attr-defined]
    if file is not None:
        from importlib.machinery import SourceFileLoader

        main.__file__ = file
        main.__loader__ = SourceFileLoader("__main__", file)
        main.__cached__ = None  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    return main


def _execute(request: dict) -> int:
    """Run the request in this (forked) process as a fresh ``python`` would; return its exit status.

    A script gets a ``__main__`` of its own with an absolute ``__file__`` (as ``python x.py`` gives since 3.9)
    and ``sys.path[0]`` its real folder; ``-m`` runs through ``runpy._run_module_as_main`` (what ``python -m``
    calls) in a new ``__main__`` with ``sys.path[0]`` the working folder; ``-c`` in a new ``__main__`` with
    ``sys.path[0] = ""``. ``multiprocessing`` learns the command's working folder (its spawned children
    resolve a relative main path against it).
    """
    import multiprocessing.process
    import runpy

    sys.argv = list(request["argv"])
    multiprocessing.process.ORIGINAL_DIR = os.path.abspath(os.getcwd())  # type: ignore[attr-defined]
    kind, target = request["kind"], request["target"]
    try:
        if kind == "script":
            path = os.path.abspath(target)
            try:
                with open(path, "rb") as handle:
                    source = handle.read()
            except OSError as error:
                print(f"{sys.executable}: can't open file {path!r}: [Errno {error.errno}] {error.strerror}",
                      file=sys.stderr)  # fmt: skip
                return 2
            sys.path[0] = os.path.dirname(os.path.realpath(target))
            main = _new_main(path)
            exec(compile(source, path, "exec"), main.__dict__)  # what `python script.py` does
        elif kind == "module":
            sys.path[0] = os.path.abspath(os.getcwd())
            _new_main()
            runpy._run_module_as_main(target, alter_argv=True)  # type: ignore[attr-defined]
        else:
            sys.path[0] = ""
            main = _new_main()
            exec(compile(target, "<string>", "exec"), main.__dict__)  # what `python -c` does
    except SystemExit as error:
        return _exit_status(error)
    except BaseException as error:  # uncaught: its traceback through sys.excepthook, status 1, as python's
        error = error.with_traceback(_command_frames(error.__traceback__))  # the hook prints the exception's own
        sys.excepthook(type(error), error, error.__traceback__)
        if isinstance(error, KeyboardInterrupt):  # a fresh python then dies of SIGINT
            sys.stdout.flush()
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        return 1
    return 0


def _command_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without its leading frames of this module and ``runpy`` (a fresh run has none of them)."""
    import runpy

    ours = {os.path.abspath(__file__), os.path.abspath(runpy.__file__), "<frozen runpy>"}
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    return tb


def _command_process(request: dict, fds: list[int]) -> int:
    """In the forked command process: take over the caller's stdio, folder and environment, then run.

    The random generators are seeded from the OS's entropy as in a fresh interpreter (torch's default generator
    and numpy's legacy global one; ``random`` reseeds itself after a fork), so that commands do not share the
    server's streams. ``SIGINT`` and ``SIGCHLD`` get python's start-up handlers back (the server ignores ``SIGINT``).
    """
    import numpy
    import torch

    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    torch.seed()
    numpy.random.seed()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["environ"])
    sys.stdout.reconfigure(line_buffering=os.isatty(1))
    return _execute(request)


def _refusal(request: dict, server_environment: dict[str, str]) -> str | None:
    differs = sorted(set(startup_environment(request["environ"]).items()) ^ set(server_environment.items()))
    return f"startup variables differ: {sorted({k for k, _ in differs})}" if differs else None


def _stop(pid: int) -> None:
    """Kill the command's process group (or the command alone, before it has made its group) and reap it."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _handle(connection: socket.socket, listener: socket.socket, server_environment: dict[str, str]) -> int | None:
    """In the forked handler of one connection; returns an exit status only in the command's own process.

    Replies ``{"accepted": true}`` (or ``{"refused": why}``) before it forks the command, then the command's
    ``{"exit": status}`` or ``{"signal": number}``; whatever happens to the handler, the command does not outlive it.
    """
    listener.close()
    request, fds = _receive(connection, with_fds=3)
    if request is None:
        os._exit(0)
    refusal = _refusal(request, server_environment) or (None if len(fds) == 3 else "stdio not received")
    if refusal is not None:
        with contextlib.suppress(OSError):
            _send(connection, {"refused": refusal})
        os._exit(0)
    try:
        _send(connection, {"accepted": True})
    except OSError:
        os._exit(0)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        connection.close()
        return _command_process(request, fds)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also here, so that the group exists whichever process runs first
    for fd in fds:
        os.close(fd)
    try:
        finished, status = 0, 0
        while not finished:
            finished, status = os.waitpid(pid, os.WNOHANG)
            readable, _, _ = select.select([] if finished else [connection], [], [], 0.05)
            if readable and not connection.recv(1):  # the client went away: stop the command and its children
                break
        if finished:
            if os.WIFSIGNALED(status):
                _send(connection, {"signal": os.WTERMSIG(status)})
            else:
                _send(connection, {"exit": os.waitstatus_to_exitcode(status)})
            pid = 0
    finally:
        if pid:
            _stop(pid)
        os._exit(0)


def serve(socket_path: str) -> int:
    """Preload, then run commands until the parent process goes away or ``SIGTERM``.

    Returns only in a command's process, with its exit status (the server itself leaves by ``SIGTERM``).
    """
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the commands, which handle it as python does
    for name in PRELOADED:
        with contextlib.suppress(Exception):  # what is not installed, or does not import, is imported by commands
            importlib.import_module(name)
    server_environment = startup_environment(os.environ)
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path + ".part")
    listener.listen(64)
    os.rename(socket_path + ".part", socket_path)  # the path appears once it accepts
    while os.getppid() == parent:
        readable, _, _ = select.select([listener], [], [], 1.0)
        while True:  # reap finished handlers
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not readable:
            continue
        connection, _ = listener.accept()
        if os.fork() == 0:
            code = _handle(connection, listener, server_environment)
            if code is not None:
                return code
        connection.close()
    return 0


def run_or_exec(argv: list[str]) -> NoReturn:
    """Run ``argv`` in the server named by ``DOC_PRELOADED_PYTHON`` and exit with its status; where there is no
    server or it does not accept the command, replace this process with ``argv`` (a fresh interpreter)."""
    socket_path = os.environ.get(SOCKET_VARIABLE)
    status = run(socket_path, argv) if socket_path else None
    if status is not None:
        sys.exit(status)
    os.execv(argv[0], argv)


def main() -> None:
    if sys.argv[1:2] == ["--client"]:
        run_or_exec(sys.argv[2:])
    sys.exit(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
