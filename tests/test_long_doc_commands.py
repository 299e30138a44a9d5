"""The long benchmark commands of ``docs/`` run as written, with each script's tiny arguments.

The bundles' documents in ``docs/`` (``endoscopy.md``, ``hand_xray.md``, ``landmarks_3d.md``), ``adaloss.md``,
``annotation_noise.md``, ``accuracy.md`` and others hold benchmark commands that run for minutes to hours; each is
marked ``LONG`` in the document, and the test runs it as written with the script's tiny arguments
(``LongDoc.scripts``, e.g. 1 epoch, a 32-pixel grid, 4-8-16 channels); a command that the tiny arguments make the
same as an earlier one of the document (only its output folder differs) is counted (``LongDoc.repeats``), not run
again. ``docs/accuracy.md``'s peer-library commands need a separate venv that the project's environment must never
hold, so they are marked ``external``: not run, but every option they give a ``benchmarks/`` script must be one
of that script's. The stand-ins for ``python`` and ``monai-adaloss`` and the block runner are those of
``test_bundle_readme_commands.py`` (a separate file so that the two long files can run on separate workers).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_bundle_readme_commands import ROOT, SHARED, _tiny_hand_xray, replaced, run_blocks, shim_path

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------- long commands of docs/

LONG = "<!-- long-running: tests/test_long_doc_commands.py runs this command with tiny arguments -->\n```bash"
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
            "benchmarks/catheter_weight_averaging.py": {
                "--epochs": "1",
                "--eval-from": "1",
                "--input-size": "32",
                "--threads": "1",
            },
            "benchmarks/catheter_body_channel.py": {"--n-frames": "2", "--input-size": "32", "--threads": "1"},
            "synth": {"--n-train": "8", "--n-val": "2", "--n-test": "2", "--size": "64"},  # monai-adaloss synth
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
            "benchmarks_out/s11_averaging/s0/result.json",
            "runs/s11/cpu20_s0/results.json",
            "benchmarks_out/s11_outliers200/results.md",
            "benchmarks_out/s12_outliers200/results.md",
            "benchmarks_out/s12_body_channel_s1.json",
            "benchmarks_out/s12_cosine/s0/result.json",
            "benchmarks_out/s12_scaling/n1600_e20/result.json",
            "benchmarks_out/s12_scaling/n400_e80/result.json",
            "benchmarks_out/s13_steps/n400_e80_s0/result.json",
            "runs/s13/in64_s0/results.json",
        ),
        replace={
            "for seed in 0 1 2;": "for seed in 0;",
            "for seed in 1 2;": "for seed in 0;",
            "runs/demo_paper_s0 runs/demo_paper_s1 runs/demo_ctx_s0 runs/demo_ctxB_s0": "runs/demo_tiny",
            "runs/shipped_s0 runs/shipped_s1 runs/shipped_s2 runs/x_ce1600_s0 runs/x_ce1600_s1 runs/x_ce1600_s2 "
            "runs/s8/e1_s0 runs/s8/f_s0": "runs/demo_tiny",
            "runs/s8/g_s0 runs/s8/g_s1 runs/s8/cpu22_s2": "runs/demo_tiny",
            "runs/s9/cpuov_s0 runs/s9/cpuov_s1 runs/s9/cpuov_s2 runs/s9/r10_s0 runs/s9/r10_e60c_s0 runs/s9/r10c18_s0 "
            "runs/s9/r10c18ov_s0": "runs/demo_tiny",
            "runs/s11/cpu20_s0 runs/s11/cpu20_s1 runs/s11/cpu20_s2": "runs/demo_tiny",
            "--data runs/shipped_s0/data": "",
            "--data runs/s8/cpu22_s2/data": "",
            "../shared/data/hand_xray": "{tmp}/hand_xray_folder",
            "benchmarks_out/s10_body/s1_w0 --epoch 20": "benchmarks_out/s10_body/s0_w0 --epoch 1",
            "benchmarks_out/s10_body/s1_w1 --epoch 21 --data runs/s9/cpuov_s1/data --data-seed 1": (
                "benchmarks_out/s10_body/s0_w1 --epoch 1 --data runs/s9/cpuov_s0/data --data-seed 0"
            ),
        },
        needs=SHARED / "hand_xray",
        prepare=_tiny_demo_and_hand_xray,
        repeats=6,  # four more outliers.py runs on runs/demo_tiny, one more demo_epoch_time.py on --profile tiny,
        # and session 13's 8000-step runs (seed 0 with the tiny arguments: session 12's command)
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
def test_long_doc_commands_run_with_tiny_arguments(
    doc: LongDoc, tmp_path: Path, preloaded_python: dict[str, str]
) -> None:
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
        **preloaded_python,
        "PATH": shim_path(tmp_path / ".bin"),
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
