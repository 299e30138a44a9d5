"""DICOM batch inference: coordinates, robustness, crash containment, resume, SR, bundle and CLI.

Every input is written by the tests (``test_inference_support``); networks are oracles that put
Gaussians at known places (so coordinates can be checked exactly) or tiny random U-Nets.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import test_inference_support as support
import torch
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor
from monai.transforms import Resize

from monai_adaloss import cli
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.inference import (
    RECORD_FIELDS,
    ExitCode,
    HeatmapDecoder,
    InferenceConfigError,
    InferenceRunner,
    InputFiles,
    load_checkpoint,
    merge_outputs,
    network_to_original,
)
from monai_adaloss.inference import runner as runner_module
from monai_adaloss.inference.records import check_uids, safe_name
from monai_adaloss.model_info import LandmarkModelInfo

BUNDLE_CONFIG = Path(__file__).parents[1] / "bundles" / "catheter_tip_fluoro" / "configs" / "inference.json"
pytestmark = pytest.mark.usefixtures("no_orphans")
ORACLE_MODULES = ("monai_adaloss.networks", support.SUPPORT_MODULE)
# network-grid points of the fixed-point oracle: landmark "tip" and landmark "marker" (32 x 32 grid)
TIP, MARKER = (10.0, 20.0), (3.25, 28.5)


def fixed_oracle_checkpoint(path: Path, points: list | None = None, **kwargs: object) -> Path:
    points = points if points is not None else [[list(TIP)], [list(MARKER)]]
    config = {"_target_": f"{support.SUPPORT_MODULE}.FixedPointOracle", "points": points, "sigma": 2.0}
    return support.save_checkpoint(path, config, landmark_names=("tip", "marker"), **kwargs)


def run(checkpoint: Path, inputs: object, output_dir: Path, **kwargs: object):
    kwargs = {"num_workers": 1, "batch_size": 4, "progress": False, "network_modules": ORACLE_MODULES, **kwargs}
    return InferenceRunner(checkpoint, inputs, output_dir, **kwargs).run()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected_point(point: tuple[float, float], size_xy: tuple[int, int]) -> tuple[float, float]:
    """Hand formula: p_orig = (p_net + 0.5) * original / network - 0.5 per axis (32 x 32 network grid)."""
    return tuple((p + 0.5) * s / 32 - 0.5 for p, s in zip(point, size_xy, strict=True))


# --- coordinates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("original", "network"), [((40, 24), (32, 32)), ((512, 384), (256, 256)), ((7, 9), (7, 9))])
def test_resize_undo_is_monai_resize_affine(original, network):
    """network_to_original == the affine MONAI's Resize records: net voxel -> original voxel."""
    image = MetaTensor(torch.rand(1, *original), affine=torch.eye(4))
    resized = Resize(network, mode="bilinear")(image)
    points = torch.tensor([[0.0, 0.0], [3.5, 1.25], [network[0] - 1.0, network[1] - 1.0]], dtype=torch.float64)
    homogeneous = torch.cat([points, torch.zeros(3, 1), torch.ones(3, 1)], dim=1)
    by_affine = (resized.affine.to(torch.float64) @ homogeneous.T).T[:, :2]
    torch.testing.assert_close(network_to_original(points, network, original), by_affine)


def test_oracle_points_map_back_to_hand_computed_pixels_and_mm(tmp_path):
    files = support.good_files(tmp_path / "in")
    summary = run(fixed_oracle_checkpoint(tmp_path / "model.pt"), tmp_path / "in", tmp_path / "out")
    assert summary.exit_code == ExitCode.OK and summary.failed == 0
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    single = [r for r in records if r["path"] == str(files["single"])]  # 24 rows x 40 columns, PixelSpacing 0.2\0.3
    tip = next(r for r in single if r["landmark"] == "tip")
    assert (tip["x"], tip["y"]) == pytest.approx((12.625, 14.875), abs=1e-3)  # (10.5 * 40/32 - 0.5, 20.5 * 24/32 - 0.5)
    assert (tip["x_mm"], tip["y_mm"]) == pytest.approx((12.625 * 0.3, 14.875 * 0.2), abs=1e-3)
    assert tip["spacing_source"] == "PixelSpacing" and tip["confidence"] == pytest.approx(1.0, abs=1e-3)
    cine = [r for r in records if r["path"] == str(files["multi"])]  # 48 rows x 36 columns, 3 frames, 0.4 / 2
    assert sorted({r["frame"] for r in cine}) == [0, 1, 2] and len(cine) == 3 * 2
    marker = next(r for r in cine if r["landmark"] == "marker" and r["frame"] == 2)
    assert (marker["x"], marker["y"]) == pytest.approx(expected_point(MARKER, (36, 48)), abs=1e-3)
    assert marker["x_mm"] == pytest.approx(marker["x"] * 0.2, abs=1e-3)
    assert marker["spacing_source"] == "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    no_spacing = next(r for r in records if r["path"] == str(files["no spacing"]))
    assert no_spacing["x_mm"] is None and no_spacing["y_mm"] is None and no_spacing["spacing_source"] == "none"
    ds = pydicom.dcmread(files["single"])
    assert (tip["sop_instance_uid"], tip["series_instance_uid"], tip["study_instance_uid"]) == (
        ds.SOPInstanceUID,
        ds.SeriesInstanceUID,
        ds.StudyInstanceUID,
    )
    assert (
        set(tip) == set(RECORD_FIELDS)
        and tip["model_sha256"] == load_checkpoint(tmp_path / "model.pt", network_modules=ORACLE_MODULES).sha256[:16]
    )


def test_points_follow_the_file_layout_frame_by_frame(tmp_path):
    """A bright pixel at file (row, column) gives x = column, y = row, for each frame; MONOCHROME1 and RLE too."""
    markers = [(3, 20), (17, 5), (30, 29)]
    mono1 = support.make_dataset(
        4095 - support.marker_frames((32, 32), markers[:1])[0], PhotometricInterpretation="MONOCHROME1",
        WindowCenter=2048, WindowWidth=4096,
    )  # fmt: skip
    support.write(tmp_path / "in" / "mono1.dcm", mono1)
    cine = support.make_dataset(support.marker_frames((32, 32), markers))
    cine.compress(pydicom.uid.RLELossless, generate_instance_uid=False)
    support.write(tmp_path / "in" / "cine.dcm", cine)
    checkpoint = support.save_checkpoint(
        tmp_path / "model.pt", {"_target_": f"{support.SUPPORT_MODULE}.BrightestPixelOracle"}, input_size=(32, 32)
    )
    run(checkpoint, tmp_path / "in", tmp_path / "out", batch_size=2)  # the cine file spans two batches
    by_file: dict[str, list] = {}
    for record in read_jsonl(tmp_path / "out" / "records.jsonl"):
        by_file.setdefault(Path(record["path"]).name, []).append((record["frame"], record["x"], record["y"]))
    assert by_file["cine.dcm"] == [(k, col, row) for k, (row, col) in enumerate(markers)]
    assert by_file["mono1.dcm"] == [(0, 20, 3)]


def test_multi_instance_records_and_not_found_landmarks(tmp_path):
    support.write(tmp_path / "in" / "a.dcm", support.make_dataset(support.marker_frames((32, 32), [(1, 1)])[0]))
    points = [[[6.0, 7.0], [24.0, 20.0]], [[float("nan"), float("nan")], [float("nan"), float("nan")]]]
    checkpoint = fixed_oracle_checkpoint(
        tmp_path / "model.pt", points, max_instances=3, decoding={"median_kernel": None, "nms_kernel": 5}
    )
    run(checkpoint, tmp_path / "in", tmp_path / "out")
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    tips = [r for r in records if r["landmark"] == "tip"]
    assert [r["instance"] for r in tips] == [0, 1]
    assert sorted(v for r in tips for v in (r["x"], r["y"])) == pytest.approx([6.0, 7.0, 20.0, 24.0], abs=1e-3)
    (marker,) = [r for r in records if r["landmark"] == "marker"]
    assert (marker["instance"], marker["x"], marker["y"], marker["confidence"]) == (0, None, None, 0.0)


def test_confidence_is_relative_to_a_training_target():
    """A clean "mean"-normalised target (peak about 1 / mean) gives confidence 1, as a "peak" one does."""
    info = LandmarkModelInfo(["a", "b"], [64, 64], support.TINY_UNET, normalize="mean", sigma=[2.0, 5.0])
    points = torch.tensor([[[[20.0, 42.0]], [[30.0, 29.0]]]])
    target = render_gaussian_heatmaps(points, torch.tensor([2.0, 5.0]), (64, 64), normalize="mean")
    assert target.amax() > 50
    decoded, confidence = HeatmapDecoder(info)(target)
    torch.testing.assert_close(decoded, points, atol=1e-3, rtol=0)
    torch.testing.assert_close(confidence, torch.ones(1, 2, 1), atol=1e-3, rtol=0)


# --- robustness -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_corpus_good_files_have_records_bad_files_have_error_lines(tmp_path):
    good = support.good_files(tmp_path / "in" / "good")
    bad = support.bad_files(tmp_path / "in" / "bad")
    quirky = support.quirky_files(tmp_path / "in" / "quirky")
    assert len(bad) >= 8 and {"monochrome1", "multi", "rle"} <= set(good) and len(quirky) >= 15
    summary = run(
        fixed_oracle_checkpoint(tmp_path / "model.pt"), tmp_path / "in", tmp_path / "out",
        decode_fn=support.crashing_decode, num_workers=2, write_sr=True, write_overlays=True,
    )  # fmt: skip
    out = tmp_path / "out"
    assert summary.exit_code == ExitCode.FILES_FAILED
    with_records = {**good, **{name: path for name, (path, _) in quirky.items()}}
    assert (summary.succeeded, summary.failed) == (len(with_records), len(bad))
    records = read_jsonl(out / "records.jsonl")
    for name, path in with_records.items():
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        frames = ds.get("NumberOfFrames", 1)
        mine = [r for r in records if r["path"] == str(path)]
        assert sorted((r["frame"], r["landmark"]) for r in mine) == sorted(
            (k, landmark) for k in range(frames) for landmark in ("tip", "marker")
        ), name
        assert all(r["x"] is not None for r in mine), name
    errors = {(e["path"], e.get("stage", "")): e for e in read_jsonl(out / "errors.jsonl")}
    assert {path for path, stage in errors if not stage} == {str(path) for path, _ in bad.values()}
    for name, (path, words) in bad.items():
        assert words in errors[(str(path), "")]["reason"], (name, errors[(str(path), "")]["reason"])
    assert errors[(str(bad["decoder crash"][0]), "")]["error"] == "DecoderCrash"
    summary_json = json.loads((out / "summary.json").read_text())
    files = {f["path"]: f for f in summary_json["files"]}
    for name, (path, expect) in quirky.items():
        mine = [r for r in records if r["path"] == str(path)]
        if expect["sr"] is True:
            assert files[str(path)]["sr"].startswith("sr/"), (name, files[str(path)])
        else:
            assert expect["sr"] in files[str(path)]["sr"] and files[str(path)]["sr"].startswith("error: "), name
            assert expect["sr"] in errors[(str(path), "sr")]["reason"], name
        if "spacing_source" in expect:
            assert all(r["spacing_source"].startswith(expect["spacing_source"]) for r in mine), name
            assert all(r["x_mm"] is None for r in mine), name
        if "colour" in expect:
            assert all(r["colour_conversion"].startswith(expect["colour"]) for r in mine), name
        else:
            assert all(r["colour_conversion"] is None for r in mine), name
    sr_failures = sum(isinstance(e["sr"], str) and e["sr"] is not True for _, e in quirky.values())
    assert summary_json["complete"] and summary_json["counts"] == {
        "files": len(with_records) + len(bad), "succeeded": len(with_records), "failed": len(bad), "skipped": 0,
        "frames": sum(r["frames"] for r in summary_json["files"]), "records": len(records),
        "sr_written": len(with_records) - sr_failures, "sr_failed": sr_failures,
        "overlays_written": len(with_records), "overlays_failed": 0,
    }  # fmt: skip
    csv_lines = (out / "records.csv").read_text().splitlines()
    assert csv_lines[0] == ",".join(RECORD_FIELDS) and len(csv_lines) == len(records) + 1
    assert len(list((out / "sr").iterdir())) == len(with_records) - sr_failures
    assert len(list((out / "overlays").iterdir())) == sum(
        pydicom.dcmread(p, stop_before_pixels=True, force=True).get("NumberOfFrames", 1) for p in with_records.values()
    )
    assert not any(Path(p).name.startswith(".") for p in out.rglob("*"))  # no temporary files left


def test_hanging_decoder_times_out_and_the_run_goes_on(tmp_path):
    for name in ("a.dcm", f"{support.HANG_MARKER}.dcm", "b.dcm"):
        support.write(tmp_path / "in" / name, support.make_dataset(support.marker_frames((32, 32), [(1, 1)])[0]))
    summary = run(
        fixed_oracle_checkpoint(tmp_path / "model.pt"), tmp_path / "in", tmp_path / "out",
        decode_fn=support.hanging_decode, decode_timeout=1.0,
    )  # fmt: skip
    (error,) = read_jsonl(tmp_path / "out" / "errors.jsonl")
    assert support.HANG_MARKER in error["path"] and error["reason"].startswith("decoder timed out after 1 s")
    assert (summary.succeeded, summary.failed) == (2, 1)


def test_uid_checks_and_safe_names():
    uids = {"SOPInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.4", "StudyInstanceUID": "1.2.5"}
    assert check_uids(uids) is None
    for bad in ("", "1..2", "1.2.3a", "1.2\n3", "../../x", "1." * 40 + "1"):
        assert check_uids({**uids, "SOPInstanceUID": bad}) is not None, bad
    assert safe_name("../../etc/passwd") == "_.._etc_passwd" and safe_name("...") == "_"
    assert safe_name("a/b\x00c" * 100) == ("a_b_c" * 100)[:128]


# --- resume ---------------------------------------------------------------------------------------


def test_resume_drops_uncommitted_and_torn_lines(tmp_path):
    files = sorted(support.good_files(tmp_path / "in").values())
    checkpoint = support.tiny_unet_checkpoint(tmp_path / "model.pt")
    run(checkpoint, tmp_path / "in", tmp_path / "reference")
    first, second = [str(p) for p in files[:2]], [str(p) for p in files[2:]]
    run(checkpoint, first, tmp_path / "out")
    out = tmp_path / "out"
    with (out / "records.jsonl").open("a") as stream:  # killed between a file's records and its manifest line
        stream.write(json.dumps({**read_jsonl(out / "records.jsonl")[0], "path": second[0]}) + "\n")
        stream.write('{"path": "' + second[1] + '", "frame": 0, "landm')  # killed inside a write
    summary = run(checkpoint, tmp_path / "in", out, resume=True)
    assert summary.skipped == 2 and summary.succeeded == len(second)
    assert_same_outputs(tmp_path / "reference", out)


def assert_same_outputs(reference: Path, out: Path) -> None:
    """Final records (numbers to 1e-3), errors and summaries of two runs are equal."""
    expected, actual = read_jsonl(reference / "records.jsonl"), read_jsonl(out / "records.jsonl")
    assert [(r["path"], r["frame"], r["landmark"], r["instance"]) for r in actual] == [
        (r["path"], r["frame"], r["landmark"], r["instance"]) for r in expected
    ]
    for mine, theirs in zip(actual, expected, strict=True):
        for key, value in theirs.items():
            if isinstance(value, float):
                assert mine[key] == pytest.approx(value, abs=1e-3), key
            else:
                assert mine[key] == value, key
    assert (out / "errors.jsonl").read_text() == (reference / "errors.jsonl").read_text()
    mine_summary, reference_summary = (
        json.loads((out / "summary.json").read_text()),
        json.loads((reference / "summary.json").read_text()),
    )
    assert mine_summary == reference_summary
    assert len((out / "records.csv").read_text().splitlines()) == len(expected) + 1


def test_existing_output_needs_resume_and_the_same_model(tmp_path):
    support.good_files(tmp_path / "in")
    run(fixed_oracle_checkpoint(tmp_path / "model.pt"), tmp_path / "in", tmp_path / "out")
    with pytest.raises(InferenceConfigError, match="pass --resume"):
        run(tmp_path / "model.pt", tmp_path / "in", tmp_path / "out")
    (tmp_path / "sharded" / "part-1").mkdir(parents=True)
    shutil.copy(tmp_path / "out" / "manifest.jsonl", tmp_path / "sharded" / "part-1")
    with pytest.raises(InferenceConfigError, match="pass --resume"):  # a one-process run would merge part-1
        run(tmp_path / "model.pt", tmp_path / "in", tmp_path / "sharded")
    other = fixed_oracle_checkpoint(tmp_path / "other.pt", [[[1.0, 2.0]], [[3.0, 4.0]]])
    with pytest.raises(InferenceConfigError, match="another model"):
        run(other, tmp_path / "in", tmp_path / "out", resume=True)
    summary = run(tmp_path / "model.pt", tmp_path / "in", tmp_path / "out", resume=True)
    assert summary.succeeded == 0 and summary.skipped == summary.final["counts"]["files"]


# --- checkpoints and inputs -----------------------------------------------------------------------


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(InferenceConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": {}, "model_info": {}, "trainer": object()}, tmp_path / "pickled.pt")
    with pytest.raises(InferenceConfigError, match="weights_only=True"):
        load_checkpoint(tmp_path / "pickled.pt")
    for config, match in (
        ({"_target_": "os.system", "command": "echo owned"}, "may only name network classes"),
        ({"_target_": "monai_adaloss.networks.torch.load", "f": "x"}, "may only name network classes"),
        ({**support.TINY_UNET, "channels": "$[4, 8]"}, "expression or reference"),
        ({**support.TINY_UNET, "_requires_": "@x"}, "special key"),
    ):
        info = LandmarkModelInfo(["tip"], [32, 32], config)
        torch.save({"model": {}, "model_info": info.state_dict()}, tmp_path / "bad.pt")
        with pytest.raises(InferenceConfigError, match=match):
            load_checkpoint(tmp_path / "bad.pt")
    support.tiny_unet_checkpoint(tmp_path / "unet.pt")
    state = torch.load(tmp_path / "unet.pt", weights_only=True)
    state["model_info"]["preprocessing"] = {"reader": "XRayDicomReader", "clahe": True}
    torch.save(state, tmp_path / "unknown_pre.pt")
    support.good_files(tmp_path / "in")
    with pytest.raises(InferenceConfigError, match=r"cannot apply: \['clahe'\]"):
        run(tmp_path / "unknown_pre.pt", tmp_path / "in", tmp_path / "out")


def test_training_checkpoint_with_extra_entries_loads(tmp_path):
    path = support.save_checkpoint(
        tmp_path / "ckpt.pt", support.TINY_UNET, landmark_names=("a", "b"), extra={"optimizer": {"lr": 1e-3}}
    )
    model = load_checkpoint(path)
    assert model.info.landmark_names == ["a", "b"] and not model.network.training


def test_input_discovery(tmp_path):
    files = support.good_files(tmp_path / "data")
    (tmp_path / "data" / ".hidden.dcm").write_bytes(b"x")
    (tmp_path / "data" / ".git").mkdir()
    (tmp_path / "data" / ".git" / "object").write_bytes(b"x")
    (tmp_path / "data" / "DICOMDIR").write_bytes(b"x")
    (tmp_path / "data" / "out").mkdir()
    (tmp_path / "data" / "out" / "records.jsonl").write_text("")
    (tmp_path / "list.txt").write_text(f"# comment\n\ndata/single.dcm\n{files['rle']}\nmissing.dcm\n")
    found = InputFiles([tmp_path / "data", files["single"]], [tmp_path / "list.txt"], exclude=tmp_path / "data" / "out")
    assert found.files() == sorted([*(str(p) for p in files.values()), str(tmp_path / "missing.dcm")])
    assert len(found) == len(files) + 1 and found[0] == found.files()[0]
    with pytest.raises(InferenceConfigError, match="Cannot read the list file"):
        InputFiles(list_files=[tmp_path / "nope.txt"]).files()


# --- SR -------------------------------------------------------------------------------------------


def content_items(dataset: pydicom.Dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def test_sr_scoord_values_are_hand_computed(tmp_path):
    """SCOORD (column, row) = record (x, y) + 0.5: the top-left pixel's centre is (0.5, 0.5)."""
    support.write(
        tmp_path / "in" / "cine.dcm",
        support.make_dataset(support.marker_frames((24, 40), [(1, 1), (2, 2)]), PixelSpacing=[0.2, 0.3]),
    )
    points = [[list(TIP)], [[float("nan"), float("nan")]]]  # "marker" is never found
    run(fixed_oracle_checkpoint(tmp_path / "model.pt", points), tmp_path / "in", tmp_path / "out", write_sr=True)
    source = pydicom.dcmread(tmp_path / "in" / "cine.dcm", stop_before_pixels=True)
    (sr_path,) = (tmp_path / "out" / "sr").iterdir()
    assert sr_path.name == f"{source.SOPInstanceUID}.sr.dcm"
    sr = pydicom.dcmread(sr_path)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == "ANON"
    scoords = [item for item in content_items(sr) if item.ValueType == "SCOORD"]
    assert len(scoords) == 2  # tip in frames 1 and 2
    for frame_number, scoord in enumerate(scoords, start=1):
        assert scoord.GraphicType == "POINT"
        # 24 rows x 40 columns, 32 x 32 network: x = 10.5 * 40 / 32 - 0.5 = 12.625, y = 20.5 * 24 / 32 - 0.5 = 14.875
        assert [float(v) for v in scoord.GraphicData] == pytest.approx([13.125, 15.375], abs=1e-3)
        (image,) = scoord.ContentSequence
        reference = image.ReferencedSOPSequence[0]
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == source.SOPClassUID
        assert int(reference.ReferencedFrameNumber) == frame_number
    findings = [i.ConceptCodeSequence[0].CodeMeaning for i in content_items(sr) if i.ValueType == "CODE"]
    assert findings.count("tip") == 2 and findings.count("marker") == 2 and findings.count("Absent") == 2
    certainty = [i for i in content_items(sr) if i.ValueType == "NUM"]
    assert [float(i.MeasuredValueSequence[0].NumericValue) for i in certainty] == pytest.approx([1.0, 1.0], abs=1e-3)


def test_sr_failure_keeps_the_records_and_resume_retries_only_the_missing_sr(tmp_path, monkeypatch):
    """A batch with one SR failure still has that file's records; --resume writes the missing SR only."""
    files = support.good_files(tmp_path / "in")
    victim = str(files["single"])
    real = runner_module.write_structured_report
    calls: list[str] = []

    def failing(directory, source, records, *args, **kwargs):
        calls.append(records[0]["path"])
        if records[0]["path"] == victim:
            raise OSError("No space left on device (forced by the test)")
        return real(directory, source, records, *args, **kwargs)

    monkeypatch.setattr(runner_module, "write_structured_report", failing)
    checkpoint = fixed_oracle_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "out"
    summary = run(checkpoint, tmp_path / "in", out, write_sr=True)
    assert summary.exit_code == ExitCode.OUTPUTS_FAILED and (summary.succeeded, summary.failed) == (len(files), 0)
    assert summary.sr_failed == 1 and summary.final["counts"]["sr_failed"] == 1
    records = read_jsonl(out / "records.jsonl")
    assert sorted(r["landmark"] for r in records if r["path"] == victim) == ["marker", "tip"]  # records kept
    entry = next(f for f in summary.final["files"] if f["path"] == victim)
    assert entry["status"] == "ok" and entry["sr"] == "error: OSError: No space left on device (forced by the test)"
    (error,) = read_jsonl(out / "errors.jsonl")
    assert (error["path"], error["stage"], error["error"]) == (victim, "sr", "OSError")
    assert len(list((out / "sr").iterdir())) == len(files) - 1

    calls.clear()
    monkeypatch.setattr(runner_module, "write_structured_report", real)
    resumed = run(checkpoint, tmp_path / "in", out, write_sr=True, resume=True)
    assert resumed.exit_code == ExitCode.OK and resumed.sr_retried == 1 and resumed.succeeded == 0
    assert resumed.skipped == len(files)  # nothing was inferred again
    assert read_jsonl(out / "records.jsonl") == records and (out / "errors.jsonl").read_text() == ""
    assert next(f for f in resumed.final["files"] if f["path"] == victim)["sr"].startswith("sr/")
    assert len(list((out / "sr").iterdir())) == len(files)


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_modality_policy_skips_files_apart_from_failures(tmp_path, capsys):
    """A mixed archive: XA, DX, a CT and an MR, one broken file; exit codes and counts with --modalities on and off."""
    support.good_files(tmp_path / "in")  # XA and DX files
    pixels = support.marker_frames((24, 24), [(3, 5)])[0]
    support.write(tmp_path / "in" / "ct.dcm", support.make_dataset(pixels, Modality="CT"))
    support.write(tmp_path / "in" / "mr.dcm", support.make_dataset(pixels, Modality="MR"))
    (tmp_path / "in" / "broken.dcm").write_bytes(b"DICM")
    checkpoint = support.tiny_unet_checkpoint(tmp_path / "model.pt")
    common = ["--checkpoint", str(checkpoint), "--num-workers", "1", "--quiet"]
    code = cli.main(["infer", str(tmp_path / "in"), "-o", str(tmp_path / "all"), *common])
    assert code == ExitCode.FILES_FAILED
    counts = json.loads((tmp_path / "all" / "summary.json").read_text())["counts"]
    assert (counts["succeeded"], counts["failed"], counts["skipped"]) == (counts["files"] - 1, 1, 0)
    capsys.readouterr()
    policy = ["--modalities", "XA,RF,CR,DX"]
    code = cli.main(["infer", str(tmp_path / "in"), "-o", str(tmp_path / "xray"), *common, *policy])
    assert code == ExitCode.FILES_FAILED  # the broken file still fails: it has no modality to skip by
    summary = json.loads((tmp_path / "xray" / "summary.json").read_text())
    assert (summary["counts"]["skipped"], summary["counts"]["failed"]) == (2, 1)
    assert summary["counts"]["succeeded"] == counts["succeeded"] - 2
    skipped = {Path(f["path"]).name: f["reason"] for f in summary["files"] if f["status"] == "skipped"}
    assert skipped == {
        "ct.dcm": "Modality 'CT' is not one of --modalities XA,RF,CR,DX",
        "mr.dcm": "Modality 'MR' is not one of --modalities XA,RF,CR,DX",
    }
    assert "2 skipped by --modalities" in capsys.readouterr().out
    assert not any("ct.dcm" in r["path"] for r in read_jsonl(tmp_path / "xray" / "records.jsonl"))
    (tmp_path / "in" / "broken.dcm").unlink()
    code = cli.main(["infer", str(tmp_path / "in"), "-o", str(tmp_path / "clean"), *common, *policy])
    assert code == ExitCode.OK  # skipped files are not failures


# --- bundle and CLI -------------------------------------------------------------------------------


def make_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    shutil.copy(BUNDLE_CONFIG, bundle / "configs" / "inference.json")
    metadata = {
        "version": "0.1.0", "monai_version": "1.6.1", "pytorch_version": "2.13.0", "numpy_version": "2.4",
        "required_packages_version": {}, "task": "catheter tip localisation", "description": "test bundle",
        "authors": "tests", "copyright": "none", "network_data_format": {"inputs": {}, "outputs": {}},
    }  # fmt: skip
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    support.tiny_unet_checkpoint(bundle / "models" / "model.pt")
    return bundle


def test_bundle_inference_config_runs_the_runner(tmp_path):
    bundle = make_bundle(tmp_path)
    files = support.good_files(tmp_path / "data")
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        workflow_type="infer",
        logging_file=False,
        bundle_root=str(bundle),
        dataset_dir=str(tmp_path / "data"),
        device="$torch.device('cpu')",
        **{"evaluator#num_workers": 1, "evaluator#progress": False},
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert isinstance(workflow.evaluator, InferenceRunner)
    (summary,) = workflow.run()
    workflow.finalize()
    assert summary.exit_code == ExitCode.OK and summary.succeeded == len(files)
    records = read_jsonl(bundle / "predictions" / "records.jsonl")
    assert {r["landmark"] for r in records} == {"tip", "marker"}


def test_cli_exit_codes_and_merge(tmp_path, capsys):
    support.good_files(tmp_path / "in")
    checkpoint = support.tiny_unet_checkpoint(tmp_path / "model.pt")
    common = ["--checkpoint", str(checkpoint), "--num-workers", "1", "--quiet"]
    assert cli.main(["infer", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *common]) == ExitCode.OK
    assert "0 failed" in capsys.readouterr().out
    (tmp_path / "in" / "broken.dcm").write_bytes(b"DICM")
    code = cli.main(["infer", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--resume", *common])
    assert code == ExitCode.FILES_FAILED
    assert "1 failed" in capsys.readouterr().out
    code = cli.main(["infer", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--checkpoint", str(tmp_path / "no.pt")])
    assert code == ExitCode.USAGE and "does not exist" in capsys.readouterr().err
    assert cli.main(["infer", str(tmp_path / "in")]) == ExitCode.USAGE
    assert cli.main(["infer", "--merge", str(tmp_path / "out")]) == ExitCode.FILES_FAILED
    assert merge_outputs(tmp_path / "out")["counts"]["failed"] == 1


def test_sr_of_a_single_frame_image_references_no_frame(tmp_path):
    """Another image size (48 rows x 36 columns), single frame: SCOORDs by the hand formula, no frame number."""
    pixels = support.marker_frames((48, 36), [(0, 0)])
    support.write(tmp_path / "in" / "a.dcm", support.make_dataset(pixels[0]))
    run(fixed_oracle_checkpoint(tmp_path / "model.pt"), tmp_path / "in", tmp_path / "out", write_sr=True)
    (sr_path,) = (tmp_path / "out" / "sr").iterdir()
    scoords = [i for i in content_items(pydicom.dcmread(sr_path)) if i.ValueType == "SCOORD"]
    expected = np.array([expected_point(TIP, (36, 48)), expected_point(MARKER, (36, 48))]) + 0.5
    np.testing.assert_allclose([list(map(float, s.GraphicData)) for s in scoords], expected, atol=1e-3)
    assert all("ReferencedFrameNumber" not in s.ContentSequence[0].ReferencedSOPSequence[0] for s in scoords)
