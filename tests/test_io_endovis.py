"""EndoVis'15 pose annotation reader: the real files' counts and coordinates, their quirks, the datalist.

The real files (``shared/data/endovis_pose_annotations``) are looked for next to the repository (or inside it);
the tests that need them are skipped when they are absent. Expected counts are computed here with plain
``json``, independently of the reader.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monai_adaloss.io.endovis import (
    ENDOVIS_JOINTS,
    NEEDLE_DRIVER_IDS,
    endovis_datalist,
    read_endovis_annotations,
)
from monai_adaloss.transforms import LoadLandmarksd

_HERE = Path(__file__).resolve()
_CANDIDATES = [root / "shared" / "data" / "endovis_pose_annotations" for root in (_HERE.parents[1], _HERE.parents[2])]
DATA = next((path for path in _CANDIDATES if path.is_dir()), None)
needs_data = pytest.mark.skipif(DATA is None, reason="shared/data/endovis_pose_annotations is not available")
FILES = ("train1_labels.json", "test2_labels.json", "test5_labels.json")


def _read(name: str, **kwargs) -> dict:
    """Read a real file, ignoring the repair warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_endovis_annotations(DATA / name, **kwargs)


def _raw_presence(name: str) -> tuple[Counter, int, int]:
    """(frames in which each (tool, joint) has an annotation, annotated frames, annotations without id)."""
    content = json.loads((DATA / name).read_text())
    presence: Counter = Counter()
    annotated = without_id = 0
    for entry in content:
        annotated += bool(entry["annotations"])
        without_id += sum("id" not in a for a in entry["annotations"])
        presence.update({(a["id"], a["class"]) for a in entry["annotations"] if "id" in a})
    return presence, annotated, without_id


def _reader_counts(frames: dict) -> Counter:
    counts: Counter = Counter()
    for frame in frames.values():
        present = ~np.isnan(frame.points).any(axis=-1)  # (L, K)
        for channel, joint in enumerate(frame.landmarks):
            for slot, tool_id in enumerate(frame.tool_ids):
                counts[(tool_id, joint)] += int(present[channel, slot])
    return counts


@needs_data
@pytest.mark.parametrize("name", FILES)
def test_counts_per_tool_and_joint_match_the_file(name):
    presence, annotated, without_id = _raw_presence(name)
    # the quirks the reader repairs (module docstring): a point with the wrong tool id goes to the tool lacking
    # it; test5's EndPoints without id are tool1's
    repairs = {
        "train1_labels.json": {("tool2", "RightClasperPoint"): 1, ("tool2", "EndPoint"): 1},
        "test2_labels.json": {},
        "test5_labels.json": {("tool1", "EndPoint"): without_id},
    }[name]
    expected = presence + Counter(repairs)
    frames = _read(name, landmarks=ENDOVIS_JOINTS, max_instances=4)
    assert len(frames) == annotated
    assert _reader_counts(frames) == expected
    for frame in frames.values():
        assert frame.points.shape == (len(ENDOVIS_JOINTS), 4, 2) and frame.points.dtype == np.float32


@needs_data
def test_file_facts_the_reader_relies_on():
    assert _raw_presence("train1_labels.json")[1:] == (210, 0)
    assert _raw_presence("test2_labels.json")[1:] == (76, 0)
    presence, annotated, without_id = _raw_presence("test5_labels.json")
    assert (annotated, without_id) == (301, 128)
    assert presence[("tool1", "EndPoint")] + without_id == presence[("tool1", "HeadPoint")] == 301
    assert {tool for tool, _ in presence} == {"tool1", "tool4"}


@needs_data
def test_hand_picked_coordinates():
    test2 = _read("test2_labels.json")
    assert test2["img_0001.png"].tool_ids == ("tool1",)
    np.testing.assert_array_equal(test2["img_0001.png"].points[:, 0], [[420.0, 270.0], [429.0, 262.0]])
    assert np.isnan(test2["img_0001.png"].points[:, 1]).all()
    assert test2["img_0001.png"].index == 0 and test2["img_0001.png"].filename.endswith("Dataset2/Raw/img_0001.png")

    test5 = _read("test5_labels.json", landmarks=("LeftClasperPoint", "RightClasperPoint", "EndPoint"))
    first = test5["img_0001.png"]
    assert first.tool_ids == ("tool1", "tool4")
    np.testing.assert_array_equal(first.points[0], [[442.0, 300.0], [202.0, 247.0]])  # tool1, tool4 left claspers
    np.testing.assert_array_equal(first.points[1], [[433.0, 275.0], [187.0, 267.0]])
    no_id = test5["img_0145.png"]  # its EndPoint has no id: it is tool1's
    assert no_id.tool_ids == ("tool1", "tool4")
    np.testing.assert_array_equal(no_id.points[2], [[700.0, 134.0], [26.0, 97.0]])
    np.testing.assert_array_equal(test5["img_0070.png"].points[0, 1], [216.0, 271.0])  # clicked twice: first kept

    train1 = _read("train1_labels.json")
    swapped = train1["img_000130_raw.png"]  # tool1 has two RightClasperPoints, tool2 none
    assert swapped.tool_ids == ("tool1", "tool2")
    right_claspers = [[342.7511591962906, 335.629057187017], [313.3724884080371, 217.2241112828439]]
    np.testing.assert_allclose(swapped.points[1], right_claspers)


@needs_data
def test_repair_warnings_name_the_file():
    with pytest.warns(UserWarning, match=r"test5_labels\.json.*128 without id.*1 clicked twice"):
        read_endovis_annotations(DATA / "test5_labels.json", landmarks=ENDOVIS_JOINTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_endovis_annotations(DATA / "test2_labels.json", landmarks=ENDOVIS_JOINTS)


@needs_data
def test_tool_filter_and_too_many_instances():
    drivers = _read("test5_labels.json", tool_ids=NEEDLE_DRIVER_IDS, max_instances=1)
    assert len(drivers) == 301
    assert {frame.tool_ids for frame in drivers.values()} == {("tool1",)}
    assert next(iter(drivers.values())).points.shape == (2, 1, 2)
    message = r"test5_labels\.json.*frame 0 \(`.*img_0001\.png`\).*2 tools.*max_instances=1"
    with pytest.raises(ValueError, match=message):
        _read("test5_labels.json", max_instances=1)


@needs_data
def test_datalist_loads_through_load_landmarks(tmp_path):
    frames = _read("train1_labels.json")
    names = ["left_clasper", "right_clasper"]
    entries = endovis_datalist(frames, tmp_path / "frames", label_names=names)
    assert len(entries) == len(frames)
    assert entries[0]["image"] == str(tmp_path / "frames" / "img_000060_raw.png")
    loader = LoadLandmarksd("label", names=names, max_instances=2)
    for entry, frame in zip(entries, frames.values(), strict=True):
        points = loader(entry)["label"]
        assert tuple(points.shape) == (2, 2, 2)
        if not np.isnan(frame.points).any():
            np.testing.assert_allclose(points.numpy(), frame.points, atol=1e-4)


def _write(tmp_path: Path, content) -> Path:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(content))
    return path


def test_unassignable_point_is_dropped_with_a_warning(tmp_path):
    annotations = [
        {"class": "LeftClasperPoint", "id": "tool1", "x": 1.0, "y": 2.0},
        {"class": "LeftClasperPoint", "id": "tool2", "x": 3.0, "y": 4.0},
        {"class": "LeftClasperPoint", "x": 5.0, "y": 6.0},
    ]
    path = _write(tmp_path, [{"class": "image", "filename": "/a/img_1.png", "annotations": annotations}])
    with pytest.warns(UserWarning, match=r"labels\.json.*1 without id.*1 dropped"):
        frames = read_endovis_annotations(path, landmarks=("LeftClasperPoint",))
    np.testing.assert_array_equal(frames["img_1.png"].points, [[[1.0, 2.0], [3.0, 4.0]]])


def test_invalid_input_raises(tmp_path):
    good = _write(tmp_path, [])
    with pytest.raises(ValueError, match="unknown joints"):
        read_endovis_annotations(good, landmarks=("LeftClasper",))
    with pytest.raises(ValueError, match="max_instances"):
        read_endovis_annotations(good, max_instances=0)
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        read_endovis_annotations(tmp_path / "missing.json")
    no_y = {"class": "HeadPoint", "id": "tool1", "x": 1}
    bad = _write(tmp_path, [{"filename": "/a/img_1.png", "annotations": [no_y]}])
    with pytest.raises(ValueError, match=r"labels\.json`, frame 0 \(`/a/img_1\.png`\).*finite numbers"):
        read_endovis_annotations(bad)
