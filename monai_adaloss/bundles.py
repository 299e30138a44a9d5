"""The MONAI bundles shipped with monai_adaloss, and the small helpers their configs call.

Finding a bundle (:func:`bundle_path`): an installed wheel carries the bundles as package data in
``monai_adaloss/bundles_data/<name>/`` (read with :mod:`importlib.resources`); a checkout (editable
install or ``PYTHONPATH``) has them in ``bundles/<name>/`` next to the package. The package data is
looked at first, the checkout second.

Config helpers (called from ``configs/*.json`` as ``$monai_adaloss.bundles.<name>(...)``):

- :func:`load_datalist`: a split of a MONAI-style landmark datalist, with image paths made absolute,
  ``frame`` defaulting to 0 and a clear error when the datalist does not exist.
- :func:`latest_checkpoint`: the newest full training checkpoint in a folder, for resuming.
- :func:`bundle_model_info`: the model info the inference configs take sizes, names, network and
  decoding from, without needing ``models/model.pt`` (MONAI Deploy may hold only ``model.ts``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist

__all__ = [
    "BUNDLES_DATA_PACKAGE",
    "available_bundles",
    "build_bundle_network",
    "bundle_model_info",
    "bundle_path",
    "exit_code_of",
    "frame_transforms_of",
    "latest_checkpoint",
    "load_datalist",
]

BUNDLES_DATA_PACKAGE = "monai_adaloss.bundles_data"
"""The package (data only, no ``__init__.py``) that holds the bundles in an installed wheel."""

_CHECKOUT = Path(__file__).resolve().parent.parent
_EPOCH_CHECKPOINT = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def _bundle_roots() -> list[Traversable]:
    """Folders that may hold bundles, in lookup order: the package data, then a checkout's ``bundles/``."""
    roots: list[Traversable] = []
    with contextlib.suppress(ModuleNotFoundError):  # absent in a checkout without a bundles_data mapping
        roots.append(resources.files(BUNDLES_DATA_PACKAGE))
    if (_CHECKOUT / "pyproject.toml").is_file():
        roots.append(_CHECKOUT / "bundles")
    return roots


def _as_bundle(candidate: Traversable) -> Path | None:
    """``candidate`` as a file-system path when it is a bundle folder (it has ``configs/metadata.json``)."""
    path = Path(str(candidate))
    return path if (path / "configs" / "metadata.json").is_file() else None


def available_bundles() -> list[str]:
    """Names of the bundles :func:`bundle_path` can find, sorted."""
    return sorted(
        {child.name for root in _bundle_roots() if root.is_dir() for child in root.iterdir() if _as_bundle(child)}
    )


def bundle_path(name: str) -> Path:
    """The root folder of the bundle ``name`` (the folder holding ``configs/``, ``docs/``, ``LICENSE``).

    Raises:
        FileNotFoundError: naming the folders searched when no bundle of that name exists.
    """
    roots = _bundle_roots()
    for root in roots:
        found = _as_bundle(root.joinpath(name))
        if found is not None:
            return found
    raise FileNotFoundError(f"No bundle named {name!r} in {[str(r) for r in roots]}; available: {available_bundles()}.")


def load_datalist(
    datalist: str | os.PathLike, split: str, base_dir: str | os.PathLike | None = None, how_to_make: str | None = None
) -> list[dict]:
    """Read one split of a landmark datalist (the format of ``monai-adaloss synth``, see the bundle's README).

    ``{"training": [entry, ...], "validation": [...], "test": [...]}`` with entries like
    ``{"image": "training/000003.dcm", "frame": 2, "label": {"tip": [[x, y]]}}``: ``image`` relative
    to ``base_dir`` (default: the datalist's folder), ``frame`` the 0-based frame of a multi-frame
    file (default 0), ``label`` inline points ``(x, y) = (column, row)`` or a CSV/JSON file (see
    :class:`~monai_adaloss.transforms.LoadLandmarks`).

    ``how_to_make`` is the sentence the missing-datalist error gives on how to make one (default: the
    synthetic data of ``monai-adaloss synth``).

    Returns:
        The split's entries (copies) with ``image`` (and ``label`` when it names an existing file)
        made absolute and ``frame`` set.

    Raises:
        FileNotFoundError: when the datalist does not exist (saying how to make one).
        ValueError: when the file is not a JSON object with a non-empty list under ``split``.
    """
    path = Path(datalist)
    if not path.is_file():
        if how_to_make is None:
            how_to_make = f"Make a synthetic dataset there with `monai-adaloss synth --output-dir {path.parent}`."
        raise FileNotFoundError(
            f"Datalist `{path}` does not exist. {how_to_make} Or set `dataset_dir` (or `datalist`) to your own "
            "data (format: the bundle's docs/README.md)."
        )
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict) or not isinstance(content.get(split), list) or not content[split]:
        splits = sorted(k for k, v in content.items() if isinstance(v, list)) if isinstance(content, dict) else []
        raise ValueError(f"Datalist `{path}` has no entries under {split!r}; its lists are {splits}.")
    entries = load_decathlon_datalist(
        path, is_segmentation=False, data_list_key=split, base_dir=path.parent if base_dir is None else base_dir
    )
    return [{"frame": 0, **entry} for entry in entries]


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> str:
    """The full training checkpoint ``checkpoint_epoch=N.pt`` with the largest N in ``ckpt_dir``.

    Raises:
        FileNotFoundError: when there is none.
    """
    found = [
        (int(match.group(1)), path)
        for path in Path(ckpt_dir).glob("checkpoint_epoch=*.pt")
        if (match := _EPOCH_CHECKPOINT.search(path.name))
    ]
    if not found:
        raise FileNotFoundError(
            f"No training checkpoint `checkpoint_epoch=N.pt` in `{ckpt_dir}` to resume from; "
            "set `ckpt_path` to a checkpoint file or train without `resume`."
        )
    return str(max(found)[1])


def bundle_model_info(bundle_root: str | os.PathLike, given: Any = None) -> dict[str, Any]:
    """The model info (``LandmarkModelInfo.state_dict()``) of a bundle's trained model, as plain values.

    Looked for, in this order (the first found wins):

    1. ``given``: the ``landmark_model_info`` value of a merged ``model_info.json`` (``ckpt_export``
       and MONAI Deploy merge it into ``inference.json``; ``None`` when absent);
    2. ``<bundle_root>/models/model_info.json`` (written by training next to ``model.pt``);
    3. the extra file ``model_info.json`` of ``<bundle_root>/models/model.ts``;
    4. the ``model_info`` entry of ``<bundle_root>/models/model.pt`` (``weights_only=True``);
    5. what ``<bundle_root>/configs/train.json`` would save with its default values (untrained).

    Raises:
        FileNotFoundError: none of them exists (the message lists where it looked).
    """
    from .export import parse_model_info_value, read_model_info_json, read_torchscript_model_info
    from .model_info import load_model_info

    if given is not None:
        return parse_model_info_value(given, "landmark_model_info")
    models = Path(bundle_root) / "models"
    if (models / "model_info.json").is_file():
        return read_model_info_json(models / "model_info.json")
    if (models / "model.ts").is_file():
        return read_torchscript_model_info(models / "model.ts")[1]
    if (models / "model.pt").is_file():
        return load_model_info(models / "model.pt").state_dict()
    train = Path(bundle_root) / "configs" / "train.json"
    if train.is_file():
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(train))
        parser["bundle_root"] = str(bundle_root)
        return parser.get_parsed_content("model_info").state_dict()
    raise FileNotFoundError(
        f"No model info for the bundle at `{bundle_root}`: no models/model_info.json, models/model.ts, "
        "models/model.pt or configs/train.json there. Set `bundle_root`, or merge a model_info.json config."
    )


def build_bundle_network(model_info: Any) -> Any:
    """The (untrained) network that a model info dict describes (a bundle's ``network_def``).

    Only network classes and functions of :data:`~monai_adaloss.inference.DEFAULT_NETWORK_MODULES`
    may be named (see :func:`~monai_adaloss.inference.build_network`).
    """
    from .inference.model import build_network
    from .model_info import LandmarkModelInfo

    info = model_info if isinstance(model_info, LandmarkModelInfo) else LandmarkModelInfo.from_state_dict(model_info)
    return build_network(info)


def exit_code_of(summary: Any) -> Any:
    """Print the batch runner's summary line; raise ``SystemExit`` with its exit code when it is not 0.

    ``monai.bundle run`` exits 0 whatever its ``run`` expressions return; this makes a run of
    ``inference.json`` in which files failed exit with 1 (``ExitCode.FILES_FAILED``), as ``monai-adaloss
    infer`` does. Returns ``summary`` otherwise.
    """
    code = int(getattr(summary, "exit_code", 0))
    print(summary.line())
    if code:
        raise SystemExit(code)
    return summary


def frame_transforms_of(model_info: Any) -> Any:
    """The model's per-frame transforms to its input grid (a MONAI ``Compose`` on ``data["image"]``).

    ``preprocessing["transforms"]`` of the model info (the bundle's training definition, see
    :mod:`monai_adaloss.frame_transforms`); for a model info without it (older checkpoints) a ``Resized``
    to ``input_size`` with its ``resize_mode`` / ``anti_aliasing``.
    """
    from .frame_transforms import build_frame_transforms

    info = model_info.state_dict() if hasattr(model_info, "state_dict") else dict(model_info)
    pre = info.get("preprocessing") or {}
    if "transforms" in pre:
        return build_frame_transforms(pre["transforms"])
    return build_frame_transforms(
        [
            {
                "_target_": "monai.transforms.Resized",
                "keys": "image",
                "spatial_size": [int(s) for s in info["input_size"]],
                "mode": str(pre.get("resize_mode", "area")),
                "anti_aliasing": bool(pre.get("anti_aliasing", False)),
            }
        ]
    )
