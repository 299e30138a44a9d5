"""300-W face landmarks: the ``.pts`` reader, the benchmark's folder layout and split lists, face
cropping from the ground-truth box and rotation of image and points together.

Coordinates follow DESIGN.md section 2: a point is ``(x, y)`` = (column, row) in the voxel-index
space of the image as MONAI's readers load it (axis 0 = x), a pixel's centre has integer
coordinates, and one sample's landmarks are ``(L, K, D)`` = ``(68, 1, 2)``.

**The .pts origin is 1-based.** iBUG ``.pts`` files (``version: 1``, ``n_points: 68``, ``{``, one
``x y`` line per point, ``}``) store Matlab-style pixel coordinates: the top-left pixel's centre is
``(1, 1)``. :func:`read_pts` subtracts 1 from both coordinates, so the top-left pixel's centre is
``(0, 0)`` as everywhere in this package. This follows menpo, the iBUG group's own toolkit (its
PTS importer subtracts 1, "landmarks on a 480x480 image are in the range [1-480]"); mmpose reads
the values unchanged, so mmpose-derived coordinates (e.g. its COCO-style 300-W json) are 1 pixel
larger than ours. The shift moves every point alike: distances and NME do not change.

Folder layout (the standard 300-W distribution, as the papers split it)::

    root/lfpw/trainset  root/helen/trainset  root/afw   -> "train"       (811 + 2000 + 337 = 3148)
    root/lfpw/testset   root/helen/testset              -> "common"      (224 + 330 = 554)
    root/ibug                                           -> "challenging" (135)
    common + challenging                                -> "full"        (689)

Each face is an image with a ``.pts`` file of the same stem next to it (images holding several
faces are stored once per face, ``name_1.jpg`` / ``name_1.pts``, ``name_2.jpg`` / ...).

A training pipeline (300-W images are RGB or grey JPEG/PNG)::

    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    train_transforms = Compose([
        LoadImaged("image", image_only=True),
        EnsureChannelFirstd("image"),
        LoadPtsd("label"),
        CropFaceFromLandmarksd("image", points_key="label", margin=0.25, output_size=(256, 256)),
        rand_rotate_with_points("image", points_key="label", max_angle=math.pi / 6, prob=0.5),
    ])
    datalist = list_300w_split("/data/300W", "train")
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import BorderPad, Compose, MapTransform, RandRotated, Resize, SpatialCrop, Transform
from monai.utils import TransformBackends, ensure_tuple, ensure_tuple_rep

from ..transforms import (
    BindPointsToImage,
    BindPointsToImaged,
    TransformPointsWithImage,
    TransformPointsWithImaged,
    _points_source,
)

__all__ = [
    "IMAGE_SUFFIXES_300W",
    "NUM_POINTS_300W",
    "SPLITS_300W",
    "SPLIT_SIZES_300W",
    "CropFaceFromLandmarks",
    "CropFaceFromLandmarksD",
    "CropFaceFromLandmarksDict",
    "CropFaceFromLandmarksd",
    "LoadPts",
    "LoadPtsD",
    "LoadPtsDict",
    "LoadPtsd",
    "list_300w_folder",
    "list_300w_split",
    "rand_rotate_with_points",
    "read_pts",
    "square_face_box",
]

NUM_POINTS_300W = 68
"""Points per face in the 68-point iBUG / Multi-PIE markup."""

Split300W = Literal["train", "common", "challenging", "full"]

SPLITS_300W: dict[str, tuple[str, ...]] = {
    "train": ("lfpw/trainset", "helen/trainset", "afw"),
    "common": ("lfpw/testset", "helen/testset"),
    "challenging": ("ibug",),
    "full": ("lfpw/testset", "helen/testset", "ibug"),
}
"""Sub-folders of the 300-W root that make up each split."""

SPLIT_SIZES_300W = {"train": 3148, "common": 554, "challenging": 135, "full": 689}
"""Number of faces of each split in the complete 300-W distribution (not enforced)."""

IMAGE_SUFFIXES_300W = (".jpg", ".png", ".jpeg")
"""Image suffixes looked for next to a ``.pts`` file, in this order (lower or upper case)."""


# ----------------------------------------------------------------------------------------------
# .pts reader


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """Read a 68-point iBUG ``.pts`` file into 0-based ``(x, y)`` points.

    Format: header lines ``key: value`` (``version: 1``, ``n_points: 68``), ``{``, one line of two
    numbers ``x y`` per point, ``}``; blank lines and Windows line ends are accepted. The file's
    1-based (Matlab) coordinates are shifted by -1 (see the module docstring).

    Returns:
        ``(68, 2)`` float32 array of ``(x, y)`` = (column, row), pixel centres at integer 0-based
        coordinates.

    Raises:
        FileNotFoundError: when the file does not exist (naming it).
        ValueError: naming the file, on a missing ``{`` or ``}``, a point count other than 68 or
            other than the header's ``n_points``, a line that is not two finite numbers, or text
            after ``}``.
    """
    path = Path(path)
    where = f"Landmark file `{path}`"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist.")
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line]
    opening = next((i for i, (_, line) in enumerate(numbered) if line == "{"), None)
    if opening is None:
        raise ValueError(f"{where} is not a .pts file: no line with `{{`.")
    closing = next((i for i, (_, line) in enumerate(numbered) if line == "}" and i > opening), None)
    if closing is None:
        raise ValueError(f"{where} is not a .pts file: no line with `}}` after `{{`.")
    if closing != len(numbered) - 1:
        raise ValueError(f"{where} line {numbered[closing + 1][0]} has text after `}}`.")
    declared = _declared_points(numbered[:opening], where)
    body = numbered[opening + 1 : closing]
    if declared is not None and declared != len(body):
        raise ValueError(f"{where} declares n_points: {declared} but lists {len(body)} points.")
    if len(body) != NUM_POINTS_300W:
        raise ValueError(f"{where} lists {len(body)} points, expected {NUM_POINTS_300W}.")
    points = np.array([_pts_point(line, where, number) for number, line in body], dtype=np.float64)
    return (points - 1.0).astype(np.float32)


def _declared_points(header: list[tuple[int, str]], where: str) -> int | None:
    """The header's ``n_points`` value, or None without one."""
    for number, line in header:
        key, _, value = line.partition(":")
        if key.strip().lower() == "n_points":
            try:
                return int(value)
            except ValueError:
                raise ValueError(
                    f"{where} line {number}: `n_points` must be an integer, got {value.strip()!r}."
                ) from None
    return None


def _pts_point(line: str, where: str, number: int) -> tuple[float, float]:
    fields = line.split()
    try:
        values = tuple(float(field) for field in fields)
    except ValueError:
        raise ValueError(f"{where} line {number}: expected two numbers `x y`, got {line!r}.") from None
    if len(values) != 2 or not all(math.isfinite(value) for value in values):
        raise ValueError(f"{where} line {number}: expected two finite numbers `x y`, got {line!r}.")
    return values[0], values[1]


class LoadPts(Transform):
    """Read a 300-W ``.pts`` file into one sample's points ``(68, 1, 2)`` (see :func:`read_pts`).

    Returns (from ``__call__``): a float32 MetaTensor ``(L, K, D)`` = ``(68, 1, 2)`` of 0-based
    ``(x, y)``, with ``meta["filename_or_obj"]`` the file path.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        points = torch.from_numpy(read_pts(path))[:, None, :]
        return MetaTensor(points, meta={"filename_or_obj": str(path)})


class LoadPtsd(MapTransform):
    """Dictionary-based wrapper of :class:`LoadPts`: replaces each key's ``.pts`` path by its points.

    Args:
        keys: keys of the ``.pts`` paths.
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    backend = LoadPts.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadPts()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


# ----------------------------------------------------------------------------------------------
# folder layout


def list_300w_split(root: str | os.PathLike, split: Split300W) -> list[dict[str, str]]:
    """Datalist of a 300-W split: one ``{"image": path, "label": pts path}`` per face.

    Args:
        root: the 300-W root holding ``lfpw/{trainset,testset}``, ``helen/{trainset,testset}``,
            ``afw`` and ``ibug`` (only the folders of ``split`` are needed).
        split: ``"train"``, ``"common"``, ``"challenging"`` or ``"full"`` (see ``SPLITS_300W``).

    Returns:
        Entries in the order of ``SPLITS_300W[split]``, sorted by file name within a folder; the
        image is the file with the ``.pts`` file's stem and a suffix of ``IMAGE_SUFFIXES_300W``.

    Raises:
        ValueError: on an unknown split, a folder without ``.pts`` files, or a ``.pts`` file
            without an image (naming it).
        FileNotFoundError: when a folder of the split is missing (naming it).
    """
    if split not in SPLITS_300W:
        raise ValueError(f"Argument `split` must be one of {tuple(SPLITS_300W)}, got {split!r}.")
    root = Path(root)
    folders = [root / sub for sub in SPLITS_300W[split]]
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:
        raise FileNotFoundError(f"300-W split `{split}` needs the folders {missing}, which do not exist.")
    return [entry for folder in folders for entry in _list_faces(folder)]


def list_300w_folder(folder: str | os.PathLike) -> list[dict[str, str]]:
    """Datalist of one folder of faces: ``{"image": path, "label": pts path}`` per ``.pts`` file, sorted.

    For any folder laid out like a 300-W sub-folder (an image next to each ``.pts`` file), e.g. the
    faces to run a trained model on, whose ``.pts`` points give the face box.

    Raises:
        FileNotFoundError: when ``folder`` does not exist.
        ValueError: when it holds no ``.pts`` files, or a ``.pts`` file has no image (naming it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder `{folder}` does not exist.")
    return _list_faces(folder)


def _list_faces(folder: Path) -> list[dict[str, str]]:
    images = {
        (path.stem, path.suffix.lower()): path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES_300W and path.is_file()
    }
    pts_files = sorted(path for path in folder.iterdir() if path.suffix.lower() == ".pts" and path.is_file())
    if not pts_files:
        raise ValueError(f"300-W folder `{folder}` holds no .pts files.")
    entries = []
    for pts in pts_files:
        image = next(
            (images[(pts.stem, suffix)] for suffix in IMAGE_SUFFIXES_300W if (pts.stem, suffix) in images), None
        )
        if image is None:
            raise ValueError(f"Landmark file `{pts}` has no image {[pts.stem + s for s in IMAGE_SUFFIXES_300W]}.")
        entries.append({"image": str(image), "label": str(pts)})
    return entries


# ----------------------------------------------------------------------------------------------
# face cropping from the ground-truth box


def square_face_box(points: torch.Tensor, margin: float) -> tuple[tuple[int, ...], int]:
    """The square crop around the present points of one sample, in whole pixels.

    The box of the present points (min to max per axis) is made square on its longer side, that
    side is scaled by ``1 + margin`` and rounded up to ``size`` pixels, and the square is centred
    on the box's centre (to the nearest pixel).

    Args:
        points: ``(L, K, D)`` voxel indices in spatial-axis order; NaN = absent.
        margin: non-negative enlargement of the box side (0.25: side = 1.25 x the longer side).

    Returns:
        ``start`` (D ints, the first pixel of the crop on each axis, may be negative) and ``size``
        (pixels per side, at least 1); the crop covers ``start[i] .. start[i] + size - 1``.
    """
    raw = torch.as_tensor(points).detach().to("cpu", torch.float64).reshape(-1, points.shape[-1])
    present = raw[torch.isfinite(raw).all(dim=1)]
    if present.numel() == 0:
        raise ValueError(f"{_points_source(points)} has no present point to crop the face around.")
    low, high = present.min(dim=0).values, present.max(dim=0).values
    size = max(1, math.ceil((1.0 + margin) * float((high - low).max())))
    start = torch.round((low + high) / 2 - (size - 1) / 2)
    return tuple(int(value) for value in start), size


def _crop_resize(
    image: MetaTensor, start: Sequence[int], size: int, output_size: tuple[int, ...], mode: str
) -> MetaTensor:
    """Crop the square ``start .. start + size - 1`` out of ``image`` (zero padding outside) and resize it.

    MONAI's BorderPad, SpatialCrop and Resize update the image's affine, which the points follow.
    """
    shape = image.peek_pending_shape()
    before = [max(0, -s) for s in start]
    after = [max(0, s + size - n) for s, n in zip(start, shape, strict=True)]
    if any(before) or any(after):
        image = BorderPad([pad for pair in zip(before, after, strict=True) for pad in pair], mode="constant")(image)
    roi_start = [s + b for s, b in zip(start, before, strict=True)]
    image = SpatialCrop(roi_start=roi_start, roi_end=[s + size for s in roi_start])(image)
    return Resize(output_size, mode=mode, anti_aliasing=True)(image)  # MONAI smooths only when downsizing


def _check_crop_arguments(margin: float, output_size: Sequence[int]) -> tuple[float, tuple[int, ...]]:
    margin_f = float(margin)
    if not (math.isfinite(margin_f) and margin_f >= 0):
        raise ValueError(f"Argument `margin` must be finite and non-negative, got {margin}.")
    size = tuple(ensure_tuple(output_size))
    if not size or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"Argument `output_size` must be positive integers, got {output_size!r}.")
    return margin_f, size


class CropFaceFromLandmarks(Transform):
    """Crop the face around its landmarks: a square, enlarged box, padded outside the image, resized.

    The square comes from :func:`square_face_box` (box of the present points, longer side x
    ``1 + margin``, whole pixels); the part outside the image is zero-padded, then the crop is
    resized to ``output_size``. The points follow exactly: they are bound to the image's affine
    before and moved by the affine change after (:class:`~monai_adaloss.transforms.BindPointsToImage`
    / :class:`~monai_adaloss.transforms.TransformPointsWithImage`); absent (NaN) points stay NaN.

    Args:
        margin: enlargement of the box side (0.25: 1.25 x the longer side of the points' box).
        output_size: spatial size of the output, e.g. ``(256, 256)``.
        mode: interpolation of MONAI's ``Resize`` (``"bilinear"``, ``"area"``, ...); downsizing
            smooths first (``anti_aliasing``).

    Shapes: ``__call__(image (C, X, Y) MetaTensor, points (L, K, 2))`` returns the image
    ``(C, *output_size)`` and the points ``(L, K, 2)`` as a MetaTensor bound to its affine.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(self, margin: float = 0.25, output_size: Sequence[int] = (256, 256), mode: str = "bilinear") -> None:
        self.margin, self.output_size = _check_crop_arguments(margin, output_size)
        self.mode = mode

    def __call__(self, image: MetaTensor, points: torch.Tensor) -> tuple[MetaTensor, MetaTensor]:
        bound = BindPointsToImage()(points, image)
        start, size = square_face_box(points, self.margin)
        cropped = self.crop(image, start, size)
        return cropped, TransformPointsWithImage()(bound, cropped)

    def crop(self, image: MetaTensor, start: Sequence[int], size: int, mode: str | None = None) -> MetaTensor:
        """Crop the square ``start .. start + size - 1`` of ``image`` (zero padding outside) and resize it."""
        if len(start) != len(self.output_size):
            raise ValueError(
                f"Argument `output_size` must have one entry per spatial dim ({len(start)}), got {self.output_size}."
            )
        return _crop_resize(image, start, size, self.output_size, mode or self.mode)


class CropFaceFromLandmarksd(MapTransform):
    """Dictionary-based wrapper of :class:`CropFaceFromLandmarks`: crops every image key alike.

    The box comes from ``d[points_key]``, which must be in the voxel space of the images (all
    image keys share one grid); the points follow the first image key.

    Args:
        keys: image keys to crop, e.g. ``"image"``.
        points_key: key of the points ``(L, K, D)``.
        margin, output_size: see :class:`CropFaceFromLandmarks`.
        mode: interpolation, one per key or one for all.
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    backend = CropFaceFromLandmarks.backend

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        points_key: Hashable = "label",
        margin: float = 0.25,
        output_size: Sequence[int] = (256, 256),
        mode: str | Sequence[str] = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.points_key = points_key
        self.cropper = CropFaceFromLandmarks(margin, output_size)
        self.mode = ensure_tuple_rep(mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.points_key not in d:
            raise KeyError(
                f"Points key `{self.points_key}` of transform `{type(self).__name__}` was missing in the data."
            )
        key_modes = list(self.key_iterator(d, self.mode))
        if not key_modes:
            return d
        points, reference = d[self.points_key], key_modes[0][0]
        bound = BindPointsToImage()(points, d[reference])
        start, size = square_face_box(points, self.cropper.margin)
        for key, mode in key_modes:
            d[key] = self.cropper.crop(d[key], start, size, mode)
        d[self.points_key] = TransformPointsWithImage()(bound, d[reference])
        return d


def rand_rotate_with_points(
    keys: KeysCollection,
    points_key: Hashable,
    max_angle: float = math.pi / 6,
    prob: float = 0.5,
    mode: str | Sequence[str] = "bilinear",
    padding_mode: str | Sequence[str] = "zeros",
) -> Compose:
    """Rotate the images by a uniform random angle in ``[-max_angle, max_angle]`` and the points with them.

    MONAI's ``RandRotated`` (about the image centre, same size) between
    :class:`~monai_adaloss.transforms.BindPointsToImaged` and
    :class:`~monai_adaloss.transforms.TransformPointsWithImaged`, the points following the first
    key. The paper's face augmentation is +-30 degrees (the default ``max_angle = pi / 6``).
    Seed it with ``set_random_state`` (or the outer ``Compose``'s).

    Args:
        keys: image keys, rotated alike.
        points_key: key of the points ``(L, K, 2)`` in the voxel space of the images.
        max_angle: largest rotation in radians.
        prob: probability of rotating a sample.
        mode, padding_mode: of ``RandRotated``, one per key or one for all.

    Returns:
        A ``Compose`` of the three transforms.
    """
    image_keys = ensure_tuple(keys)
    return Compose(
        [
            BindPointsToImaged(points_key, refer_keys=image_keys[0]),
            RandRotated(image_keys, range_x=max_angle, prob=prob, keep_size=True, mode=mode, padding_mode=padding_mode),
            TransformPointsWithImaged(points_key, refer_keys=image_keys[0]),
        ]
    )


LoadPtsD = LoadPtsDict = LoadPtsd
CropFaceFromLandmarksD = CropFaceFromLandmarksDict = CropFaceFromLandmarksd
