"""Checks shared by the bundle tests: MONAI's metadata schema, an initialised ``ConfigWorkflow``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

# meta_schema_20240725.json (https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/): the
# required top-level keys with their JSON types, and the required keys of a tensor in network_data_format. The schema
# is not shipped with MONAI and ``monai.bundle.verify_metadata`` downloads it, so its rules are written out here.
SCHEMA_REQUIRED = {
    "schema": str,
    "version": str,
    "monai_version": str,
    "pytorch_version": str,
    "numpy_version": str,
    "required_packages_version": dict,
    "task": str,
    "description": str,
    "authors": str,
    "copyright": str,
    "network_data_format": dict,
}
SCHEMA_OPTIONAL = {
    "changelog": dict,
    "data_source": str,
    "data_type": str,
    "image_classes": str,
    "label_classes": str,
    "pred_classes": str,
    "eval_metrics": dict,
    "intended_use": str,
    "references": list,
    "supported_apps": dict,
}
TENSOR_REQUIRED = {
    "type": str,
    "format": str,
    "num_channels": int,
    "spatial_shape": list,
    "dtype": str,
    "value_range": list,
}
TENSOR_OPTIONAL = {"is_patch_data": bool, "channel_def": dict}


def check_tensor(where: str, tensor: Any) -> None:
    """An ``argument``/``result`` of the schema: a number, string, boolean or a tensor object."""
    if isinstance(tensor, (int, float, str, bool)):
        return
    assert isinstance(tensor, dict), where
    for key, kind in TENSOR_REQUIRED.items():
        assert isinstance(tensor.get(key), kind) and not isinstance(tensor.get(key), bool), f"{where}: {key}"
    for key, kind in TENSOR_OPTIONAL.items():
        assert key not in tensor or isinstance(tensor[key], kind), f"{where}: {key}"
    assert all(isinstance(s, (str, int)) and not isinstance(s, bool) for s in tensor["spatial_shape"]), where
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in tensor["value_range"]), where


def check_metadata_schema(meta: dict[str, Any]) -> None:
    """Every mandatory key and type of the schema, the version in the changelog, every tensor of the data format."""
    for key, kind in SCHEMA_REQUIRED.items():
        assert isinstance(meta.get(key), kind), f"mandatory key {key!r} missing or not {kind.__name__}"
    for key, kind in SCHEMA_OPTIONAL.items():
        assert key not in meta or isinstance(meta[key], kind), key
    assert meta["version"] in meta["changelog"]
    nd = meta["network_data_format"]
    for group in ("inputs", "outputs", "post_processed_outputs"):
        for key, tensor in nd[group].items():
            check_tensor(f"network_data_format.{group}.{key}", tensor)


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
