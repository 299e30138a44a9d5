"""The preloaded interpreter runs a command as a fresh ``python`` would: same output, status, argv, path and RNG.

Each command runs twice, in a fresh interpreter and through ``preloaded_python.py --client`` (the server of the
``preloaded_python`` fixture); the outputs must be equal but for two lines: ``preloaded`` says whether torch was
already imported when the command started (the server's runs must say so, else they ran fresh and the comparison
would prove nothing; the fresh ones must not), and the command's first random numbers (a fresh interpreter seeds
torch and numpy from the OS's entropy, so the server's commands must not repeat each other's numbers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import preloaded_command

REPORT = """\
import os, sys
print("preloaded", "torch" in sys.modules)
import numpy, torch
print("random", torch.rand(2).tolist(), numpy.random.rand(2).tolist())
print(__name__, sys.argv, os.getcwd(), sys.path[0], os.environ.get("MARK"), torch.get_num_threads())
print(sys.stdin.read())
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str], through_server: bool) -> subprocess.CompletedProcess:
    command = preloaded_command(argv) if through_server else argv
    return subprocess.run(command, cwd=cwd, env=env, input="from stdin", capture_output=True, text=True, timeout=120)


def _compare(argv: list[str], cwd: Path, env: dict[str, str], preloaded: bool = True) -> subprocess.CompletedProcess:
    fresh = _run(argv, cwd, env, through_server=False)
    served = _run(argv, cwd, env, through_server=True)
    assert fresh.stdout.splitlines()[0] == "preloaded False", fresh.stdout + fresh.stderr
    assert served.stdout.splitlines()[0] == f"preloaded {preloaded}", served.stdout + served.stderr
    assert served.stdout.splitlines()[2:] == fresh.stdout.splitlines()[2:]
    assert (served.returncode, served.stderr) == (fresh.returncode, fresh.stderr)
    if preloaded:
        again = _run(argv, cwd, env, through_server=True)
        assert served.stdout.splitlines()[1].startswith("random ")
        assert again.stdout.splitlines()[1] != served.stdout.splitlines()[1], "two commands drew the same numbers"
    return served


@pytest.fixture
def env(preloaded_python: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **preloaded_python, "MARK": "caller's environment"}


def test_script_module_and_code_run_as_in_a_fresh_interpreter(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "report.py").write_text(REPORT + "sys.exit(3)\n")
    served = _compare([sys.executable, "tool/report.py", "--a", "1"], tmp_path, env)
    assert served.returncode == 3 and "['tool/report.py', '--a', '1']" in served.stdout
    assert f"{tmp_path / 'tool'} caller's environment 1" in served.stdout and "from stdin" in served.stdout
    (tmp_path / "reportmod.py").write_text(REPORT)
    served = _compare([sys.executable, "-m", "reportmod", "x"], tmp_path, env)
    assert served.returncode == 0 and f"['{tmp_path / 'reportmod.py'}', 'x']" in served.stdout
    served = _compare([sys.executable, "-c", REPORT + "raise SystemExit('stopped')", "y"], tmp_path, env)
    assert (served.returncode, served.stderr) == (1, "stopped\n") and "__main__ ['-c', 'y']" in served.stdout


def test_a_console_script_and_an_uncaught_exception(env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text(REPORT + "def f():\n    raise ValueError('bad input')\nf()\n")
    served = _compare([sys.executable, str(script)], tmp_path, env)
    assert served.returncode == 1 and served.stderr.startswith("Traceback") and "ValueError: bad input" in served.stderr
    assert "runpy" not in served.stderr and "preloaded_python" not in served.stderr
    console = Path(sys.executable).parent / "monai-adaloss"
    fresh = _run([str(console), "synth", "--help"], tmp_path, env, through_server=False)
    served = _run([str(console), "synth", "--help"], tmp_path, env, through_server=True)
    assert (served.returncode, served.stdout, served.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert served.returncode == 0 and "--n-train" in served.stdout


def test_a_different_thread_count_runs_in_a_fresh_interpreter(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "threads.py").write_text(  # no torch import: all three runs are fresh interpreters
        "import os, sys\nprint('preloaded', 'torch' in sys.modules)\nprint('random', os.urandom(8).hex())\n"
        "print(os.environ['OMP_NUM_THREADS'])\n"
    )
    served = _compare([sys.executable, "threads.py"], tmp_path, {**env, "OMP_NUM_THREADS": "2"}, preloaded=False)
    assert served.stdout.splitlines()[2] == "2"


def test_a_variable_torch_sets_at_run_time_does_not_refuse_a_command(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "cache.py").write_text(
        "import os, sys\nprint('preloaded', 'torch' in sys.modules)\nprint('random', os.urandom(8).hex())\n"
        "print(os.environ['TORCHINDUCTOR_CACHE_DIR'])\n"
    )  # torch's inductor sets the variable in the test process once it has compiled or exported something
    served = _compare([sys.executable, "cache.py"], tmp_path, {**env, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)})
    assert served.stdout.splitlines()[2] == str(tmp_path)


def test_a_signal_is_passed_on_and_a_killed_client_stops_the_command(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "term.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    served = _run([sys.executable, "term.py"], tmp_path, env, through_server=True)
    assert served.returncode == -signal.SIGTERM
    pid_file = tmp_path / "pid"
    (tmp_path / "sleep.py").write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                                       "time.sleep(120)\n")  # fmt: skip
    client = subprocess.Popen(preloaded_command([sys.executable, "sleep.py"]), cwd=tmp_path, env=env)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    client.kill()
    client.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the command outlived its client"


def test_spawned_children_a_missing_script_and_an_interrupt_as_in_a_fresh_interpreter(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "spawn.py").write_text(
        "import multiprocessing, os, sys\n"
        "def square(x):\n    return x * x\n"
        "if __name__ == '__main__':\n"
        "    print('preloaded', 'torch' in sys.modules)\n    print('random', os.urandom(8).hex())\n"
        "    print(__file__, sys.path[0])\n"
        "    with multiprocessing.get_context('spawn').Pool(1) as pool:\n        print(pool.map(square, [3]))\n"
    )  # a spawned child imports the main script again, by its path from the command's folder
    served = _compare([sys.executable, "linked/spawn.py"], tmp_path, env)
    assert f"{tmp_path / 'linked' / 'spawn.py'} {tmp_path / 'real'}\n[9]" in served.stdout
    for code, status in (("raise KeyboardInterrupt", -signal.SIGINT), ("import os; os.kill(os.getpid(), 9)", -9)):
        (tmp_path / "stop.py").write_text(code + "\n")
        fresh = _run([sys.executable, "stop.py"], tmp_path, env, through_server=False)
        served = _run([sys.executable, "stop.py"], tmp_path, env, through_server=True)
        assert (served.returncode, served.stderr) == (fresh.returncode, fresh.stderr) and fresh.returncode == status
    fresh = _run([sys.executable, "missing.py"], tmp_path, env, through_server=False)
    served = _run([sys.executable, "missing.py"], tmp_path, env, through_server=True)
    assert (served.returncode, served.stderr) == (fresh.returncode, fresh.stderr) and fresh.returncode == 2
