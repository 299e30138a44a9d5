"""TorchScript and ONNX artefacts of a trained landmark model, each carrying its model info.

A bundle's ``models/model.pt`` is ``{"model": state_dict, "model_info": LandmarkModelInfo.state_dict()}``.
The exported forms carry the same model info, so that inference from them needs nothing else:

- ``models/model.ts`` (``python -m monai.bundle ckpt_export``, see the bundles' READMEs, or
  :func:`export_torchscript`): a TorchScript archive whose extra file ``model_info.json`` holds
  ``{MODEL_INFO_KEY: model_info}`` (next to MONAI's ``metadata.json`` and ``inference.json``). It loads
  with plain ``torch.jit.load`` (no ``monai_adaloss`` needed).
- ``models/model.onnx`` (:func:`export_onnx`): opset :data:`ONNX_OPSET`, input ``image``
  ``(B, C, *input_size)``, output ``heatmaps`` ``(B, L, *input_size)``, dynamic batch ``B``; the model
  info is the JSON metadata property ``model_info``.

The sidecar ``models/model_info.json`` (written by training next to ``model.pt``, see
:class:`~monai_adaloss.handlers.ModelInfoSaver`) has the same ``{MODEL_INFO_KEY: model_info}``
content; ``ckpt_export`` copies it into ``model.ts`` when it is given as a second ``--config_file``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "MODEL_INFO_EXTRA_FILE",
    "MODEL_INFO_KEY",
    "ONNX_OPSET",
    "export_onnx",
    "export_torchscript",
    "input_channels",
    "model_info_document",
    "parse_model_info_value",
    "read_model_info_json",
    "read_onnx_model_info",
    "read_torchscript_model_info",
    "write_model_info_json",
]

MODEL_INFO_KEY = "landmark_model_info"
"""Top-level key of ``model_info.json`` (distinct from every config id, since ``ckpt_export`` merges the file)."""
MODEL_INFO_EXTRA_FILE = "model_info.json"
"""Name of the model info in a TorchScript archive's extra files (and of the sidecar next to ``model.pt``)."""
ONNX_OPSET = 18
"""ONNX opset of :func:`export_onnx` (the torch.export-based exporter's own; the issue asks >= 17)."""


def model_info_document(model_info: Mapping[str, Any]) -> dict[str, str]:
    """``{MODEL_INFO_KEY: "<model info as JSON text>"}``: the content of ``model_info.json``.

    The model info is JSON *text* inside the document: ``ckpt_export`` and MONAI Deploy merge the
    file into a bundle config, where a nested ``{"_target_": ...}`` (the network config) would be
    instantiated when referenced; a string stays a plain value.
    """
    return {MODEL_INFO_KEY: json.dumps(dict(model_info), sort_keys=True)}


def parse_model_info_value(value: Any, source: str) -> dict[str, Any]:
    """The model info dict from a ``model_info.json`` document's :data:`MODEL_INFO_KEY` value (text or dict)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise ValueError(f"`{source}`: `{MODEL_INFO_KEY}` is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"`{source}`: `{MODEL_INFO_KEY}` is a {type(value).__name__}, expected a JSON object.")
    return value


def read_model_info_json(path: str | os.PathLike) -> dict[str, Any]:
    """The model info of a ``model_info.json`` file."""
    return _model_info_from_document(Path(path).read_bytes(), str(path))


def write_model_info_json(model_info: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``model_info.json`` atomically (a reader never sees half a file); return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(model_info_document(model_info), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def _model_info_from_document(text: str | bytes, source: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError as err:
        raise ValueError(f"`{source}` holds no valid model info JSON: {err}") from err
    if not isinstance(document, dict) or MODEL_INFO_KEY not in document:
        raise ValueError(f"`{source}` holds no `{MODEL_INFO_KEY}` entry.")
    return parse_model_info_value(document[MODEL_INFO_KEY], source)


def export_torchscript(
    network: nn.Module,
    path: str | os.PathLike,
    model_info: Mapping[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Script ``network`` (eval mode) and save it with ``model_info.json`` among its extra files.

    ``python -m monai.bundle ckpt_export`` writes the same kind of archive (plus MONAI's metadata);
    this is its Python-level equivalent for tests and ``monai-adaloss export``.
    """
    scripted = torch.jit.script(network.eval())
    files = {MODEL_INFO_EXTRA_FILE: json.dumps(model_info_document(model_info)).encode()}
    files.update(extra_files or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files=files)
    return path


def read_torchscript_model_info(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load a TorchScript model on the CPU and its model info (extra file ``model_info.json``).

    Raises:
        ValueError: the archive has no (valid) ``model_info.json``; the message names the file and
            says how to include it.
    """
    files = {MODEL_INFO_EXTRA_FILE: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    if not files[MODEL_INFO_EXTRA_FILE]:
        raise ValueError(
            f"TorchScript model `{path}` has no extra file `{MODEL_INFO_EXTRA_FILE}`; export it with "
            "`ckpt_export ... --config_file \"['configs/inference.json','models/model_info.json']\"` (bundle README)."
        )
    return module, _model_info_from_document(files[MODEL_INFO_EXTRA_FILE], f"{path}:{MODEL_INFO_EXTRA_FILE}")


def export_onnx(
    network: nn.Module,
    path: str | os.PathLike,
    model_info: Mapping[str, Any],
    in_channels: int,
    opset: int = ONNX_OPSET,
) -> Path:
    """Export ``network`` to ONNX: input ``image (B, in_channels, *input_size)``, output ``heatmaps``, dynamic B.

    The model info (``input_size`` gives the spatial shape) is stored as the metadata property
    ``model_info`` (JSON). Needs the ``onnx`` extra (``onnx``, ``onnxscript``).
    """
    import onnx  # optional dependency: imported where needed

    network = network.eval()
    example = torch.zeros(2, in_channels, *[int(s) for s in model_info["input_size"]])
    batch = torch.export.Dim("batch", min=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            network,
            (example,),
            input_names=["image"],
            output_names=["heatmaps"],
            opset_version=opset,
            dynamic_shapes=({0: batch},),
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "model_info", json.dumps(dict(model_info))
    onnx.save(proto, str(path))
    return path


def read_onnx_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``model_info`` metadata property of an ONNX file.

    Raises:
        ValueError: the file has no ``model_info`` property.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == "model_info":
            return json.loads(entry.value)
    raise ValueError(
        f"ONNX model `{path}` has no `model_info` metadata property; export it with `monai-adaloss export`."
    )


def input_channels(network: nn.Module) -> int:
    """Input channels of a landmark network: those of its first convolution's weight, less the
    CoordConv channels when an :class:`~monai_adaloss.networks.AddCoordinates` comes before it."""
    from .networks import AddCoordinates

    coordinates = False
    for module in network.modules():
        if isinstance(module, AddCoordinates):
            coordinates = True
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            spatial_dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(module)]
            return int(module.in_channels) - (spatial_dims if coordinates else 0)
    raise ValueError(f"Cannot find a convolution in {type(network).__name__} to read its input channels from.")
