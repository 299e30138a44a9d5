"""Synthetic CT-like volumes (HU) with anatomically placed landmarks, and NIfTI datasets of them.

A volume is an axial abdominal CT section stack: air outside the body (-1000 HU), a subcutaneous
fat layer (about -100 HU), soft tissue (about 40 HU), a contrast-enhanced liver, kidneys and aorta
as smooth blobs with a low-frequency texture, bowel gas pockets, three vertebrae (cancellous bone
with a cortical rim, about 250 / 750 HU) with spinous processes and ribs, then correlated noise.
The anatomy is scaled to the field of view (in-plane by the smaller in-plane extent, along the
body axis by the slab's length), so any shape and spacing gives a whole body section; all sizes
are computed in mm, so anisotropic voxels do not squash it.

Coordinates (DESIGN.md section 2)
---------------------------------
``SyntheticVolume.image[i, j, k]`` is the array that goes into the NIfTI file, in the file's voxel
order, which is also the order MONAI's ``LoadImage`` returns it in (``NibabelReader``, the default
for ``.nii.gz``, and ``ITKReader`` alike; checked on MONAI 1.6.1 by ``tests/test_synthetic_volumes.py``).
A landmark ``(i, j, k)`` is a float voxel index in that order (voxel centres at integers), i.e.
the point of the channel-first image ``img[c, i, j, k]`` with no swap.

Voxel axis ``i`` runs to the patient's left, ``j`` to posterior, ``k`` to superior (the layout of
an axial DICOM stack), before the optional tilt. World coordinates are NIfTI's RAS+ mm::

    world_mm = affine @ [i, j, k, 1]
    affine[:3, :3] = R(tilt_deg) @ diag(-sx, -sy, sz),   affine[:3, 3] = origin_mm

with ``(sx, sy, sz)`` the spacing and ``R = Rz @ Ry @ Rx`` the rotation by ``tilt_deg`` about the
world x, y and z axes. The affine is rounded to float32 (what the NIfTI sform stores), so the world
coordinates in the datalist are exactly ``affine @ [i, j, k, 1]`` of the affine read back from the file.
MONAI's ``NibabelReader`` puts this sform unchanged, as a float64 tensor, in both ``meta["affine"]``
(the image MetaTensor's ``affine``) and ``meta["original_affine"]``, with ``meta["space"] == "RAS"``
(the reader does not reorient: ``as_closest_canonical=False``); ``ITKReader`` gives the same array
and the same RAS affine. The world mm of the datalist refer to that affine of the file as loaded;
after spatial transforms (``Orientationd``, ``Spacingd``...) use the image's current ``affine``.

Landmarks (``VOLUME_LANDMARKS``; ``VolumeConfig.landmark_names`` picks and orders them)
------------------------------------------------------------------------------------------
- ``vertebra_upper``, ``vertebra_middle``, ``vertebra_lower``: centres of the three vertebral bodies
  (elliptic cylinders), from superior to inferior.
- ``spinous_tip``: the posterior apex of the middle vertebra's spinous process (the rounded end of a
  bone capsule pointing posteriorly and slightly caudally).
- ``liver_centroid``, ``left_kidney_centroid``: the centres of the organ ellipsoids (their centroids
  as modelled, before other structures overlap them).

Datalist (written by `make_volume_dataset`, readable by ``monai.data.load_decathlon_datalist``)
----------------------------------------------------------------------------------------------
::

    {
      "landmark_names": ["vertebra_upper", ...],         # order of the landmark channels
      "spacing_mm": [sx, sy, sz],                        # voxel size along i, j, k (NIfTI pixdim)
      "training": [entry, ...], "validation": [...], "test": [...]
    }
    entry = {
      "image": "training/000000.nii.gz",                 # relative to the datalist's folder
      "label": {"vertebra_upper": [[i, j, k]], ...},     # voxel indices, reader order; one instance each
      "label_world_mm": {"vertebra_upper": [[x, y, z]], ...}   # RAS mm, affine @ [i, j, k, 1]
    }

``LoadLandmarksd("label", names=datalist["landmark_names"], ndim=3)`` reads ``label`` into ``(L, 1, 3)``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.special import expit

__all__ = [
    "VOLUME_LANDMARKS",
    "SyntheticVolume",
    "VolumeConfig",
    "generate_volume",
    "make_volume_dataset",
    "save_nifti",
    "volume_affine",
]

VOLUME_LANDMARKS = (
    "vertebra_upper",
    "vertebra_middle",
    "vertebra_lower",
    "spinous_tip",
    "liver_centroid",
    "left_kidney_centroid",
)
_SPLITS = ("training", "validation", "test")
_AIR_HU = -1000.0
_HU_RANGE = (-1024, 3071)  # 12-bit CT values, stored as int16


@dataclass(frozen=True)
class VolumeConfig:
    """What `generate_volume` renders.

    Args:
        shape: ``(I, J, K)`` voxels along i (patient left), j (posterior), k (superior).
        spacing: voxel size in mm along i, j, k; anisotropic by default (thick axial slices).
        tilt_deg: rotation of the voxel grid about the world x, y, z axes in degrees (an oblique
            acquisition, e.g. ``(15, 0, 0)``); ``(0, 0, 0)`` is a plain axial stack. The anatomy is
            drawn in the grid's frame, so the tilt moves the world coordinates, not the voxels.
        origin_mm: world RAS position (mm) of the centre of voxel ``(0, 0, 0)``.
        landmark_names: the landmarks to report, in channel order; a subset of ``VOLUME_LANDMARKS``.
        noise_hu: standard deviation of the (spatially correlated) image noise in HU.
        variability: scale of the per-volume random anatomy (positions, sizes, intensities);
            0 gives the same anatomy every time (the noise still follows the generator).
        marker_hu: when set, the voxel nearest to landmark ``l`` is overwritten with ``marker_hu + l``,
            a unique value for checking axis order and affine after a round trip through a file.
        shift_mm: largest random translation (mm, along i, j, k) of the whole anatomy in the field of
            view, drawn uniformly in ``[-shift, shift]`` per axis and volume (patients are not
            centred alike, slabs start at different heights); ``(0, 0, 0)`` (default) keeps the
            anatomy centred and draws nothing. Keep it within about 15 % of the extent along each
            axis: `generate_volume` raises when a landmark leaves the grid.
    """

    shape: tuple[int, int, int] = (64, 64, 48)
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)
    tilt_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    origin_mm: tuple[float, float, float] = (22.0, 31.0, -410.0)
    landmark_names: tuple[str, ...] = VOLUME_LANDMARKS
    noise_hu: float = 12.0
    variability: float = 1.0
    marker_hu: float | None = None
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(s) != s or s < 8 for s in self.shape):
            raise ValueError(f"Argument `shape` must be three integers >= 8, got {self.shape}.")
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"Argument `spacing` must be three positive numbers, got {self.spacing}.")
        if len(self.tilt_deg) != 3 or len(self.origin_mm) != 3:
            raise ValueError(
                f"Arguments `tilt_deg` and `origin_mm` must hold three numbers, got {self.tilt_deg}, {self.origin_mm}."
            )
        unknown = [name for name in self.landmark_names if name not in VOLUME_LANDMARKS]
        if not self.landmark_names or unknown or len(set(self.landmark_names)) != len(self.landmark_names):
            raise ValueError(
                f"Argument `landmark_names` must be unique names from {VOLUME_LANDMARKS}, got {self.landmark_names}."
            )
        if len(self.shift_mm) != 3 or not all(math.isfinite(s) and s >= 0 for s in self.shift_mm):
            raise ValueError(f"Argument `shift_mm` must be three non-negative numbers, got {self.shift_mm}.")
        if self.noise_hu < 0 or self.variability < 0:
            raise ValueError(
                f"Arguments `noise_hu` and `variability` must be >= 0, got {self.noise_hu}, {self.variability}."
            )


@dataclass(frozen=True)
class SyntheticVolume:
    """One generated volume.

    Attributes:
        image: ``(I, J, K)`` float32 HU, voxel order of the NIfTI file and of MONAI's readers.
        affine: ``(4, 4)`` float64 voxel -> world RAS mm (float32-representable entries).
        points: ``(L, 1, 3)`` float64 landmark voxel indices ``(i, j, k)``, channels in
            ``landmark_names`` order.
        points_world_mm: ``(L, 1, 3)`` float64 world RAS mm, ``affine @ [i, j, k, 1]``.
        landmark_names: the channel names, ``L`` of them.
    """

    image: np.ndarray
    affine: np.ndarray
    points: np.ndarray
    points_world_mm: np.ndarray
    landmark_names: tuple[str, ...]


def volume_affine(config: VolumeConfig) -> np.ndarray:
    """``(4, 4)`` voxel -> world RAS mm affine of ``config`` (module docstring), rounded to float32 values."""
    ax, ay, az = (math.radians(a) for a in config.tilt_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    sx, sy, sz = config.spacing
    affine[:3, :3] = rz @ ry @ rx @ np.diag([-sx, -sy, sz])
    affine[:3, 3] = config.origin_mm
    return affine.astype(np.float32).astype(np.float64)


def _inside(signed_distance: np.ndarray, edge_mm: float) -> np.ndarray:
    """Soft indicator of ``signed_distance < 0`` with a partial-volume edge of about ``edge_mm``."""
    return expit(-signed_distance / edge_mm)


def _ellipse_distance(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance (mm) to the ellipse ``(u / a)^2 + (v / b)^2 = 1``."""
    return (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b)


def _ellipsoid_distance(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: np.ndarray, radii: Sequence[float], angle: float
) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid rotated by ``angle`` (rad) about the body axis."""
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    u = math.cos(angle) * dx + math.sin(angle) * dy
    v = -math.sin(angle) * dx + math.cos(angle) * dy
    rho = np.sqrt((u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (dz / radii[2]) ** 2)
    return (rho - 1.0) * min(radii)


def _capsule_distance(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, start: np.ndarray, end: np.ndarray, radius: float
) -> np.ndarray:
    """Exact signed distance (mm) to the capsule of ``radius`` around the segment ``start``-``end``."""
    axis = end - start
    t = ((x - start[0]) * axis[0] + (y - start[1]) * axis[1] + (z - start[2]) * axis[2]) / float(axis @ axis)
    t = np.clip(t, 0.0, 1.0)
    return (
        np.sqrt(
            (x - start[0] - t * axis[0]) ** 2 + (y - start[1] - t * axis[1]) ** 2 + (z - start[2] - t * axis[2]) ** 2
        )
        - radius
    )


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_voxels, mode="wrap")
    return field / max(float(field.std()), 1e-12)


def generate_volume(config: VolumeConfig | None = None, rng: np.random.Generator | None = None) -> SyntheticVolume:
    """Render one CT-like volume and its landmarks (layout and conventions: module docstring).

    Args:
        config: what to render; default `VolumeConfig()`.
        rng: the random generator; a fresh ``np.random.default_rng()`` when None.

    Returns:
        A `SyntheticVolume` with ``image`` ``(I, J, K)`` in HU and ``points`` ``(L, 1, 3)`` in voxel
        indices ``(i, j, k)``, every landmark inside the grid.
    """
    config = config if config is not None else VolumeConfig()
    rng = rng if rng is not None else np.random.default_rng()
    shape = tuple(int(s) for s in config.shape)
    spacing = np.asarray(config.spacing, dtype=np.float64)
    centre_voxel = (np.asarray(shape) - 1.0) / 2.0
    # body frame in mm, centred on the grid (moved by `shift` when set): x = patient left (i), y = posterior (j),
    # z = superior (k)
    shift = np.zeros(3)
    if any(config.shift_mm):
        shift = rng.uniform(-1.0, 1.0, 3) * np.asarray(config.shift_mm, dtype=np.float64)
    x, y, z = (
        ((np.arange(n) - c) * s - t).reshape([-1 if a == axis else 1 for a in range(3)])
        for axis, (n, c, s, t) in enumerate(zip(shape, centre_voxel, spacing, shift, strict=True))
    )
    r = min((shape[0] - 1) * spacing[0], (shape[1] - 1) * spacing[1]) / 2.0  # in-plane scale
    length = (shape[2] - 1) * spacing[2]  # slab length along the body axis
    var = config.variability

    def jitter(scale: float) -> float:
        return float(rng.uniform(-1.0, 1.0)) * scale * var

    edge = 0.35 * float(spacing.min())  # partial-volume edge width (mm)
    z_edge = 0.35 * float(spacing[2])
    hu = np.full(shape, _AIR_HU)

    def paint(weight: np.ndarray, value: float | np.ndarray) -> None:
        hu[...] = hu * (1.0 - weight) + value * weight

    # body: skin/fat ellipse, muscle and soft tissue inside it
    body_a, body_b = r * (0.92 + jitter(0.04)), r * (0.74 + jitter(0.04))
    body_cx, body_cy = jitter(0.03 * r), 0.04 * r + jitter(0.03 * r)
    body = _ellipse_distance(x - body_cx, y - body_cy, body_a, body_b)
    fat = 0.07 * r * (1.0 + jitter(0.3))
    paint(_inside(body, edge), -100.0 + jitter(15.0))
    paint(_inside(body + fat, edge), 40.0 + jitter(8.0))

    texture = _smooth_field(rng, shape, 0.08 * r / spacing)  # organ texture, correlated over about 0.08 r

    # organs: contrast-enhanced liver, kidneys, aorta
    liver_centre = np.array(
        [-0.42 * r + jitter(0.04 * r), -0.08 * r + jitter(0.04 * r), 0.12 * length + jitter(0.05 * length)]
    )
    liver_radii = (0.36 * r * (1 + jitter(0.08)), 0.42 * r * (1 + jitter(0.08)), 0.3 * length * (1 + jitter(0.08)))
    liver = _ellipsoid_distance(x, y, z, liver_centre, liver_radii, math.radians(-20.0 + jitter(10.0)))
    paint(_inside(liver, edge), 100.0 + jitter(15.0) + 8.0 * texture)

    kidney_y = 0.26 * r + jitter(0.03 * r)
    kidney_radii = (0.13 * r * (1 + jitter(0.08)), 0.1 * r * (1 + jitter(0.08)), 0.17 * length * (1 + jitter(0.08)))
    left_kidney_centre = np.array([0.4 * r + jitter(0.03 * r), kidney_y, -0.12 * length + jitter(0.04 * length)])
    right_kidney_centre = np.array([-0.4 * r + jitter(0.03 * r), kidney_y, -0.18 * length + jitter(0.04 * length)])
    kidney_hu = 170.0 + jitter(20.0)
    for kidney_centre, angle in ((left_kidney_centre, 35.0), (right_kidney_centre, -35.0)):
        kidney = _ellipsoid_distance(x, y, z, kidney_centre, kidney_radii, math.radians(angle + jitter(8.0)))
        paint(_inside(kidney, edge), kidney_hu + 10.0 * texture)

    aorta = _ellipse_distance(x - 0.09 * r, y + 0.02 * r, 0.07 * r, 0.07 * r)
    paint(_inside(aorta, edge), 190.0 + jitter(30.0))

    for _ in range(int(rng.integers(2, 5))):  # bowel gas pockets, anterior
        gas_centre = np.array(
            [rng.uniform(-0.1, 0.6) * r, rng.uniform(-0.6, -0.3) * r, rng.uniform(-0.4, 0.4) * length]
        )
        gas_radii = (rng.uniform(0.04, 0.08) * r,) * 2 + (rng.uniform(0.04, 0.1) * length,)
        paint(_inside(_ellipsoid_distance(x, y, z, gas_centre, gas_radii, 0.0), edge), -900.0)

    # spine: three vertebral bodies (soft-tissue discs between them), spinous processes, ribs
    pitch = 0.27 * length * (1 + jitter(0.05))
    spine_x, spine_y = jitter(0.02 * r), 0.2 * r + jitter(0.02 * r)
    body_radii = (0.15 * r * (1 + jitter(0.05)), 0.12 * r * (1 + jitter(0.05)))
    vertebra_centres, spinous_tips = [], []
    for offset in (1.0, 0.0, -1.0):  # superior to inferior
        centre = np.array([spine_x + jitter(0.01 * r), spine_y, offset * pitch + jitter(0.05 * pitch)])
        vertebra_centres.append(centre)
        in_plane = _ellipse_distance(x - centre[0], y - centre[1], *body_radii)
        height = 0.36 * pitch
        along = np.abs(z - centre[2]) - height
        vertebra = _inside(in_plane, edge) * _inside(along, z_edge)
        cancellous = _inside(in_plane + 0.25 * min(body_radii), edge) * _inside(along + 0.1 * height, z_edge)
        paint(vertebra, 750.0 + jitter(80.0))
        paint(cancellous, 250.0 + jitter(40.0) + 20.0 * texture)

        start = np.array([centre[0], centre[1] + body_radii[1] + 0.03 * r, centre[2]])
        end = np.array([centre[0], centre[1] + 0.38 * r + jitter(0.02 * r), centre[2] - 0.25 * pitch])
        radius = 0.045 * r
        paint(_inside(_capsule_distance(x, y, z, start, end, radius), edge), 700.0 + jitter(60.0))
        spinous_tips.append(end + radius * (end - start) / np.linalg.norm(end - start))  # apex of the end cap

        for side in (-1.0, 1.0):  # a rib on each side: an arc near the body wall
            theta = np.linspace(math.radians(25.0), math.radians(80.0), 12)
            rib_points = np.stack(
                [
                    side * 0.8 * body_a * np.cos(theta),
                    body_cy + 0.8 * body_b * np.sin(theta),
                    np.full(12, centre[2] + 0.3 * pitch),
                ],
                axis=1,
            )
            rib = np.minimum.reduce(
                [_capsule_distance(x, y, z, a, b, 0.035 * r) for a, b in itertools.pairwise(rib_points)]
            )
            paint(_inside(rib, edge), 650.0 + jitter(60.0))

    noise = _smooth_field(rng, shape, (0.6, 0.6, 0.3)) * config.noise_hu
    image = hu + noise

    anatomy = {
        "vertebra_upper": vertebra_centres[0],
        "vertebra_middle": vertebra_centres[1],
        "vertebra_lower": vertebra_centres[2],
        "spinous_tip": spinous_tips[1],
        "liver_centroid": liver_centre,
        "left_kidney_centroid": left_kidney_centre,
    }
    body_mm = np.stack([anatomy[name] for name in config.landmark_names])  # (L, 3)
    points = (body_mm + shift) / spacing + centre_voxel
    if any(config.shift_mm) and bool(((points < 0) | (points > np.asarray(shape) - 1)).any()):
        raise ValueError(f"Argument `shift_mm` {config.shift_mm} moved a landmark out of the grid {shape}.")
    if config.marker_hu is not None:
        for channel, point in enumerate(points):
            image[tuple(np.round(point).astype(int))] = config.marker_hu + channel
    affine = volume_affine(config)
    world = points @ affine[:3, :3].T + affine[:3, 3]
    return SyntheticVolume(
        image=np.clip(image, *_HU_RANGE).astype(np.float32),
        affine=affine,
        points=points[:, None, :],
        points_world_mm=world[:, None, :],
        landmark_names=tuple(config.landmark_names),
    )


def save_nifti(volume: SyntheticVolume, path: str | Path) -> None:
    """Write ``volume.image`` as int16 HU NIfTI with its affine as sform and qform (scanner space, mm)."""
    image = nib.Nifti1Image(np.round(volume.image).astype(np.int16), volume.affine)
    image.set_sform(volume.affine, code="scanner")
    image.set_qform(volume.affine, code="scanner")
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


def _point_lists(names: Sequence[str], points: np.ndarray) -> dict[str, list[list[float]]]:
    """``{name: [[c0, c1, c2]]}`` from ``(L, 1, 3)`` points."""
    return {name: [[float(c) for c in point[0]]] for name, point in zip(names, points, strict=True)}


def make_volume_dataset(
    output_dir: str | Path,
    n_train: int,
    n_val: int,
    n_test: int,
    config: VolumeConfig | None = None,
    seed: int = 0,
) -> Path:
    """Write synthetic ``.nii.gz`` volumes and a MONAI-style datalist (format: module docstring).

    Args:
        output_dir: folder for ``datalist.json`` and the ``training/``, ``validation/``, ``test/`` files.
        n_train, n_val, n_test: number of volumes per split.
        config: volume content and geometry; default `VolumeConfig()`.
        seed: volume ``n`` of split ``s`` is drawn from ``np.random.default_rng([seed, s, n])``.

    Returns:
        Path of ``datalist.json``.
    """
    config = config if config is not None else VolumeConfig()
    for name, count in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"Argument `{name}` must be a non-negative integer, got {count!r}.")
    output_dir = Path(output_dir)
    names = list(config.landmark_names)
    datalist: dict = {"landmark_names": names, "spacing_mm": [float(s) for s in config.spacing]}
    for split_index, (split, count) in enumerate(zip(_SPLITS, (n_train, n_val, n_test), strict=True)):
        (output_dir / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for index in range(count):
            volume = generate_volume(config, np.random.default_rng([seed, split_index, index]))
            relative = f"{split}/{index:06d}.nii.gz"
            save_nifti(volume, output_dir / relative)
            entries.append(
                {
                    "image": relative,
                    "label": _point_lists(names, volume.points),
                    "label_world_mm": _point_lists(names, volume.points_world_mm),
                }
            )
        datalist[split] = entries
    path = output_dir / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2))
    return path
