"""300-W tooling: .pts reader (1-based -> 0-based), split folders, face crop and rotation with the points,
NME with both normalisations on real samples (``../shared/data/faces_300w_samples``)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image

from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.io.faces300w import (
    SPLIT_SIZES_300W,
    SPLITS_300W,
    CropFaceFromLandmarks,
    CropFaceFromLandmarksd,
    LoadPts,
    LoadPtsd,
    list_300w_split,
    rand_rotate_with_points,
    read_pts,
    square_face_box,
)
from monai_adaloss.metrics import (
    OUTER_EYE_CORNERS_300W,
    NormalizedMeanErrorMetric,
    inter_pupil_distance_300w,
    normalized_mean_error,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces_300w_samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"300-W samples not found at {SAMPLES}")
PTS_FILES = ["300vw/001/annot/000006.pts", "300vw/001/annot/000009.pts", "300vw/401/annot/000731.pts"]
PTS_FILES.append("300vw/401/annot/000732.pts")
NAN = math.nan


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def raw_pts_values(path: Path) -> np.ndarray:
    """The 68 ``x y`` rows of a well-formed .pts file, as written (independent of ``read_pts``)."""
    return np.loadtxt(path, skiprows=3, max_rows=68, dtype=np.float64)


def write_pts(path: Path, points: list[str], header: str = "version: 1\nn_points: 68\n") -> Path:
    path.write_text(header + "{\n" + "\n".join(points) + "\n}\n", encoding="utf-8")
    return path


def peaks(heatmaps: torch.Tensor) -> torch.Tensor:
    """Sub-pixel peak of each channel of ``(L, X, Y)``: ``(L, 2)``."""
    return decode_single_instance(torch.as_tensor(heatmaps)[None])[0][0, :, 0]


def blob_image(points: torch.Tensor, shape: tuple[int, int], sigma: float = 2.5) -> MetaTensor:
    """One Gaussian blob channel per landmark, on an image grid with the identity affine."""
    return MetaTensor(render_gaussian_heatmaps(points[None], sigma, shape)[0])


# ----------------------------------------------------------------------------------------------
# .pts reader


@needs_samples
@pytest.mark.parametrize("name", PTS_FILES)
def test_read_pts_shifts_the_1_based_file_values_to_0_based(name: str) -> None:
    path = SAMPLES / name
    points = read_pts(path)
    assert points.shape == (68, 2) and points.dtype == np.float32
    np.testing.assert_allclose(points, raw_pts_values(path) - 1.0, atol=1e-4)


@needs_samples
def test_read_pts_agrees_with_the_mmpose_json_of_the_same_frames() -> None:
    """mmpose's COCO json keeps the .pts values unchanged: ours are exactly 1 pixel smaller."""
    coco = json.loads((SAMPLES / "300vw" / "anno_300vw.json").read_text())
    files = {image["id"]: image["file_name"] for image in coco["images"]}
    for annotation in coco["annotations"]:
        pts = SAMPLES / "300vw" / files[annotation["image_id"]].replace("imgs", "annot").replace(".jpg", ".pts")
        keypoints = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(68, 3)[:, :2]
        np.testing.assert_allclose(read_pts(pts) + 1.0, keypoints, atol=1e-3)


@needs_samples
def test_points_are_x_column_y_row_of_the_loaded_image() -> None:
    """A 1280x720 frame loads as (C, 1280, 720); its face points (x up to ~800) fit only as (x, y)."""
    frame = SAMPLES / "300vw" / "001" / "imgs" / "000006.jpg"
    image = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])({"image": str(frame)})[
        "image"
    ]
    points = LoadPts()(SAMPLES / "300vw" / "001" / "annot" / "000006.pts")
    assert image.shape == (3, 1280, 720)
    assert float(points[..., 0].max()) > 720  # x beyond the row count: swapping would leave the image
    assert ((points >= 0) & (points < torch.tensor([1280, 720]))).all()


@pytest.mark.parametrize(
    ("lines", "header", "message"),
    [
        (["1 2"] * 67, "version: 1\nn_points: 67\n", "lists 67 points, expected 68"),
        (["1 2"] * 68, "version: 1\nn_points: 69\n", "declares n_points: 69 but lists 68 points"),
        (["1 2"] * 67 + ["1 two"], "n_points: 68\n", r"line 70: expected two numbers `x y`, got '1 two'"),
        (["1 2"] * 67 + ["1 2 3"], "n_points: 68\n", r"line 70: expected two finite numbers `x y`, got '1 2 3'"),
        (["1 2"] * 67 + ["1 nan"], "n_points: 68\n", "line 70: expected two finite numbers"),
        (["1 2"] * 68, "n_points: many\n", r"line 1: `n_points` must be an integer, got 'many'"),
    ],
)
def test_read_pts_rejects_malformed_files_naming_them(
    tmp_path: Path, lines: list[str], header: str, message: str
) -> None:
    path = write_pts(tmp_path / "face.pts", lines, header)
    with pytest.raises(ValueError, match=f"Landmark file `{tmp_path / 'face.pts'}`.*{message}"):
        read_pts(path)


def test_read_pts_rejects_missing_braces_and_trailing_text(tmp_path: Path) -> None:
    body = "\n".join(["1 2"] * 68)
    path = tmp_path / "a.pts"
    path.write_text(f"n_points: 68\n{body}\n}}\n")
    with pytest.raises(ValueError, match=r"a\.pts` is not a \.pts file: no line with `\{`"):
        read_pts(path)
    path.write_text(f"n_points: 68\n{{\n{body}\n")
    with pytest.raises(ValueError, match=r"a\.pts` is not a \.pts file: no line with `\}` after `\{`"):
        read_pts(path)
    path.write_text(f"n_points: 68\n{{\n{body}\n}}\nextra\n")
    with pytest.raises(ValueError, match=r"a\.pts` line 72 has text after `\}`"):
        read_pts(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pts` does not exist"):
        read_pts(tmp_path / "missing.pts")


def test_read_pts_accepts_windows_line_ends_blank_lines_and_no_header(tmp_path: Path) -> None:
    path = tmp_path / "b.pts"
    rows = [f"{i + 1}.5 {2 * i + 1}" for i in range(68)]
    path.write_bytes(("version: 1\r\n\r\n{\r\n" + "\r\n".join(rows) + "\r\n}\r\n").encode())
    points = read_pts(path)
    assert points[0].tolist() == [0.5, 0.0] and points[67].tolist() == [67.5, 134.0]


def test_load_pts_gives_one_sample_of_68_single_instance_points(tmp_path: Path) -> None:
    path = write_pts(tmp_path / "c.pts", [f"{i + 1} 1" for i in range(68)])
    out = LoadPtsd("label")({"label": str(path), "image": "c.jpg"})
    points = out["label"]
    assert isinstance(points, MetaTensor) and points.shape == (68, 1, 2) and points.dtype == torch.float32
    assert points.meta["filename_or_obj"] == str(path) and out["image"] == "c.jpg"
    assert points[5, 0].tolist() == [5.0, 0.0]


# ----------------------------------------------------------------------------------------------
# folder layout

TREE = {"lfpw/trainset": 2, "helen/trainset": 3, "afw": 1, "lfpw/testset": 2, "helen/testset": 1, "ibug": 2}


def build_300w_tree(root: Path) -> None:
    """Tiny fake images (PNG for LFPW as in 300-W, JPEG elsewhere) with copies of a real .pts file."""
    for folder, count in TREE.items():
        (root / folder).mkdir(parents=True)
        suffix = ".png" if folder.startswith("lfpw") else ".jpg"
        for i in range(count):
            stem = f"{folder.replace('/', '_')}_{i}"
            Image.new("RGB", (4, 3)).save(root / folder / f"{stem}{suffix}")
            shutil.copyfile(SAMPLES / PTS_FILES[i % len(PTS_FILES)], root / folder / f"{stem}.pts")
    (root / "afw" / "notes.txt").write_text("not a face")
    Image.new("RGB", (4, 3)).save(root / "ibug" / "no_annotation.jpg")


@needs_samples
def test_splits_list_the_standard_folders(tmp_path: Path) -> None:
    build_300w_tree(tmp_path)
    sizes = {split: len(list_300w_split(tmp_path, split)) for split in SPLITS_300W}
    assert sizes == {"train": 2 + 3 + 1, "common": 2 + 1, "challenging": 2, "full": 2 + 1 + 2}
    assert SPLIT_SIZES_300W == {"train": 811 + 2000 + 337, "common": 224 + 330, "challenging": 135, "full": 554 + 135}
    full = list_300w_split(tmp_path, "full")
    assert full[0] == {
        "image": str(tmp_path / "lfpw/testset/lfpw_testset_0.png"),
        "label": str(tmp_path / "lfpw/testset/lfpw_testset_0.pts"),
    }
    assert [Path(e["label"]).parent.name for e in full] == ["testset"] * 3 + ["ibug"] * 2
    assert all(Path(e["image"]).stem == Path(e["label"]).stem for e in full)
    loaded = LoadPtsd("label")(full[-1])["label"]
    assert loaded.shape == (68, 1, 2)


@needs_samples
def test_split_errors_name_the_missing_folder_or_file(tmp_path: Path) -> None:
    build_300w_tree(tmp_path)
    with pytest.raises(
        ValueError, match=r"Argument `split` must be one of \('train', 'common', 'challenging', 'full'\)"
    ):
        list_300w_split(tmp_path, "test")
    shutil.rmtree(tmp_path / "helen" / "testset")
    assert len(list_300w_split(tmp_path, "challenging")) == 2
    with pytest.raises(FileNotFoundError, match=r"split `full` needs the folders \[.*helen/testset'\]"):
        list_300w_split(tmp_path, "full")
    (tmp_path / "ibug" / "ibug_1.jpg").unlink()
    with pytest.raises(ValueError, match=r"ibug_1\.pts` has no image \['ibug_1\.jpg', 'ibug_1\.png', 'ibug_1\.jpeg'\]"):
        list_300w_split(tmp_path, "challenging")
    for path in (tmp_path / "afw").glob("*.pts"):
        path.unlink()
    with pytest.raises(ValueError, match=r"300-W folder `.*afw` holds no \.pts files"):
        list_300w_split(tmp_path, "train")


# ----------------------------------------------------------------------------------------------
# face crop from the ground-truth box

FACE = torch.tensor([[[30.0, 40.0]], [[58.0, 44.0]], [[NAN, NAN]], [[41.0, 61.0]], [[45.5, 52.25]]])


def test_square_face_box_encloses_the_present_points_with_the_margin() -> None:
    start, size = square_face_box(FACE, margin=0.25)
    assert size == math.ceil(1.25 * 28.0) == 35  # longer side: x from 30 to 58
    assert start == (round(44.0 - 17), round(50.5 - 17))
    assert square_face_box(FACE, margin=0.0) == ((30, 37), 28)
    with pytest.raises(ValueError, match="Argument `points` has no present point"):
        square_face_box(torch.full((3, 1, 2), NAN), 0.25)


@pytest.mark.parametrize(
    ("points", "shape", "margin"),
    [
        (FACE, (90, 100), 0.25),  # inside the image
        (FACE - torch.tensor([20.0, 30.0]), (50, 45), 1.0),  # the box leaves the image on the low sides: padding
        (FACE + torch.tensor([10.0, 0.0]), (78, 72), 1.0),  # ... and on the high sides
    ],
)
def test_crop_face_moves_the_points_with_the_image(points: torch.Tensor, shape: tuple[int, int], margin: float) -> None:
    image = blob_image(points, shape)
    cropped, moved = CropFaceFromLandmarks(margin=margin, output_size=(48, 48))(image, points)
    present = ~torch.isnan(points[:, 0, 0])
    assert cropped.shape == (5, 48, 48) and moved.shape == (5, 1, 2)
    assert torch.isnan(moved[~present]).all() and torch.count_nonzero(cropped[~present]) == 0
    assert (peaks(cropped[present]) - moved[present, 0]).abs().max() < 0.5
    # the box is square, centred, and the points span 1 / (1 + margin) of it
    low, high = moved[present, 0].amin(0), moved[present, 0].amax(0)
    assert 48 / (1 + margin) - 1.5 < float((high - low).max()) <= 48 / (1 + margin) + 1e-3
    assert ((low + high) / 2 - 23.5).abs().max() < 1.0


def test_crop_face_pads_with_zeros_outside_the_image() -> None:
    points = torch.tensor([[[0.0, 0.0]], [[20.0, 20.0]]])
    image = MetaTensor(torch.ones(1, 24, 24))
    cropped, moved = CropFaceFromLandmarks(margin=1.0, output_size=(40, 40))(image, points)
    # crop: 40 pixels from -10 to 29 on each axis, no resampling
    assert torch.allclose(moved[:, 0], torch.tensor([[10.0, 10.0], [30.0, 30.0]]), atol=1e-4)
    assert cropped[0, :10].abs().max() == 0 and cropped[0, :, :10].abs().max() == 0
    assert cropped[0, 34:].abs().max() == 0 and torch.allclose(cropped[0, 10:34, 10:34], torch.ones(24, 24))


def test_crop_face_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"Argument `margin` must be finite and non-negative, got -0\.1"):
        CropFaceFromLandmarks(margin=-0.1)
    with pytest.raises(ValueError, match="Argument `output_size` must be positive integers"):
        CropFaceFromLandmarks(output_size=(256, 0))
    with pytest.raises(ValueError, match="Argument `output_size` must have one entry per spatial dim"):
        CropFaceFromLandmarks(output_size=(32, 32, 32))(MetaTensor(torch.zeros(1, 60, 60)), FACE)
    with pytest.raises(ValueError, match="Argument `image` must be a MetaTensor"):
        CropFaceFromLandmarks()(torch.zeros(1, 60, 60), FACE)
    with pytest.raises(KeyError, match="Points key `pts`"):
        CropFaceFromLandmarksd("image", points_key="pts")({"image": MetaTensor(torch.zeros(1, 60, 60))})


@needs_samples
def test_crop_face_on_a_real_frame_crops_every_image_key_alike() -> None:
    """Real 1280x720 frame + .pts: blobs drawn at three landmarks in a second key stay under the points."""
    folder = SAMPLES / "300vw" / "001"
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"), LoadPtsd("label")])
    data = load({"image": str(folder / "imgs" / "000006.jpg"), "label": str(folder / "annot" / "000006.pts")})
    marked = [30, 36, 48]  # nose tip, outer eye corner, mouth corner
    marks = blob_image(data["label"][marked].as_tensor(), tuple(data["image"].shape[1:]), sigma=3.0)
    data["marks"] = MetaTensor(marks.as_tensor(), affine=data["image"].affine)
    out = CropFaceFromLandmarksd(("image", "marks"), points_key="label", output_size=(256, 256))(data)
    assert out["image"].shape == (3, 256, 256) and out["marks"].shape == (3, 256, 256)
    points = out["label"]
    assert isinstance(points, MetaTensor) and points.shape == (68, 1, 2)
    assert torch.allclose(points.affine, out["image"].affine.to(points.affine.dtype))
    assert (peaks(out["marks"]) - points[marked, 0]).abs().max() < 0.5
    low, high = points[:, 0].amin(0), points[:, 0].amax(0)
    assert 256 / 1.25 - 8 < float((high - low).max()) <= 256 / 1.25 + 1e-3
    assert ((low + high) / 2 - 127.5).abs().max() < 4.0
    assert float(out["image"].std()) > 10  # a face, not padding


# ----------------------------------------------------------------------------------------------
# +-30 degree rotation of image and points together


def rotation_angle(before: torch.Tensor, after: torch.Tensor) -> float:
    """Angle (degrees) of the rotation taking the centred points ``before`` to ``after``, both ``(N, 2)``."""
    a, b = before - before.mean(0), after - after.mean(0)
    cross = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()
    return math.degrees(math.atan2(float(cross), float((a * b).sum())))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_rotation_up_to_30_degrees_moves_the_points_with_the_image(seed: int) -> None:
    points = FACE + 4.0
    rotate = rand_rotate_with_points("image", points_key="label", prob=1.0).set_random_state(seed=seed)
    out = rotate({"image": blob_image(points, (96, 96)), "label": points.clone()})
    present = ~torch.isnan(points[:, 0, 0])
    angle = math.degrees(rotate.transforms[1].rand_rotate.x)
    assert 0 < abs(angle) <= 30
    assert out["image"].shape == (5, 96, 96) and torch.isnan(out["label"][~present]).all()
    assert (peaks(out["image"][present]) - out["label"][present, 0]).abs().max() < 0.5
    assert abs(abs(rotation_angle(points[present, 0], out["label"][present, 0])) - abs(angle)) < 0.01


def test_rotation_with_prob_0_keeps_image_and_points() -> None:
    image = blob_image(FACE, (96, 96))
    out = rand_rotate_with_points("image", points_key="label", prob=0.0)({"image": image, "label": FACE.clone()})
    assert torch.equal(out["image"].as_tensor(), image.as_tensor())
    assert torch.allclose(out["label"], FACE, equal_nan=True)


# ----------------------------------------------------------------------------------------------
# NME with both normalisations on the real samples


def sample_faces() -> np.ndarray:
    """``(B, 68, 2)`` as written in the files: the four .pts frames and the two mmpose 300-W faces."""
    faces = [raw_pts_values(SAMPLES / name) for name in PTS_FILES]
    coco = json.loads((SAMPLES / "300w" / "test_300w.json").read_text())
    faces += [np.asarray(a["keypoints"], dtype=np.float64).reshape(68, 3)[:, :2] for a in coco["annotations"]]
    return np.stack(faces)


@needs_samples
def test_nme_inter_ocular_and_inter_pupil_on_real_faces() -> None:
    faces = sample_faces()
    target = torch.from_numpy(np.stack([read_pts(SAMPLES / name) for name in PTS_FILES]))
    assert torch.allclose(target.double(), torch.from_numpy(faces[:4] - 1.0), atol=1e-4)  # what the loader gives
    target = torch.from_numpy(faces)[:, :, None, :]
    pred = target + torch.tensor([3.0, -4.0], dtype=torch.float64)  # every point 5 px off
    inter_ocular = np.linalg.norm(faces[:, 36] - faces[:, 45], axis=1)
    inter_pupil = np.linalg.norm(faces[:, 42:48].mean(1) - faces[:, 36:42].mean(1), axis=1)
    assert (inter_ocular > inter_pupil).all() and (inter_pupil > 20).all()

    nme_io = normalized_mean_error(pred, target, OUTER_EYE_CORNERS_300W)
    nme_ip = normalized_mean_error(pred, target, inter_pupil_distance_300w)
    np.testing.assert_allclose(nme_io.numpy(), 5.0 / inter_ocular, rtol=1e-10)
    np.testing.assert_allclose(nme_ip.numpy(), 5.0 / inter_pupil, rtol=1e-10)

    offsets = torch.from_numpy(np.random.default_rng(0).normal(0.0, 2.0, size=(len(faces), 68, 1, 2)))
    errors = offsets.norm(dim=-1)[..., 0].numpy().mean(axis=1)
    np.testing.assert_allclose(normalized_mean_error(target + offsets, target, (36, 45)).numpy(), errors / inter_ocular)
    metric = NormalizedMeanErrorMetric(inter_pupil_distance_300w)
    metric(target + offsets, target)
    assert math.isclose(float(metric.aggregate()), float(np.mean(errors / inter_pupil)), rel_tol=1e-9)
