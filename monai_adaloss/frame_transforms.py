"""One description of a frame model's pre-processing, shared by training, the checkpoint and inference.

A bundle's ``train.json`` defines its geometric per-frame pre-processing once, as ``frame_transforms``: a
list of plain MONAI dictionary-transform configs on the key ``"image"`` (e.g. ``[{"_target_":
"monai.transforms.Resized", "keys": "image", "spatial_size": [256, 256], "mode": "area"}]``, with every
value resolved). Training and validation build their ``resize`` step from it (:func:`build_frame_transforms`),
the checkpoint's model info carries it as ``preprocessing["transforms"]``, and inference (the batch
runner's decoding workers and the bundle's standard ``inference.json``) builds the same transforms from the
model info: no second, hand-written description that could drift.

Because a checkpoint's configs are instantiated, they are checked first (:func:`check_frame_transform_configs`):
each ``_target_`` must be a transform class of :data:`FRAME_TRANSFORM_MODULES`, and no value may be a
``$`` expression, ``@`` reference or ``%`` macro, so a checkpoint cannot run code of its choosing.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FRAME_TRANSFORM_MODULES", "build_frame_transforms", "check_frame_transform_configs"]

FRAME_TRANSFORM_MODULES: tuple[str, ...] = ("monai.transforms", "monai_adaloss.transforms")
"""Modules whose transform classes a frame-transform config may name."""


def check_frame_transform_configs(configs: Any, where: str = "preprocessing.transforms") -> list[dict[str, Any]]:
    """Return ``configs`` as a list of plain dicts after checking every target and value.

    Raises:
        ValueError: naming the place of the first config that is not a list of transform configs, names a
            target outside :data:`FRAME_TRANSFORM_MODULES` or holds an expression, reference or macro.
    """
    if not isinstance(configs, Sequence) or isinstance(configs, str):
        raise ValueError(f"`{where}` must be a list of transform configs, got {type(configs).__name__}.")
    checked = []
    for index, config in enumerate(configs):
        place = f"{where}[{index}]"
        if not isinstance(config, Mapping) or "_target_" not in config:
            raise ValueError(f"`{place}` must be a transform config with a `_target_`, got {config!r}.")
        _check_target(config["_target_"], place)
        for key, value in config.items():
            if key != "_target_" and str(key).startswith("_"):
                raise ValueError(f"`{place}` holds the special key `{key}`; only plain arguments are allowed.")
            _check_value(value, f"{place}.{key}")
        checked.append(dict(config))
    return checked


def build_frame_transforms(configs: Any) -> Any:
    """A MONAI ``Compose`` of the (checked) frame-transform configs; ``data["image"]`` is a ``(C, *spatial)`` image.

    Raises:
        ValueError: see :func:`check_frame_transform_configs`.
    """
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    checked = check_frame_transform_configs(configs)
    transforms = ConfigParser({"transforms": checked}).get_parsed_content("transforms", instantiate=True)
    return Compose(transforms)


def _check_target(target: Any, place: str) -> None:
    module_name, _, name = target.rpartition(".") if isinstance(target, str) else ("", "", "")
    allowed = False
    if module_name in FRAME_TRANSFORM_MODULES:
        obj = getattr(importlib.import_module(module_name), name, None)
        allowed = inspect.isclass(obj) and callable(obj)
    if not allowed:
        raise ValueError(
            f"`{place}` names `{target}`; frame transforms may only be classes of {list(FRAME_TRANSFORM_MODULES)}."
        )


def _check_value(value: Any, place: str) -> None:
    if isinstance(value, str) and value[:1] in ("$", "@", "%"):
        raise ValueError(f"`{place}` holds the expression or reference {value!r}; only plain values are allowed.")
    if isinstance(value, Mapping):
        if "_target_" in value:
            raise ValueError(f"`{place}` nests a component; only plain values are allowed.")
        for key, item in value.items():
            _check_value(item, f"{place}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_value(item, f"{place}[{index}]")
