"""The bundles' shipped configs are generated from one shared base plus a per-bundle overlay (``bundles/_source``)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monai_adaloss.bundle_configs import JSON_FILES, deep_merge, generate, main, mismatches, split_common

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def test_shipped_configs_equal_the_generated_ones() -> None:
    assert mismatches(BUNDLES) == []
    assert main(["--check", "--bundles-dir", str(BUNDLES)]) == 0


def test_the_common_structure_lives_once_in_the_base() -> None:
    base = json.loads((BUNDLES / "_source" / "base" / "train.json").read_text())
    # the training/evaluation skeleton every bundle shares
    assert base["train"]["trainer"]["_target_"] == "monai.engines.SupervisedTrainer"
    assert base["validate"]["evaluator"]["_target_"] == "monai.engines.SupervisedEvaluator"
    assert base["train"]["checkpoint_saver"]["_target_"] == "monai.handlers.CheckpointSaver"
    for name in {p.parent.parent.name for p in BUNDLES.glob("*/configs/metadata.json")}:
        overlay = json.loads((BUNDLES / "_source" / name / "train.json").read_text())
        assert "trainer" not in overlay.get("train", {}), name
    multi_gpu = {(BUNDLES / "_source" / n / "multi_gpu_train.json").read_text() for n in ("catheter_tip_fluoro",)}
    assert multi_gpu == {"{}\n"}  # the multi-GPU overlay is the same for every bundle


def test_a_changed_source_is_detected(tmp_path: Path) -> None:
    copy = tmp_path / "bundles"
    for path in BUNDLES.rglob("*"):
        if path.is_file() and ("configs" in path.parts or "_source" in path.parts):
            target = copy / path.relative_to(BUNDLES)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    base = copy / "_source" / "base" / "train.json"
    content = json.loads(base.read_text())
    content["seed"] = 1
    base.write_text(json.dumps(content))
    found = mismatches(copy)
    assert len(found) == len({p.parent.parent for p in copy.glob("*/configs/metadata.json")})
    assert main(["--write", "--bundles-dir", str(copy)]) == 0
    assert mismatches(copy) == []
    assert json.loads((copy / "catheter_tip_fluoro" / "configs" / "train.json").read_text())["seed"] == 1
    assert set(generate(copy)) >= {copy / "landmarks_3d" / "configs" / f for f in JSON_FILES}


def test_split_and_merge_round_trip() -> None:
    configs = [
        {"a": 1, "b": {"x": [1], "y": 2}, "c": "only here"},
        {"a": 1, "b": {"x": [1], "y": 3}},
        {"b": {"x": [1], "y": 2}, "a": 1},
    ]
    common, rests = split_common(configs)
    assert common == {"a": 1, "b": {"x": [1]}}
    assert [deep_merge(common, rest) for rest in rests] == configs


def _strings(node: object) -> list[str]:
    """Every key and string value in a JSON tree."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (str(key), *_strings(value))]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_configs_reach_no_list_position_and_no_private_attribute() -> None:
    shipped = sorted(BUNDLES.glob("*/configs/*.json")) + sorted((BUNDLES / "_source").glob("*/*.json"))
    assert len(shipped) >= 5 * 6
    for path in shipped:
        for text in _strings(json.loads(path.read_text())):
            assert not re.search(r"(::|#)\d+", text), f"{path}: {text!r} reaches into a list position"
            assert not re.search(r"\._[A-Za-z]", text), f"{path}: {text!r} uses a private attribute"


def test_handlers_have_ids_and_the_multi_gpu_overlay_uses_them() -> None:
    base = json.loads((BUNDLES / "_source" / "base" / "train.json").read_text())
    assert "'adaloss': @train::adaloss_handler," in base["train"]["resume_dict"]
    assert base["train"]["adaloss_handler"]["_target_"] == "monai_adaloss.handlers.AdalossHandler"
    assert base["train"]["trainer"]["train_handlers"] == "$[@train::adaloss_handler] + @train::handlers"
    # MONAI 1.6.1's ConfigWorkflow.check_properties reads every train::handlers entry as a dict (h["_target_"])
    assert all(isinstance(h, dict) for h in base["train"]["handlers"])
    for name in ("train::checkpoint_saver", "train::checkpoint_loader", "train::best_model_loader"):
        assert f"@{name}.attach(@train::trainer)" in " ".join(base["run"]), name
    multi_gpu = json.loads((BUNDLES / "_source" / "base" / "multi_gpu_train.json").read_text())
    assert multi_gpu["is_main_process"] == "$dist.get_rank() == 0"
    assert not [key for key in multi_gpu if "handlers" in key]


def test_the_readme_commands_round_trip_on_a_copy(tmp_path: Path) -> None:
    """bundles/README.md's three commands, each on a copy of the bundles (``--bundles-dir``), in its order."""
    block = re.findall(r"```bash\n(.*?)```", (BUNDLES / "README.md").read_text(), flags=re.S)[0]
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert [c[-1] for c in commands] == ["--write", "--extract", "--check"]
    copy = tmp_path / "bundles"
    shutil.copytree(BUNDLES, copy, ignore=shutil.ignore_patterns("models", "eval", "predictions"))
    for argv in commands:
        assert argv[:3] == ["python", "-m", "monai_adaloss.bundle_configs"], argv
        done = subprocess.run([sys.executable, *argv[1:], "--bundles-dir", str(copy)], capture_output=True, text=True)
        assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    assert mismatches(copy) == []
    for shipped in BUNDLES.glob("*/configs/*.json"):
        assert json.loads((copy / shipped.relative_to(BUNDLES)).read_text()) == json.loads(shipped.read_text())
    for source in (BUNDLES / "_source").glob("*/*.json"):  # extracting the shipped configs gives the sources back
        assert json.loads((copy / source.relative_to(BUNDLES)).read_text()) == json.loads(source.read_text()), source


@pytest.mark.parametrize("bundle", ["catheter_tip_fluoro", "endoscopic_tool_landmarks", "hand_xray_landmarks",
                                    "landmarks_3d"])  # fmt: skip
def test_cache_datasets_cache_every_deterministic_step(bundle: str) -> None:
    """CacheDataset caches up to the first Randomizable step: a nested Compose (itself Randomizable) there
    would make every epoch re-load and re-resize each frame. Training caches through the resize, validation
    caches everything."""
    from monai.bundle import ConfigParser
    from monai.transforms import Randomizable, RandomizableTrait, Transform

    from monai_adaloss.bundles import bundle_path

    parser = ConfigParser()
    parser.read_config(str(bundle_path(bundle) / "configs" / "train.json"))
    for split, expect_random in (("train", True), ("validate", False)):
        steps = parser.get_parsed_content(f"{split}::preprocessing").transforms
        uncached = [i for i, t in enumerate(steps) if isinstance(t, RandomizableTrait) or not isinstance(t, Transform)]
        if not expect_random:
            assert uncached == [], (bundle, split, [type(steps[i]).__name__ for i in uncached])
            continue
        first = steps[uncached[0]]
        assert type(first).__name__.startswith("Rand") and isinstance(first, Randomizable), (bundle, type(first))
        assert any(type(t).__name__ in ("Resized", "ResizeWithPadOrCropd") for t in steps[: uncached[0]]), bundle


def test_catheter_bundle_device_overlay_is_off_by_default_and_sized_to_the_input() -> None:
    """``device_overlay_prob`` switches the synthetic device layers on; the layers' spacing follows the input grid
    (the bundle's 256 px frames at 0.3-0.4 mm), and the step comes last among the random ones, so the other
    augmentations draw the same numbers with it off."""
    from monai.bundle import ConfigParser

    from monai_adaloss.bundles import bundle_path
    from monai_adaloss.synthetic.device_overlay import RandDeviceOverlayd

    for overrides, prob, spacing in (({}, 0.0, (0.3, 0.4)), ({"device_overlay_prob": 0.5, "input_size": [128, 128]},
                                                            0.5, (0.6, 0.8))):  # fmt: skip
        parser = ConfigParser()
        parser.read_config(str(bundle_path("catheter_tip_fluoro") / "configs" / "train.json"))
        parser.update(overrides)
        steps = parser.get_parsed_content("train::preprocessing").transforms
        overlays = [t for t in steps if isinstance(t, RandDeviceOverlayd)]
        assert len(overlays) == 1 and overlays[0].prob == prob
        assert overlays[0].pixel_spacing_mm == pytest.approx(spacing)
        random_steps = [t for t in steps if type(t).__name__.startswith("Rand")]
        assert random_steps[-1] is overlays[0]
