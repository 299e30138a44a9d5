"""Every command of the endoscopy, 300-W face, hand X-ray and 3D bundle READMEs runs as written.

(The catheter README and ``docs/catheter_bundle.md`` have their own test, ``test_readme_commands.py``.)

Each ```bash and ```python block of ``bundles/<name>/docs/README.md`` runs in document order, as its text, in a
folder laid out like a checkout (``bundles/<name>`` copied there; ``data/...`` written by the README's own
data command). ``python``, ``torchrun`` and ``monai-adaloss`` are the stand-ins of ``doc_command_shim.py``: the
training runs get tiny overrides (a small input, 4-8-16 channels, 1 epoch, no loader workers); evaluation,
inference and export run with no override at all, so they must take the model's size and settings from the
trained model. What the test changes in the text is listed per bundle in ``Bundle.replace`` (the dataset
sizes of the data snippets, and the example paths such as ``/data/300W`` that stand for the reader's own data);
each of those strings must occur in the README, so a changed README cannot silently skip it. Blocks that
use the bundle-relative ``configs/`` or ``models/`` run in the bundle folder, as their README says.

The long benchmark commands of ``docs/`` run in ``test_long_doc_commands.py`` (with this file's helpers).
``docs/inference.md`` runs on a tiny catheter model; ``docs/dicom_node.md``'s ``serve`` command runs in
``test_serve.py`` against Orthanc.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bundle_checks import write_tiny_300w

from monai_adaloss.bundles import bundle_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SHIM = Path(__file__).resolve().parent / "doc_command_shim.py"
TINY_COMMON = {
    "--network_channels": "[4,8,16]",
    "--num_workers": "0",
    "--train_batch_size": "2",
    "--val_batch_size": "2",
    "--max_epochs": "1",
}

pytestmark = pytest.mark.slow


@dataclass
class Bundle:
    """One bundle's README run: its tiny training overrides, the text it changes, what must exist after."""

    name: str
    train_overrides: dict[str, str]
    replace: dict[str, str]
    """README text -> text of the tiny run (``{tmp}`` is the run folder)."""
    expect: tuple[str, ...]
    """Paths (relative to the run folder) that the commands must have written."""
    needs: Path | None = None
    """Data the test needs (the test skips when it is absent)."""
    prepare: Callable[[Path], None] | None = field(default=None)


def _tiny_hand_xray(tmp: Path) -> None:
    """A hand X-ray folder (images/, images.csv, landmarks.csv) of 4 training, 2 validation and 2 test images."""
    source, target = SHARED / "hand_xray", tmp / "hand_xray_folder"
    with (source / "images.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    keep: list[dict[str, str]] = []
    for split, count in (("train", 4), ("valid", 2), ("test", 2)):
        keep += [row for row in rows if row["split"] == split][:count]
    names = {row["image"] for row in keep}
    (target / "images").mkdir(parents=True)
    for name in names:
        shutil.copy(source / "images" / f"{name}.png", target / "images" / f"{name}.png")
    for table in ("images.csv", "landmarks.csv"):  # both start with the image column
        lines = (source / table).read_text().splitlines()
        kept = [line for line in lines[1:] if line.split(",")[0] in names]
        assert kept, table
        (target / table).write_text("\n".join([lines[0], *kept]) + "\n")


def _tiny_300w(tmp: Path) -> None:
    write_tiny_300w(tmp / "300W", SHARED / "faces_300w_samples")


BUNDLES = [
    Bundle(
        "endoscopic_tool_landmarks",
        {"--input_size": "[40,32]", **TINY_COMMON},
        {
            "300, 60, 60": "6, 2, 2",
            "monai-adaloss infer frames/": "monai-adaloss infer data/endoscopic_tool_landmarks/test/",
        },
        (
            "bundles/endoscopic_tool_landmarks/eval/metrics.csv",
            "predictions/records.jsonl",
            "bundles/endoscopic_tool_landmarks/models/model.ts",
            "bundles/endoscopic_tool_landmarks/models/model.onnx",
        ),
    ),
    Bundle(
        "face_landmarks_300w",
        {
            "--input_size": "[32,32]",
            "--init_channels": "4",
            "--growth_rate": "4",
            "--validation_every": "3",
            **TINY_COMMON,
        },
        {"/data/300W": "{tmp}/300W", "/data/faces": "{tmp}/300W/ibug"},
        (
            "metrics_common.csv",
            "metrics_challenging.csv",
            "metrics_full.csv",
            "bundles/face_landmarks_300w/predictions/indoor_029_landmarks.json",
            "bundles/face_landmarks_300w/models/model.ts",
            "bundles/face_landmarks_300w/models/model.onnx",
        ),
        needs=SHARED / "faces_300w_samples",
        prepare=_tiny_300w,
    ),
    Bundle(
        "hand_xray_landmarks",
        {"--input_size": "[32,32]", **TINY_COMMON},
        {"/path/to/hand_xray": "{tmp}/hand_xray_folder"},
        (
            "data/hand_xray/datalist.json",
            "bundles/hand_xray_landmarks/eval/metrics.csv",
            "bundles/hand_xray_landmarks/models/model.ts",
            "bundles/hand_xray_landmarks/models/model.onnx",
        ),
        needs=SHARED / "hand_xray",
        prepare=_tiny_hand_xray,
    ),
    Bundle(
        "landmarks_3d",
        {"--input_size": "[24,24,24]", **TINY_COMMON},
        {
            "shape=(128, 128, 48), spacing=(0.8, 0.8, 2.5)": "shape=(32, 32, 20), spacing=(1.2, 1.2, 2.5)",
            "shift_mm=(10, 10, 15)": "shift_mm=(0, 0, 0)",
            "40, 10, 10": "4, 2, 2",
            "/data/volumes": "data/landmarks_3d/test",
        },
        (
            "bundles/landmarks_3d/eval/metrics.csv",
            "bundles/landmarks_3d/models/model.ts",
            "bundles/landmarks_3d/models/model.onnx",
        ),
    ),
]


def blocks(text: str) -> list[tuple[str, str]]:
    """The ``(language, code)`` of every ```bash / ```python block, in document order."""
    return re.findall(r"^```(bash|python)\n(.*?)^```", text, flags=re.S | re.M)


def shim_path(folder: Path) -> str:
    """A ``PATH`` whose ``python``, ``torchrun`` and ``monai-adaloss`` are the stand-ins of ``doc_command_shim``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("python", "torchrun", "monai-adaloss"):
        script = folder / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SHIM}" {name} "$@"\n')
        script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def test_the_shim_overrides_training_runs_only() -> None:
    sys.path.insert(0, str(SHIM.parent))
    from doc_command_shim import command

    tiny = {"--max_epochs": "1", "--input_size": "[8,8]"}
    train = ["-m", "monai.bundle", "run", "--config_file", "bundles/x/configs/train.json", "--max_epochs", "50"]
    assert command("python", train, tiny)[1:] == [*train[:-1], "1", "--input_size", "[8,8]"]
    evaluate = ["-m", "monai.bundle", "run", "--config_file", "['train.json','evaluate.json']"]
    assert command("python", evaluate, tiny)[1:] == evaluate
    torchrun = command("torchrun", train, tiny)
    assert torchrun[1:3] == ["-m", "torch.distributed.run"] and torchrun[3].startswith("--master_port=")
    assert torchrun[4:] == command("python", train, tiny)[1:]
    script = ["benchmarks/x.py", "--channels", "8", "16", "32", "--epochs", "40", "--fixed-sigmas", "--threads", "1"]
    tiny_script = {"benchmarks/x.py": {"--channels": ["4", "8"], "--epochs": "1", "--fixed-sigmas": ["2"]}}
    assert command("python", script, {}, tiny_script)[1:] == [
        "benchmarks/x.py", "--channels", "4", "8", "--epochs", "1", "--fixed-sigmas", "2", "--threads", "1"
    ]  # fmt: skip
    assert command("python", script, {}, {})[1:] == script


def test_the_shim_runs_a_repeated_tiny_script_command_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(SHIM.parent))
    from doc_command_shim import earlier_run

    monkeypatch.chdir(tmp_path)
    log = tmp_path / "runs.jsonl"
    first = ["benchmarks/x.py", "--runs", "runs/a", "--output-dir", "out/one", "--threads", "1"]
    assert earlier_run(log, "python", first) is None
    again = earlier_run(log, "python", [*first[:4], "out/two", *first[5:]])  # only the output folder differs
    assert again is not None and again["output"] == str(tmp_path / "out" / "one")
    assert earlier_run(log, "python", [*first[:2], "runs/b", *first[3:]]) is None  # reads other runs
    assert earlier_run(log, "monai-adaloss", first) is None
    assert [json.loads(line)["repeat"] for line in log.read_text().splitlines()] == [False, True, False, False]


def test_a_repeated_command_finds_the_earlier_outputs_in_its_own_folder(tmp_path: Path) -> None:
    script = tmp_path / "benchmarks" / "x.py"
    script.parent.mkdir()
    script.write_text(
        "import pathlib, sys\nout = pathlib.Path(sys.argv[2])\nout.mkdir(parents=True)\n(out / 'r').write_text('1')\n"
    )
    env = {
        **os.environ,
        "PATH": shim_path(tmp_path / ".bin"),
        "DOC_SCRIPT_OVERRIDES": json.dumps({"benchmarks/x.py": {}}),
        "DOC_RUN_LOG": str(tmp_path / "runs.jsonl"),
    }
    code = "python benchmarks/x.py --output-dir out/one\npython benchmarks/x.py --output-dir out/two\n"
    run_blocks(tmp_path / "doc.md", f"```bash\n{code}```\n", env, lambda _code: tmp_path)
    assert (tmp_path / "out" / "two").is_symlink() and (tmp_path / "out" / "two" / "r").read_text() == "1"


def replaced(path: Path, replace: dict[str, str], tmp: Path) -> str:
    """The text of ``path`` with each ``replace`` key (which must occur) replaced by its value."""
    text = path.read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text, f"{path}: `{old}` is gone; update the test's tiny replacement"
        text = text.replace(old, new.format(tmp=tmp))
    return text


def run_blocks(doc: Path, text: str, env: dict[str, str], cwd: Callable[[str], Path]) -> None:
    """Run every block of ``text`` in order (bash blocks with ``-e -o pipefail``), in ``cwd(code)``."""
    for lang, code in blocks(text):
        argv = ["bash", "-e", "-o", "pipefail", "-c", code] if lang == "bash" else ["python", "-c", code]
        done = subprocess.run(argv, cwd=cwd(code), env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{doc}:\n{code}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_bundle_readme_commands_run_as_written(
    bundle: Bundle, tmp_path: Path, preloaded_python: dict[str, str]
) -> None:
    if bundle.needs is not None and not bundle.needs.is_dir():
        pytest.skip(f"{bundle.needs} not found")
    readme = bundle_path(bundle.name) / "docs" / "README.md"
    text = replaced(readme, bundle.replace, tmp_path)
    folder = tmp_path / "bundles" / bundle.name
    shutil.copytree(bundle_path(bundle.name), folder, ignore=shutil.ignore_patterns("models", "eval", "predictions"))
    if bundle.prepare is not None:
        bundle.prepare(tmp_path)
    env = {
        **os.environ,
        **preloaded_python,
        "PATH": shim_path(tmp_path / ".bin"),
        "DOC_TRAIN_OVERRIDES": json.dumps(bundle.train_overrides),
    }
    assert any(lang == "bash" and "monai.bundle run" in code for lang, code in blocks(text)), readme

    def cwd(code: str) -> Path:
        return folder if re.search(r"(?<![\w/.-])(configs|models)/", code) else tmp_path

    run_blocks(readme, text, env, cwd)
    missing = [path for path in bundle.expect if not (tmp_path / path).exists()]
    assert not missing, missing


# ------------------------------------------------------------------------------------------ docs/inference.md

INFERENCE_DOC_REPLACE = {
    "/data/exports": "{tmp}/data/catheter_tip_fluoro/test",
    "/data/more/IM0001": "{tmp}/more/IM0001",
    "/data/results": "{tmp}/results/{{block}}",
    "/shared/results": "{tmp}/shared_results",
    "-c model.pt": "-c models/model.pt",
}
"""The example paths of docs/inference.md: the reader's exports, one more file, results, and their model.

The command, the Python API and the bundle run are three ways to do the same: each gets its own results folder.
"""


def test_inference_doc_commands_run_as_written(tmp_path: Path, preloaded_python: dict[str, str]) -> None:
    """docs/inference.md's command, Python API, bundle run and torchrun scale-out on a tiny catheter model.

    The model: synthetic frames (``monai-adaloss synth``) and the catheter bundle's ``train.json`` for 1 epoch
    at 32x32 with 4-8-16 channels, in a copy of the bundle; ``worklist.txt`` lists one more frame.
    """
    path = ROOT / "docs" / "inference.md"
    text = replaced(path, INFERENCE_DOC_REPLACE, tmp_path)
    folder = tmp_path / "bundles" / "catheter_tip_fluoro"
    shutil.copytree(bundle_path("catheter_tip_fluoro"), folder, ignore=shutil.ignore_patterns("models", "eval"))
    env = {**os.environ, **preloaded_python, "PATH": shim_path(tmp_path / ".bin")}
    synth = ["monai-adaloss", "synth", "--n-train", "4", "--n-val", "2", "--n-test", "3", "--size", "64", "--quiet"]
    train = [
        "python", "-m", "monai.bundle", "run", "--config_file", "bundles/catheter_tip_fluoro/configs/train.json",
        "--bundle_root", "bundles/catheter_tip_fluoro", "--input_size", "[32,32]", "--network_channels", "[4,8,16]",
        "--num_workers", "0", "--train_batch_size", "2", "--val_batch_size", "2", "--max_epochs", "1",
    ]  # fmt: skip
    for argv in (synth, train):
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{argv}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    frames = sorted((tmp_path / "data" / "catheter_tip_fluoro" / "test").iterdir())
    (tmp_path / "more").mkdir()
    shutil.copy(frames[0], tmp_path / "more" / "IM0001")
    (tmp_path / "listed").mkdir()
    shutil.copy(frames[1], tmp_path / "listed" / "IM0002")
    (tmp_path / "worklist.txt").write_text(f"{tmp_path / 'listed' / 'IM0002'}\n")

    def cwd(code: str) -> Path:
        return folder if re.search(r"(?<![\w/.-])(configs|models)/", code) else tmp_path

    found = blocks(text)
    assert sum("{block}" in code for _, code in found) == 3
    for index, (lang, code) in enumerate(found):
        run_blocks(path, f"```{lang}\n{code.replace('{block}', str(index))}```\n", env, cwd)
    # the command: the test folder, one more file and the worklist's file; the API and the bundle: the folder
    counts = [len((tmp_path / "results" / str(i) / "records.jsonl").read_text().splitlines()) for i in (0, 1, 2)]
    assert counts == [len(frames) + 2, len(frames), len(frames)]
    assert list((tmp_path / "shared_results").glob("part-*"))
