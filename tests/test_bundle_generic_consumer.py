"""The bundles as a generic consumer runs them, and ``monai-adaloss infer`` from model.pt / model.ts / model.onnx.

MONAI Deploy's ``MonaiBundleInferenceOperator`` path is reproduced (``bundle_export_checks.deploy_infer``:
monai-deploy-app-sdk 4.0 pulls the CUDA Holoscan stack, so it is not installed): configs read from the
``model.ts`` archive, Load/Save transforms stripped, an in-memory image, ``preprocessing -> inferer(model.ts) ->
postprocessing``. Its landmarks equal the records of ``monai-adaloss infer`` (catheter DICOMs, endoscopy PNGs)
and of the bundle's own ``monai.bundle run`` (3D volumes, which ``infer`` refuses with a reason).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_export_checks import deploy_infer, make_bundle_model, readme_command, run
from monai.bundle import ConfigWorkflow
from monai.data import PILReader
from PIL import Image

from monai_adaloss import cli
from monai_adaloss.inference import InferenceConfigError, InferenceRunner
from monai_adaloss.io import XRayDicomReader
from monai_adaloss.synthetic import FluoroscopyConfig, make_dataset
from monai_adaloss.synthetic.volumes import VolumeConfig, make_volume_dataset

pytestmark = pytest.mark.usefixtures("single_thread")


def _export(name: str, root: Path, preloaded: dict[str, str]) -> Path:
    make_bundle_model(name, root)
    result = run(readme_command(root / "docs" / "README.md", "ckpt_export"), cwd=root, preloaded=preloaded)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "models" / "model.ts"


def _records(output_dir: Path) -> dict[tuple[str, int, str], tuple[float, float, float]]:
    rows = [json.loads(line) for line in (output_dir / "records.jsonl").read_text().splitlines()]
    return {(Path(r["path"]).name, r["frame"], r["landmark"]): (r["x"], r["y"], r["confidence"]) for r in rows}


@pytest.fixture(scope="module")
def catheter(tmp_path_factory: pytest.TempPathFactory, preloaded_python: dict[str, str]) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("catheter_bundle")
    model_ts = _export("catheter_tip_fluoro", root, preloaded_python)
    data = tmp_path_factory.mktemp("catheter_data")
    make_dataset(data, 2, 1, 4, config=FluoroscopyConfig(rows=64, columns=48), seed=5)
    return {"root": root, "model_ts": model_ts, "test": data / "test"}


def test_deploy_path_gives_the_landmarks_of_monai_adaloss_infer(catheter: dict[str, Any], tmp_path: Path) -> None:
    summary = InferenceRunner(catheter["root"] / "models" / "model.pt", catheter["test"], tmp_path / "infer",
                              num_workers=0, progress=False).run()  # fmt: skip
    assert summary.failed == 0
    records = _records(tmp_path / "infer")
    reader = XRayDicomReader()
    files = sorted(catheter["test"].glob("*.dcm"))
    assert files
    for path in files:
        image, meta = reader.get_data(reader.read(str(path)))  # an in-memory frame 0, as a DICOM source operator gives
        out = deploy_infer(catheter["model_ts"], image, meta, tmp_path / "deploy", ["inference", "model_info"])
        written = json.loads((tmp_path / "deploy" / f"{path.stem}_landmarks.json").read_text())
        x, y = written["points_voxel"]["tip"][0]
        rx, ry, rconf = records[(path.name, 0, "tip")]
        assert abs(x - rx) < 1e-3 and abs(y - ry) < 1e-3, (path.name, (x, y), (rx, ry))
        assert abs(written["confidence"]["tip"][0] - rconf) < 1e-4
        assert out["pred_points"].shape == (1, 1, 2)


def test_deploy_path_without_model_info_config_says_what_is_missing(catheter: dict[str, Any], tmp_path: Path) -> None:
    """Only inference.json from the archive and no bundle folder: a clear error naming model_info.json."""
    reader = XRayDicomReader()
    image, meta = reader.get_data(reader.read(str(sorted(catheter["test"].glob("*.dcm"))[0])))
    with pytest.raises(RuntimeError) as raised:  # ConfigParser wraps the error of the expression
        deploy_infer(catheter["model_ts"], image, meta, tmp_path, ["inference"])
    assert "merge a model_info.json config" in str(raised.value.__cause__)


def test_infer_from_pt_ts_and_onnx_writes_the_same_records(catheter: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    onnx_path = catheter["root"] / "models" / "model.onnx"
    assert cli.main(["export", "-c", str(catheter["root"] / "models" / "model.pt"), "--onnx", str(onnx_path)]) == 0
    found = {}
    for suffix in ("pt", "ts", "onnx"):
        argv = ["infer", str(catheter["test"]), "-c", str(catheter["root"] / "models" / f"model.{suffix}"),
                "-o", str(tmp_path / suffix), "--num-workers", "0", "--quiet"]  # fmt: skip
        assert cli.main(argv) == 0
        found[suffix] = _records(tmp_path / suffix)
    assert found["pt"].keys() == found["ts"].keys() == found["onnx"].keys() and found["pt"]
    for key, (x, y, confidence) in found["pt"].items():
        for other in ("ts", "onnx"):
            ox, oy, oconf = found[other][key]
            assert abs(ox - x) < 1e-3 and abs(oy - y) < 1e-3 and abs(oconf - confidence) < 1e-3, (other, key)


def test_infer_refuses_a_network_with_an_exported_model(catheter: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(InferenceConfigError, match="holds its own network"):
        InferenceRunner(catheter["model_ts"], catheter["test"], tmp_path, network=torch.nn.Identity()).run()


def test_endoscopy_deploy_path_matches_infer(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, preloaded_python: dict[str, str]
) -> None:
    root = tmp_path_factory.mktemp("endoscopy_bundle")
    model_ts = _export("endoscopic_tool_landmarks", root, preloaded_python)
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for index, (rows, columns) in enumerate(((48, 64), (60, 50))):
        Image.fromarray(rng.integers(0, 255, (rows, columns, 3), dtype=np.uint8)).save(frames / f"f{index}.png")
    assert InferenceRunner(root / "models" / "model.pt", frames, tmp_path / "infer", num_workers=0,
                           progress=False).run().failed == 0  # fmt: skip
    records = _records(tmp_path / "infer")
    reader = PILReader(converter=lambda image: image.convert("RGB"))
    for path in sorted(frames.glob("*.png")):
        image, meta = reader.get_data(reader.read(str(path)))
        meta["filename_or_obj"] = str(path)  # LoadImage's key, which the writer names its file after
        deploy_infer(model_ts, image, meta, tmp_path / "deploy", ["inference", "model_info"])
        written = json.loads((tmp_path / "deploy" / f"{path.stem}_landmarks.json").read_text())
        for name, points in written["points_voxel"].items():
            rx, ry, _ = records[(path.name, 0, name)]  # single-instance? the bundle's K slots: compare the first
            if points:
                assert abs(points[0][0] - rx) < 1e-3 and abs(points[0][1] - ry) < 1e-3


def test_landmarks_3d_deploy_path_matches_bundle_run(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, preloaded_python: dict[str, str]
) -> None:
    root = tmp_path_factory.mktemp("volume_bundle")
    model_ts = _export("landmarks_3d", root, preloaded_python)
    data = tmp_path / "volumes"
    make_volume_dataset(data, 1, 1, 1, config=VolumeConfig(shape=(32, 28, 20)), seed=2)
    volume = sorted((data / "test").glob("*.nii.gz"))[0]
    with pytest.raises(InferenceConfigError, match=r"3D model .* infer reads 2D frames\. Run: python -m monai\.bundle"):
        InferenceRunner(root / "models" / "model.pt", data / "test", tmp_path / "infer", num_workers=0).run()
    wf = ConfigWorkflow(
        config_file=str(root / "configs" / "inference.json"),
        workflow_type="infer",
        logging_file=False,
        bundle_root=str(root),
        dataset_dir=str(data / "test"),
        num_workers=0,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    expected = json.loads((root / "predictions" / f"{volume.name[:-7]}_landmarks.json").read_text())
    from monai.data import NibabelReader

    reader = NibabelReader()
    image, meta = reader.get_data(reader.read(str(volume)))
    meta["filename_or_obj"] = str(volume)
    deploy_infer(model_ts, image, meta, tmp_path / "deploy", ["inference", "model_info"])
    written = json.loads((tmp_path / "deploy" / f"{volume.name[:-7]}_landmarks.json").read_text())
    for name, points in expected["points_voxel"].items():
        assert np.allclose(written["points_voxel"][name], points, atol=1e-3), name
        assert np.allclose(written["points_world"][name], expected["points_world"][name], atol=1e-3), name
    assert nib.load(str(volume)).shape == tuple(int(s) for s in meta["spatial_shape"])
    assert sys.modules.get("monai_adaloss") is not None


@pytest.mark.parametrize(
    ("name", "reason"),
    [("face_landmarks_300w", "crop around a face box"), ("hand_xray_landmarks", "not infer's resize-only pipeline")],
)
def test_infer_says_why_it_cannot_run_face_and_hand_models(name: str, reason: str, tmp_path: Path) -> None:
    make_bundle_model(name, tmp_path / "bundle")
    frame = tmp_path / "frame.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(frame)
    with pytest.raises(InferenceConfigError, match=reason):
        InferenceRunner(tmp_path / "bundle" / "models" / "model.pt", frame, tmp_path / "out", num_workers=0).run()


def test_catheter_readme_inference_command_runs_as_written(tmp_path: Path, preloaded_python: dict[str, str]) -> None:
    """The README's `monai.bundle run` inference command, from a checkout-like folder; exit 1 once a file fails."""
    root = tmp_path / "bundles" / "catheter_tip_fluoro"
    make_bundle_model("catheter_tip_fluoro", root)
    data = tmp_path / "data" / "catheter_tip_fluoro"
    make_dataset(data, 1, 1, 2, config=FluoroscopyConfig(rows=48, columns=48), seed=1)  # `monai-adaloss synth` layout
    argv = readme_command(root / "docs" / "README.md", "configs/inference.json")
    result = run(argv, cwd=tmp_path, preloaded=preloaded_python)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 failed" in result.stdout
    assert (root / "predictions" / "records.jsonl").read_text().count("\n") >= 2
    (data / "test" / "broken.dcm").write_bytes(b"DICM")
    result = run([*argv, "--output_dir", str(tmp_path / "second")], cwd=tmp_path, preloaded=preloaded_python)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 failed" in result.stdout
