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

The bundles' documents in ``docs/`` (``endoscopy.md``, ``hand_xray.md``, ``landmarks_3d.md``), ``adaloss.md`` and
``annotation_noise.md`` hold benchmark commands that run for minutes to hours; each is marked ``LONG`` in the
document, and the test runs it as written with the script's tiny arguments (``LongDoc.scripts``, e.g. 1 epoch, a
32-pixel grid, 4-8-16 channels); a command that the tiny arguments make the same as an earlier one of the
document (only its output folder differs) is counted (``LongDoc.repeats``), not run again. ``docs/accuracy.md``
is one of them too; its peer-library commands need a separate venv that the project's environment must never
hold, so they are marked ``external``: not run, but every option they give a ``benchmarks/`` script must be one
of that script's. ``docs/inference.md`` runs on a tiny catheter model; ``docs/dicom_node.md``'s ``serve`` command
runs in ``test_serve.py`` against Orthanc.
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
def test_bundle_readme_commands_run_as_written(bundle: Bundle, tmp_path: Path) -> None:
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
        "PATH": shim_path(tmp_path / ".bin"),
        "OMP_NUM_THREADS": "1",
        "DOC_TRAIN_OVERRIDES": json.dumps(bundle.train_overrides),
    }
    assert any(lang == "bash" and "monai.bundle run" in code for lang, code in blocks(text)), readme

    def cwd(code: str) -> Path:
        return folder if re.search(r"(?<![\w/.-])(configs|models)/", code) else tmp_path

    run_blocks(readme, text, env, cwd)
    missing = [path for path in bundle.expect if not (tmp_path / path).exists()]
    assert not missing, missing


# ---------------------------------------------------------------------------------- long commands of docs/

LONG = "<!-- long-running: tests/test_bundle_readme_commands.py runs this command with tiny arguments -->\n```bash"
"""What a document writes before a command that runs for minutes: the test runs it with the tiny arguments."""
EXTERNAL = re.compile(r"<!-- external: [^\n]*-->\n```bash\n(.*?)^```\n?", flags=re.S | re.M)
"""A command that needs what the project's environment must never hold (the peer library's own venv): the test
does not run it, but checks that every option it gives a ``benchmarks/`` script is one of that script's options."""


def check_external_commands(path: Path, text: str) -> str:
    """Check the options of the ``EXTERNAL`` blocks of ``text``; return the text without them."""
    for code in EXTERNAL.findall(text):
        for script, options in re.findall(r"(benchmarks/\w+\.py)((?:\\\n|[^\n])*)", code):
            source = (ROOT / script).read_text(encoding="utf-8")
            for option in re.findall(r"(?<!\S)(--[\w-]+)", options):
                assert f'"{option}"' in source, f"{path}: {script} has no option {option}"
    return EXTERNAL.sub("", text)


@dataclass
class LongDoc:
    """A document of ``docs/`` whose commands are long benchmark runs, and their tiny arguments."""

    name: str
    scripts: dict[str, dict[str, str | list[str]]]
    """Script -> its tiny arguments (``{tmp}`` is the run folder)."""
    expect: tuple[str, ...]
    replace: dict[str, str] = field(default_factory=dict)
    needs: Path | None = None
    prepare: Callable[[Path], None] | None = None
    repeats: int = 0
    """How many of the document's script commands are repeats of an earlier one once their arguments are the
    tiny ones (``DOC_RUN_LOG`` of ``doc_command_shim.py``): recorded, not run again."""


LONG_DOCS = [
    LongDoc(
        "endoscopy.md",
        {
            "benchmarks/endoscopy_eval.py": {
                "--n-train": "6",
                "--n-val": "2",
                "--n-test": "2",
                "--frame-size": ["64", "80"],
                "--input-size": ["40", "32"],
                "--channels": ["4", "8", "16"],
                "--epochs": "1",
                "--batch-size": "2",
            }
        },
        ("endo_bench/results.md",),
        replace={"/tmp/endo/bench": "{tmp}/endo_bench"},
    ),
    LongDoc(
        "hand_xray.md",
        {
            "benchmarks/hand_xray_adaloss.py": {
                "--size": "32",
                "--epochs": "1",
                "--channels": ["4", "8", "16"],
                "--batch-size": "2",
                "--fixed-sigmas": ["2"],
            }
        },
        (
            "benchmarks_out/hand_xray/results.md",
            "benchmarks_out/hand_xray_adaloss100/results.md",
            "docs/images/hand_xray_sigma.png",
        ),
        replace={"../shared/data/hand_xray": "{tmp}/hand_xray_folder"},
        needs=SHARED / "hand_xray",
        prepare=_tiny_hand_xray,
    ),
    LongDoc(
        "landmarks_3d.md",
        {
            "benchmarks/landmarks_3d_figure.py": {
                "--n-train": "4",
                "--n-val": "2",
                "--n-test": "2",
                "--shape": ["32", "32", "20"],
                "--spacing": ["1.2", "1.2", "2.5"],
                "--shift": ["0", "0", "0"],
                "--input-size": ["24", "24", "24"],
                "--channels": ["4", "8", "16"],
                "--epochs": "1",
                "--threads": "1",
                "--output-dir": "{tmp}/landmarks_3d",
                "--figure": "{tmp}/landmarks_3d.png",
            }
        },
        ("landmarks_3d/results.json", "landmarks_3d.png"),
    ),
    LongDoc(
        "adaloss.md",
        {
            "benchmarks/adaloss_adaptivity.py": {"--quick": [], "--seeds": ["0"], "--epochs": "2", "--threads": "1"},
            "demo": {"--profile": "tiny", "--threads": "1"},  # monai-adaloss demo
            "benchmarks/catheter_schedule_study.py": {
                "--seeds": ["0"],
                "--schedules": ["default", "fixed_3"],
                "--": ["--tiny", "--threads", "1"],
            },
        },
        (
            "benchmarks_out/adaloss_adaptivity.jsonl",
            "benchmarks_out/adaloss_adaptivity.md",
            "docs/images/adaptivity",
            "benchmarks_out/catheter_schedules/study.md",
            "benchmarks_out/catheter_schedules/fixed_3/seed0/results.json",
        ),
        replace={"for seed in 0 1 2;": "for seed in 0;"},
    ),
    LongDoc(
        "annotation_noise.md",
        {
            "benchmarks/annotation_noise_study.py": {
                "--seeds": ["0"],
                "--noise-px": ["0", "3"],
                "--frame-size": "64",
                "--size": "32",
                "--n-train": "8",
                "--n-test": "4",
                "--epochs": "1",
                "--channels": ["4", "8"],
                "--batch-size": "4",
            }
        },
        ("benchmarks_out/noise_study",),
    ),
]


def test_external_commands_are_checked_against_the_script_not_run() -> None:
    marker = "<!-- external: a separate venv -->\n```bash\n"
    command = "/venv/bin/python benchmarks/peer_landmarker.py --data d \\\n    --learnable --threads 2\n"
    good = f"a\n{marker}{command}```\nb\n"
    assert check_external_commands(Path("doc.md"), good) == "a\nb\n"
    with pytest.raises(AssertionError, match="no option --no-such-option"):
        check_external_commands(Path("doc.md"), good.replace("--learnable", "--no-such-option"))


def _tiny_demo_and_hand_xray(tmp: Path) -> None:
    """A tiny catheter demo run (``runs/demo_tiny``) for ``outliers.py catheter`` and a tiny hand X-ray folder."""
    _tiny_demo(tmp)
    _tiny_hand_xray(tmp)


def _tiny_demo(tmp: Path) -> None:
    """A tiny catheter demo run in ``runs/demo_tiny`` (synthetic data, trained model, ``results.json``)."""
    demo = [str(Path(sys.executable).parent / "monai-adaloss"), "demo", "--tiny", "--quiet", "--threads", "1"]
    done = subprocess.run([*demo, "-o", str(tmp / "runs" / "demo_tiny")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


LONG_DOCS += [
    LongDoc(
        "accuracy.md",
        {
            "benchmarks/outliers.py": {"--threads": "1", "--n-test": "4"},
            "benchmarks/hand_schedule_study.py": {"--seeds": ["0"], "--epochs": "1", "--schedules": ["default"]},
            "benchmarks/demo_epoch_time.py": {"--profile": "tiny", "--epochs": "1", "--threads": "1"},
            "demo": {"--profile": "tiny", "--threads": "1", "--n-train": "8", "--epochs": "1"},  # monai-adaloss demo
            "benchmarks/catheter_body_target.py": {
                "--epochs": "1",
                "--eval-from": "1",
                "--input-size": "32",
                "--threads": "1",
            },
        },
        (
            "benchmarks_out/outliers_cath/results.md",
            "benchmarks_out/hand_study/study.md",
            "runs/ce1600_s0/results.json",
            "runs/s8/f_s0/results.json",
            "benchmarks_out/s8_outliers200/results.md",
            "benchmarks_out/s8_outliers200_cpu/results.md",
            "runs/s8/g_s0/results.json",
            "runs/s9/cpuov_s0/results.json",
            "benchmarks_out/s9_outliers200/results.md",
            "benchmarks_out/s10_body/s0_w1/result.json",
            "docs/images/catheter_worst_frames.png",
        ),
        replace={
            "for seed in 0 1 2;": "for seed in 0;",
            "runs/demo_paper_s0 runs/demo_paper_s1 runs/demo_ctx_s0 runs/demo_ctxB_s0": "runs/demo_tiny",
            "runs/shipped_s0 runs/shipped_s1 runs/shipped_s2 runs/x_ce1600_s0 runs/x_ce1600_s1 runs/x_ce1600_s2 "
            "runs/s8/e1_s0 runs/s8/f_s0": "runs/demo_tiny",
            "runs/s8/g_s0 runs/s8/g_s1 runs/s8/cpu22_s2": "runs/demo_tiny",
            "runs/s9/cpuov_s0 runs/s9/cpuov_s1 runs/s9/cpuov_s2 runs/s9/r10_s0 runs/s9/r10_e60c_s0 runs/s9/r10c18_s0 "
            "runs/s9/r10c18ov_s0": "runs/demo_tiny",
            "--data runs/shipped_s0/data": "",
            "--data runs/s8/cpu22_s2/data": "",
            "../shared/data/hand_xray": "{tmp}/hand_xray_folder",
            "benchmarks_out/s10_body/s1_w0 --epoch 20": "benchmarks_out/s10_body/s0_w0 --epoch 1",
        },
        needs=SHARED / "hand_xray",
        prepare=_tiny_demo_and_hand_xray,
        repeats=4,  # three more outliers.py runs on runs/demo_tiny, one more demo_epoch_time.py on --profile tiny
    ),
    LongDoc(
        "sigma_sweep.md",
        {
            "benchmarks/catheter_sigma_sweep.py": {
                "--size": "32",
                "--frame-size": "64",
                "--n-train": "4",
                "--n-test": "2",
                "--epochs": "1",
                "--batch-size": "2",
                "--channels": ["4", "8", "16"],
                "--runs": ["fixed_5", "adaloss_lr1e-3"],
                "--threads": "1",
            }
        },
        ("docs/images/lr_study.png", "docs/images/lr_study_median.png", "benchmarks_out/sweep_small/results.md"),
        repeats=1,  # sweep128_b: the tiny --runs make it the same as sweep128_a
    ),
    LongDoc(
        "synthetic_realism.md",
        {"benchmarks/synthetic_realism.py": {"--n-test": "4"}},
        ("runs/demo_tiny/results.json",),
        replace={"/tmp/demo_n400": "runs/demo_tiny", "/tmp/demo_c": "runs/demo_tiny"},
        prepare=_tiny_demo,
    ),
]


@pytest.mark.parametrize("doc", LONG_DOCS, ids=lambda d: d.name)
def test_long_doc_commands_run_with_tiny_arguments(doc: LongDoc, tmp_path: Path) -> None:
    """The benchmark commands of a bundle's document, from a folder where ``benchmarks/`` is the checkout's."""
    if doc.needs is not None and not doc.needs.is_dir():
        pytest.skip(f"{doc.needs} not found")
    path = ROOT / "docs" / doc.name
    text = check_external_commands(path, replaced(path, doc.replace, tmp_path))
    assert text.count(LONG) == text.count("```bash") > 0, f"{path}: mark every long command with {LONG!r}"
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks", target_is_directory=True)
    if doc.prepare is not None:
        doc.prepare(tmp_path)
    scripts = {
        script: {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in values.items()}
        for script, values in doc.scripts.items()
    }
    assert all(script in text for script in scripts), path
    env = {
        **os.environ,
        "PATH": shim_path(tmp_path / ".bin"),
        "OMP_NUM_THREADS": "1",
        "DOC_SCRIPT_OVERRIDES": json.dumps(scripts),
        "DOC_RUN_LOG": str(tmp_path / "doc_runs.jsonl"),
    }
    run_blocks(path, text, env, lambda _code: tmp_path)
    missing = [p for p in doc.expect if not (tmp_path / p).exists()]
    assert not missing, missing
    record = tmp_path / "doc_runs.jsonl"
    runs = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    assert all(script in {run["command"][1] for run in runs if not run["repeat"]} for script in scripts), runs
    assert sum(run["repeat"] for run in runs) == doc.repeats, [run["argv"] for run in runs if run["repeat"]]


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


def test_inference_doc_commands_run_as_written(tmp_path: Path) -> None:
    """docs/inference.md's command, Python API, bundle run and torchrun scale-out on a tiny catheter model.

    The model: synthetic frames (``monai-adaloss synth``) and the catheter bundle's ``train.json`` for 1 epoch
    at 32x32 with 4-8-16 channels, in a copy of the bundle; ``worklist.txt`` lists one more frame.
    """
    path = ROOT / "docs" / "inference.md"
    text = replaced(path, INFERENCE_DOC_REPLACE, tmp_path)
    folder = tmp_path / "bundles" / "catheter_tip_fluoro"
    shutil.copytree(bundle_path("catheter_tip_fluoro"), folder, ignore=shutil.ignore_patterns("models", "eval"))
    env = {**os.environ, "PATH": shim_path(tmp_path / ".bin"), "OMP_NUM_THREADS": "1"}
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
