"""Load a trained landmark model from its checkpoint: network, model info and identity.

Three forms load (:func:`load_checkpoint` picks by the file's suffix):

- ``.pt``: the bundle's checkpoint (below);
- ``.ts``: a TorchScript archive with the extra file ``model_info.json`` (``ckpt_export``, see
  :mod:`monai_adaloss.export`); no network config is built;
- ``.onnx``: an ONNX model with the ``model_info`` metadata property, run by onnxruntime on the CPU
  (the ``onnx`` extra) through :class:`OnnxNetwork`.

The ``.pt`` checkpoint is a dict loaded with ``torch.load(path, weights_only=True)`` (no pickled code):
``{"model": network.state_dict(), "model_info": LandmarkModelInfo.state_dict(), ...}`` (training
checkpoints hold more entries; they are ignored). The network is rebuilt from
``model_info["network"]``, a MONAI-config-style dict, with ``monai.bundle.ConfigParser``. Because a
config can name any callable, the dict is checked first: its ``_target_`` values must lie in
``network_modules`` and it may hold no ``$`` expressions, ``@`` references or ``%`` macros, so a
checkpoint cannot run code of its choosing.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import nn

from ..model_info import LandmarkModelInfo
from .errors import InferenceConfigError

__all__ = [
    "DEFAULT_NETWORK_MODULES",
    "LandmarkModel",
    "OnnxNetwork",
    "build_network",
    "check_frame_model",
    "load_checkpoint",
]

DEFAULT_NETWORK_MODULES: tuple[str, ...] = ("monai_adaloss.networks", "monai.networks.nets")
"""Modules whose classes and functions a checkpoint's ``model_info["network"]`` may name."""

_WEIGHT_KEYS = ("model", "network")  # the bundle's contract is "model"; `network` is what CheckpointSaver examples use


@dataclass
class LandmarkModel:
    """A trained model ready for inference.

    Attributes:
        network: the network with its trained weights, in eval mode, on the CPU.
        info: what the checkpoint carries for pre-processing and decoding.
        checkpoint: the checkpoint file.
        sha256: hex SHA-256 of the checkpoint file (the model's identity in every output).
    """

    network: nn.Module
    info: LandmarkModelInfo
    checkpoint: str
    sha256: str

    @property
    def model_id(self) -> str:
        """The short identity written in every record: the first 16 hex digits of ``sha256``."""
        return self.sha256[:16]

    def identity(self) -> dict[str, Any]:
        """Plain-value description of the model for ``run.json`` and ``summary.json``."""
        info = self.info
        return {
            "checkpoint": self.checkpoint,
            "sha256": self.sha256,
            "landmark_names": [str(n) for n in info.landmark_names],
            "input_size": [int(s) for s in info.input_size],
            "max_instances": int(info.max_instances),
            "sigma": info.current_sigma(),
            "normalize": info.normalize,
            "preprocessing": dict(info.preprocessing),
            "decoding": dict(info.decoding),
        }


def load_checkpoint(
    checkpoint: str | os.PathLike,
    network: nn.Module | None = None,
    network_modules: Sequence[str] = DEFAULT_NETWORK_MODULES,
) -> LandmarkModel:
    """Load a checkpoint (``weights_only=True``) into a :class:`LandmarkModel`.

    Args:
        checkpoint: the checkpoint file.
        network: a network to load the weights into (e.g. a bundle's ``network_def``); ``None``
            builds it from the model info with :func:`build_network`. The weights must match it
            exactly (``strict=True``).
        network_modules: modules the model info's network config may name.

    Raises:
        InferenceConfigError: the file is missing or unreadable, holds no weights or no model info,
            names a network outside ``network_modules``, or its weights do not fit the network.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise InferenceConfigError(f"Checkpoint `{path}` does not exist.")
    if path.suffix.lower() in (".ts", ".onnx"):
        if network is not None:
            raise InferenceConfigError(
                f"`{path}` holds its own network; a `network` is only loaded from a `.pt` checkpoint."
            )
        return _load_exported(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InferenceConfigError(f"Cannot load checkpoint `{path}` with weights_only=True: {err}") from err
    if not isinstance(state, Mapping):
        raise InferenceConfigError(f"Checkpoint `{path}` holds a {type(state).__name__}, expected a dict.")
    info = _model_info(path, state)
    weights_key = next((key for key in _WEIGHT_KEYS if key in state), None)
    if weights_key is None:
        raise InferenceConfigError(f"Checkpoint `{path}` holds no `model` weights (keys: {sorted(state)}).")
    if network is None:
        network = build_network(info, network_modules)
    try:
        network.load_state_dict(state[weights_key], strict=True)
    except (RuntimeError, TypeError, ValueError) as err:
        raise InferenceConfigError(f"The weights in `{path}` do not fit the network: {err}") from err
    return LandmarkModel(network=network.eval(), info=info, checkpoint=str(path.absolute()), sha256=_sha256(path))


def build_network(
    model_info: LandmarkModelInfo | str | os.PathLike, network_modules: Sequence[str] = DEFAULT_NETWORK_MODULES
) -> nn.Module:
    """Build the (untrained) network that a checkpoint's model info describes.

    Args:
        model_info: the model info, or a checkpoint file holding it.
        network_modules: modules whose callables ``model_info.network`` may name.

    Raises:
        InferenceConfigError: the config names a callable outside ``network_modules``, holds an
            expression/reference/macro, or does not build an ``nn.Module``.
    """
    if not isinstance(model_info, LandmarkModelInfo):
        path = Path(model_info)
        if not path.is_file():
            raise InferenceConfigError(f"Checkpoint `{path}` does not exist.")
        model_info = _model_info(path, torch.load(path, map_location="cpu", weights_only=True))
    config = dict(model_info.network)
    _check_network_config(config, tuple(network_modules), "network")
    try:
        network = ConfigParser({"network": config}).get_parsed_content("network", instantiate=True)
    except Exception as err:
        raise InferenceConfigError(f"Cannot build the network from the model info {config}: {err}") from err
    if not isinstance(network, nn.Module):
        raise InferenceConfigError(f"The model info's network config built a {type(network).__name__}, not a Module.")
    return network


class OnnxNetwork(nn.Module):
    """An ONNX landmark model run by onnxruntime on the CPU, called like the network it was exported from.

    ``forward(image (B, C, *input_size)) -> heatmaps (B, L, *input_size)`` (float32, on the input's
    device). The session is created on first use, so the module pickles and moves (``.to``) freely.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime intra-op threads (0: its default).
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        super().__init__()
        self.path = str(path)
        self.threads = threads
        self._session: Any = None

    def _get_session(self) -> Any:
        if self._session is None:
            try:
                import onnxruntime
            except ImportError as err:
                raise InferenceConfigError(
                    f"Running `{self.path}` needs onnxruntime: pip install 'monai_adaloss[onnx]'."
                ) from err
            options = onnxruntime.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
            self._session = onnxruntime.InferenceSession(
                self.path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        return self._session

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        session = self._get_session()
        feed = {session.get_inputs()[0].name: image.detach().float().cpu().contiguous().numpy()}
        return torch.from_numpy(session.run(None, feed)[0]).to(image.device)


def _load_exported(path: Path) -> LandmarkModel:
    """A ``.ts`` or ``.onnx`` model with the model info it carries."""
    from ..export import read_onnx_model_info, read_torchscript_model_info

    network: nn.Module
    try:
        if path.suffix.lower() == ".ts":
            network, state = read_torchscript_model_info(path)
        else:
            state = read_onnx_model_info(path)
            network = OnnxNetwork(path)
    except ImportError as err:
        raise InferenceConfigError(
            f"Loading `{path}` needs the `onnx` extra: pip install 'monai_adaloss[onnx]' ({err})."
        ) from err
    except Exception as err:
        raise InferenceConfigError(f"Cannot load `{path}`: {err}") from err
    try:
        info = LandmarkModelInfo.from_state_dict(state)
    except (ValueError, TypeError, KeyError) as err:
        raise InferenceConfigError(f"`{path}` carries an invalid model info: {err}") from err
    return LandmarkModel(network=network.eval(), info=info, checkpoint=str(path.absolute()), sha256=_sha256(path))


def check_frame_model(info: LandmarkModelInfo, source: str) -> None:
    """Refuse, saying why, a model that the 2D frame runner cannot apply: run its bundle's ``inference.json``.

    The batch runner reads DICOM or PNG/JPEG frames and only resizes them. A volume model (3D input
    size), a model whose input is a crop around a given face box (``crop_margin``: the box comes from
    annotation points), and one with another pre-processing (the hand X-ray model: per-image min-max,
    longest side resized and zero-padded) run with their bundle's ``inference.json`` instead.

    Raises:
        InferenceConfigError: naming the reason and the command that runs the model.
    """
    pre = info.preprocessing
    command = "python -m monai.bundle run --config_file <bundle>/configs/inference.json --bundle_root <bundle>"
    reason = None
    if len(info.input_size) != 2:
        reason = f"it is a {len(info.input_size)}D model (input size {list(info.input_size)}); infer reads 2D frames"
    elif "crop_margin" in pre:
        reason = "its input is a crop around a face box given by annotation points (.pts), which infer has not"
    elif {"resize", "pad"} & set(pre):
        reason = f"its pre-processing ({pre.get('resize')}; {pre.get('pad')}) is not infer's resize-only pipeline"
    if reason is not None:
        raise InferenceConfigError(f"`{source}` cannot run under monai-adaloss infer: {reason}. Run: {command}")


def _model_info(path: Path, state: Mapping[str, Any]) -> LandmarkModelInfo:
    if "model_info" not in state:
        raise InferenceConfigError(f"Checkpoint `{path}` holds no `model_info` entry (keys: {sorted(state)}).")
    try:
        return LandmarkModelInfo.from_state_dict(state["model_info"])
    except (ValueError, TypeError, KeyError) as err:
        raise InferenceConfigError(f"Checkpoint `{path}` has an invalid `model_info`: {err}") from err


def _check_network_config(value: Any, modules: tuple[str, ...], where: str) -> None:
    """Reject callables outside ``modules`` and every expression, reference or macro."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "_target_":
                _check_target(item, modules, where)
            elif isinstance(key, str) and key.startswith("_"):
                raise InferenceConfigError(
                    f"The model info's network config holds the special key `{key}` at `{where}`."
                )
            else:
                _check_network_config(item, modules, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_network_config(item, modules, f"{where}[{index}]")
    elif isinstance(value, str) and value[:1] in ("$", "@", "%"):
        raise InferenceConfigError(
            f"The model info's network config holds the expression or reference {value!r} at `{where}`; "
            "only plain values are allowed."
        )


def _check_target(target: Any, modules: tuple[str, ...], where: str) -> None:
    """``target`` must be ``module.name`` with ``module`` in ``modules`` and name a Module class or a function of it."""
    module_name, _, name = target.rpartition(".") if isinstance(target, str) else ("", "", "")
    allowed = False
    if module_name in modules:
        try:
            obj = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            obj = None
        defined_in = getattr(obj, "__module__", None) or ""
        from_module = defined_in == module_name or defined_in.startswith(module_name + ".")
        allowed = from_module and ((inspect.isclass(obj) and issubclass(obj, nn.Module)) or inspect.isfunction(obj))
    if not allowed:
        raise InferenceConfigError(
            f"The model info's network config names `{target}` at `{where}`; a checkpoint may only name network "
            f"classes and functions defined in {list(modules)}."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
