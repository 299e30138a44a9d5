"""Checks shared by the bundle tests: MONAI's metadata schema, an initialised ``ConfigWorkflow``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft201909Validator
from monai.bundle import ConfigWorkflow

from monai_adaloss.export import read_model_info_json, write_model_info_json

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
"""Where MONAI's bundle metadata schema is published (also https://project-monai.github.io/schema/meta_schema_20240725.json)."""
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "meta_schema_20240725.json"
"""A verbatim copy of the schema at ``SCHEMA_URL`` (see ``tests/data/README.md``), so that validation runs offline."""


def check_metadata_schema(meta: dict[str, Any]) -> None:
    """``meta`` against MONAI's bundle schema (local copy, JSON Schema 2019-09); its version in the changelog."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in Draft201909Validator(schema).iter_errors(meta)]
    assert not errors, "metadata does not follow the bundle schema:\n" + "\n".join(errors)
    assert meta["schema"] == SCHEMA_URL
    assert meta["version"] in meta["changelog"]


def bundle_workflow(
    configs: Path, config_files: list[str], workflow_type: str, bundle_root: Path, dataset_dir: Path, **override: Any
) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` of ``configs/<config_files>`` with ``metadata.json`` and the overrides, initialised."""
    wf = ConfigWorkflow(
        config_file=[str(configs / name) for name in config_files],
        meta_file=str(configs / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        bundle_root=str(bundle_root),
        dataset_dir=str(dataset_dir),
        **override,
    )
    wf.initialize()
    return wf


def train_and_summarise(
    wf: ConfigWorkflow, root: Path, also: Callable[[ConfigWorkflow], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Check the train workflow's properties, run and finalise it; what the bundle tests read from it.

    Returns ``root``, ``missing`` (required properties not found), ``sigma_history`` of the schedule
    ``(epochs + 1, L)``, the evaluator's ``best_epoch``, ``best_metric`` and ``metrics``, the trainer's
    ``trainer_metrics``, plus what ``also(wf)`` returns (read before the workflow is finalised).
    """
    missing = wf.check_properties()
    wf.run()
    evaluator = wf.parser.get_parsed_content("validate::evaluator")
    result = {
        "root": root,
        "missing": missing,
        "sigma_history": wf.parser.get_parsed_content("adaloss_schedule").sigma_history,
        "best_epoch": evaluator.state.best_metric_epoch,
        "best_metric": evaluator.state.best_metric,
        "metrics": dict(evaluator.state.metrics),
        "trainer_metrics": dict(wf.parser.get_parsed_content("train::trainer").state.metrics),
        **(also(wf) if also is not None else {}),
    }
    wf.finalize()
    return result


def evaluate_as_trained(
    configs: Path,
    trained_root: Path,
    dataset_dir: Path,
    bundle_root: Path,
    change_info: Callable[[dict[str, Any]], None] | None = None,
    read: Sequence[str] = (),
    **data_override: Any,
) -> dict[str, Any]:
    """Run ``evaluate.json`` on a trained bundle's model with none of the training overrides repeated.

    ``trained_root/models`` is copied to ``bundle_root/models``; ``change_info`` may edit the copied
    ``model_info.json`` first (to set a value that differs from both train.json's default and the test's
    training run). ``data_override`` only says where the data is (``eval_split``, ``num_workers``...).
    Returns ``input_shapes`` (the spatial shape of every network input of the run), ``metrics``,
    ``missing`` (``check_properties()``) and the parsed value of every config id in ``read``.
    """
    shutil.copytree(trained_root / "models", bundle_root / "models")
    if change_info is not None:
        info = read_model_info_json(bundle_root / "models" / "model_info.json")
        change_info(info)
        write_model_info_json(info, bundle_root / "models" / "model_info.json")
    wf = bundle_workflow(configs, ["train.json", "evaluate.json"], "eval", bundle_root, dataset_dir, **data_override)
    missing = wf.check_properties()
    shapes: list[tuple[int, ...]] = []
    network = wf.parser.get_parsed_content("network")
    network.register_forward_pre_hook(lambda _module, args: shapes.append(tuple(args[0].shape[2:])))
    wf.run()
    result = {
        "input_shapes": set(shapes),
        "metrics": dict(wf.parser.get_parsed_content("evaluator").state.metrics),
        "missing": missing,
        **{key: wf.parser.get_parsed_content(key) for key in read},
    }
    wf.finalize()
    return result


def write_tiny_300w(root: Path, samples: Path) -> Path:
    """A 300-W folder layout under ``root`` with one face of ``shared/data/faces_300w_samples`` per sub-folder.

    ``lfpw/trainset``, ``helen/trainset`` and ``afw`` make the training split, ``lfpw/testset`` and
    ``helen/testset`` the common subset, ``ibug`` the challenging one; each image has its 68-point ``.pts``.
    """
    vw = samples / "300vw"
    coco = json.loads((samples / "300w" / "test_300w.json").read_text())
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    pngs = {names[a["image_id"]]: [a["keypoints"][i : i + 2] for i in range(0, 204, 3)] for a in coco["annotations"]}
    faces = {
        "lfpw/trainset": vw / "001" / "imgs" / "000006.jpg",
        "helen/trainset": vw / "001" / "imgs" / "000009.jpg",
        "afw": samples / "300w" / "indoor_020.png",
        "lfpw/testset": vw / "401" / "imgs" / "000731.jpg",
        "helen/testset": vw / "401" / "imgs" / "000732.jpg",
        "ibug": samples / "300w" / "indoor_029.png",
    }
    for folder, image in faces.items():
        target = root / folder
        target.mkdir(parents=True)
        shutil.copy(image, target / image.name)
        if image.suffix == ".png":
            points = pngs[image.name]
            body = "\n".join(f"{x} {y}" for x, y in points)
            (target / f"{image.stem}.pts").write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n")
        else:
            shutil.copy(image.parent.parent / "annot" / f"{image.stem}.pts", target / f"{image.stem}.pts")
    return root
