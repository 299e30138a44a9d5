"""Realistic synthetic X-ray fluoroscopy frames with one catheter tip each, and DICOM datasets of them.

A frame is rendered the way an X-ray image forms: line integrals of attenuation (anatomy, devices and
distractors, in "mu x path length" units) -> transmitted quanta through a vignetted, unevenly exposed,
collimated field -> motion blur -> Poisson quantum noise -> detector blur -> log display processing with
edge enhancement -> burned-in text and a ruler -> 8-16 bit stored values. Every artefact has a switch in
`FluoroscopyConfig`. Sizes are drawn in millimetres and converted with the frame's pixel spacing, so a
2 mm catheter is 2 mm wide whatever the spacing.

Coordinates (DESIGN.md section 2)
---------------------------------
Internally every image is the usual DICOM raster ``raster[row, column]``, shape ``(rows, columns)``: this
is what goes into the DICOM file and what ``pydicom``'s ``pixel_array`` returns. `FluoroscopyFrame.image`
holds the same pixels in MONAI's reader layout, ``image[x, y] == raster[y, x]``, shape ``(columns, rows)``.
A point is ``(x, y) = (column, row)`` with pixel centres at integer coordinates: a point ``(x, y)`` lies
on file pixel ``pixel_array[round(y), round(x)]`` and on tensor index ``image[round(x), round(y)]``.

Landmarks
---------
Landmark 0 is ``"tip"``: the distal end of the catheter's centre line, which is the centre of the rounded,
radiopaque end cap (half a catheter width behind the outer edge of the dark blob). Optional extra landmarks
(`MarkerLandmark`) are radiopaque marker bands at known arc lengths from the tip, each with its own
annotation noise. A landmark outside the image or outside the collimated field is absent (NaN).

Datalist (written by `make_dataset`, readable by ``monai.data.load_decathlon_datalist``)
-----------------------------------------------------------------------------------------
::

    {
      "landmark_names": ["tip", ...],                  # order of the landmark channels
      "training": [entry, ...], "validation": [...], "test": [...]
    }
    entry = {
      "image": "training/000003.dcm",                   # relative to the datalist's folder
      "frame": 2,                                       # multi-frame files only: 0-based frame index;
                                                        # one entry per frame
      "label": {"tip": [[x, y]], ...},                  # annotated points = truth + annotation noise;
                                                        # one list of instances per landmark, [] if absent
      "label_true": {"tip": [[x, y]], ...},             # exact ground truth, same layout
      "tip_true": [x, y],                               # exact tip, null when there is no catheter
      "spacing_mm": [sx, sy],                           # (column, row) spacing at the patient plane,
                                                        # i.e. MONAI pixdim; DICOM PixelSpacing is [sy, sx]
      "spacing_source": "PixelSpacing",                 # which tags the file carries, see dicom_writer
      "sop_class": "XA", "modality": "XA",              # XA, RF or DX (MONOCHROME1 files are DX)
      "photometric_interpretation": "MONOCHROME2",      # MONOCHROME1 files store inverted values
      "transfer_syntax": "1.2.840.10008.1.2.5",
      "bits_stored": 12,
      "guidewire_beyond_tip": true                      # a guidewire continues past the catheter tip
    }

All points are ``(x, y) = (column, row)`` of the file raster, in pixels, rounded to 1e-4 pixel.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree
from scipy.special import expit

from .dicom_writer import (
    SPACING_SOURCES,
    DicomWriteOptions,
    lossless_transfer_syntaxes,
    write_dicom,
)
from .image_ops import motion_blur_kernel, pixel_grid, smooth_noise, smooth_step

__all__ = [
    "AcquisitionParameters",
    "FluoroscopyConfig",
    "FluoroscopyFrame",
    "MarkerLandmark",
    "ProjectionGeometry",
    "generate_attenuation",
    "generate_frame",
    "generate_sequence",
    "make_dataset",
    "save_preview_grid",
]

_STEP_PX = 0.25  # arc-length step of every rendered centre line, in pixels
_COLLIMATOR_ATTENUATION = 7.0  # attenuation of the lead shutters / iris outside the field
_SPLITS = ("training", "validation", "test")
_VALID_BITS_STORED = (8, 10, 12, 16)

FloatRange = tuple[float, float]


@dataclass(frozen=True)
class MarkerLandmark:
    """A radiopaque marker band on the catheter used as an extra landmark (e.g. for annotation-noise studies)."""

    name: str
    """Landmark name (channel name in the datalist); must differ from ``"tip"`` and the other markers."""
    arc_length_mm: float
    """Distance from the catheter tip along the catheter's centre line, in mm (> 0)."""
    annotation_noise_px: float = 0.0
    """Standard deviation of the isotropic Gaussian annotation noise of this landmark, in pixels per axis."""
    band_length_mm: float = 1.0
    """Length of the radiopaque band along the catheter, in mm."""


@dataclass(frozen=True)
class FluoroscopyConfig:
    """What a synthetic fluoroscopy frame contains.

    Ranges ``(low, high)`` are drawn uniformly per file (scene); ``*_probability`` fields give the chance
    that a frame shows the item, and 0 turns it off. Boolean fields switch an effect on or off.
    """

    rows: int = 256
    """Image height in pixels (DICOM Rows)."""
    columns: int = 256
    """Image width in pixels (DICOM Columns)."""
    pixel_spacing_mm: FloatRange = (0.3, 0.4)
    """Isotropic pixel spacing at the patient plane (isocentre), mm; sizes every anatomy and device."""
    magnification: FloatRange = (1.15, 1.6)
    """Geometric magnification source-to-detector / source-to-patient distance (ImagerPixelSpacing / spacing)."""
    source_to_detector_mm: FloatRange = (950.0, 1200.0)
    """Source-to-detector distance (DICOM DistanceSourceToDetector), mm."""
    bits_stored: tuple[int, ...] = (8, 10, 12, 16)
    """Choices of DICOM BitsStored (8, 10, 12 or 16 for XA/RF); the stored values use most of the range."""

    annotation_noise_px: float = 0.0
    """Standard deviation of the Gaussian annotation noise added to the tip, in pixels per axis."""
    extra_landmarks: tuple[MarkerLandmark, ...] = ()
    """Radiopaque marker bands along the catheter that are landmarks too (after ``"tip"``); default none."""

    catheter: bool = True
    """Draw the catheter (off: no tip, the tip landmark is absent)."""
    catheter_diameter_mm: FloatRange = (1.5, 3.0)
    """Outer catheter diameter, mm (5-9 French)."""
    tip_marker: bool = True
    """A dense radiopaque marker at the catheter's distal end (the darkest part of the catheter)."""
    tip_marker_length_mm: FloatRange = (1.5, 4.0)
    """Length of the distal tip marker, mm."""
    curl_probability: float = 0.2
    """Chance of a curled (pigtail) distal end; a curled catheter has its guidewire pulled back inside."""
    advance_mm_per_frame: FloatRange = (0.5, 2.5)
    """How far the catheter advances between the frames of a multi-frame sequence, mm."""
    cardiac_motion_mm: FloatRange = (0.0, 1.5)
    """Amplitude of the frame-to-frame periodic motion of the devices in a sequence, mm."""

    guidewire_probability: float = 0.7
    """Chance of a guidewire in the catheter; it continues past the tip unless the catheter is curled."""
    guidewire_diameter_mm: FloatRange = (0.36, 0.89)
    """Guidewire diameter, mm (0.014-0.035 inch)."""
    guidewire_extension_mm: FloatRange = (5.0, 40.0)
    """How far the guidewire reaches past the catheter tip (or ends before it, if curled), mm."""

    collimation: bool = True
    """Collimate the field (black outside); off: the whole image is exposed."""
    round_collimation_probability: float = 0.5
    """Chance of a round image-intensifier field (with collimation on)."""
    shutter_probability: float = 0.6
    """Chance of rectangular lead shutters (with collimation on; may combine with the round field)."""
    vignetting: bool = True
    """Radial brightness fall-off of the image intensifier."""
    uneven_exposure: bool = True
    """Smooth exposure gradients across the field (heel effect, automatic exposure)."""

    background: bool = True
    """Anatomy-like smooth, low-frequency attenuation background (soft tissue, lung texture)."""
    soft_tissue_edges_probability: float = 0.7
    """Chance of large soft-tissue silhouettes (heart border, diaphragm)."""
    ribs_probability: float = 0.7
    """Chance of a family of curved rib bands."""
    spine_probability: float = 0.5
    """Chance of a vertebral column (bodies, discs, endplates, pedicles)."""
    vessels_probability: float = 0.35
    """Chance of contrast-filled vessels (dark branching tubes); the catheter lumen is then contrast-filled."""
    vessel_from_tip_probability: float = 0.5
    """Given vessels, chance that the vessel tree starts at the catheter tip (contrast injection)."""

    ecg_electrodes_probability: float = 0.6
    """Chance of ECG electrodes (dense metal snaps on faint pads) with their lead wires."""
    sternal_wires_probability: float = 0.2
    """Chance of sternal wire loops (after sternotomy)."""
    clips_probability: float = 0.5
    """Chance of a cluster of surgical clips."""
    second_tube_probability: float = 0.5
    """Chance of a second tube or lead crossing the whole field (no tip in view)."""
    stents_probability: float = 0.3
    """Chance of previously implanted coronary stents (short dense mesh tubes)."""

    motion_blur_probability: float = 0.3
    """Chance of linear motion blur (cardiac / respiratory motion during the pulse)."""
    motion_blur_px: FloatRange = (1.5, 5.0)
    """Length of the motion-blur streak, pixels."""
    quantum_noise: bool = True
    """Poisson quantum noise (off: the expected, noise-free image)."""
    dose_quanta_per_pixel: FloatRange = (30.0, 300.0)
    """Detected X-ray quanta per pixel through unattenuated background (low-dose fluoroscopy)."""
    detector_blur: bool = True
    """Gaussian detector blur (also correlates the noise)."""
    detector_blur_px: FloatRange = (0.4, 0.75)
    """Standard deviation of the detector blur, pixels."""
    edge_enhancement_probability: float = 0.6
    """Chance of unsharp-mask edge enhancement in the display processing (halos around devices)."""

    burned_in_text_probability: float = 0.8
    """Chance of burned-in text in the corners (angles, kV, frame rate, time)."""
    ruler_probability: float = 0.4
    """Chance of a burned-in centimetre ruler."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"Argument `{f.name}` must be in [0, 1], got {value}.")
            if f.type == "FloatRange" and not (len(value) == 2 and 0.0 <= value[0] <= value[1]):
                raise ValueError(f"Argument `{f.name}` must be a (low, high) range with 0 <= low <= high, got {value}.")
        if self.rows < 32 or self.columns < 32:
            raise ValueError(f"Arguments `rows` and `columns` must be >= 32, got {self.rows} and {self.columns}.")
        if not self.bits_stored or any(b not in _VALID_BITS_STORED for b in self.bits_stored):
            raise ValueError(
                f"Argument `bits_stored` must hold values of {_VALID_BITS_STORED}, got {self.bits_stored}."
            )
        if self.pixel_spacing_mm[0] <= 0 or self.magnification[0] < 1.0:
            raise ValueError(
                f"Arguments `pixel_spacing_mm` must be > 0 and `magnification` >= 1, got {self.pixel_spacing_mm} "
                f"and {self.magnification}."
            )
        if self.annotation_noise_px < 0:
            raise ValueError(f"Argument `annotation_noise_px` must be >= 0, got {self.annotation_noise_px}.")
        names = [m.name for m in self.extra_landmarks]
        if len(set(names)) != len(names) or "tip" in names:
            raise ValueError(f"Argument `extra_landmarks` must have unique names other than 'tip', got {names}.")
        for m in self.extra_landmarks:
            if m.arc_length_mm <= 0 or m.annotation_noise_px < 0 or m.band_length_mm <= 0:
                raise ValueError(f"Argument `extra_landmarks` has an invalid marker: {m}.")

    @property
    def landmark_names(self) -> tuple[str, ...]:
        """Names of the landmark channels: ``"tip"`` then the extra markers."""
        return ("tip", *(m.name for m in self.extra_landmarks))


@dataclass(frozen=True)
class ProjectionGeometry:
    """Projection geometry of a scene; the pixel spacing at the patient plane follows from it."""

    imager_pixel_spacing_mm: float
    """Detector pixel spacing (DICOM ImagerPixelSpacing), mm, isotropic."""
    source_to_detector_mm: float
    """DICOM DistanceSourceToDetector, mm."""
    source_to_patient_mm: float
    """DICOM DistanceSourceToPatient, mm."""

    @property
    def magnification(self) -> float:
        """Source-to-detector over source-to-patient distance (EstimatedRadiographicMagnificationFactor)."""
        return self.source_to_detector_mm / self.source_to_patient_mm

    @property
    def pixel_spacing_mm(self) -> float:
        """Isotropic pixel spacing at the patient plane, mm: ImagerPixelSpacing / magnification."""
        return self.imager_pixel_spacing_mm / self.magnification


@dataclass(frozen=True)
class AcquisitionParameters:
    """Acquisition settings of a scene, shown as burned-in text and written to DICOM."""

    kvp: float
    """Peak kilovoltage."""
    tube_current_ma: float
    """X-ray tube current, mA."""
    primary_angle_deg: float
    """Positioner primary angle (LAO positive, RAO negative), degrees."""
    secondary_angle_deg: float
    """Positioner secondary angle (cranial positive, caudal negative), degrees."""
    frame_rate_fps: float
    """Pulse / frame rate, frames per second."""


@dataclass(frozen=True)
class FluoroscopyFrame:
    """One rendered frame with its exact and annotated landmarks.

    ``image`` is in MONAI's reader layout: shape ``(columns, rows)``, indexed ``[x, y]``; ``raster`` is the
    same pixels as the DICOM file raster, shape ``(rows, columns)``, indexed ``[row, column]``. Values are
    MONOCHROME2 stored values (integers in ``[0, 2**bits_stored - 1]``, dark = dense) as float32.
    """

    image: np.ndarray
    """float32 ``(columns, rows)``, indexed ``[x, y]``."""
    landmark_names: tuple[str, ...]
    """Names of the L landmarks, ``"tip"`` first."""
    landmarks: np.ndarray
    """float64 ``(L, 2)`` exact ``(x, y)`` of each landmark, NaN when absent."""
    landmarks_annotated: np.ndarray
    """float64 ``(L, 2)`` landmarks plus Gaussian annotation noise, NaN when absent."""
    bits_stored: int
    """DICOM BitsStored of the values."""
    geometry: ProjectionGeometry
    """Projection geometry (spacing), shared by all frames of a sequence."""
    acquisition: AcquisitionParameters
    """Acquisition settings, shared by all frames of a sequence."""
    guidewire_tip: np.ndarray | None
    """``(x, y)`` of the guidewire's distal end when a guidewire is drawn, else None (may lie outside the image)."""
    guidewire_beyond_tip: bool
    """Whether a guidewire continues past the catheter tip."""
    contrast: bool
    """Whether contrast-filled vessels are shown (DICOM Contrast/Bolus module)."""
    burned_in_annotation: bool
    """Whether text or a ruler is burned into the pixels."""

    @property
    def raster(self) -> np.ndarray:
        """The DICOM raster view of `image`: shape ``(rows, columns)``, indexed ``[row, column]``."""
        return self.image.T

    @property
    def tip(self) -> np.ndarray:
        """Exact tip ``(x, y) = (column, row)``, float64 ``(2,)``; NaN without a catheter."""
        return self.landmarks[0]

    @property
    def tip_annotated(self) -> np.ndarray:
        """Annotated tip ``(x, y)``: `tip` plus Gaussian noise of ``annotation_noise_px``."""
        return self.landmarks_annotated[0]

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """``(column spacing, row spacing)`` at the patient plane in mm, i.e. MONAI's pixdim order."""
        s = self.geometry.pixel_spacing_mm
        return (s, s)


# --------------------------------------------------------------------------------------------- geometry


def _resample_polyline(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample an ``(N, 2)`` polyline at uniform arc-length steps of `_STEP_PX`; returns points and arc lengths."""
    seglen = np.hypot(*np.diff(points, axis=0).T)
    keep = np.concatenate([[True], seglen > 1e-9])
    points = points[keep]
    cum = np.concatenate([[0.0], np.cumsum(seglen[seglen > 1e-9])])
    arc = np.arange(0.0, cum[-1], _STEP_PX)
    arc = np.append(arc, cum[-1]) if cum[-1] - arc[-1] > 1e-6 else arc
    return np.column_stack([np.interp(arc, cum, points[:, 0]), np.interp(arc, cum, points[:, 1])]), arc


def _spline_through(control: np.ndarray) -> np.ndarray:
    """A smooth dense ``(M, 2)`` curve through the ``(N, 2)`` control points (chord-length cubic spline)."""
    chord = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(control, axis=0).T))])
    spline = CubicSpline(chord, control, axis=0, bc_type="natural")
    return spline(np.linspace(0.0, chord[-1], max(8, int(chord[-1] / _STEP_PX))))


def _arc_curve(start: np.ndarray, heading: float, length: float, curvature: np.ndarray) -> np.ndarray:
    """Integrate a curve of given `length` from `start` and `heading` (rad) with curvature samples (1/px)."""
    n = max(2, int(length / _STEP_PX))
    kappa = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(curvature)), curvature)
    ds = length / (n - 1)
    angle = heading + np.concatenate([[0.0], np.cumsum(kappa[:-1] * ds)])
    steps = np.column_stack([np.cos(angle), np.sin(angle)]) * ds
    return start + np.concatenate([[[0.0, 0.0]], np.cumsum(steps[:-1], axis=0)])


def _point_at(centreline: np.ndarray, arc: np.ndarray, s: float) -> np.ndarray:
    """The point ``(x, y)`` at arc length `s` of a resampled centre line."""
    return np.array([np.interp(s, arc, centreline[:, 0]), np.interp(s, arc, centreline[:, 1])])


def _truncate(centreline: np.ndarray, arc: np.ndarray, s_end: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of a centre line with arc length <= `s_end`, ending exactly at `s_end`."""
    keep = arc < s_end
    return (
        np.concatenate([centreline[keep], _point_at(centreline, arc, s_end)[None]]),
        np.append(arc[keep], s_end),
    )


def _unit(v: np.ndarray) -> np.ndarray:
    """`v` ``(2,)`` scaled to unit length."""
    return v / max(float(np.hypot(*v)), 1e-12)


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    """`v` ``(2,)`` rotated by `angle` (rad)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _outside_point(rng: np.random.Generator, shape: tuple[int, int], distance: float) -> np.ndarray:
    """A point ``(x, y)`` `distance` pixels outside a random side of the image."""
    h, w = shape
    side = int(rng.integers(4))
    t = rng.uniform(0.05, 0.95)
    return np.array(
        [(-distance, t * h), (w - 1 + distance, t * h), (t * w, -distance), (t * w, h - 1 + distance)][side]
    )


def _crossing_curve(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth curve that enters and leaves the image through two different sides."""
    h, w = shape
    while True:
        a, b = _outside_point(rng, shape, 0.15 * max(h, w)), _outside_point(rng, shape, 0.15 * max(h, w))
        if np.hypot(*(a - b)) > 0.8 * max(h, w):
            break
    mid = (a + b) / 2 + rng.normal(0, 0.15, 2) * np.array([w, h])
    return _spline_through(np.stack([a, mid, b]))


# ---------------------------------------------------------------------------------------- rasterising


def _disk_offsets(reach: int) -> np.ndarray:
    """``(M, 2)`` integer (row, column) offsets within a disk of radius `reach`."""
    r = np.arange(-reach, reach + 1)
    dr, dc = np.meshgrid(r, r, indexing="ij")
    inside = dr**2 + dc**2 <= reach**2
    return np.column_stack([dr[inside], dc[inside]])


def _footprint(
    centreline: np.ndarray, max_radius: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels within `max_radius` of a centre line sampled every `_STEP_PX` pixels.

    Returns ``(rows, cols, distance, index)``: the pixels, their distance to the nearest centre-line sample
    (px) and that sample's index. Past an end of the line the distance is radial, which gives round caps.
    """
    h, w = shape
    reach = math.ceil(max_radius + 1.5)
    coarse = np.concatenate([centreline[:: round(1 / _STEP_PX)], centreline[-1:]])
    centres = np.rint(coarse[:, ::-1]).astype(np.int64)
    near = np.all((centres > -reach) & (centres < np.array([h, w]) + reach), axis=1)
    if not near.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), empty
    cand = (centres[near, None, :] + _disk_offsets(reach)[None]).reshape(-1, 2)
    cand = cand[(cand[:, 0] >= 0) & (cand[:, 0] < h) & (cand[:, 1] >= 0) & (cand[:, 1] < w)]
    mask = np.zeros(shape, dtype=bool)
    mask[cand[:, 0], cand[:, 1]] = True
    rows, cols = np.nonzero(mask)
    dist, idx = cKDTree(centreline).query(np.column_stack([cols, rows]).astype(float), distance_upper_bound=max_radius)
    keep = np.isfinite(dist)
    return rows[keep], cols[keep], dist[keep], idx[keep]


def _chord(d: np.ndarray, radius: np.ndarray | float) -> np.ndarray:
    """Path length (px) through a cylinder of `radius` (px) at distance `d` from its axis.

    Cylinders thinner than 0.8 px are widened to 0.8 px with the same integrated path (no aliasing gaps).
    """
    r_eff = np.maximum(radius, 0.8)
    return 2.0 * np.sqrt(np.clip(r_eff**2 - d**2, 0.0, None)) * (np.asarray(radius) / r_eff) ** 2


Rod = tuple[np.ndarray, "np.ndarray | float", "np.ndarray | float"]
"""A solid cylinder: ``(centreline (N, 2) px, radius px, attenuation per px of path)``, scalars or per sample."""


def _add_rods(attenuation: np.ndarray, rods: Sequence[Rod]) -> None:
    """Add solid cylinders along centre lines sampled every `_STEP_PX` pixels to `attenuation` in place.

    The rods are rasterised together: where two overlap, the nearer centre line wins (no double counting),
    which is what one branching vessel or one wire loop needs; call twice to sum overlapping objects.
    """
    if not rods:
        return
    line = np.concatenate([r[0] for r in rods])
    radius = np.concatenate([np.broadcast_to(np.asarray(r[1], dtype=float), (len(r[0]),)) for r in rods])
    mu = np.concatenate([np.broadcast_to(np.asarray(r[2], dtype=float), (len(r[0]),)) for r in rods])
    rows, cols, dist, idx = _footprint(line, float(radius.max()), attenuation.shape)
    attenuation[rows, cols] += mu[idx] * _chord(dist, radius[idx])


# ------------------------------------------------------------------------------------------- the scene


@dataclass(frozen=True)
class _DevicePath:
    """The catheter / guidewire centre line of a scene, with the tip's arc length in every frame (px)."""

    centreline: np.ndarray
    arc: np.ndarray
    tip_arcs: np.ndarray
    curled: bool


@dataclass(frozen=True)
class _Devices:
    """How the catheter and guidewire look in a scene (lengths in px, attenuation per px of path)."""

    path: _DevicePath
    motion: np.ndarray  # (F, 2) device displacement (x, y) per frame, px
    catheter_radius: float
    lumen_radius: float
    wall_mu: float
    lumen_mu: float
    marker_mu: float
    tip_marker_length: float
    guidewire: bool
    guidewire_radius: float
    guidewire_mu: float
    guidewire_extension: float  # signed: > 0 past the tip, < 0 pulled back inside the catheter
    coil_length: float


@dataclass(frozen=True)
class _Display:
    """Log-domain display processing of a scene."""

    log_low: float
    log_high: float
    gamma: float
    black: float
    white: float
    edge_gain: float
    edge_sigma: float


@dataclass(frozen=True)
class _Scene:
    """Everything shared by the frames of one file (a cine run)."""

    config: FluoroscopyConfig
    spacing: float
    geometry: ProjectionGeometry
    acquisition: AcquisitionParameters
    bits_stored: int
    field: np.ndarray  # (rows, columns) soft collimation mask in [0, 1]
    exposure: np.ndarray  # (rows, columns) relative exposure (vignetting, gradients)
    static_attenuation: np.ndarray  # (rows, columns) anatomy, distractors and collimator
    dose: float
    devices: _Devices | None
    contrast: bool
    display: _Display
    motion_kernel: np.ndarray | None
    detector_sigma: float
    overlay: np.ndarray  # (rows, columns) static burned-in ruler / text in [0, 1]
    text_corner: str | None  # where the per-frame time stamp goes
    overlay_level: float


# Independent random streams of a scene: switching one part off leaves the random draws of the others alone.
_STREAMS = (
    *("geometry", "field", "exposure", "background", "edges", "ribs", "spine", "device", "catheter"),
    *("guidewire", "vessels", "electrodes", "sternal", "clips", "tube", "stents", "blur", "display", "overlay"),
)


def _sample_geometry(config: FluoroscopyConfig, rng: np.random.Generator) -> ProjectionGeometry:
    """Distances rounded to 0.1 mm and ImagerPixelSpacing to 1e-4 mm, so DICOM strings hold them exactly."""
    spacing = rng.uniform(*config.pixel_spacing_mm)
    magnification = rng.uniform(*config.magnification)
    sid = round(rng.uniform(*config.source_to_detector_mm), 1)
    sod = round(sid / magnification, 1)
    return ProjectionGeometry(round(spacing * sid / sod, 4), sid, sod)


def _sample_field(config: FluoroscopyConfig, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Soft collimation mask ``(rows, columns)``: 1 inside the field, 0 behind the iris or shutters."""
    h, w = shape
    x, y = pixel_grid(shape)
    u = rng.random(2)
    centre = np.array([w, h]) * (0.5 + rng.normal(0, 0.03, 2))
    radius = rng.uniform(0.47, 0.62) * min(h, w)
    edge = rng.uniform(1.0, 3.0)
    insets = rng.uniform(0.0, 0.16, 4) * np.array([w, w, h, h])
    field = np.ones(shape, dtype=np.float32)
    if not config.collimation:
        return field
    if u[0] < config.round_collimation_probability:
        field *= smooth_step(radius - np.hypot(x - centre[0], y - centre[1]), edge)
    if u[1] < config.shutter_probability:
        field *= smooth_step(x - insets[0], edge) * smooth_step(w - 1 - insets[1] - x, edge)
        field *= smooth_step(y - insets[2], edge) * smooth_step(h - 1 - insets[3] - y, edge)
    return field


def _sample_exposure(
    config: FluoroscopyConfig, rng: np.random.Generator, shape: tuple[int, int], spacing: float
) -> np.ndarray:
    """Relative exposure ``(rows, columns)``: image-intensifier vignetting times smooth uneven exposure."""
    h, w = shape
    x, y = pixel_grid(shape)
    centre = np.array([w, h]) * (0.5 + rng.normal(0, 0.05, 2))
    strength = rng.uniform(0.25, 0.55)
    gradient = rng.uniform(-0.35, 0.35)
    direction = rng.uniform(0, 2 * math.pi)
    blotch = rng.uniform(0.05, 0.15) * smooth_noise(rng, shape, 30.0 / spacing)
    exposure = np.ones(shape, dtype=np.float32)
    if config.vignetting:
        exposure *= 1.0 - strength * (np.hypot(x - centre[0], y - centre[1]) / (0.5 * math.hypot(h, w))) ** 2
    if config.uneven_exposure:
        ramp = ((x - w / 2) * math.cos(direction) + (y - h / 2) * math.sin(direction)) / max(h, w)
        exposure *= (1.0 + gradient * ramp) * np.exp(blotch)
    return exposure


def _background(
    config: FluoroscopyConfig, rng: np.random.Generator, shape: tuple[int, int], spacing: float
) -> np.ndarray:
    """Soft-tissue / lung attenuation: smooth noise at three scales (40, 10 and 2.5 mm)."""
    amplitudes = rng.uniform([0.15, 0.05, 0.01], [0.35, 0.12, 0.04])
    scales = (40.0, 10.0, 2.5)
    noise = [smooth_noise(rng, shape, s / spacing) for s in scales]
    if not config.background:
        return np.zeros(shape, dtype=np.float32)
    return sum(a * n for a, n in zip(amplitudes, noise, strict=True))


def _soft_tissue_edges(
    config: FluoroscopyConfig, rng: np.random.Generator, shape: tuple[int, int], spacing: float
) -> np.ndarray:
    """One or two large ellipsoidal silhouettes (heart, diaphragm) whose border crosses the field."""
    h, w = shape
    x, y = pixel_grid(shape)
    show = rng.random() < config.soft_tissue_edges_probability
    out = np.zeros(shape, dtype=np.float32)
    for _ in range(2 if rng.random() < 0.5 else 1):
        radii = rng.uniform(40.0, 120.0, 2) / spacing
        angle = rng.uniform(0, math.pi)
        on_edge = np.array([w, h]) * rng.uniform(0.15, 0.85, 2)
        centre = on_edge + _rotate(np.array([radii[0], 0.0]), rng.uniform(0, 2 * math.pi))
        density = rng.uniform(0.25, 0.8)
        u = ((x - centre[0]) * math.cos(angle) + (y - centre[1]) * math.sin(angle)) / radii[0]
        v = (-(x - centre[0]) * math.sin(angle) + (y - centre[1]) * math.cos(angle)) / radii[1]
        out += density * np.sqrt(np.clip(1.0 - u**2 - v**2, 0.0, None))
    return out if show else np.zeros(shape, dtype=np.float32)


def _ribs(config: FluoroscopyConfig, rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """A family of parallel curved rib bands with denser cortical edges, fading out towards one end."""
    h, w = shape
    x, y = pixel_grid(shape)
    show = rng.random() < config.ribs_probability
    angle = rng.uniform(-0.7, 0.7)
    curvature = rng.uniform(0.002, 0.008) * rng.choice([-1.0, 1.0])
    period = rng.uniform(28.0, 40.0)
    half_width = rng.uniform(4.5, 7.0)
    phase = rng.uniform(0.0, period)
    density = rng.uniform(0.05, 0.15)
    fade_at = rng.uniform(-0.5, 0.5) * w * spacing
    fade_sign = rng.choice([-1.0, 1.0])
    if not show:
        return np.zeros(shape, dtype=np.float32)
    xm, ym = (x - w / 2) * spacing, (y - h / 2) * spacing
    u = xm * math.cos(angle) + ym * math.sin(angle)
    v = -xm * math.sin(angle) + ym * math.cos(angle)
    offset = (v - curvature * u**2 - phase) / np.sqrt(1.0 + (2 * curvature * u) ** 2)
    d = np.mod(offset, period) - period / 2
    outer = np.sqrt(np.clip(1.0 - (d / half_width) ** 2, 0.0, None))
    inner = np.sqrt(np.clip(1.0 - (d / (0.75 * half_width)) ** 2, 0.0, None))
    profile = (outer - 0.75 * inner) * 2.0 + 0.5 * inner
    return density * profile * expit(fade_sign * (u - fade_at) / 8.0)


def _spine(config: FluoroscopyConfig, rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """A near-vertical vertebral column: bodies, disc spaces, endplates, pedicle rings and paraspinal tissue."""
    w = shape[1]
    x, y = pixel_grid(shape)
    show = rng.random() < config.spine_probability
    centre_x = rng.uniform(-0.2, 1.2) * w * spacing
    angle = rng.normal(0.0, 0.1)
    half_width = rng.uniform(17.0, 25.0)
    period = rng.uniform(26.0, 34.0)
    disc = rng.uniform(5.0, 9.0)
    phase = rng.uniform(0.0, period)
    density = rng.uniform(0.2, 0.5)
    if not show:
        return np.zeros(shape, dtype=np.float32)
    xm, ym = x * spacing - centre_x, y * spacing
    u = xm * math.cos(angle) - ym * math.sin(angle)
    v = xm * math.sin(angle) + ym * math.cos(angle)
    vm = np.mod(v - phase, period) - period / 2
    body_half = (period - disc) / 2
    lateral = np.sqrt(np.clip(1.0 - (u / half_width) ** 2, 0.0, None))
    body = expit((body_half - np.abs(vm)) / 1.0)
    endplate = np.exp(-(((np.abs(vm) - body_half) / 1.2) ** 2))
    rings = np.zeros(shape, dtype=np.float32)
    for cu, cv, a, b in ((0.55, -0.15, 4.0, 6.0), (-0.55, -0.15, 4.0, 6.0), (0.0, 0.1, 3.0, 7.0)):
        rho = np.hypot((u - cu * half_width) / a, (vm - cv * period) / b)
        rings += np.exp(-((((rho - 1.0) * a) / 1.0) ** 2))
    paraspinal = np.cos(np.clip(u / (2.5 * half_width), -1.0, 1.0) * math.pi / 2) ** 2
    return density * (lateral * (0.55 + 0.45 * body + 0.3 * endplate) + 0.1 * rings * body + 0.3 * paraspinal)


def _sample_device_path(
    config: FluoroscopyConfig,
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing: float,
    field: np.ndarray,
    motion: np.ndarray,
) -> _DevicePath:
    """A catheter centre line entering from outside the image, with the tip of every frame inside the field.

    `motion` ``(F, 2)`` is the devices' displacement in each of the F frames. The line continues past the last
    frame's tip (the guidewire's path). A curled catheter ends in a spiral.
    """
    h, w = shape
    inside = field > 0.5
    inside[[0, -1], :] = False
    inside[:, [0, -1]] = False
    field_distance = ndimage.distance_transform_edt(inside)
    margin = max(8.0, 1.5 * config.catheter_diameter_mm[1] / spacing)
    valid = np.argwhere(field_distance >= margin)
    if len(valid) == 0:
        valid = np.argwhere(field_distance >= field_distance.max())
    advance = rng.uniform(*config.advance_mm_per_frame) / spacing
    curled = bool(rng.random() < config.curl_probability)
    continuation = (config.guidewire_extension_mm[1] + 5.0) / spacing
    for _ in range(200):
        row, col = valid[rng.integers(len(valid))]
        tip = np.array([col, row], dtype=float) + rng.uniform(-0.5, 0.5, 2)
        entry = _outside_point(rng, shape, 0.1 * max(h, w))
        mid = (entry + tip) / 2 + rng.normal(0.0, 0.25) * _rotate(tip - entry, math.pi / 2)
        direction = _rotate(_unit(tip - mid), rng.normal(0.0, 0.6))
        approach = tip - direction * rng.uniform(8.0, 25.0) / spacing
        body = _spline_through(np.stack([entry, mid, approach, tip]))
        heading = _unit(body[-1] - body[-5])
        if curled:
            radius = rng.uniform(2.0, 4.0) / spacing
            turn = rng.uniform(1.3, 2.4) * math.pi * rng.choice([-1.0, 1.0])
            tightening = np.sign(turn) / (radius * np.linspace(1.0, 0.6, 16))
            spiral = _arc_curve(body[-1], math.atan2(heading[1], heading[0]), abs(turn) * radius, tightening)
            body = np.concatenate([body, spiral[1:]])
            heading = _unit(body[-1] - body[-5])
        bend = rng.normal(0.0, 1.0 / (25.0 / spacing), 2)
        wire = _arc_curve(body[-1], math.atan2(heading[1], heading[0]), continuation, bend)
        end_arc = float(np.sum(np.hypot(*np.diff(body, axis=0).T)))
        centreline, arc = _resample_polyline(np.concatenate([body, wire[1:]]))
        tip_arcs = end_arc - advance * np.arange(len(motion) - 1, -1, -1)
        tips = np.stack([_point_at(centreline, arc, s) for s in tip_arcs]) + motion
        rc = np.rint(tips[:, ::-1]).astype(int)
        in_image = np.all((rc >= 0) & (rc < np.array(shape)), axis=1)
        if tip_arcs[0] > 0 and in_image.all() and np.all(field_distance[rc[:, 0], rc[:, 1]] >= 0.6 * margin):
            return _DevicePath(centreline, arc, tip_arcs, curled)
    raise RuntimeError("Could not place a catheter tip inside the collimated field; enlarge the field or the image.")


def _sample_devices(
    config: FluoroscopyConfig,
    rngs: dict[str, np.random.Generator],
    shape: tuple[int, int],
    spacing: float,
    field: np.ndarray,
    n_frames: int,
    contrast_mu: float | None,
) -> _Devices:
    """The device path plus how catheter and guidewire look (their own random streams).

    The devices move periodically (cardiac motion) relative to their position in the last frame.
    """
    cath = rngs["catheter"]
    amplitude = cath.uniform(*config.cardiac_motion_mm) / spacing
    period, phase, axis = cath.uniform(4.0, 8.0), cath.uniform(0, 2 * math.pi), cath.uniform(0, 2 * math.pi)
    wobble = amplitude * np.sin(2 * math.pi * np.arange(n_frames) / period + phase)
    motion = np.column_stack([wobble * math.cos(axis), wobble * math.sin(axis)])
    motion -= motion[-1]
    path = _sample_device_path(config, rngs["device"], shape, spacing, field, motion)
    radius = cath.uniform(*config.catheter_diameter_mm) / 2 / spacing
    lumen = radius * cath.uniform(0.45, 0.65)
    wall_mu, marker_mu = cath.uniform(0.6, 1.2) * spacing, cath.uniform(0.3, 1.5) * spacing
    marker_length = cath.uniform(*config.tip_marker_length_mm) / spacing
    saline_mu = cath.uniform(0.0, 0.03)
    gw = rngs["guidewire"]
    has_wire = bool(gw.random() < config.guidewire_probability)
    extension = gw.uniform(*config.guidewire_extension_mm) / spacing
    return _Devices(
        path=path,
        motion=motion,
        catheter_radius=radius,
        lumen_radius=lumen,
        wall_mu=wall_mu,
        lumen_mu=(contrast_mu if contrast_mu is not None else saline_mu) * spacing,
        marker_mu=marker_mu,
        tip_marker_length=marker_length,
        guidewire=has_wire,
        guidewire_radius=gw.uniform(*config.guidewire_diameter_mm) / 2 / spacing,
        guidewire_mu=gw.uniform(1.5, 3.0) * spacing,
        guidewire_extension=-extension if path.curled else extension,
        coil_length=gw.uniform(15.0, 30.0) / spacing,
    )


def _vessel_branch(
    rng: np.random.Generator, start: np.ndarray, angle: float, length: float, radius: float, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """A tortuous, tapering vessel segment: centre line ``(N, 2)`` and radius per sample (px)."""
    line = _arc_curve(start, angle, length, rng.normal(0.0, 1.0 / (12.0 / spacing), 8))
    return line, radius * np.linspace(1.0, rng.uniform(0.35, 0.6), len(line))


def _vessels(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing: float,
    contrast_mu: float,
    origin: tuple[np.ndarray, float] | None,
) -> np.ndarray:
    """A contrast-filled vessel tree (dark, tortuous, tapering, branching tubes), two branching levels deep.

    `origin` ``(point, heading in rad)`` starts the trunk there (at the catheter tip); else it starts
    outside the image.
    """
    h, w = shape
    out = np.zeros(shape, dtype=np.float32)
    if origin is None:
        start = _outside_point(rng, shape, 0.05 * max(h, w))
        heading = math.atan2(h / 2 - start[1], w / 2 - start[0]) + rng.normal(0.0, 0.4)
    else:
        start, heading = origin
    length, radius = rng.uniform(60.0, 120.0) / spacing, rng.uniform(1.0, 1.9) / spacing
    trunk = _vessel_branch(rng, start, heading, length, radius, spacing)
    rods: list[Rod] = [(trunk[0], trunk[1], contrast_mu * spacing)]
    for _ in range(int(rng.integers(3, 7))):
        parent_line, parent_radius = rods[int(rng.integers(len(rods)))][:2]
        i = int(rng.integers(len(parent_line) // 8, len(parent_line) - 1))
        tangent = _unit(parent_line[min(i + 4, len(parent_line) - 1)] - parent_line[max(i - 4, 0)])
        angle = math.atan2(tangent[1], tangent[0]) + rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 1.1)
        radius = float(parent_radius[i]) * rng.uniform(0.5, 0.85)
        line, radii = _vessel_branch(rng, parent_line[i], angle, rng.uniform(15.0, 60.0) / spacing, radius, spacing)
        rods.append((line, radii, contrast_mu * spacing))
    _add_rods(out, rods)
    return out


def _ecg_electrodes(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """Dense metal snaps on faint adhesive pads, each with a lead wire leaving the image."""
    h, w = shape
    x, y = pixel_grid(shape)
    out = np.zeros(shape, dtype=np.float32)
    leads: list[Rod] = []
    for _ in range(int(rng.integers(1, 4))):
        centre = np.array([w, h]) * rng.uniform(0.0, 1.0, 2)
        snap = rng.uniform(2.0, 3.5) / spacing
        pad = rng.uniform(12.0, 22.0) / spacing
        r = np.hypot(x - centre[0], y - centre[1])
        out += rng.uniform(0.04, 0.1) * expit((pad - r) / 1.5)
        out += rng.uniform(1.5, 3.0) * spacing * _chord(r, snap)
        out += rng.uniform(0.5, 1.0) * spacing * _chord(np.abs(r - 0.6 * snap), 0.25 / spacing)
        exit_point = _outside_point(rng, shape, 0.1 * max(h, w))
        via = (centre + exit_point) / 2 + rng.normal(0, 0.15, 2) * np.array([w, h])
        lead, _ = _resample_polyline(_spline_through(np.stack([centre, via, exit_point])))
        leads.append((lead, rng.uniform(0.3, 0.6) / spacing, rng.uniform(0.8, 1.6) * spacing))
    _add_rods(out, leads)
    return out


def _sternal_wires(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """Twisted stainless-steel loops stacked along the sternum: narrow, slightly irregular loops with a
    dense twisted knot at one end."""
    h, w = shape
    x0 = w * rng.uniform(0.2, 0.8)
    gap = rng.uniform(18.0, 30.0) / spacing
    y0 = rng.uniform(0.0, gap)
    tilt = rng.normal(0.0, 0.15)
    theta = np.linspace(0.0, 2 * math.pi, 120)
    rods: list[Rod] = []
    for k in range(int(h / gap) + 2):
        centre = np.array([x0 + k * gap * math.sin(tilt) + rng.normal(0, 2), y0 + k * gap])
        a, b = rng.uniform(6.0, 12.0) / spacing, rng.uniform(0.8, 2.5) / spacing
        angle = tilt + rng.normal(0.0, 0.15)
        wobble = 1.0 + 0.15 * np.sin(2 * theta + rng.uniform(0, 2 * math.pi))
        loop = np.column_stack([a * np.cos(theta), b * wobble * np.sin(theta)])
        knot_side = rng.choice([-1.0, 1.0])
        t = np.linspace(0.0, 1.0, 30)
        twist = np.column_stack([knot_side * a * (1.0 + 0.5 * t), 0.6 / spacing * np.sin(6 * math.pi * t)])
        rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
        wire = rng.uniform(0.35, 0.6) / spacing
        rods.append((_resample_polyline(centre + loop @ rotation)[0], wire, rng.uniform(2.0, 3.0) * spacing))
        rods.append((_resample_polyline(centre + twist @ rotation)[0], 1.6 * wire, 2.5 * spacing))
    out = np.zeros(shape, dtype=np.float32)
    _add_rods(out, rods)
    return out


def _clips(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """A cluster of small dense surgical clips (V shapes or closed straight clips)."""
    h, w = shape
    cluster = np.array([w, h]) * rng.uniform(0.1, 0.9, 2)
    rods: list[Rod] = []
    for _ in range(int(rng.integers(2, 8))):
        apex = cluster + rng.normal(0.0, 12.0 / spacing, 2)
        length = rng.uniform(3.0, 7.0) / spacing
        angle = rng.uniform(0, 2 * math.pi)
        legs = angle + rng.uniform(0.0, 0.2) * np.array([-1.0, 1.0])
        legs = apex + length * np.column_stack([np.cos(legs), np.sin(legs)])
        clip, _ = _resample_polyline(np.stack([legs[0], apex, legs[1]]))
        rods.append((clip, rng.uniform(0.45, 0.75) / spacing, rng.uniform(2.0, 3.5) * spacing))
    out = np.zeros(shape, dtype=np.float32)
    _add_rods(out, rods)
    return out


def _second_tube(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """A device crossing the whole field (no end in view): a tube, a sizing catheter with radiopaque bands
    every 10 mm, or a pacing lead (dense core in faint insulation)."""
    out = np.zeros(shape, dtype=np.float32)
    line, arc = _resample_polyline(_crossing_curve(rng, shape))
    kind = rng.random()
    if kind < 0.7:
        radius = rng.uniform(0.8, 2.0) / spacing
        mu = rng.uniform(0.25, 0.55) * spacing
        bands = (np.mod(arc * spacing + rng.uniform(0, 10), 10.0) < 1.5) if kind < 0.35 else np.zeros(len(arc), bool)
        _add_rods(out, [(line, radius, mu + rng.uniform(0.8, 2.0) * spacing * bands)])
        _add_rods(out, [(line, radius * rng.uniform(0.6, 0.8), -mu * ~bands)])
    else:
        _add_rods(out, [(line, rng.uniform(0.8, 1.3) / spacing, rng.uniform(0.1, 0.2) * spacing)])
        _add_rods(out, [(line, rng.uniform(0.3, 0.5) / spacing, rng.uniform(1.5, 2.5) * spacing)])
    return out


def _stents(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """One or two implanted stents: short, gently curved hollow metal tubes with a strut pattern."""
    h, w = shape
    rods: list[Rod] = []
    for _ in range(int(rng.integers(1, 3))):
        start = np.array([w, h]) * rng.uniform(0.1, 0.9, 2)
        length = rng.uniform(8.0, 30.0) / spacing
        line = _arc_curve(start, rng.uniform(0, 2 * math.pi), length, rng.normal(0.0, 1.0 / (15.0 / spacing), 3))
        arc = np.arange(len(line)) * length / max(len(line) - 1, 1) * spacing
        struts = 0.75 + 0.25 * np.cos(2 * math.pi * arc / rng.uniform(0.6, 1.2))
        radius = rng.uniform(1.2, 2.0) / spacing
        mu = rng.uniform(0.4, 0.9) * spacing * struts
        rods.append((line, radius, mu))
    outer = np.zeros(shape, dtype=np.float32)
    _add_rods(outer, rods)
    inner = np.zeros(shape, dtype=np.float32)
    _add_rods(inner, [(line, radius * 0.8, mu) for line, radius, mu in rods])
    return outer - inner


def _draw_text(shape: tuple[int, int], lines: dict[str, list[str]]) -> np.ndarray:
    """Burned-in text ``(rows, columns)`` in [0, 1]; `lines` maps a corner ("tl", "tr", "bl", "br") to its lines."""
    h, w = shape
    size = max(7, round(min(h, w) / 28))
    font = ImageFont.load_default(size=size)
    canvas = Image.new("L", (w, h))  # PIL sizes are (width, height)
    draw = ImageDraw.Draw(canvas)
    pad = max(2, size // 3)
    for corner, text_lines in lines.items():
        for i, text in enumerate(text_lines):
            left, _, right, _ = draw.textbbox((0, 0), text, font=font)
            tx = pad if corner[1] == "l" else w - pad - (right - left)
            ty = pad + i * (size + 2) if corner[0] == "t" else h - pad - (len(text_lines) - i) * (size + 2)
            draw.text((tx - left, ty), text, fill=255, font=font)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _draw_ruler(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """A centimetre ruler (5 mm ticks, longer every cm) along one image edge, ``(rows, columns)`` in [0, 1]."""
    h, w = shape
    out = np.zeros(shape, dtype=np.float32)
    vertical = bool(rng.random() < 0.5)
    length_cm = int(rng.integers(2, 6))
    extent = h if vertical else w
    n_ticks = min(2 * length_cm, int(0.7 * extent * spacing / 5.0))
    ticks = np.rint(np.arange(n_ticks + 1) * 5.0 / spacing).astype(int)
    start = int(rng.uniform(0.1, 0.9) * (extent - ticks[-1] - 1))
    offset = int(rng.uniform(0.04, 0.08) * min(h, w))
    across = offset if rng.random() < 0.5 else (w if vertical else h) - 1 - offset
    long_tick, short_tick = max(4, extent // 40), max(2, extent // 80)
    sign = 1 if across == offset else -1
    lines = out if not vertical else out.T
    lines[across, start : start + ticks[-1] + 1] = 1.0
    for i, t in enumerate(ticks):
        reach = long_tick if i % 2 == 0 else short_tick
        lo, hi = sorted((across, across + sign * reach))
        lines[lo : hi + 1, start + t] = 1.0
    return out


def _overlay(
    config: FluoroscopyConfig,
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing: float,
    acq: AcquisitionParameters,
) -> tuple[np.ndarray, str | None]:
    """Static burned-in text and ruler ``(rows, columns)`` in [0, 1], and the corner of the per-frame time stamp."""
    show_text = rng.random() < config.burned_in_text_probability
    show_ruler = rng.random() < config.ruler_probability
    corners = list(rng.permutation(["tl", "tr", "bl", "br"]))
    ruler = _draw_ruler(rng, shape, spacing)
    overlay = np.zeros(shape, dtype=np.float32)
    if show_ruler:
        overlay = np.maximum(overlay, ruler)
    if not show_text:
        return overlay, None
    primary = f"{'LAO' if acq.primary_angle_deg >= 0 else 'RAO'} {abs(acq.primary_angle_deg):.0f}"
    secondary = f"{'CRAN' if acq.secondary_angle_deg >= 0 else 'CAUD'} {abs(acq.secondary_angle_deg):.0f}"
    lines = {
        corners[0]: [f"{primary}  {secondary}"],
        corners[1]: [f"{acq.kvp:.0f} kV  {acq.tube_current_ma:.1f} mA", f"FL {acq.frame_rate_fps:.1f} p/s"],
        corners[2]: ["SYNTHETIC"],
    }
    return np.maximum(overlay, _draw_text(shape, lines)), corners[3]


def _sample_scene(config: FluoroscopyConfig, rng: np.random.Generator, n_frames: int) -> _Scene:
    """Everything that stays fixed over the frames of one file; each part has its own random stream."""
    rngs = dict(zip(_STREAMS, rng.spawn(len(_STREAMS)), strict=True))
    shape = (config.rows, config.columns)
    g = rngs["geometry"]
    geometry = _sample_geometry(config, g)
    spacing = geometry.pixel_spacing_mm
    bits = int(g.choice(config.bits_stored))
    acq = AcquisitionParameters(
        kvp=float(round(g.uniform(60, 95))),
        tube_current_ma=float(round(g.uniform(2.0, 15.0), 1)),
        primary_angle_deg=float(round(g.uniform(-45, 45))),
        secondary_angle_deg=float(round(g.uniform(-30, 30))),
        frame_rate_fps=float(g.choice([7.5, 10.0, 15.0, 30.0])),
    )
    field = _sample_field(config, rngs["field"], shape)
    exposure = _sample_exposure(config, rngs["exposure"], shape, spacing)
    anatomy = (
        _background(config, rngs["background"], shape, spacing)
        + _soft_tissue_edges(config, rngs["edges"], shape, spacing)
        + ndimage.gaussian_filter(
            _ribs(config, rngs["ribs"], shape, spacing) + _spine(config, rngs["spine"], shape, spacing), 1.0 / spacing
        )
    )
    v = rngs["vessels"]
    contrast = bool(v.random() < config.vessels_probability)
    from_tip = bool(v.random() < config.vessel_from_tip_probability)
    contrast_mu = v.uniform(0.2, 0.45)
    devices = None
    if config.catheter or config.guidewire_probability > 0:
        devices = _sample_devices(config, rngs, shape, spacing, field, n_frames, contrast_mu if contrast else None)
    static = anatomy + _COLLIMATOR_ATTENUATION * (1.0 - field)
    if contrast:
        origin = None
        if from_tip and devices is not None and config.catheter:
            path = devices.path
            end = _point_at(path.centreline, path.arc, path.tip_arcs[-1])
            before = _point_at(path.centreline, path.arc, path.tip_arcs[-1] - 2.0)
            direction = end - before
            origin = (end, math.atan2(direction[1], direction[0]))
        static = static + _vessels(v, shape, spacing, contrast_mu, origin)
    for name, probability, draw in (
        ("electrodes", config.ecg_electrodes_probability, _ecg_electrodes),
        ("sternal", config.sternal_wires_probability, _sternal_wires),
        ("clips", config.clips_probability, _clips),
        ("tube", config.second_tube_probability, _second_tube),
        ("stents", config.stents_probability, _stents),
    ):
        if rngs[name].random() < probability:
            static = static + draw(rngs[name], shape, spacing)
    b = rngs["blur"]
    blur_on = b.random() < config.motion_blur_probability
    kernel = motion_blur_kernel(b.uniform(*config.motion_blur_px), b.uniform(0, math.pi))
    detector_sigma = b.uniform(*config.detector_blur_px) if config.detector_blur else 0.0
    d = rngs["display"]
    dose = d.uniform(*config.dose_quanta_per_pixel)
    reference = np.log(dose * exposure * np.exp(-anatomy))[field > 0.5]
    low, high = np.percentile(reference, [1.0, 99.5]) if reference.size else (0.0, 1.0)
    span = max(high - low, 0.2)
    display = _Display(
        log_low=float(low - d.uniform(0.3, 0.7) * span),
        log_high=float(high + 0.05 * span),
        gamma=d.uniform(0.8, 1.25),
        black=d.uniform(0.0, 0.06),
        white=d.uniform(0.8, 0.97),
        edge_gain=d.uniform(0.3, 1.0) if d.random() < config.edge_enhancement_probability else 0.0,
        edge_sigma=d.uniform(2.0, 6.0),
    )
    o = rngs["overlay"]
    overlay, text_corner = _overlay(config, o, shape, spacing, acq)
    return _Scene(
        config=config,
        spacing=spacing,
        geometry=geometry,
        acquisition=acq,
        bits_stored=bits,
        field=field,
        exposure=exposure,
        static_attenuation=static.astype(np.float32),
        dose=dose,
        devices=devices,
        contrast=contrast,
        display=display,
        motion_kernel=kernel if blur_on else None,
        detector_sigma=detector_sigma,
        overlay=overlay,
        text_corner=text_corner,
        overlay_level=o.uniform(0.85, 1.0),
    )


# ------------------------------------------------------------------------------------------- rendering


def _add_devices(scene: _Scene, attenuation: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw catheter (+ marker bands) and guidewire of frame `k`; returns the exact ``(L, 2)`` landmarks and
    the guidewire tip."""
    config, dev = scene.config, scene.devices
    landmarks = np.full((len(config.landmark_names), 2), np.nan)
    if dev is None:
        return landmarks, None
    path, shift = dev.path, dev.motion[k]
    tip_arc = float(path.tip_arcs[k])
    wire_tip = None
    if dev.guidewire:
        wire_arc = tip_arc + dev.guidewire_extension
        wire, wire_s = _truncate(path.centreline + shift, path.arc, wire_arc)
        coil = np.where(wire_arc - wire_s <= dev.coil_length, 1.5, 1.0)
        _add_rods(attenuation, [(wire, dev.guidewire_radius, dev.guidewire_mu * coil)])
        wire_tip = wire[-1]
    if not config.catheter:
        return landmarks, wire_tip
    line, s = _truncate(path.centreline + shift, path.arc, tip_arc)
    from_tip = tip_arc - s
    marker = np.zeros(len(line))
    if config.tip_marker:
        marker[from_tip <= dev.tip_marker_length] = 1.0
    landmarks[0] = line[-1]
    for i, m in enumerate(config.extra_landmarks, start=1):
        band_arc = m.arc_length_mm / scene.spacing
        marker[np.abs(from_tip - band_arc) <= m.band_length_mm / scene.spacing / 2] = 1.0
        if band_arc < tip_arc:
            point = _point_at(line, s, tip_arc - band_arc)
            if _in_field(scene, point):
                landmarks[i] = point
    _add_rods(attenuation, [(line, dev.catheter_radius, dev.wall_mu + dev.marker_mu * marker)])
    _add_rods(attenuation, [(line, dev.lumen_radius, dev.lumen_mu - dev.wall_mu * (1.0 - marker))])
    return landmarks, wire_tip


def _in_field(scene: _Scene, point: np.ndarray) -> bool:
    """Whether ``(x, y)`` lies in the image and inside the collimated field."""
    col, row = round(float(point[0])), round(float(point[1]))
    rows, cols = scene.field.shape
    return 0 <= row < rows and 0 <= col < cols and scene.field[row, col] > 0.5


def _display(scene: _Scene, counts: np.ndarray) -> np.ndarray:
    """Log-domain display processing: window, gamma, edge enhancement, black outside the field; [0, 1]."""
    disp = scene.display
    value = (np.log(np.maximum(counts, 0.5)) - disp.log_low) / (disp.log_high - disp.log_low)
    value = np.clip(value, 0.0, 1.0) ** disp.gamma
    if disp.edge_gain > 0:
        value = value + disp.edge_gain * (value - ndimage.gaussian_filter(value, disp.edge_sigma))
    value = disp.black + (disp.white - disp.black) * value
    return np.clip(value * scene.field, 0.0, 1.0)


def _frame_attenuation(scene: _Scene, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Frame `k`'s attenuation ``(rows, columns)`` (the scene's static part plus its devices), landmarks and
    guidewire end (`_add_devices`)."""
    attenuation = scene.static_attenuation.copy()
    landmarks, wire_tip = _add_devices(scene, attenuation, k)
    return attenuation, landmarks, wire_tip


def _render_frame(scene: _Scene, k: int, rng: np.random.Generator) -> FluoroscopyFrame:
    """Frame `k` of a scene, with its own noise and annotation noise from `rng`."""
    config = scene.config
    attenuation, landmarks, wire_tip = _frame_attenuation(scene, k)
    expected = scene.dose * scene.exposure * np.exp(-attenuation)
    if scene.motion_kernel is not None:
        expected = ndimage.convolve(expected, scene.motion_kernel, mode="nearest")
    counts = rng.poisson(expected).astype(np.float32) if config.quantum_noise else expected
    if scene.detector_sigma > 0:
        counts = ndimage.gaussian_filter(counts, scene.detector_sigma)
    value = _display(scene, counts)
    overlay = scene.overlay
    if scene.text_corner is not None:
        seconds = k / scene.acquisition.frame_rate_fps
        stamp = _draw_text(value.shape, {scene.text_corner: [f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"]})
        overlay = np.maximum(overlay, stamp)
    value = np.maximum(value, scene.overlay_level * overlay)
    max_value = 2**scene.bits_stored - 1
    raster = np.rint(value * max_value).astype(np.float32)
    noise_px = np.array([config.annotation_noise_px, *(m.annotation_noise_px for m in config.extra_landmarks)])
    annotated = landmarks + rng.standard_normal(landmarks.shape) * noise_px[:, None]
    dev = scene.devices
    return FluoroscopyFrame(
        image=np.ascontiguousarray(raster.T),
        landmark_names=config.landmark_names,
        landmarks=landmarks,
        landmarks_annotated=annotated,
        bits_stored=scene.bits_stored,
        geometry=scene.geometry,
        acquisition=scene.acquisition,
        guidewire_tip=wire_tip,
        guidewire_beyond_tip=bool(
            dev is not None and dev.guidewire and config.catheter and dev.guidewire_extension > 0
        ),
        contrast=scene.contrast,
        burned_in_annotation=bool(overlay.max() > 0),
    )


def generate_sequence(config: FluoroscopyConfig, rng: np.random.Generator, n_frames: int) -> list[FluoroscopyFrame]:
    """`n_frames` frames of one scene: same anatomy, field and geometry, the catheter advancing frame by frame.

    Args:
        config: what the frames contain.
        rng: the only source of randomness (same state, same frames).
        n_frames: number of frames (>= 1).

    Returns:
        The frames in acquisition order; each has its own tip (frame-level ground truth) and noise.
    """
    if n_frames < 1:
        raise ValueError(f"Argument `n_frames` must be >= 1, got {n_frames}.")
    scene = _sample_scene(config, rng, n_frames)
    frame_rngs = rng.spawn(n_frames)
    return [_render_frame(scene, k, frame_rngs[k]) for k in range(n_frames)]


def generate_frame(config: FluoroscopyConfig, rng: np.random.Generator) -> FluoroscopyFrame:
    """One synthetic fluoroscopy frame with its catheter tip; see `FluoroscopyFrame` for layouts and units."""
    return generate_sequence(config, rng, 1)[0]


# --------------------------------------------------------------------------------------------- dataset


def generate_attenuation(config: FluoroscopyConfig, rng: np.random.Generator) -> np.ndarray:
    """The line-integral attenuation ("mu x path length") of one frame's scene, before exposure and display.

    What the detector sees of a frame is ``exp(-attenuation)``; X-ray attenuations of objects lying on
    top of each other add. Used to render device layers that can be laid over other frames
    (:mod:`monai_adaloss.synthetic.device_overlay`).

    Returns:
        float32 ``(columns, rows)``, MONAI's reader layout ``[x, y]`` like `FluoroscopyFrame.image`.
    """
    attenuation, _, _ = _frame_attenuation(_sample_scene(config, rng, 1), 0)
    return np.ascontiguousarray(attenuation.T, dtype=np.float32)


def _points_json(points: np.ndarray) -> list[list[float]]:
    """``(2,)`` point -> ``[[x, y]]`` (one instance), or ``[]`` when absent (NaN)."""
    return [] if np.isnan(points).any() else [[round(float(points[0]), 4), round(float(points[1]), 4)]]


def _entry(frame: FluoroscopyFrame, image: str, frame_index: int | None, file_info: dict) -> dict:
    names = frame.landmark_names
    entry: dict = {"image": image}
    if frame_index is not None:
        entry["frame"] = frame_index
    entry["label"] = {n: _points_json(p) for n, p in zip(names, frame.landmarks_annotated, strict=True)}
    entry["label_true"] = {n: _points_json(p) for n, p in zip(names, frame.landmarks, strict=True)}
    tip = _points_json(frame.tip)
    entry["tip_true"] = tip[0] if tip else None
    entry["spacing_mm"] = list(frame.spacing_mm)
    entry.update(file_info)
    entry["bits_stored"] = frame.bits_stored
    entry["guidewire_beyond_tip"] = frame.guidewire_beyond_tip
    return entry


def make_dataset(
    output_dir: str | Path,
    n_train: int,
    n_val: int,
    n_test: int,
    config: FluoroscopyConfig | None = None,
    seed: int = 0,
    multiframe_fraction: float = 0.2,
    compressed_fraction: float = 0.3,
    monochrome1_fraction: float = 0.1,
    voi_lut_fraction: float = 0.5,
    frames_per_file: tuple[int, int] = (3, 8),
    multiframe_splits: Sequence[str] = _SPLITS,
) -> Path:
    """Write synthetic fluoroscopy DICOM files and a MONAI-style datalist (format: module docstring).

    Args:
        output_dir: folder for ``datalist.json`` and the ``training/``, ``validation/``, ``test/`` files.
        n_train, n_val, n_test: number of datalist entries (frames) per split; a multi-frame file gives
            several entries.
        config: frame content; default `FluoroscopyConfig()`.
        seed: everything (pixels, UIDs, file choices) follows from it; the same seed writes the same bytes.
        multiframe_fraction: chance that a file is a multi-frame XA/RF cine run.
        compressed_fraction: chance that a file uses a lossless compressed transfer syntax (RLE Lossless;
            JPEG-LS / JPEG 2000 Lossless too when their pydicom encoders are installed).
        monochrome1_fraction: chance that a (single-frame) file is MONOCHROME1, stored inverted; those are
            written as DX For Presentation, the projection X-ray class that allows MONOCHROME1.
        voi_lut_fraction: chance that an XA/RF file carries WindowCenter/WindowWidth (DX always does).
        frames_per_file: inclusive range of the number of frames of a multi-frame file.
        multiframe_splits: the splits that may hold multi-frame files; the others hold single-frame files
            only, one scene per entry (e.g. a validation split whose frames are independent scenes). The
            other splits' files do not change with it: each file is drawn from ``(seed, split, index)``.

    Returns:
        Path of ``datalist.json``.
    """
    config = config if config is not None else FluoroscopyConfig()
    fractions = {
        "multiframe_fraction": multiframe_fraction,
        "compressed_fraction": compressed_fraction,
        "monochrome1_fraction": monochrome1_fraction,
        "voi_lut_fraction": voi_lut_fraction,
    }
    for name, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Argument `{name}` must be in [0, 1], got {value}.")
    if not 1 <= frames_per_file[0] <= frames_per_file[1]:
        raise ValueError(
            f"Argument `frames_per_file` must be a range (low, high) with 1 <= low <= high, got {frames_per_file}."
        )
    unknown = set(multiframe_splits) - set(_SPLITS)
    if unknown:
        raise ValueError(f"Argument `multiframe_splits` must name splits of {_SPLITS}, got {sorted(unknown)}.")
    output_dir = Path(output_dir)
    syntaxes = lossless_transfer_syntaxes()
    datalist: dict = {"landmark_names": list(config.landmark_names)}
    for split_index, (split, n_entries) in enumerate(zip(_SPLITS, (n_train, n_val, n_test), strict=True)):
        (output_dir / split).mkdir(parents=True, exist_ok=True)
        entries: list[dict] = []
        file_index = 0
        while len(entries) < n_entries:
            choice = np.random.default_rng([seed, split_index, file_index, 0])
            mono1 = bool(choice.random() < monochrome1_fraction)
            multi = bool(choice.random() < multiframe_fraction) and not mono1 and split in multiframe_splits
            n_frames = min(int(choice.integers(frames_per_file[0], frames_per_file[1] + 1)), n_entries - len(entries))
            n_frames = n_frames if multi else 1
            compressed = bool(choice.random() < compressed_fraction)
            syntax = syntaxes[int(choice.integers(len(syntaxes)))] if compressed else None
            options = DicomWriteOptions(
                sop_class="DX" if mono1 else ("XA" if choice.random() < 0.5 else "RF"),
                photometric_interpretation="MONOCHROME1" if mono1 else "MONOCHROME2",
                spacing_source=SPACING_SOURCES[int(choice.integers(len(SPACING_SOURCES)))],
                voi_lut=mono1 or bool(choice.random() < voi_lut_fraction),
                **({"transfer_syntax": syntax} if syntax is not None else {}),
            )
            frames = generate_sequence(config, np.random.default_rng([seed, split_index, file_index, 1]), n_frames)
            relative = f"{split}/{file_index:06d}.dcm"
            write_dicom(output_dir / relative, frames, options, uid_entropy=[str(seed), split, str(file_index)])
            info = {
                "spacing_source": options.spacing_source,
                "sop_class": options.sop_class,
                "modality": options.sop_class,
                "photometric_interpretation": options.photometric_interpretation,
                "transfer_syntax": str(options.transfer_syntax),
            }
            for k, frame in enumerate(frames):
                entries.append(_entry(frame, relative, k if n_frames > 1 else None, info))
            file_index += 1
        datalist[split] = entries
    path = output_dir / "datalist.json"
    path.write_text(json.dumps(datalist, indent=1))
    return path


def save_preview_grid(datalist_path: str | Path, out_png: str | Path, n: int = 16) -> Path:
    """Save a grid of up to `n` frames (one per file) with the annotated tip marked (for docs); returns `out_png`.

    Frames are read back from the DICOM files (MONOCHROME1 shown inverted back, i.e. as displayed), so the
    picture also checks the files and the ``(x, y) = (column, row)`` convention end to end.
    """
    from matplotlib.figure import Figure
    from pydicom import dcmread

    datalist_path = Path(datalist_path)
    data = json.loads(datalist_path.read_text())
    entries = list({e["image"]: e for split in _SPLITS for e in data.get(split, [])}.values())  # one per file
    picks = [entries[i] for i in np.linspace(0, len(entries) - 1, min(n, len(entries))).round().astype(int)]
    cols = math.ceil(math.sqrt(len(picks)))
    rows = math.ceil(len(picks) / cols)
    fig = Figure(figsize=(2.6 * cols, 2.8 * rows), dpi=110)
    for i, entry in enumerate(picks):
        ds = dcmread(datalist_path.parent / entry["image"])
        pixels = ds.pixel_array
        raster = pixels[entry["frame"]] if "frame" in entry else pixels
        if ds.PhotometricInterpretation == "MONOCHROME1":
            raster = (2 ** int(ds.BitsStored) - 1) - raster
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(raster, cmap="gray", vmin=0, vmax=2 ** int(ds.BitsStored) - 1, interpolation="nearest")
        tip = entry["label"]["tip"]
        if tip:
            ax.plot(tip[0][0], tip[0][1], marker="o", markersize=9, markerfacecolor="none", color="#ff3030", mew=1.2)
        frame = f" f{entry['frame']}" if "frame" in entry else ""
        ts = {"1.2.840.10008.1.2.5": "RLE", "1.2.840.10008.1.2.4.80": "JPEG-LS", "1.2.840.10008.1.2.4.90": "J2K"}
        syntax = ts.get(entry["transfer_syntax"], "raw")
        mono1 = " M1" if ds.PhotometricInterpretation == "MONOCHROME1" else ""
        ax.set_title(f"{entry['sop_class']} {syntax} {ds.BitsStored}b{frame}{mono1}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
