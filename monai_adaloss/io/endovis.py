"""Reader of the EndoVis'15 instrument pose annotations (Du et al., IEEE TMI 37(5), 2018).

File format (``surgical-vision/EndoVisPoseAnnotation``, e.g. ``train1_labels.json``): a JSON list with one
entry per video frame, ``{"class": "image", "filename": "...", "annotations": [...]}``; each annotation is
``{"class": <joint>, "id": "toolN", "x": <column>, "y": <row>}``. Joints are `ENDOVIS_JOINTS`; tool ids
``tool1``/``tool2`` are needle drivers (`NEEDLE_DRIVER_IDS`), ``tool3``/``tool4`` scissors (`SCISSORS_IDS`).
Points are ``(x, y) = (column, row)`` in pixels of the 720x576 frame: the order MONAI's PIL reader uses, so
they are used as they are (DESIGN.md section 2).

Quirks of the real files and how `read_endovis_annotations` handles them
---------------------------------------------------------------------------
- Only every 5th frame is annotated; the other entries have ``"annotations": []``. Those frames are **not
  annotated** (not "no instrument"), so they are left out. An annotated frame in which none of the chosen
  tools or joints occurs is kept, with all-NaN points (a true negative).
- ``filename`` is the annotator's absolute path (``/Users/.../Dataset5/Raw/img_0001.png``); frames are keyed
  by its base name, and `endovis_datalist` joins that base name to a local image folder.
- An annotation without ``"id"`` (``test5_labels.json``: 128 ``EndPoint`` entries, always tool1's) is given
  to the frame's only tool that lacks that joint.
- A joint given twice for one tool: within `REPEAT_CLICK_PX` of each other it is one point clicked twice
  (``test5_labels.json`` frame ``img_0070.png``, tool4's LeftClasperPoint) and the first click is kept;
  farther apart, one of them carries the wrong tool id (``train1_labels.json`` frames ``img_000130_raw.png``
  RightClasperPoint and ``img_000180_raw.png`` EndPoint: both tool1's, while tool2 lacks that joint). The
  tool keeps the point nearest the mean of its other joints and the other goes, as for a missing id, to
  the frame's only tool lacking the joint.
- A point that cannot be given to a tool that way is dropped. One warning per file counts what was repaired
  or dropped (for the chosen joints).
- Coordinates are sub-pixel floats in ``train1`` and whole numbers in the test files; both are kept as read.
- ``TrackedPoint`` occurs only in some files: asking for it elsewhere gives NaN points, not an error.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ENDOVIS_JOINTS",
    "NEEDLE_DRIVER_IDS",
    "REPEAT_CLICK_PX",
    "SCISSORS_IDS",
    "EndoVisFrame",
    "endovis_datalist",
    "read_endovis_annotations",
]

ENDOVIS_JOINTS = ("LeftClasperPoint", "RightClasperPoint", "HeadPoint", "ShaftPoint", "TrackedPoint", "EndPoint")
"""Joint (landmark) types of the EndoVis'15 pose annotations, from the jaw tips to the shaft's end."""
NEEDLE_DRIVER_IDS = ("tool1", "tool2")
"""Tool ids of the needle drivers (tool1 right, tool2 left)."""
SCISSORS_IDS = ("tool3", "tool4")
"""Tool ids of the scissors (tool3 right, tool4 left): the unseen tool type of the test sequences 5 and 6."""
REPEAT_CLICK_PX = 3.0
"""Two annotations of one tool's joint closer than this (pixels) are one point clicked twice."""

Point = tuple[float, float]


@dataclass(frozen=True)
class EndoVisFrame:
    """The chosen joints of one annotated frame.

    Slot ``k`` of `points` is tool ``tool_ids[k]`` for every landmark channel (tools in id order); slots
    after ``len(tool_ids)`` and joints a tool lacks are NaN.
    """

    index: int
    """0-based position of the frame in the file's list."""
    filename: str
    """The frame's ``filename`` as written in the file (the annotator's path)."""
    landmarks: tuple[str, ...]
    """EndoVis joint names of the L landmark channels."""
    points: np.ndarray
    """float32 ``(L, K_max, 2)``: ``(x, y) = (column, row)`` of each landmark and tool, NaN-padded."""
    tool_ids: tuple[str, ...]
    """Tool id of each filled slot, in slot order."""


def _tool_order(tool_id: str) -> tuple[int, str]:
    """Sort key putting ``tool2`` before ``tool10``."""
    digits = re.sub(r"\D", "", tool_id)
    return (int(digits) if digits else math.inf, tool_id)


def _parse_annotation(item: object, where: str) -> tuple[str, str | None, Point]:
    """``(joint, tool id or None, (x, y))`` of one annotation, validated."""
    if not isinstance(item, Mapping) or not isinstance(item.get("class"), str):
        raise ValueError(f"{where} has an annotation that is not an object with a `class`: {item!r}.")
    x, y = item.get("x"), item.get("y")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (x, y)):
        raise ValueError(f"{where} has an annotation without finite numbers `x` and `y`: {item!r}.")
    tool_id = item.get("id")
    if tool_id is not None and not isinstance(tool_id, str):
        raise ValueError(f"{where} has an annotation whose `id` is not a string: {item!r}.")
    return item["class"], tool_id, (float(x), float(y))


def _assign_joint(
    joint: str, annotations: list[tuple[str, str | None, Point]], tools: set[str], counts: dict[str, int]
) -> dict[str, Point]:
    """Tool id -> point of one joint in one frame, repairing missing ids and duplicates (module docstring)."""
    by_tool: dict[str, list[Point]] = {}
    orphans: list[Point] = []
    for name, tool_id, point in annotations:
        if name != joint:
            continue
        if tool_id is None:
            orphans.append(point)
            counts["without id"] += 1
        else:
            by_tool.setdefault(tool_id, []).append(point)
    assigned: dict[str, Point] = {}
    for tool_id, points in by_tool.items():
        first = np.asarray(points[0])
        if all(np.hypot(*(np.asarray(p) - first)) <= REPEAT_CLICK_PX for p in points[1:]):
            assigned[tool_id] = points[0]
            counts["clicked twice"] += len(points) - 1
            continue
        others = [p for name, t, p in annotations if t == tool_id and name != joint]
        centre = np.mean(others, axis=0) if others else first
        keep = int(np.argmin([np.hypot(*(np.asarray(p) - centre)) for p in points]))
        assigned[tool_id] = points[keep]
        orphans.extend(p for i, p in enumerate(points) if i != keep)
        counts["duplicated for one tool"] += len(points) - 1
    vacancies = sorted(tools - assigned.keys())
    if len(orphans) == 1 and len(vacancies) == 1:
        assigned[vacancies[0]] = orphans[0]
        counts["given to the tool lacking it"] += 1
    else:
        counts["dropped"] += len(orphans)
    return assigned


def read_endovis_annotations(
    path: str | Path,
    landmarks: Sequence[str] = ("LeftClasperPoint", "RightClasperPoint"),
    tool_ids: Sequence[str] | None = None,
    max_instances: int = 2,
) -> dict[str, EndoVisFrame]:
    """Read an EndoVis'15 pose annotation file into ``(L, K_max, 2)`` points per annotated frame.

    Args:
        path: the JSON file (e.g. ``train1_labels.json``).
        landmarks: EndoVis joint names (`ENDOVIS_JOINTS`) of the L landmark channels, in order.
        tool_ids: tools to keep (e.g. `NEEDLE_DRIVER_IDS` to leave the scissors out); None keeps all.
        max_instances: ``K_max``, the number of instance slots; the EndoVis'15 robotic sequences show at
            most two instruments at once.

    Returns:
        Frame base name (e.g. ``"img_0001.png"``) -> `EndoVisFrame`, in file order, for the annotated frames
        only (see the module docstring for the files' quirks). Slot ``k`` holds the k-th kept tool of the
        frame, in id order, that has at least one of `landmarks`.

    Raises:
        FileNotFoundError: when `path` does not exist.
        ValueError: naming the file (and frame) on a malformed file, an unknown joint name in `landmarks`, or
            a frame with more than `max_instances` tools.
    """
    path = Path(path)
    if isinstance(landmarks, str) or not landmarks or len(set(landmarks)) != len(landmarks):
        raise ValueError(f"Argument `landmarks` must be a non-empty sequence of unique joint names, got {landmarks!r}.")
    unknown = [name for name in landmarks if name not in ENDOVIS_JOINTS]
    if unknown:
        raise ValueError(f"Argument `landmarks` has unknown joints {unknown}; EndoVis joints are {ENDOVIS_JOINTS}.")
    if tool_ids is not None and (isinstance(tool_ids, str) or not tool_ids):
        raise ValueError(f"Argument `tool_ids` must be None or a non-empty sequence of tool ids, got {tool_ids!r}.")
    if isinstance(max_instances, bool) or not isinstance(max_instances, int) or max_instances < 1:
        raise ValueError(f"Argument `max_instances` must be a positive integer, got {max_instances!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"EndoVis annotation file `{path}` does not exist.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"EndoVis annotation file `{path}` is not valid JSON: {err}.") from err
    if not isinstance(content, list):
        raise ValueError(f"EndoVis annotation file `{path}` must hold a list of frames, got {type(content).__name__}.")

    keep = None if tool_ids is None else set(tool_ids)
    counts = dict.fromkeys(
        ("without id", "clicked twice", "duplicated for one tool", "given to the tool lacking it", "dropped"), 0
    )
    frames: dict[str, EndoVisFrame] = {}
    for index, entry in enumerate(content):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("filename"), str):
            raise ValueError(f"EndoVis annotation file `{path}`: frame {index} has no `filename`.")
        where = f"EndoVis annotation file `{path}`, frame {index} (`{entry['filename']}`)"
        items = entry.get("annotations")
        if not isinstance(items, list):
            raise ValueError(f"{where} has no `annotations` list.")
        if not items:
            continue
        annotations = [_parse_annotation(item, where) for item in items]
        tools = {tool_id for _, tool_id, _ in annotations if tool_id is not None}
        per_joint = [_assign_joint(joint, annotations, tools, counts) for joint in landmarks]
        present = sorted({t for assigned in per_joint for t in assigned if keep is None or t in keep}, key=_tool_order)
        if len(present) > max_instances:
            raise ValueError(f"{where} has {len(present)} tools {present}, more than max_instances={max_instances}.")
        points = np.full((len(landmarks), max_instances, 2), np.nan, dtype=np.float32)
        for channel, assigned in enumerate(per_joint):
            for slot, tool_id in enumerate(present):
                if tool_id in assigned:
                    points[channel, slot] = assigned[tool_id]
        key = Path(entry["filename"]).name
        if key in frames:
            raise ValueError(f"{where} repeats the frame name `{key}` of frame {frames[key].index}.")
        frames[key] = EndoVisFrame(index, entry["filename"], tuple(landmarks), points, tuple(present))
    fixed = {what: n for what, n in counts.items() if n}
    if fixed:
        summary = ", ".join(f"{n} {what}" for what, n in fixed.items())
        warnings.warn(
            f"EndoVis annotation file `{path}`: repaired annotations of {list(landmarks)}: {summary}.", stacklevel=2
        )
    return frames


def endovis_datalist(
    frames: Mapping[str, EndoVisFrame], image_dir: str | Path, label_names: Sequence[str] | None = None
) -> list[dict]:
    """MONAI datalist entries for frames read by `read_endovis_annotations`.

    Each entry is ``{"image": "<image_dir>/<frame base name>", "label": {name: [[x, y], ...]}, "tool_ids":
    [...]}``: one list per landmark channel holding its present points (rounded to 1e-4 pixel) in slot (tool
    id) order, ``[]`` when absent, which `monai_adaloss.transforms.LoadLandmarksd` reads as inline annotations.

    Args:
        frames: the reader's output.
        image_dir: folder holding the frames under their base names.
        label_names: names of the landmark channels in the labels (e.g. ``("left_clasper", "right_clasper")``
            to match the synthetic endoscopy datalists); default the EndoVis joint names.

    Raises:
        ValueError: when `label_names` does not have one unique name per landmark channel.
    """
    image_dir = Path(image_dir)
    entries = []
    for key, frame in frames.items():
        names = tuple(frame.landmarks) if label_names is None else tuple(label_names)
        if len(names) != len(frame.landmarks) or len(set(names)) != len(names):
            raise ValueError(
                f"Argument `label_names` must have {len(frame.landmarks)} unique names, one per landmark channel "
                f"{list(frame.landmarks)}, got {label_names!r}."
            )
        label = {
            name: [[round(float(x), 4), round(float(y), 4)] for x, y in channel if not np.isnan([x, y]).any()]
            for name, channel in zip(names, frame.points, strict=True)
        }
        entries.append({"image": str(image_dir / key), "label": label, "tool_ids": list(frame.tool_ids)})
    return entries
