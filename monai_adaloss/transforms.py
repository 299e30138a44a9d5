"""MONAI array and dictionary transforms for landmark points and Gaussian heatmaps.

Coordinates follow DESIGN.md section 2. One sample's landmarks are a float tensor ``(L, K, D)``:
L landmark channels, K instance slots, D = 1, 2 or 3 coordinates in the voxel-index space of the
image they belong to, in the order of the tensor's spatial axes (a voxel's centre has integer
coordinates). For a 2D image loaded by a MONAI reader, axis 0 is x, so a point is
``(x, y)`` = (column, row), the order of CSV and JSON annotation files. An instance with a NaN
coordinate is absent.

Each array transform does the work on one item; its dictionary twin ``Xd`` (aliases ``XD``,
``XDict``) maps keys:

- :class:`LoadLandmarks`: annotations (CSV, JSON, or a list/dict in a datalist entry) ->
  ``(L, K_max, D)`` points, NaN-padded.
- :class:`PadLandmarks`: NaN-pad ``(L, K, D)`` points to ``K_max`` instance slots.
- :class:`BindPointsToImage` and :class:`TransformPointsWithImage`: points follow the MONAI spatial
  transforms of their image (flip, rotate, zoom, affine, resize, crop, pad, their random versions,
  orientation, spacing), through the image's affine before and after.
- :class:`GaussianHeatmap`: points -> static Gaussian targets ``(L, *spatial)`` with a fixed float
  or per-landmark sigma (the Adaloss loss renders its own targets from the live sigma).
- :class:`DecodeHeatmap`: post-transform, heatmaps ``(L, *spatial)`` -> points and confidence.

A training pipeline where the points follow the augmented image::

    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, RandRotated, RandSpatialCropd, RandZoomd

    train_transforms = Compose([
        LoadImaged("image", image_only=True),
        EnsureChannelFirstd("image"),
        LoadLandmarksd("landmarks", names=("tip", "base"), max_instances=1, ndim=2),
        BindPointsToImaged("landmarks", refer_keys="image"),  # before any spatial transform
        RandRotated("image", range_x=0.3, prob=0.5, keep_size=True),
        RandZoomd("image", min_zoom=0.9, max_zoom=1.1, prob=0.5, mode="bilinear"),
        RandSpatialCropd("image", roi_size=(256, 256), random_size=False),
        TransformPointsWithImaged("landmarks", refer_keys="image"),  # after the spatial transforms
        GaussianHeatmapd("landmarks", sigma=5.0, ref_image_keys="image"),  # optional static targets
    ])
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import ApplyTransformToPoints, MapTransform, Transform
from monai.utils import MetaKeys, TransformBackends, ensure_tuple, ensure_tuple_rep

from .decoding import decode_multi_instance, decode_single_instance
from .heatmaps import HeatmapNormalization, render_gaussian_heatmaps

__all__ = [
    "BindPointsToImage",
    "BindPointsToImageD",
    "BindPointsToImageDict",
    "BindPointsToImaged",
    "DecodeHeatmap",
    "DecodeHeatmapD",
    "DecodeHeatmapDict",
    "DecodeHeatmapd",
    "GaussianHeatmap",
    "GaussianHeatmapD",
    "GaussianHeatmapDict",
    "GaussianHeatmapd",
    "ImageSpacingToPointsd",
    "LoadLandmarks",
    "LoadLandmarksD",
    "LoadLandmarksDict",
    "LoadLandmarksd",
    "PadLandmarks",
    "PadLandmarksD",
    "PadLandmarksDict",
    "PadLandmarksd",
    "TransformPointsWithImage",
    "TransformPointsWithImageD",
    "TransformPointsWithImageDict",
    "TransformPointsWithImaged",
]

# meta key set on a points MetaTensor whose ``affine`` maps its coordinates to world (the affine of
# the image grid the coordinates index), as MONAI's ApplyTransformToPoints reads a points affine
_BOUND_KEY = "points_bound_to_image"
_NORMALIZATIONS = (None, "peak", "mean")
_AXES = ("x", "y", "z")
_NAME_COLUMNS = ("landmark", "name")
_INSTANCE_COLUMN = "instance"
_JSON_LANDMARKS_KEY = "landmarks"


# ----------------------------------------------------------------------------------------------
# argument checks and small helpers


def _as_points(points: Any, name: str = "points") -> torch.Tensor:
    """Return one sample's points as a floating tensor ``(L, K, D)``, D in {1, 2, 3} (a MetaTensor stays one)."""
    pts = points if isinstance(points, torch.Tensor) else torch.as_tensor(np.asarray(points))
    if pts.ndim != 3 or pts.shape[-1] not in (1, 2, 3):
        raise ValueError(f"Argument `{name}` must have shape (L, K, D) with D in {{1, 2, 3}}, got {tuple(pts.shape)}.")
    return pts if pts.is_floating_point() else pts.float()


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` without MetaTensor metadata (cheaper to compute on)."""
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Argument `{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _check_positive_floats(value: Any, name: str) -> float | tuple[float, ...]:
    """A finite positive float or a non-empty sequence of them."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = value.tolist()
    values = ensure_tuple(value)
    if len(values) == 0:
        raise ValueError(f"Argument `{name}` must not be empty.")
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, float, np.number)):
            raise ValueError(f"Argument `{name}` must be a number or a sequence of numbers, got {value!r}.")
        if not (math.isfinite(item) and item > 0):
            raise ValueError(f"Argument `{name}` must be positive, got {item}.")
    if isinstance(value, Sequence):
        return tuple(float(item) for item in values)
    return float(values[0])


def _check_spatial_shape(spatial_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(ensure_tuple(spatial_shape))
    if not shape or len(shape) > 3 or not all(_is_positive_int(size) for size in shape):
        raise ValueError(f"Argument `spatial_shape` must be 1 to 3 positive integers, got {spatial_shape!r}.")
    return tuple(int(size) for size in shape)


def _is_positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def _per_key(value: Any, keys: tuple[Hashable, ...], name: str) -> tuple[Any, ...]:
    """One ``value`` per key: a single value is repeated, a sequence must have one entry per key."""
    try:
        return ensure_tuple_rep(value, len(keys))
    except ValueError:
        raise ValueError(f"Argument `{name}` must have one entry per key ({len(keys)}), got {value!r}.") from None


def _output_keys(value: KeysCollection | None, keys: tuple[Hashable, ...], name: str, suffix: str) -> tuple:
    """Output keys: ``value`` per key, or ``f"{key}{suffix}"`` when ``value`` is None."""
    if value is None:
        return tuple(f"{key}{suffix}" for key in keys)
    return _per_key(value, keys, name)


def _image_affine(image: Any, ndim: int) -> torch.Tensor:
    """The current affine of a channel-first ``image`` MetaTensor with ``ndim`` spatial dims."""
    if not isinstance(image, MetaTensor):
        raise ValueError(f"Argument `image` must be a MetaTensor (with an affine), got {type(image).__name__}.")
    spatial_ndim = len(image.peek_pending_shape())
    if spatial_ndim != ndim:
        raise ValueError(
            f"Argument `image` must have {ndim} spatial dims to match points with D={ndim}, "
            f"got image shape {tuple(image.shape)}."
        )
    return image.peek_pending_affine()


def _is_bound(points: torch.Tensor) -> bool:
    """Whether ``points`` is a MetaTensor whose affine maps its coordinates to world (an image grid's affine)."""
    return isinstance(points, MetaTensor) and bool(points.meta.get(_BOUND_KEY, False))


def _reference(data: Mapping[Hashable, Any], key: Hashable, transform: Transform) -> Any:
    if key not in data:
        raise KeyError(f"Reference key `{key}` of transform `{type(transform).__name__}` was missing in the data.")
    return data[key]


def _like_points(out: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``out`` carrying the metadata (affine, meta, applied operations) of ``points`` when it is a MetaTensor."""
    if not isinstance(points, MetaTensor):
        return out
    result = MetaTensor(out)
    result.copy_meta_from(points)
    return result


# ----------------------------------------------------------------------------------------------
# GaussianHeatmap


class GaussianHeatmap(Transform):
    """Render one sample's points ``(L, K, D)`` as Gaussian heatmaps ``(L, *spatial_shape)``.

    A thin wrapper of :func:`monai_adaloss.heatmaps.render_gaussian_heatmaps` for static targets or
    pictures: sigma is a fixed float or one per landmark (it never reads a live Adaloss schedule).
    Absent (NaN) instances draw nothing; instances of a channel merge by maximum.

    Args:
        sigma: Gaussian standard deviation in voxels (or in ``spacing`` units), a float or one per
            landmark ``(L,)``; > 0.
        spatial_shape: the heatmaps' spatial shape (D sizes); may instead be given per call.
        normalize: ``None``, ``"peak"`` or ``"mean"``, see ``render_gaussian_heatmaps``.
        spacing: optional voxel size per spatial axis; then ``sigma`` is in the same unit (e.g. mm).
        dtype: floating output dtype.

    Returns (from ``__call__``): ``(L, *spatial_shape)`` heatmaps on the points' device. For points
    bound to an image grid (:class:`BindPointsToImage`, :class:`TransformPointsWithImage`,
    :class:`DecodeHeatmap`), a MetaTensor with the points' affine (the grid their coordinates index).
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(
        self,
        sigma: float | Sequence[float],
        spatial_shape: Sequence[int] | None = None,
        normalize: HeatmapNormalization = None,
        spacing: Sequence[float] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.sigma = _check_positive_floats(sigma, "sigma")
        self.spatial_shape = None if spatial_shape is None else _check_spatial_shape(spatial_shape)
        if normalize not in _NORMALIZATIONS:
            raise ValueError(f"Argument `normalize` must be one of {_NORMALIZATIONS}, got {normalize!r}.")
        self.normalize = normalize
        self.spacing = None if spacing is None else _check_positive_floats(spacing, "spacing")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"Argument `dtype` must be a floating torch.dtype, got {dtype!r}.")
        self.dtype = dtype

    def __call__(self, points: torch.Tensor, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Render ``points`` ``(L, K, D)`` on ``spatial_shape`` (or the one given at construction)."""
        pts = _as_points(points)
        shape = self.spatial_shape if spatial_shape is None else _check_spatial_shape(spatial_shape)
        if shape is None:
            raise ValueError("Argument `spatial_shape` must be given, at construction or per call.")
        heatmaps = render_gaussian_heatmaps(
            _plain(pts)[None], self.sigma, shape, self.normalize, self.spacing, self.dtype
        )[0]
        if _is_bound(pts):
            return MetaTensor(heatmaps, affine=pts.affine.clone())
        return heatmaps


class GaussianHeatmapd(MapTransform):
    """Dictionary-based wrapper of :class:`GaussianHeatmap`.

    The spatial shape is either fixed (``spatial_shape``) or that of a reference image
    (``ref_image_keys``, channel-first ``(C, *spatial)``, e.g. the augmented image): then the
    heatmaps are a MetaTensor carrying the reference image's affine and meta.

    Args:
        keys: keys of the points ``(L, K, D)``.
        sigma: fixed Gaussian sigma, a float or one per landmark; see :class:`GaussianHeatmap`.
        heatmap_keys: output keys, one per key; default ``f"{key}_heatmap"``.
        ref_image_keys: reference image keys, one per key (or one for all).
        spatial_shape: fixed spatial shape; exclusive with ``ref_image_keys``.
        normalize, spacing, dtype: see :class:`GaussianHeatmap`.
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    backend = GaussianHeatmap.backend

    def __init__(
        self,
        keys: KeysCollection,
        sigma: float | Sequence[float],
        heatmap_keys: KeysCollection | None = None,
        ref_image_keys: KeysCollection | None = None,
        spatial_shape: Sequence[int] | None = None,
        normalize: HeatmapNormalization = None,
        spacing: Sequence[float] | None = None,
        dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if (spatial_shape is None) == (ref_image_keys is None):
            raise ValueError(
                "Exactly one of the arguments `spatial_shape` and `ref_image_keys` must be given, "
                f"got spatial_shape={spatial_shape!r}, ref_image_keys={ref_image_keys!r}."
            )
        self.heatmap_keys = _output_keys(heatmap_keys, self.keys, "heatmap_keys", "_heatmap")
        self.ref_image_keys = _per_key(ref_image_keys, self.keys, "ref_image_keys")
        self.renderer = GaussianHeatmap(sigma, spatial_shape, normalize, spacing, dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, heatmap_key, ref_key in self.key_iterator(d, self.heatmap_keys, self.ref_image_keys):
            if ref_key is None:
                d[heatmap_key] = self.renderer(d[key])
            else:
                d[heatmap_key] = self._render_on(d[key], _reference(d, ref_key, self))
        return d

    def _render_on(self, points: torch.Tensor, reference: Any) -> torch.Tensor:
        """Render ``points`` on the grid of the channel-first ``reference`` image, with its metadata."""
        ndim = _as_points(points).shape[-1]
        shape = reference.peek_pending_shape() if isinstance(reference, MetaTensor) else reference.shape[1:]
        if len(shape) != ndim:
            raise ValueError(
                f"Reference image must be channel-first with {ndim} spatial dims to match points with D={ndim}, "
                f"got shape {tuple(reference.shape)}."
            )
        heatmaps = _plain(self.renderer(points, spatial_shape=tuple(shape)))
        if not isinstance(reference, MetaTensor):
            return heatmaps
        meta = copy.deepcopy({k: v for k, v in reference.meta.items() if k != MetaKeys.AFFINE})
        return MetaTensor(heatmaps, affine=reference.peek_pending_affine().clone(), meta=meta)


# ----------------------------------------------------------------------------------------------
# LoadLandmarks

# parsed annotations: landmark name -> present instances (each D floats), or a list by channel index
_Instances = list[list[float]]
_Parsed = dict[str, _Instances] | list[_Instances]


class LoadLandmarks(Transform):
    """Read one sample's landmark annotations into points ``(L, K_max, D)``, float32, NaN-padded.

    Sources and formats (coordinates in the image's voxel indices, spatial-axis order: for 2D
    images ``x, y`` = column, row; D = ``ndim``):

    - **CSV file** (``.csv``, comma-separated, with a header; names are case-insensitive): a
      landmark name column ``landmark`` (or ``name``), coordinate columns ``x, y[, z]`` (exactly the
      first ``ndim`` of them) and an optional ``instance`` column. Each row is one instance; a
      landmark with several rows has several instances, ordered by ``instance`` when the column is
      there, else by row. A row with all coordinates empty (or ``nan``) marks the landmark absent::

          landmark,instance,x,y          name,x,y
          tip,0,12.5,40.0                tip,12.5,40.0
          tip,1,30.0,41.5                base,,
          base,0,,

    - **JSON file** (``.json``): ``{"landmarks": {"tip": [[x, y], ...], "base": null}}`` (name ->
      list of instances, each a coordinate list; a single ``[x, y]`` is one instance; ``null`` or
      ``[]`` is absent), the same mapping without the ``"landmarks"`` wrapper, or a list with one
      entry per landmark channel, ``{"landmarks": [[x, y], null, ...]}`` or ``[[x, y], ...]``
      (each entry a point, a list of instances, or ``null``).
    - **Inline annotations** in a datalist entry (the value is not a path): the same mapping or list
      as in a JSON file, or an array ``(L, D)`` / ``(L, K, D)``; e.g.
      ``{"image": "a.dcm", "label": {"tip": [[12.5, 40.0]]}}``.

    Channels follow ``names`` when given: a name absent from the source gives an all-NaN channel,
    a source landmark not in ``names`` is left out, and a list source must have ``len(names)``
    entries. Without ``names``, channels follow the order of the source. Instances with a NaN
    coordinate are absent; present instances fill the first slots.

    Args:
        names: landmark names in channel order; a sequence of unique strings.
        max_instances: ``K_max``, the number of instance slots (1 for single-instance tasks).
        ndim: D, the number of coordinates per point (1, 2 or 3).

    Returns (from ``__call__``): a MetaTensor ``(L, K_max, D)``, with ``meta["filename_or_obj"]``
    the file path for a file source.

    Raises:
        FileNotFoundError: when the file does not exist (naming it).
        ValueError: naming the file (or "datalist entry") on a point with a wrong number of
            coordinates, more present instances than ``max_instances`` (naming the landmark), a
            malformed file, or an unsupported file suffix.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(self, names: Sequence[str] | None = None, max_instances: int = 1, ndim: int = 2) -> None:
        if names is not None and (
            isinstance(names, str)
            or not names
            or not all(isinstance(name, str) and name for name in names)
            or len(set(names)) != len(names)
        ):
            raise ValueError(f"Argument `names` must be a non-empty sequence of unique landmark names, got {names!r}.")
        self.names = None if names is None else tuple(names)
        self.max_instances = _check_positive_int(max_instances, "max_instances")
        if isinstance(ndim, bool) or ndim not in (1, 2, 3):
            raise ValueError(f"Argument `ndim` must be 1, 2 or 3, got {ndim!r}.")
        self.ndim = ndim

    def __call__(self, source: str | os.PathLike | Mapping | Sequence | np.ndarray | torch.Tensor) -> MetaTensor:
        """Read ``source`` (a CSV/JSON path, or inline annotations) into ``(L, K_max, D)`` points."""
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            where = f"Landmark file `{path}`"
            parsed = _read_landmark_file(path, where, self.ndim)
            meta: dict[str, Any] = {"filename_or_obj": str(path)}
        else:
            where = "Datalist entry"
            parsed = _parse_landmarks(source, where, self.ndim)
            meta = {}
        channels = self._channels(parsed, where)
        return MetaTensor(_points_tensor(channels, self.max_instances, self.ndim, where), meta=meta)

    def _channels(self, parsed: _Parsed, where: str) -> list[tuple[str, _Instances]]:
        """(landmark label, instances) per output channel."""
        if self.names is None and not parsed:
            raise ValueError(f"{where} holds no landmarks.")
        if isinstance(parsed, dict):
            return list(parsed.items()) if self.names is None else [(n, parsed.get(n, [])) for n in self.names]
        if self.names is not None and len(parsed) != len(self.names):
            raise ValueError(
                f"{where} lists {len(parsed)} landmarks but `names` has {len(self.names)}: {list(self.names)}."
            )
        labels = self.names if self.names is not None else [str(i) for i in range(len(parsed))]
        return list(zip(labels, parsed, strict=True))


def _read_landmark_file(path: Path, where: str, ndim: int) -> _Parsed:
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, where, ndim)
    if suffix == ".json":
        try:
            with path.open(encoding="utf-8") as f:
                content = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where} is not valid JSON: {err}.") from err
        return _parse_landmarks(content, where, ndim)
    raise ValueError(f"{where} must be a .csv or .json file, got suffix {path.suffix!r}.")


def _read_csv(path: Path, where: str, ndim: int) -> dict[str, _Instances]:
    """Parse the CSV format of :class:`LoadLandmarks`."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        rows = list(reader)
        columns = {name.strip().lower(): name for name in reader.fieldnames or ()}
    name_column = next((columns[c] for c in _NAME_COLUMNS if c in columns), None)
    if name_column is None:
        raise ValueError(f"{where} must have a `landmark` (or `name`) column, got columns {list(columns)}.")
    axes = [axis for axis in _AXES if axis in columns]
    if axes != list(_AXES[:ndim]):
        raise ValueError(f"{where} must have the coordinate columns {list(_AXES[:ndim])} for ndim={ndim}, got {axes}.")
    instance_column = columns.get(_INSTANCE_COLUMN)
    found: dict[str, list[tuple[float, list[float]]]] = {}
    for line, row in enumerate(rows, start=2):
        if None in row:
            raise ValueError(f"{where} line {line} has more cells than the header.")
        name = (row[name_column] or "").strip()
        if not name:
            raise ValueError(f"{where} line {line} has no landmark name.")
        instances = found.setdefault(name, [])
        point = _csv_point([row[columns[axis]] for axis in axes], where, line)
        if point is not None:
            order = _csv_number(row[instance_column], where, line) if instance_column else float(line)
            instances.append((order, point))
    return {name: [point for _, point in sorted(items, key=lambda item: item[0])] for name, items in found.items()}


def _csv_point(cells: list[str | None], where: str, line: int) -> list[float] | None:
    """The point of one CSV row, or None when it marks the landmark absent (empty or NaN)."""
    texts = [(cell or "").strip() for cell in cells]
    if all(text == "" for text in texts):
        return None
    point = [_csv_number(text, where, line) for text in texts]
    return None if any(math.isnan(value) for value in point) else point


def _csv_number(text: str | None, where: str, line: int) -> float:
    try:
        return float((text or "").strip())
    except ValueError:
        raise ValueError(f"{where} line {line}: expected a number, got {text!r}.") from None


def _parse_landmarks(content: Any, where: str, ndim: int) -> _Parsed:
    """Parse a JSON document or inline annotations: a name -> instances mapping or a list by channel."""
    if isinstance(content, (np.ndarray, torch.Tensor)):
        content = content.tolist()
    if isinstance(content, Mapping) and _JSON_LANDMARKS_KEY in content:
        content = content[_JSON_LANDMARKS_KEY]
    if isinstance(content, Mapping):
        return {str(name): _instances(value, where, str(name), ndim) for name, value in content.items()}
    if isinstance(content, (list, tuple)):
        return [_instances(value, where, str(index), ndim) for index, value in enumerate(content)]
    raise ValueError(
        f"{where} must hold a mapping of landmark names to points or a list of points, got {type(content).__name__}."
    )


def _instances(value: Any, where: str, name: str, ndim: int) -> _Instances:
    """The present instances of one landmark given as ``None``, a point ``[x, y]`` or a list of points/``None``."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = value.tolist()
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: landmark `{name}` must be a point, a list of points or null, got {value!r}.")
    if value and all(_is_number(item) for item in value):
        value = [value]
    points = [_point(item, where, name, ndim) for item in value if item is not None]
    return [point for point in points if point is not None]


def _point(value: Any, where: str, name: str, ndim: int) -> list[float] | None:
    """One instance's coordinates, or None when one of them is NaN (absent)."""
    if not isinstance(value, (list, tuple)) or not all(_is_number(item) for item in value):
        raise ValueError(f"{where}: landmark `{name}` has a point that is not a list of numbers: {value!r}.")
    if len(value) != ndim:
        raise ValueError(
            f"{where}: landmark `{name}` has a point with {len(value)} coordinates, "
            f"expected ndim={ndim}: {list(value)}."
        )
    point = [float(item) for item in value]
    return None if any(math.isnan(item) for item in point) else point


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number))


def _points_tensor(channels: list[tuple[str, _Instances]], max_instances: int, ndim: int, where: str) -> torch.Tensor:
    points = torch.full((len(channels), max_instances, ndim), math.nan, dtype=torch.float32)
    for channel, (name, instances) in enumerate(channels):
        if len(instances) > max_instances:
            raise ValueError(
                f"{where} has {len(instances)} instances of landmark `{name}`, more than max_instances={max_instances}."
            )
        if instances:
            points[channel, : len(instances)] = torch.tensor(instances, dtype=torch.float32)
    return points


class LoadLandmarksd(MapTransform):
    """Dictionary-based wrapper of :class:`LoadLandmarks`: replaces each key's source by its points.

    Args:
        keys: keys of the annotation sources (paths, or inline lists/mappings).
        names, max_instances, ndim: see :class:`LoadLandmarks`.
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    backend = LoadLandmarks.backend

    def __init__(
        self,
        keys: KeysCollection,
        names: Sequence[str] | None = None,
        max_instances: int = 1,
        ndim: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadLandmarks(names, max_instances, ndim)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


# ----------------------------------------------------------------------------------------------
# PadLandmarks


class PadLandmarks(Transform):
    """NaN-pad one sample's points ``(L, K, D)`` to ``(L, max_instances, D)``.

    Present instances (no NaN coordinate) move to the first slots, in their order; absent slots
    are all-NaN. A MetaTensor keeps its metadata.

    Raises:
        ValueError: when a landmark has more present instances than ``max_instances``, naming the
            file from the points' ``meta["filename_or_obj"]`` when there is one.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(self, max_instances: int) -> None:
        self.max_instances = _check_positive_int(max_instances, "max_instances")

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        pts = _as_points(points)
        raw = _plain(pts)
        present = ~torch.isnan(raw).any(dim=-1)  # (L, K)
        counts = present.sum(dim=1)
        if bool((counts > self.max_instances).any()):
            channel = int(torch.nonzero(counts > self.max_instances)[0, 0])
            raise ValueError(
                f"{_points_source(pts)} has {int(counts[channel])} instances of landmark {channel}, "
                f"more than max_instances={self.max_instances}."
            )
        order = torch.sort((~present).to(torch.uint8), dim=1, stable=True).indices
        compact = torch.gather(raw, 1, order[..., None].expand_as(raw))
        compact = torch.where(torch.gather(present, 1, order)[..., None], compact, math.nan)
        out = raw.new_full((raw.shape[0], self.max_instances, raw.shape[2]), math.nan)
        kept = min(self.max_instances, raw.shape[1])
        out[:, :kept] = compact[:, :kept]
        return _like_points(out, pts)


def _points_source(points: torch.Tensor) -> str:
    filename = points.meta.get("filename_or_obj") if isinstance(points, MetaTensor) else None
    return f"Landmark file `{filename}`" if filename else "Argument `points`"


class PadLandmarksd(MapTransform):
    """Dictionary-based wrapper of :class:`PadLandmarks`.

    Args:
        keys: keys of the points ``(L, K, D)``.
        max_instances: ``K_max``.
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    backend = PadLandmarks.backend

    def __init__(self, keys: KeysCollection, max_instances: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.padder = PadLandmarks(max_instances)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.padder(d[key])
        return d


# ----------------------------------------------------------------------------------------------
# points follow the image through MONAI spatial transforms


def _follow_ndim(points: torch.Tensor) -> int:
    """D of points that follow an image, which must be 2 or 3."""
    ndim = points.shape[-1]
    if ndim == 1:
        # MONAI 1.6 does not keep 1D affines consistent: Flip drops the (size - 1) shift, SpatialCrop ignores it
        raise ValueError("Argument `points` must have D in {2, 3} to follow image transforms, got D=1.")
    return ndim


class BindPointsToImage(Transform):
    """Record that points ``(L, K, D)``, D in {2, 3}, are voxel indices of ``image`` as it is now.

    Returns the points as a MetaTensor whose ``affine`` is the image's current affine (voxel ->
    world), which is how MONAI's :class:`~monai.transforms.ApplyTransformToPoints` reads the
    coordinate space of a points MetaTensor. Apply it before the image's spatial transforms and
    :class:`TransformPointsWithImage` after them. The points' other metadata is kept.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __call__(self, points: torch.Tensor, image: MetaTensor) -> MetaTensor:
        pts = _as_points(points)
        affine = _image_affine(image, _follow_ndim(pts))
        meta = {k: v for k, v in pts.meta.items() if k != MetaKeys.AFFINE} if isinstance(pts, MetaTensor) else {}
        meta[_BOUND_KEY] = True
        operations = copy.deepcopy(pts.applied_operations) if isinstance(pts, MetaTensor) else None
        return MetaTensor(_plain(pts), affine=affine.clone(), meta=meta, applied_operations=operations)


class TransformPointsWithImage(Transform):
    """Map bound points ``(L, K, D)`` into the voxel space of ``image`` as it is now.

    With ``A_before`` the affine recorded by :class:`BindPointsToImage` and ``A_after`` the image's
    current affine, points move by ``inv(A_after) @ A_before`` (through MONAI's
    :class:`~monai.transforms.ApplyTransformToPoints`, in float64). MONAI's spatial transforms
    update the image affine so that world coordinates of the anatomy are preserved, so the points
    land on the same anatomy in the transformed image. Checked with Gaussian-blob images for Flip(d),
    Rotate(d) (any angle, ``keep_size`` or not), Zoom(d) (in and out, ``keep_size``), Affine(d),
    Resize(d), SpatialCrop(d), CenterSpatialCrop(d), RandSpatialCrop(d), SpatialPad(d), Rotate90(d),
    Spacing(d), Orientation(d), and RandFlip(d), RandRotate(d), RandZoom(d), RandAffine(d),
    lazy or not. NaN (absent) instances stay NaN; points that leave the grid keep their (outside)
    coordinates. Image interpolation (e.g. Zoom's default ``mode="area"``) may shift the image
    content by a fraction of a voxel; the points are moved exactly.

    Not supported: deformable transforms (Rand2DElastic(d), Rand3DElastic(d), GridDistortion(d),
    RandGridDistortion(d), RandSmoothDeform(d)) resample the image without changing its affine and
    without a trace in ``applied_operations``, so points cannot follow them (and this cannot be
    detected); 1D points raise ``ValueError`` (MONAI 1.6 does not keep 1D affines consistent).

    Returns (from ``__call__``): the points as a MetaTensor bound to the image's current affine, so
    the transform can be applied again after further spatial transforms.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(self) -> None:
        self.converter = ApplyTransformToPoints(dtype=None, invert_affine=True)

    def __call__(self, points: torch.Tensor, image: MetaTensor) -> MetaTensor:
        pts = _as_points(points)
        if not _is_bound(pts):
            raise ValueError(
                "Argument `points` must be bound to its image by BindPointsToImage(d) before the spatial transforms."
            )
        affine = _image_affine(image, _follow_ndim(pts))
        rank = affine.shape[-1] - 1
        if pts.affine.shape[-1] - 1 != rank:
            # MONAI quirk: a lazily resolved flip or crop hands back a 2D image with a 3x3 affine; match its rank
            pts = pts.clone()
            pts.affine = to_affine_nd(rank, pts.affine)
        return self.converter(pts, affine)


class _PointsWithImageMapTransform(MapTransform):
    """Maps a ``(points, image)`` array transform over ``keys`` with one reference image key per key."""

    transform: BindPointsToImage | TransformPointsWithImage

    def __init__(self, keys: KeysCollection, refer_keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.refer_keys = _per_key(refer_keys, self.keys, "refer_keys")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, refer_key in self.key_iterator(d, self.refer_keys):
            d[key] = self.transform(d[key], _reference(d, refer_key, self))
        return d


class BindPointsToImaged(_PointsWithImageMapTransform):
    """Dictionary-based wrapper of :class:`BindPointsToImage`.

    Args:
        keys: keys of the points ``(L, K, D)``.
        refer_keys: key of the image the points belong to, one per key (or one for all).
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    backend = BindPointsToImage.backend

    def __init__(self, keys: KeysCollection, refer_keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, refer_keys, allow_missing_keys)
        self.transform = BindPointsToImage()


class TransformPointsWithImaged(_PointsWithImageMapTransform):
    """Dictionary-based wrapper of :class:`TransformPointsWithImage` (see it for the supported transforms).

    Args:
        keys: keys of the points ``(L, K, D)``, bound by :class:`BindPointsToImaged`.
        refer_keys: key of the (transformed) image, one per key (or one for all).
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    backend = TransformPointsWithImage.backend

    def __init__(self, keys: KeysCollection, refer_keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, refer_keys, allow_missing_keys)
        self.transform = TransformPointsWithImage()


# ----------------------------------------------------------------------------------------------
# DecodeHeatmap


class DecodeHeatmap(Transform):
    """Decode one sample's heatmaps ``(L, *spatial)`` into points ``(L, K, D)`` and confidence ``(L, K)``.

    ``max_instances`` None or 1 uses :func:`~monai_adaloss.decoding.decode_single_instance` (K = 1,
    ``median_kernel``, ``nms_kernel`` and ``threshold`` unused); larger values use
    :func:`~monai_adaloss.decoding.decode_multi_instance` (K = ``max_instances``, NaN in unused
    slots, sorted by score). Points are voxel indices of the heatmap grid in spatial-axis order;
    when the heatmaps are a MetaTensor, the points are one bound to its affine (so
    :class:`TransformPointsWithImage` can map them into another image's voxel space).

    Args:
        max_instances: ``K_max`` for multi-instance decoding, or None for one instance.
        refine: sub-voxel refinement of each peak.
        median_kernel, nms_kernel, threshold: see ``decode_multi_instance``.
        log_probabilities: the heatmaps are log-probability maps (decoded from their ``exp``).
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(
        self,
        max_instances: int | None = None,
        refine: bool = True,
        median_kernel: int | Sequence[int] | None = 7,
        nms_kernel: int = 11,
        threshold: float = 0.5,
        log_probabilities: bool = False,
    ) -> None:
        self.max_instances = None if max_instances is None else _check_positive_int(max_instances, "max_instances")
        self.refine = refine
        self.median_kernel = median_kernel
        self.nms_kernel = nms_kernel
        self.threshold = threshold
        self.log_probabilities = log_probabilities

    def __call__(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``points`` ``(L, K, D)`` and ``confidence`` ``(L, K)`` for ``heatmaps`` ``(L, *spatial)``."""
        maps = _plain(heatmaps) if isinstance(heatmaps, torch.Tensor) else torch.as_tensor(np.asarray(heatmaps))
        if maps.ndim not in (2, 3, 4):
            raise ValueError(
                f"Argument `heatmaps` must have shape (L, *spatial) with 1 to 3 spatial dims, got {tuple(maps.shape)}."
            )
        if self.max_instances is None or self.max_instances == 1:
            points, confidence = decode_single_instance(
                maps[None], refine=self.refine, log_probabilities=self.log_probabilities
            )
        else:
            points, confidence = decode_multi_instance(
                maps[None],
                self.max_instances,
                self.median_kernel,
                self.nms_kernel,
                self.threshold,
                self.refine,
                self.log_probabilities,
            )
        points, confidence = points[0], confidence[0]
        if isinstance(heatmaps, MetaTensor):
            affine = heatmaps.peek_pending_affine().clone()
            points = MetaTensor(points, affine=affine, meta={_BOUND_KEY: True})
        return points, confidence


class DecodeHeatmapd(MapTransform):
    """Dictionary-based wrapper of :class:`DecodeHeatmap`.

    Args:
        keys: keys of the heatmaps ``(L, *spatial)``.
        points_keys: output keys of the points, one per key; default ``f"{key}_points"``.
        confidence_keys: output keys of the confidence, one per key; default ``f"{key}_confidence"``.
        max_instances, refine, median_kernel, nms_kernel, threshold, log_probabilities: see
            :class:`DecodeHeatmap`.
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    backend = DecodeHeatmap.backend

    def __init__(
        self,
        keys: KeysCollection,
        points_keys: KeysCollection | None = None,
        confidence_keys: KeysCollection | None = None,
        max_instances: int | None = None,
        refine: bool = True,
        median_kernel: int | Sequence[int] | None = 7,
        nms_kernel: int = 11,
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
        log_probabilities: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.points_keys = _output_keys(points_keys, self.keys, "points_keys", "_points")
        self.confidence_keys = _output_keys(confidence_keys, self.keys, "confidence_keys", "_confidence")
        self.decoder = DecodeHeatmap(max_instances, refine, median_kernel, nms_kernel, threshold, log_probabilities)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, points_key, confidence_key in self.key_iterator(d, self.points_keys, self.confidence_keys):
            d[points_key], d[confidence_key] = self.decoder(d[key])
        return d


GaussianHeatmapD = GaussianHeatmapDict = GaussianHeatmapd
LoadLandmarksD = LoadLandmarksDict = LoadLandmarksd
PadLandmarksD = PadLandmarksDict = PadLandmarksd
BindPointsToImageD = BindPointsToImageDict = BindPointsToImaged
TransformPointsWithImageD = TransformPointsWithImageDict = TransformPointsWithImaged
DecodeHeatmapD = DecodeHeatmapDict = DecodeHeatmapd


class ImageSpacingToPointsd(MapTransform):
    """Put the pixel spacing of an image into the meta of its landmark points.

    :class:`~monai_adaloss.metrics.LandmarkDistanceMetric` reads a per-sample spacing from the
    ground truth's ``meta["spacing"]`` (it ignores a points tensor's own affine on purpose); the
    readers keep the image's spacing in ``image.meta["spacing"]`` (``(D,)`` mm per voxel in
    spatial-axis order, for DICOM ``(column spacing, row spacing)``). Use it on points that stay in
    the image's original voxel grid: the spacing of a resized grid is different.

    Readers that keep no ``spacing`` entry (MONAI's ``NibabelReader`` and ``ITKReader`` for NIfTI)
    give it through the affine instead: with ``from_affine=True`` the spacing is the length of each
    spatial column of the image's current affine (``MetaTensor.pixdim``, mm per voxel along each
    tensor axis). mm distances computed from it are exact when the affine's columns are orthogonal
    (any rotation of a scaled grid, e.g. an oblique acquisition), not under shear.

    Args:
        keys: keys of the points ``(L, K, D)``; they become MetaTensors if they are not.
        image_key: key of the image whose spacing is copied.
        spacing_key: the meta key, in the image (unless ``from_affine``) and in the points.
        allow_missing_keys: don't raise an exception when a key is missing.
        from_affine: take the spacing from the image's affine instead of its ``meta[spacing_key]``.

    Raises (from ``__call__``):
        KeyError: when the image is missing or (unless ``from_affine``) has no ``spacing_key`` in its meta.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        spacing_key: str = "spacing",
        allow_missing_keys: bool = False,
        from_affine: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.spacing_key = spacing_key
        self.from_affine = from_affine

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d.get(self.image_key)
        if not isinstance(image, MetaTensor) or not (self.from_affine or self.spacing_key in image.meta):
            raise KeyError(
                f"ImageSpacingToPointsd needs a MetaTensor under {self.image_key!r} with meta[{self.spacing_key!r}]."
            )
        spacing = image.pixdim.clone() if self.from_affine else image.meta[self.spacing_key]
        for key in self.key_iterator(d):
            points = d[key] if isinstance(d[key], MetaTensor) else MetaTensor(d[key])
            points = points.clone()
            points.meta[self.spacing_key] = spacing
            d[key] = points
        return d
