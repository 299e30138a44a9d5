"""MONAI transforms: conventions, heatmap rendering, landmark loading, padding, decoding, and points
following the image through MONAI spatial augmentation."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import (
    Affined,
    CenterSpatialCropd,
    Compose,
    Flipd,
    MapTransform,
    Orientationd,
    RandAffined,
    RandFlipd,
    RandRotated,
    RandSpatialCropd,
    RandZoomd,
    Resized,
    Rotate90d,
    Rotated,
    Spacingd,
    SpatialCropd,
    SpatialPadd,
    Transform,
    Zoomd,
)
from monai.utils import TransformBackends

from monai_adaloss import transforms as T
from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.transforms import (
    BindPointsToImage,
    BindPointsToImaged,
    DecodeHeatmap,
    DecodeHeatmapd,
    GaussianHeatmap,
    GaussianHeatmapd,
    LoadLandmarks,
    LoadLandmarksd,
    PadLandmarks,
    PadLandmarksd,
    TransformPointsWithImage,
    TransformPointsWithImaged,
)

NAN = math.nan
PAIRS = [
    (GaussianHeatmap, GaussianHeatmapd),
    (LoadLandmarks, LoadLandmarksd),
    (PadLandmarks, PadLandmarksd),
    (BindPointsToImage, BindPointsToImaged),
    (TransformPointsWithImage, TransformPointsWithImaged),
    (DecodeHeatmap, DecodeHeatmapd),
]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def same(actual: torch.Tensor, expected: list) -> bool:
    """Equal values, NaN where NaN expected."""
    return torch.allclose(torch.as_tensor(actual), torch.tensor(expected, dtype=torch.float32), equal_nan=True)


# ----------------------------------------------------------------------------------------------
# MONAI conventions


@pytest.mark.parametrize(("array_cls", "dict_cls"), PAIRS)
def test_monai_conventions(array_cls: type, dict_cls: type) -> None:
    name = dict_cls.__name__[:-1]
    assert array_cls.__name__ == name and issubclass(array_cls, Transform) and issubclass(dict_cls, MapTransform)
    assert getattr(T, f"{name}D") is dict_cls and getattr(T, f"{name}Dict") is dict_cls
    assert {name, f"{name}d", f"{name}D", f"{name}Dict"} <= set(T.__all__)
    assert array_cls.backend == [TransformBackends.TORCH] and dict_cls.backend == [TransformBackends.TORCH]


@pytest.mark.parametrize(
    "make",
    [
        lambda missing: GaussianHeatmapd("pts", 2.0, spatial_shape=(8, 8), allow_missing_keys=missing),
        lambda missing: LoadLandmarksd("pts", allow_missing_keys=missing),
        lambda missing: PadLandmarksd("pts", 2, allow_missing_keys=missing),
        lambda missing: BindPointsToImaged("pts", "image", allow_missing_keys=missing),
        lambda missing: TransformPointsWithImaged("pts", "image", allow_missing_keys=missing),
        lambda missing: DecodeHeatmapd("pts", allow_missing_keys=missing),
    ],
)
def test_allow_missing_keys(make: Callable[[bool], MapTransform]) -> None:
    data = {"image": MetaTensor(torch.zeros(1, 8, 8))}
    assert make(True)(data).keys() == data.keys()
    with pytest.raises(KeyError, match="pts"):
        make(False)(data)


# ----------------------------------------------------------------------------------------------
# GaussianHeatmap


def test_gaussian_heatmap_matches_the_renderer_with_per_landmark_sigma() -> None:
    points = torch.tensor([[[3.0, 4.5], [9.0, 2.0]], [[NAN, NAN], [NAN, NAN]], [[6.2, 7.0], [NAN, NAN]]])
    heatmaps = GaussianHeatmap(sigma=[1.0, 2.0, 3.0], spatial_shape=(12, 10), normalize="peak")(points)
    expected = render_gaussian_heatmaps(points[None], [1.0, 2.0, 3.0], (12, 10), normalize="peak")[0]
    assert type(heatmaps) is torch.Tensor and heatmaps.dtype == torch.float32
    assert torch.equal(heatmaps, expected)
    assert torch.count_nonzero(heatmaps[1]) == 0  # absent landmark: empty channel
    per_call = GaussianHeatmap(2.0, dtype=torch.float64)(points, spatial_shape=(5, 6))
    assert per_call.shape == (3, 5, 6) and per_call.dtype == torch.float64


def test_gaussian_heatmap_of_bound_points_carries_their_affine() -> None:
    affine = torch.diag(torch.tensor([0.5, 2.0, 1.0, 1.0], dtype=torch.float64))
    points = BindPointsToImage()(torch.tensor([[[2.0, 3.0]]]), MetaTensor(torch.zeros(1, 8, 9), affine=affine))
    heatmaps = GaussianHeatmap(1.5, spatial_shape=(8, 9))(points)
    assert isinstance(heatmaps, MetaTensor) and torch.equal(heatmaps.affine, affine)
    unbound = GaussianHeatmap(1.5, spatial_shape=(8, 9))(LoadLandmarks()([[2.0, 3.0]]))
    assert type(unbound) is torch.Tensor and torch.equal(unbound, heatmaps.as_tensor())


def test_gaussian_heatmapd_takes_shape_affine_and_meta_from_the_reference_image() -> None:
    affine = torch.tensor([[0.0, 0.7, 0.0, 3.0], [0.9, 0.0, 0.0, -2.0], [0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1]])
    image = MetaTensor(torch.zeros(1, 11, 13), affine=affine, meta={"filename_or_obj": "a.dcm"})
    points = torch.tensor([[[4.0, 5.0]], [[7.5, 1.0]]])
    out = GaussianHeatmapd("pts", sigma=2.0, ref_image_keys="image")({"pts": points, "image": image})
    heatmaps = out["pts_heatmap"]
    assert isinstance(heatmaps, MetaTensor) and heatmaps.shape == (2, 11, 13)
    assert torch.equal(heatmaps.affine, image.affine) and heatmaps.meta["filename_or_obj"] == "a.dcm"
    assert torch.equal(heatmaps.as_tensor(), GaussianHeatmap(2.0, spatial_shape=(11, 13))(points))

    fixed = GaussianHeatmapd(["a", "b"], 1.0, heatmap_keys=["ha", "hb"], spatial_shape=(6, 7))
    out = fixed({"a": points, "b": points[:1]})
    assert out["ha"].shape == (2, 6, 7) and out["hb"].shape == (1, 6, 7)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"sigma": -1}, "sigma"),
        ({"sigma": [1.0, 0.0]}, "sigma"),
        ({"sigma": math.inf}, "sigma"),
        ({"sigma": 1.0, "normalize": "max"}, "normalize"),
        ({"sigma": 1.0, "spatial_shape": (0, 4)}, "spatial_shape"),
        ({"sigma": 1.0, "spacing": (1.0, -0.5)}, "spacing"),
        ({"sigma": 1.0, "dtype": torch.int64}, "dtype"),
    ],
)
def test_gaussian_heatmap_bad_arguments(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=f"Argument `{argument}`"):
        GaussianHeatmap(**kwargs)


def test_gaussian_heatmap_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"Argument `sigma` must be positive, got -1\."):
        GaussianHeatmap(sigma=-1)
    with pytest.raises(ValueError, match="Argument `spatial_shape` must be given"):
        GaussianHeatmap(1.0)(torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match=r"Argument `points` must have shape \(L, K, D\)"):
        GaussianHeatmap(1.0, spatial_shape=(4, 4))(torch.zeros(1, 1, 1, 2))
    with pytest.raises(ValueError, match="Argument `sigma`"):  # per-landmark sigma of the wrong length
        GaussianHeatmap([1.0, 2.0], spatial_shape=(4, 4))(torch.zeros(3, 1, 2))
    with pytest.raises(ValueError, match="Exactly one of the arguments `spatial_shape` and `ref_image_keys`"):
        GaussianHeatmapd("pts", 1.0)
    with pytest.raises(ValueError, match="Exactly one of the arguments `spatial_shape` and `ref_image_keys`"):
        GaussianHeatmapd("pts", 1.0, spatial_shape=(4, 4), ref_image_keys="image")
    with pytest.raises(ValueError, match="Argument `heatmap_keys` must have one entry per key"):
        GaussianHeatmapd(["a", "b", "c"], 1.0, heatmap_keys=["x", "y"], spatial_shape=(4, 4))
    with pytest.raises(ValueError, match="3 spatial dims"):
        transform = GaussianHeatmapd("pts", 1.0, ref_image_keys="image")
        transform({"pts": torch.zeros(1, 1, 3), "image": MetaTensor(torch.zeros(1, 4, 4))})


# ----------------------------------------------------------------------------------------------
# LoadLandmarks


def test_load_csv_with_instance_column_names_and_nan_padding(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.csv",
        "Landmark, Instance, X, Y\ntip,1,30.0,41.5\ntip,0,12.5,40.0\nbase,0,,\nextra,0,1,1\njaw,0,3,4\n",
    )
    points = LoadLandmarks(names=["tip", "base", "jaw", "missing"], max_instances=3)(str(path))
    assert isinstance(points, MetaTensor) and points.dtype == torch.float32
    assert points.meta["filename_or_obj"] == str(path)
    expected = [
        [[12.5, 40.0], [30.0, 41.5], [NAN, NAN]],  # ordered by instance
        [[NAN, NAN]] * 3,  # empty coordinates: annotated as absent
        [[3.0, 4.0], [NAN, NAN], [NAN, NAN]],
        [[NAN, NAN]] * 3,  # not in the file
    ]
    assert same(points, expected)


def test_load_csv_name_format_in_file_order_and_3d(tmp_path: Path) -> None:
    wide = write(tmp_path / "wide.csv", "name,x,y\nb,1.5,2\na,3,4\nc,nan,nan\n")
    assert same(LoadLandmarks()(wide), [[[1.5, 2.0]], [[3.0, 4.0]], [[NAN, NAN]]])
    volume = write(tmp_path / "vol.csv", "landmark,x,y,z\np,1,2,3\n")
    assert same(LoadLandmarks(ndim=3)(volume), [[[1.0, 2.0, 3.0]]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("landmark,x\ntip,1\n", r"coordinate columns \['x', 'y'\] for ndim=2"),
        ("landmark,x,y,z\ntip,1,2,3\n", r"coordinate columns \['x', 'y'\] for ndim=2"),
        ("label,x,y\ntip,1,2\n", "must have a `landmark` \\(or `name`\\) column"),
        ("landmark,x,y\ntip,1,2,3\n", "line 2 has more cells than the header"),
        ("landmark,x,y\ntip,1,abc\n", "line 2: expected a number, got 'abc'"),
        ("landmark,x,y\ntip,1,\n", "line 2: expected a number"),
    ],
)
def test_load_csv_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=f"Landmark file `{re.escape(str(path))}`.*{message}"):
        LoadLandmarks()(path)


def test_load_json_formats(tmp_path: Path) -> None:
    named = write(
        tmp_path / "n.json", json.dumps({"landmarks": {"tip": [[1, 2], [3, 4]], "base": None, "jaw": [5, 6]}})
    )
    assert same(
        LoadLandmarks(names=["jaw", "tip", "base"], max_instances=2)(named),
        [[[5.0, 6.0], [NAN, NAN]], [[1.0, 2.0], [3.0, 4.0]], [[NAN, NAN]] * 2],
    )
    bare = write(tmp_path / "b.json", json.dumps({"tip": [[1.5, 2.5]], "base": []}))
    assert same(LoadLandmarks()(bare), [[[1.5, 2.5]], [[NAN, NAN]]])
    listed = write(tmp_path / "l.json", json.dumps({"landmarks": [[1, 2], None, [[3, 4], [5, 6]]]}))
    assert same(LoadLandmarks(max_instances=2)(listed), [[[1.0, 2.0], [NAN, NAN]], [[NAN, NAN]] * 2, [[3, 4], [5, 6]]])
    top_list = write(tmp_path / "t.json", json.dumps([[1, 2, 3], [4, 5, 6]]))
    assert same(LoadLandmarks(names=["a", "b"], ndim=3)(top_list), [[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]])


def test_load_inline_datalist_entries() -> None:
    entry = {"image": "a.dcm", "label": {"tip": np.array([[12.5, 40.0]]), "base": None}}
    out = LoadLandmarksd("label", names=["tip", "base"])(entry)
    assert out["image"] == "a.dcm" and same(out["label"], [[[12.5, 40.0]], [[NAN, NAN]]])
    assert "filename_or_obj" not in out["label"].meta
    assert same(LoadLandmarks()([[1, 2], None, [3.5, 4]]), [[[1.0, 2.0]], [[NAN, NAN]], [[3.5, 4.0]]])
    array = np.array([[[1.0, 2.0], [NAN, NAN]], [[3.0, 4.0], [5.0, 6.0]]])
    assert same(LoadLandmarks(max_instances=3)(array), [[[1, 2], [NAN, NAN], [NAN, NAN]], [[3, 4], [5, 6], [NAN, NAN]]])


def test_load_errors_name_the_file_and_landmark(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "many.csv", "landmark,x,y\ntip,1,2\ntip,3,4\n")
    with pytest.raises(
        ValueError, match=f"Landmark file `{re.escape(str(csv_path))}` has 2 instances of landmark `tip`, more than max"
    ):
        LoadLandmarks()(csv_path)
    with pytest.raises(ValueError, match="Datalist entry has 3 instances of landmark `jaw`, more than max_instances=2"):
        LoadLandmarks(max_instances=2)({"jaw": [[1, 2], [3, 4], [5, 6]]})
    json_path = write(tmp_path / "d3.json", json.dumps({"tip": [[1, 2, 3]]}))
    with pytest.raises(
        ValueError, match=f"Landmark file `{re.escape(str(json_path))}`: landmark `tip` has a point with 3 coordinates"
    ):
        LoadLandmarks(ndim=2)(json_path)
    with pytest.raises(FileNotFoundError, match=r"Landmark file `.*nowhere\.csv` does not exist"):
        LoadLandmarks()(tmp_path / "nowhere.csv")
    with pytest.raises(ValueError, match=r"must be a \.csv or \.json file"):
        LoadLandmarks()(write(tmp_path / "a.txt", "x"))
    with pytest.raises(ValueError, match="is not valid JSON"):
        LoadLandmarks()(write(tmp_path / "broken.json", "{"))
    with pytest.raises(ValueError, match="Datalist entry holds no landmarks"):
        LoadLandmarks()([])
    with pytest.raises(ValueError, match="Datalist entry lists 1 landmarks but `names` has 2"):
        LoadLandmarks(names=["a", "b"])([[1, 2]])
    with pytest.raises(ValueError, match="Datalist entry: landmark `tip` has a point that is not a list of numbers"):
        LoadLandmarks()({"tip": [["1", "2"]]})


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"max_instances": 0}, "max_instances"),
        ({"max_instances": 1.5}, "max_instances"),
        ({"ndim": 4}, "ndim"),
        ({"names": ["a", "a"]}, "names"),
        ({"names": "tip"}, "names"),
        ({"names": []}, "names"),
    ],
)
def test_load_landmarks_bad_arguments(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=f"Argument `{argument}`"):
        LoadLandmarks(**kwargs)


# ----------------------------------------------------------------------------------------------
# PadLandmarks


def test_loaded_points_keep_their_file_name_through_the_pipeline(tmp_path: Path) -> None:
    path = write(tmp_path / "pts.csv", "landmark,x,y\ntip,10,12\ntip,20,22\n")
    image = MetaTensor(torch.zeros(1, *SHAPE_2D), affine=AFFINE_2D)
    pipeline = Compose(
        [
            LoadLandmarksd("points", max_instances=2),
            BindPointsToImaged("points", "image"),
            Flipd("image", spatial_axis=0),
            TransformPointsWithImaged("points", "image"),
        ]
    )
    points = pipeline({"image": image, "points": str(path)})["points"]
    assert same(points, [[[53.0, 12.0], [43.0, 22.0]]])
    with pytest.raises(ValueError, match=f"Landmark file `{re.escape(str(path))}` has 2 instances of landmark 0"):
        PadLandmarks(1)(points)


def test_pad_landmarks_compacts_and_nan_pads() -> None:
    points = torch.tensor([[[NAN, NAN], [1.0, 2.0], [NAN, 5.0], [3.0, 4.0]], [[NAN, NAN]] * 4])
    padded = PadLandmarks(3)(points)
    assert same(padded, [[[1, 2], [3, 4], [NAN, NAN]], [[NAN, NAN]] * 3])
    assert same(PadLandmarks(2)(torch.tensor([[[7.0, 8.0]]])), [[[7.0, 8.0], [NAN, NAN]]])


def test_pad_landmarks_keeps_meta_and_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "two.csv", "landmark,x,y\ntip,1,2\ntip,3,4\nbase,5,6\n")
    points = LoadLandmarks(max_instances=2)(path)
    out = PadLandmarksd("pts", 4)({"pts": points})["pts"]
    assert isinstance(out, MetaTensor) and out.shape == (2, 4, 2) and out.meta["filename_or_obj"] == str(path)
    with pytest.raises(
        ValueError, match=f"Landmark file `{re.escape(str(path))}` has 2 instances of landmark 0, more than max"
    ):
        PadLandmarks(1)(points)
    with pytest.raises(ValueError, match="Argument `points` has 2 instances of landmark 0"):
        PadLandmarks(1)(torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="Argument `max_instances` must be a positive integer, got 0"):
        PadLandmarks(0)


# ----------------------------------------------------------------------------------------------
# points follow the image through MONAI spatial transforms

SHAPE_2D = (64, 80)
# in-plane rotation, anisotropic spacing and an offset: world != voxel in every way
ANGLE = 0.4
AFFINE_2D = torch.tensor(
    [
        [0.8 * math.cos(ANGLE), -1.2 * math.sin(ANGLE), 0.0, 5.0],
        [0.8 * math.sin(ANGLE), 1.2 * math.cos(ANGLE), 0.0, -3.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ],
    dtype=torch.float64,
)
POINTS_2D = torch.tensor([[[20.3, 30.7]], [[40.0, 50.2]], [[NAN, NAN]], [[27.6, 44.45]]])
SHAPE_3D = (32, 40, 36)
AFFINE_3D = torch.tensor([[0.7, 0, 0, 10.0], [0, 0.9, 0, -4.0], [0, 0, 1.3, 2.0], [0, 0, 0, 1]], dtype=torch.float64)
POINTS_3D = torch.tensor([[[12.3, 20.7, 15.2]], [[NAN, NAN, NAN]], [[19.0, 15.2, 20.8]]])

SPATIAL_2D: dict[str, Callable[[], list]] = {
    "flip": lambda: [Flipd("image", spatial_axis=0)],
    "flip both axes": lambda: [Flipd("image", spatial_axis=None)],
    "rotate 90": lambda: [Rotated("image", angle=math.pi / 2, keep_size=False)],
    "rotate 17 keep_size": lambda: [Rotated("image", angle=math.radians(17), keep_size=True)],
    "rotate 17 grow": lambda: [Rotated("image", angle=math.radians(-17), keep_size=False)],
    "zoom in keep_size": lambda: [Zoomd("image", zoom=1.3, keep_size=True, mode="bilinear")],
    "zoom out keep_size": lambda: [Zoomd("image", zoom=0.7, keep_size=True, mode="bilinear")],
    "zoom anisotropic area": lambda: [Zoomd("image", zoom=(1.25, 0.8), keep_size=True)],
    "affine": lambda: [
        Affined("image", rotate_params=0.3, scale_params=(1.2, 0.9), translate_params=(4, -3), padding_mode="zeros")
    ],
    "resize": lambda: [Resized("image", spatial_size=(50, 90), mode="bilinear")],
    "spatial crop": lambda: [SpatialCropd("image", roi_start=(5, 7), roi_end=(60, 70))],
    "center crop": lambda: [CenterSpatialCropd("image", roi_size=(50, 60))],
    "random crop": lambda: [RandSpatialCropd("image", roi_size=(48, 56), random_size=False)],
    "pad": lambda: [SpatialPadd("image", spatial_size=(80, 100))],
    "rotate90": lambda: [Rotate90d("image", k=1)],
    "spacing": lambda: [Spacingd("image", pixdim=(1.0, 1.0), mode="bilinear")],
    "orientation": lambda: [Orientationd("image", axcodes="LP", labels=None)],
    "random flip": lambda: [RandFlipd("image", prob=1.0, spatial_axis=1)],
    "random rotate": lambda: [RandRotated("image", range_x=(0.3, 0.6), prob=1.0, keep_size=True)],
    "random zoom": lambda: [RandZoomd("image", prob=1.0, min_zoom=1.2, max_zoom=1.4, keep_size=True, mode="bilinear")],
    "random affine": lambda: [
        RandAffined("image", prob=1.0, rotate_range=0.5, scale_range=0.2, translate_range=5, padding_mode="zeros")
    ],
    "chain": lambda: [
        RandFlipd("image", prob=1.0, spatial_axis=0),
        RandRotated("image", range_x=0.3, prob=1.0, keep_size=True),
        RandZoomd("image", prob=1.0, min_zoom=0.8, max_zoom=1.2, keep_size=True, mode="bilinear"),
        RandSpatialCropd("image", roi_size=(56, 64), random_size=False),
    ],
}
SPATIAL_3D: dict[str, Callable[[], list]] = {
    "3d flip": lambda: [Flipd("image", spatial_axis=2)],
    "3d rotate": lambda: [Rotated("image", angle=(0.2, 0.1, 0.3), keep_size=True)],
    "3d zoom": lambda: [Zoomd("image", zoom=1.2, keep_size=True, mode="trilinear")],
    "3d resize": lambda: [Resized("image", spatial_size=(24, 50, 30), mode="trilinear")],
    "3d random affine + crop": lambda: [
        RandAffined("image", prob=1.0, rotate_range=(0.3, 0.3, 0.3), scale_range=0.1, translate_range=3),
        RandSpatialCropd("image", roi_size=(28, 32, 30), random_size=False),
    ],
}


def follow(points: torch.Tensor, shape: tuple, affine: torch.Tensor, spatial: list, lazy: bool = False) -> dict:
    """Render ``points`` as the image's channels, transform image + points together, render targets."""
    image = MetaTensor(render_gaussian_heatmaps(points[None], 3.0, shape)[0], affine=affine)
    pipeline = Compose(
        [
            BindPointsToImaged("points", refer_keys="image"),
            *spatial,
            TransformPointsWithImaged("points", refer_keys="image"),
            GaussianHeatmapd("points", sigma=3.0, ref_image_keys="image", heatmap_keys="target"),
        ],
        lazy=lazy,
    ).set_random_state(seed=7)
    return pipeline({"image": image, "points": points.clone()})


def peaks(heatmaps: torch.Tensor) -> torch.Tensor:
    """Sub-voxel peak of each channel of ``(L, *spatial)``: ``(L, D)``."""
    return decode_single_instance(torch.as_tensor(heatmaps)[None])[0][0, :, 0]


def assert_points_follow(out: dict, original: torch.Tensor) -> None:
    image, points, target = out["image"], out["points"], out["target"]
    absent = torch.isnan(original[:, 0, 0])
    assert isinstance(points, MetaTensor) and points.shape == original.shape and points.dtype == torch.float32
    assert torch.allclose(points.affine, image.affine.to(points.affine.dtype))  # bound to the new grid
    assert torch.isnan(points[absent]).all() and not torch.isnan(points[~absent]).any()
    assert not torch.allclose(points[~absent], original[~absent], atol=0.5)  # the transform moved them
    assert target.shape[1:] == image.shape[1:]
    assert torch.count_nonzero(target[absent]) == 0
    # the transformed image peaks where the transformed points are, and so do their targets
    image_peaks = peaks(image[~absent])
    assert (image_peaks - points[~absent, 0]).abs().max() < 0.5
    assert (image_peaks - peaks(target[~absent])).abs().max() < 0.5
    for channel in torch.nonzero(~absent)[:, 0]:
        image_argmax = np.unravel_index(int(image[channel].argmax()), image.shape[1:])
        target_argmax = np.unravel_index(int(target[channel].argmax()), image.shape[1:])
        assert max(abs(a - b) for a, b in zip(image_argmax, target_argmax, strict=True)) <= 1


@pytest.mark.parametrize("name", list(SPATIAL_2D))
def test_points_follow_2d_spatial_transforms(name: str) -> None:
    assert_points_follow(follow(POINTS_2D, SHAPE_2D, AFFINE_2D, SPATIAL_2D[name]()), POINTS_2D)


@pytest.mark.parametrize("name", list(SPATIAL_3D))
def test_points_follow_3d_spatial_transforms(name: str) -> None:
    assert_points_follow(follow(POINTS_3D, SHAPE_3D, AFFINE_3D, SPATIAL_3D[name]()), POINTS_3D)


@pytest.mark.parametrize(
    ("name", "affine_shape"), [("chain", (4, 4)), ("flip both axes", (3, 3)), ("random crop", (3, 3))]
)
def test_points_follow_lazy_compose(name: str, affine_shape: tuple[int, int]) -> None:
    out = follow(POINTS_2D, SHAPE_2D, AFFINE_2D, SPATIAL_2D[name](), lazy=True)
    # MONAI quirk: lazily resolved flips and crops hand back a 2D image with a 3x3 affine (bound: 4x4)
    assert out["image"].affine.shape == affine_shape
    assert_points_follow(out, POINTS_2D)


def test_points_leaving_the_grid_keep_their_coordinates() -> None:
    crop = SpatialCropd("image", roi_start=(25, 10), roi_end=(60, 70))
    out = follow(POINTS_2D, SHAPE_2D, AFFINE_2D, [crop])
    assert same(out["points"], [[[-4.7, 20.7]], [[15.0, 40.2]], [[NAN, NAN]], [[2.6, 34.45]]])

    rotate = Rotated("image", angle=math.radians(40), keep_size=True)
    corner = torch.tensor([[[2.0, 3.0]], [[62.0, 77.0]]])
    out = follow(corner, SHAPE_2D, AFFINE_2D, [rotate])
    image_affine = out["image"].affine.to(torch.float64)
    move = torch.linalg.inv(image_affine) @ AFFINE_2D
    expected = corner[:, 0].double() @ move[:2, :2].T + move[:2, 3]
    assert torch.allclose(out["points"][:, 0].double(), expected, atol=1e-4)
    size = torch.tensor(SHAPE_2D)
    assert ((out["points"][:, 0] < 0) | (out["points"][:, 0] > size - 1)).any(dim=-1).all()  # both left the grid


def test_transform_points_again_after_more_transforms() -> None:
    image = MetaTensor(render_gaussian_heatmaps(POINTS_2D[None], 3.0, SHAPE_2D)[0], affine=AFFINE_2D)
    first = Compose([BindPointsToImaged("points", "image"), Flipd("image", spatial_axis=1)])
    second = Compose([TransformPointsWithImaged("points", "image"), Rotated("image", angle=0.5)])
    out = TransformPointsWithImaged("points", "image")(second(first({"image": image, "points": POINTS_2D})))
    direct = follow(POINTS_2D, SHAPE_2D, AFFINE_2D, [Flipd("image", spatial_axis=1), Rotated("image", angle=0.5)])
    assert torch.allclose(out["points"], direct["points"], atol=1e-4, equal_nan=True)
    again = TransformPointsWithImaged("points", "image")(out)["points"]  # nothing new happened to the image
    assert torch.allclose(again, out["points"], atol=1e-5, equal_nan=True)


def test_decoded_points_map_back_to_the_original_image() -> None:
    original = MetaTensor(torch.zeros(1, *SHAPE_2D), affine=AFFINE_2D)
    resized = Resized("image", spatial_size=(40, 48), mode="bilinear")({"image": original})["image"]
    points = torch.tensor([[[20.3, 30.7]], [[40.0, 50.2]]])
    on_original = TransformPointsWithImage()(BindPointsToImage()(points, original), resized)
    heatmaps = GaussianHeatmap(2.0, spatial_shape=(40, 48))(on_original)  # bound points: heatmaps carry the affine
    decoded, _ = DecodeHeatmap()(heatmaps)
    back = TransformPointsWithImage()(decoded, original)
    assert torch.allclose(back, points, atol=0.05)


def test_points_with_image_errors() -> None:
    image = MetaTensor(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="Argument `points` must be bound to its image by BindPointsToImage"):
        TransformPointsWithImage()(torch.zeros(1, 1, 2), image)
    with pytest.raises(ValueError, match="Argument `image` must be a MetaTensor"):
        BindPointsToImage()(torch.zeros(1, 1, 2), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="Argument `image` must have 3 spatial dims"):
        BindPointsToImage()(torch.zeros(1, 1, 3), image)
    with pytest.raises(ValueError, match=r"Argument `points` must have D in \{2, 3\}"):
        BindPointsToImage()(torch.zeros(1, 1, 1), MetaTensor(torch.zeros(1, 8)))
    with pytest.raises(KeyError, match="Reference key `image`"):
        BindPointsToImaged("points", "image")({"points": torch.zeros(1, 1, 2)})
    with pytest.raises(ValueError, match="Argument `refer_keys` must have one entry per key"):
        BindPointsToImaged(["a", "b", "c"], ["x", "y"])


def test_transformed_points_collate_into_a_batch() -> None:
    samples = [follow(POINTS_2D, SHAPE_2D, AFFINE_2D, [Flipd("image", spatial_axis=0)]) for _ in range(2)]
    batch = list_data_collate(samples)
    assert batch["points"].shape == (2, *POINTS_2D.shape) and batch["target"].shape == (2, 4, *SHAPE_2D)


# ----------------------------------------------------------------------------------------------
# DecodeHeatmap


def test_decode_single_instance_round_trip() -> None:
    points = torch.tensor([[[10.3, 20.6]], [[30.5, 5.25]]])
    heatmaps = GaussianHeatmap(3.0, spatial_shape=(40, 32))(points)
    decoded, confidence = DecodeHeatmap()(heatmaps)
    assert decoded.shape == (2, 1, 2) and confidence.shape == (2, 1) and type(decoded) is torch.Tensor
    assert torch.allclose(decoded, points, atol=0.05) and (confidence > 0.9).all()


def test_decode_multi_instance_with_dict_keys() -> None:
    points = torch.tensor([[[10.0, 12.0], [30.0, 25.0], [NAN, NAN]], [[NAN, NAN]] * 3])
    affine = torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=torch.float64))
    heatmaps = MetaTensor(GaussianHeatmap(2.0, spatial_shape=(40, 36))(points), affine=affine)
    out = DecodeHeatmapd("heatmaps", max_instances=3, median_kernel=3)({"heatmaps": heatmaps})
    decoded, scores = out["heatmaps_points"], out["heatmaps_confidence"]
    assert isinstance(decoded, MetaTensor) and torch.equal(decoded.affine, affine)
    assert decoded.shape == (2, 3, 2) and scores.shape == (2, 3)
    found = sorted(decoded[0, :2].tolist())
    assert torch.allclose(torch.tensor(found), points[0, :2], atol=0.05)
    assert torch.isnan(decoded[0, 2]).all() and torch.isnan(decoded[1]).all() and (scores[1] == 0).all()

    named = DecodeHeatmapd(["a", "b"], points_keys=["pa", "pb"], confidence_keys=["ca", "cb"])
    out = named({"a": heatmaps[:1], "b": heatmaps[:1]})
    assert out["pa"].shape == (1, 1, 2) and out["cb"].shape == (1, 1)


def test_decode_heatmap_errors() -> None:
    with pytest.raises(ValueError, match="Argument `max_instances` must be a positive integer, got 0"):
        DecodeHeatmap(max_instances=0)
    with pytest.raises(ValueError, match=r"Argument `heatmaps` must have shape \(L, \*spatial\)"):
        DecodeHeatmap()(torch.zeros(1, 2, 3, 4, 5))
