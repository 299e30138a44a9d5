"""Batch landmark inference over DICOM files or PNG/JPEG frames: robust, resumable, sharded, with DICOM SR output.

Use ``monai-adaloss infer`` (:mod:`.command`), :class:`InferenceRunner` from Python, or a bundle's
``configs/inference.json`` (whose ``evaluator`` is an :class:`InferenceRunner`); all three run the
same code. See ``docs/inference.md`` for the output formats, coordinates and exit codes.

Modules, one job each: :mod:`.inputs` (which files), :mod:`.model` (checkpoint -> network),
:mod:`.decode` (file -> network inputs, in workers; the checkpoint's reader picks DICOM or
:mod:`.images`), :mod:`.pool` (crash-contained decoding
workers), :mod:`.heatmap_points` (heatmaps -> points), :mod:`.records` (points -> records),
:mod:`.outputs` (crash-safe logs, merge), :mod:`.sharding` (ranks), :mod:`.sr` (DICOM SR),
:mod:`.overlays` (PNGs), :mod:`.runner` (the loop), :mod:`.command` (CLI).

Reusing the pieces (e.g. a DICOM network node): :class:`InferenceRunner` over a folder of received
files, or :func:`decode_file` + a :class:`LandmarkModel` + :class:`HeatmapDecoder` +
:func:`~.records.file_records` for one file, then :func:`write_structured_report` with the file's
:func:`source_header` and records (it raises :class:`SRSourceError` when the source cannot be
referenced; records never depend on it).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; imported on first use (PEP 562), so that importing one light submodule (e.g. the
# `infer` argument parser in .command) does not import torch and MONAI
_EXPORTS = {
    "DEFAULT_NETWORK_MODULES": "model",
    "DecodeFailure": "decode",
    "DecodeLandmarksd": "landmarks",
    "DecodeSettings": "decode",
    "DecodedFile": "decode",
    "ExitCode": "errors",
    "HeatmapDecoder": "heatmap_points",
    "ImageReadError": "images",
    "InferenceConfigError": "errors",
    "InferenceRunner": "runner",
    "InferenceSummary": "runner",
    "InputFiles": "inputs",
    "LandmarkModel": "model",
    "OnnxNetwork": "model",
    "RECORD_FIELDS": "records",
    "SCOORD_OFFSET": "sr",
    "SRSourceError": "sr",
    "build_network": "model",
    "decode_file": "decode",
    "load_checkpoint": "model",
    "merge_outputs": "outputs",
    "network_to_original": "records",
    "source_header": "sr",
    "write_structured_report": "sr",
}

__all__ = [
    "DEFAULT_NETWORK_MODULES",
    "RECORD_FIELDS",
    "SCOORD_OFFSET",
    "DecodeFailure",
    "DecodeLandmarksd",
    "DecodeSettings",
    "DecodedFile",
    "ExitCode",
    "HeatmapDecoder",
    "ImageReadError",
    "InferenceConfigError",
    "InferenceRunner",
    "InferenceSummary",
    "InputFiles",
    "LandmarkModel",
    "OnnxNetwork",
    "SRSourceError",
    "build_network",
    "decode_file",
    "load_checkpoint",
    "merge_outputs",
    "network_to_original",
    "source_header",
    "write_structured_report",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
