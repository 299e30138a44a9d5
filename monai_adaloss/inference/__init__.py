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
"""

from .decode import DecodedFile, DecodeFailure, DecodeSettings, decode_file
from .errors import ExitCode, InferenceConfigError
from .heatmap_points import HeatmapDecoder
from .images import ImageReadError
from .inputs import InputFiles
from .landmarks import DecodeLandmarksd
from .model import DEFAULT_NETWORK_MODULES, LandmarkModel, OnnxNetwork, build_network, load_checkpoint
from .outputs import merge_outputs
from .records import RECORD_FIELDS, network_to_original
from .runner import InferenceRunner, InferenceSummary
from .sr import SCOORD_OFFSET

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
    "build_network",
    "decode_file",
    "load_checkpoint",
    "merge_outputs",
    "network_to_original",
]
