"""Every bundle's ``configs/metadata.json`` against MONAI's bundle schema, offline.

The schema is ``tests/data/meta_schema_20240725.json``, a verbatim copy of the file named by the metadata's
``schema`` field (source URLs in ``tests/data/README.md``). ``monai.bundle.verify_metadata`` is MONAI's own check:
given ``filepath`` of an existing file whose hash matches, its ``download_url`` skips the download, and the test
forbids any socket connection so that a network access fails instead of passing silently.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from bundle_checks import SCHEMA_FILE, SCHEMA_URL, check_metadata_schema
from monai.bundle import verify_metadata

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
METADATA = sorted(BUNDLES.glob("*/configs/metadata.json"))
SCHEMA_MD5 = "76e1add273836515d0bbb3bc71962474"
"""md5 of the local schema copy: ``verify_metadata`` checks it, so an edited copy fails the test."""


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection raises."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_there_are_five_bundles() -> None:
    assert [p.parent.parent.name for p in METADATA] == [
        "catheter_tip_fluoro",
        "endoscopic_tool_landmarks",
        "face_landmarks_300w",
        "hand_xray_landmarks",
        "landmarks_3d",
    ]


@pytest.mark.parametrize("meta_file", METADATA, ids=lambda p: p.parent.parent.name)
def test_metadata_verifies_with_monai_offline(meta_file: Path, offline: None) -> None:
    assert json.loads(meta_file.read_text(encoding="utf-8"))["schema"] == SCHEMA_URL
    verify_metadata(meta_file=str(meta_file), filepath=str(SCHEMA_FILE), hash_val=SCHEMA_MD5, hash_type="md5")
    check_metadata_schema(json.loads(meta_file.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: m.pop("authors"), "'authors' is a required property"),
        (lambda m: m.update(version=1), "1 is not of type 'string'"),
        (lambda m: m["network_data_format"]["inputs"]["image"].pop("num_channels"), "'num_channels' is a required"),
        (lambda m: m["network_data_format"].pop("outputs"), "'outputs' is a required property"),
    ],
    ids=["no-authors", "numeric-version", "tensor-without-channels", "no-outputs"],
)
def test_a_broken_metadata_fails_verification(tmp_path: Path, offline: None, change: Any, why: str) -> None:
    meta = json.loads(METADATA[0].read_text(encoding="utf-8"))
    change(meta)
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match=why):
        verify_metadata(meta_file=str(broken), filepath=str(SCHEMA_FILE), hash_val=SCHEMA_MD5, hash_type="md5")
    with pytest.raises(AssertionError, match="does not follow the bundle schema"):
        check_metadata_schema(meta)
