"""Realistic synthetic laparoscopic RGB frames with articulated instruments and exact clasper positions.

A frame is painted back to front: wet tissue (folds, vessels, fat, fine relief, shaded by the scope's light
with specular highlights) and blood -> for each instrument its soft shadow, then the instrument itself (a
dark shaft entering from the image border, a metallic wrist, two jaws), each optionally motion-blurred ->
a tissue flap that hides part of a needle driver's jaws -> surgical smoke -> uneven illumination and
vignetting -> a circular scope mask -> sensor noise -> 8-bit RGB. Every artefact has a switch in
`EndoscopyConfig`, and the same seed gives the same frame.

Instruments are needle drivers (the labelled tool type, like EndoVis'15 tool1/tool2) and optionally curved
scissors, a second tool type meant as an unseen distractor: thinner, curved, pointed blades, and their
jaws are not labelled.

Coordinates (DESIGN.md section 2)
---------------------------------
`EndoscopyFrame.raster` is the PNG file's pixels, ``raster[row, column, channel]``, shape ``(rows, columns,
3)``: what ``numpy.asarray(PIL.Image.open(path))`` returns. `EndoscopyFrame.image` holds the same values in
MONAI's layout, ``image[c, x, y] == raster[y, x, c]``, shape ``(3, columns, rows)``: what ``LoadImage`` (PIL
reader, which gives ``(x, y, C)``) followed by ``EnsureChannelFirst`` returns for the PNG, as float32. A
point is ``(x, y) = (column, row)`` with pixel centres at integer coordinates: a point ``(x, y)`` lies on
file pixel ``raster[round(y), round(x)]`` and on tensor index ``image[:, round(x), round(y)]``.

Landmarks
---------
Two landmark channels, ``"left_clasper"`` and ``"right_clasper"``: the tips of a needle driver's two jaws,
i.e. the centre of each jaw's rounded tip (half the tip's width back from its outer end). Left and right are
as seen in the image when looking along the instrument from the shaft towards the jaws (the convention of
the EndoVis'15 annotations). Slot ``k`` of the ``(L, K_max, 2)`` points is the k-th needle driver of the
frame (``K_max = config.instruments[1]``); a clasper outside the image or outside the scope's field is absent
(NaN). A clasper hidden by a tissue flap or by another instrument is still labelled (an annotator infers it
from the visible instrument); `EndoscopyFrame.visible` tells which are.

Datalist (written by `make_endoscopy_dataset`, readable by ``monai.data.load_decathlon_datalist``)
----------------------------------------------------------------------------------------------------
::

    {
      "landmark_names": ["left_clasper", "right_clasper"],   # order of the landmark channels
      "max_instances": 3,                                     # K_max for LoadLandmarksd
      "training": [entry, ...], "validation": [...], "test": [...],
      "test_scissors": [...]                                  # only with scissors_in_test=True
    }
    entry = {
      "image": "training/000003.png",                         # relative to the datalist's folder
      "label": {"left_clasper": [[x, y], ...],                # annotated points = truth + annotation noise;
                "right_clasper": [[x, y], ...]},              # present instances only, needle-driver order
      "label_true": {...},                                    # exact ground truth, same layout
      "label_visible": {"left_clasper": [true, ...], ...},    # per point of "label_true": not hidden
      "has_scissors": false,                                  # a scissors (unseen distractor) is in view
      "scissors_tips": [[x, y], ...]                          # its jaw tips in the field (not labels)
    }

All points are ``(x, y) = (column, row)`` of the PNG raster, in pixels, rounded to 1e-4 pixel.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .image_ops import motion_blur_kernel, pixel_grid, smooth_noise, smooth_step

__all__ = [
    "LANDMARK_NAMES",
    "EndoscopyConfig",
    "EndoscopyFrame",
    "generate_endoscopy_frame",
    "make_endoscopy_dataset",
    "save_endoscopy_preview_grid",
]

LANDMARK_NAMES = ("left_clasper", "right_clasper")
"""Names of the landmark channels: the jaw tips of the needle drivers."""
PART_SHAFT, PART_WRIST, PART_JAW = 1, 2, 3
"""Values of `EndoscopyFrame.part_map` (0 is tissue)."""

_SPLITS = ("training", "validation", "test")
_SCISSORS_SPLIT = "test_scissors"
_BORDER_SIDES = ("left", "right", "top", "bottom")
_BORDER_WEIGHTS = (0.3, 0.3, 0.25, 0.15)

FloatRange = tuple[float, float]
IntRange = tuple[int, int]


@dataclass(frozen=True)
class EndoscopyConfig:
    """What a synthetic laparoscopic frame contains.

    Ranges ``(low, high)`` are drawn uniformly per frame (integer ranges inclusive); ``*_probability`` fields
    give the chance that a frame (or, where stated, an instrument) shows the item, and 0 turns it off.
    Boolean fields switch an effect on or off. Sizes are in pixels of a 256-pixel-high frame and scale with
    ``min(rows, columns) / 256``.
    """

    rows: int = 256
    """Image height in pixels."""
    columns: int = 320
    """Image width in pixels (EndoVis'15 frames are 720x576, i.e. 5:4)."""

    instruments: IntRange = (1, 3)
    """Number of instruments in a frame; ``instruments[1]`` is K_max, the number of instance slots."""
    scissors_probability: float = 0.0
    """Chance that one of the frame's instruments is a curved scissors (unseen distractor, not labelled)."""
    annotation_noise_px: float = 0.0
    """Standard deviation of the Gaussian annotation noise added to every clasper, in pixels per axis."""
    instrument_scale: FloatRange = (0.8, 1.25)
    """Size of an instrument relative to the nominal one (closer to or farther from the camera)."""
    jaw_opening_deg: FloatRange = (0.0, 50.0)
    """Angle between the two jaws, degrees."""
    wrist_bend_deg: FloatRange = (0.0, 45.0)
    """Bend of each of the two wrist joints away from the shaft's direction (random side), degrees."""

    tissue_texture: bool = True
    """Folds, vessels, fat and fine surface relief (off: tissue of one flat colour)."""
    specular_highlights: bool = True
    """Specular highlights on the wet tissue and on the metal of the instruments."""
    shadows: bool = True
    """Soft shadows of the instruments on what lies beneath them."""
    blood_probability: float = 0.3
    """Chance of blood pools on the tissue."""
    tissue_occlusion_probability: float = 0.25
    """Chance that a tissue flap in the foreground hides part of a needle driver's jaws."""
    motion_blur_probability: float = 0.2
    """Chance, per instrument, of linear motion blur (the instrument moves during the exposure)."""
    motion_blur_px: FloatRange = (3.0, 10.0)
    """Length of the motion-blur streak, pixels."""
    smoke_probability: float = 0.2
    """Chance of surgical smoke (a bright, low-contrast haze)."""
    smoke_density: FloatRange = (0.25, 0.7)
    """Peak opacity of the smoke."""
    vignetting: bool = True
    """Uneven illumination by the scope's light: bright centre, dark borders."""
    scope_mask_probability: float = 0.5
    """Chance of a circular scope mask (black outside the scope's round field)."""
    sensor_noise: bool = True
    """Camera sensor noise (off: the noise-free image)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"Argument `{f.name}` must be in [0, 1], got {value}.")
            if f.type in ("FloatRange", "IntRange") and not (len(value) == 2 and 0 <= value[0] <= value[1]):
                raise ValueError(f"Argument `{f.name}` must be a (low, high) range with 0 <= low <= high, got {value}.")
        if self.rows < 64 or self.columns < 64:
            raise ValueError(f"Arguments `rows` and `columns` must be >= 64, got {self.rows} and {self.columns}.")
        if self.instruments[1] > 4:
            raise ValueError(f"Argument `instruments` must allow at most 4 instruments, got {self.instruments}.")
        if self.instrument_scale[0] <= 0:
            raise ValueError(f"Argument `instrument_scale` must be > 0, got {self.instrument_scale}.")
        if self.annotation_noise_px < 0:
            raise ValueError(f"Argument `annotation_noise_px` must be >= 0, got {self.annotation_noise_px}.")

    @property
    def max_instances(self) -> int:
        """K_max: the number of instance slots of the landmark arrays."""
        return max(1, self.instruments[1])


@dataclass(frozen=True)
class EndoscopyFrame:
    """One rendered frame with its exact and annotated clasper points (layouts: module docstring)."""

    image: np.ndarray
    """uint8 ``(3, columns, rows)``, indexed ``[c, x, y]`` (MONAI's layout of the PNG)."""
    landmarks: np.ndarray
    """float64 ``(L, K_max, 2)`` exact ``(x, y)`` of each clasper (L = 2) of each needle driver; NaN when absent."""
    landmarks_annotated: np.ndarray
    """float64 ``(L, K_max, 2)``: `landmarks` plus Gaussian annotation noise."""
    visible: np.ndarray
    """bool ``(L, K_max)``: the clasper's pixel shows that instrument's jaw (not hidden); False when absent."""
    instruments: tuple[str, ...]
    """Kind of each instrument (``"needle_driver"`` or ``"scissors"``), back to front."""
    instance_map: np.ndarray
    """int8 ``(columns, rows)``, ``[x, y]``: ``i + 1`` where instrument ``instruments[i]`` is seen, else 0."""
    part_map: np.ndarray
    """int8 ``(columns, rows)``, ``[x, y]``: `PART_SHAFT`, `PART_WRIST` or `PART_JAW` where seen, else 0."""
    scissors_tips: np.ndarray
    """float64 ``(N, 2)``: ``(x, y)`` of the scissors' jaw tips inside the field (never labelled)."""
    landmark_names: tuple[str, ...] = LANDMARK_NAMES
    """Names of the L landmark channels."""

    @property
    def raster(self) -> np.ndarray:
        """The PNG view of `image`: shape ``(rows, columns, 3)``, indexed ``[row, column, channel]``."""
        return self.image.transpose(2, 1, 0)


# --------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Segment:
    """A tapered rod from ``start`` to ``end`` (``(x, y)``) with radii ``radius[0]`` -> ``radius[1]``."""

    start: np.ndarray
    end: np.ndarray
    radius: FloatRange
    part: int
    albedo: float
    shininess: float
    stripes_px: float  # period of the bands across the rod (serrations, cables); 0 for none


@dataclass(frozen=True)
class _Instrument:
    kind: str
    segments: tuple[_Segment, ...]
    tips: np.ndarray  # (2, 2): left, right jaw tip (x, y)
    blur: np.ndarray | None  # motion-blur kernel


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _left_of(d: np.ndarray) -> np.ndarray:
    """The unit normal on the left of direction ``d`` as the image shows it (y pointing down)."""
    return np.array([d[1], -d[0]])


def _turn(d: np.ndarray, angle: float) -> np.ndarray:
    """``d`` turned by ``angle`` radians towards its left."""
    return math.cos(angle) * d + math.sin(angle) * _left_of(d)


def _entry_point(rng: np.random.Generator, w: int, h: int, margin: float) -> np.ndarray:
    """A point `margin` pixels outside a random image border (sides weighted like laparoscopic scenes)."""
    side = _BORDER_SIDES[int(rng.choice(4, p=_BORDER_WEIGHTS))]
    f = rng.uniform(0.1, 0.9)
    return {
        "left": np.array([-margin, f * h]),
        "right": np.array([w - 1 + margin, f * h]),
        "top": np.array([f * w, -margin]),
        "bottom": np.array([f * w, h - 1 + margin]),
    }[side]


def _sample_instrument(
    config: EndoscopyConfig, rng: np.random.Generator, kind: str, shape: tuple[int, int]
) -> _Instrument:
    """Shaft from outside the border to the wrist, a two-joint wrist, and two jaws (straight or curved)."""
    h, w = shape
    scale = rng.uniform(*config.instrument_scale) * min(h, w) / 256.0
    r_wrist = 9.0 * scale
    wrist = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
    entry = _entry_point(rng, w, h, margin=40.0 * scale)
    d_shaft = _unit(wrist - entry)
    shaft_albedo = rng.uniform(0.45, 0.6) if rng.random() < 0.3 else rng.uniform(0.06, 0.18)
    bend = np.deg2rad(rng.uniform(*config.wrist_bend_deg, size=2)) * rng.choice([-1.0, 1.0], size=2)
    d_wrist = _turn(d_shaft, bend[0])
    head = wrist + d_wrist * rng.uniform(1.6, 2.2) * r_wrist
    d_head = _turn(d_wrist, bend[1])
    metal = rng.uniform(0.5, 0.7)
    segments = [
        _Segment(entry - 60.0 * scale * d_shaft, wrist, (1.6 * r_wrist, r_wrist), PART_SHAFT, shaft_albedo, 25.0, 0.0),
        _Segment(wrist, head, (0.95 * r_wrist, 0.85 * r_wrist), PART_WRIST, metal, 40.0, 3.5 * scale),
    ]
    half_opening = 0.5 * np.deg2rad(rng.uniform(*config.jaw_opening_deg))
    tips = np.empty((2, 2))
    scissors = kind == "scissors"
    jaw_length = (rng.uniform(1.4, 1.8) if scissors else rng.uniform(1.8, 2.3)) * r_wrist
    curl = rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.4)  # curvature of the scissors' blades, rad per third
    for j, side in enumerate((1.0, -1.0)):  # left jaw, right jaw
        lateral = _left_of(d_head) * side * (0.25 if scissors else 0.42) * r_wrist
        start = head + lateral
        direction = _turn(d_head, side * half_opening)
        if scissors:
            radii = np.linspace(0.32, 0.08, 4) * r_wrist
            for third in range(3):
                direction = _turn(direction, curl)
                end = start + direction * jaw_length / 3.0
                segments.append(_Segment(start, end, (radii[third], radii[third + 1]), PART_JAW, metal, 60.0, 0.0))
                start = end
        else:
            end = start + direction * jaw_length
            segments.append(_Segment(start, end, (0.52 * r_wrist, 0.3 * r_wrist), PART_JAW, metal, 50.0, 1.6 * scale))
        tips[j] = end
    blur = None
    if rng.random() < config.motion_blur_probability:
        blur = motion_blur_kernel(rng.uniform(*config.motion_blur_px) * scale, rng.uniform(0, math.pi))
    return _Instrument(kind, tuple(segments), tips, blur)


# --------------------------------------------------------------------------------------------- rendering


def _shade_segment(
    seg: _Segment, x: np.ndarray, y: np.ndarray, light: np.ndarray, specular: bool, streaks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage ``(rows, columns)`` and grey level of a rod lit from (about) the camera, as a shaded cylinder."""
    axis = seg.end - seg.start
    length = float(np.linalg.norm(axis))
    d = axis / length
    rx, ry = x - seg.start[0], y - seg.start[1]
    along = np.clip((rx * d[0] + ry * d[1]) / length, 0.0, 1.0)
    across = rx * -d[1] + ry * d[0]  # signed distance from the axis line (right of d is positive)
    radius = seg.radius[0] + (seg.radius[1] - seg.radius[0]) * along
    dist = np.hypot(rx - along * axis[0], ry - along * axis[1])
    coverage = np.clip(radius - dist + 0.5, 0.0, 1.0)
    t = np.clip(across / radius, -0.999, 0.999)  # lateral component of the surface normal
    nz = np.sqrt(1.0 - t * t)
    lateral = float(light[0] * -d[1] + light[1] * d[0])
    lz = math.sqrt(max(0.0, 1.0 - lateral**2))
    diffuse = np.clip(t * lateral + nz * lz, 0.0, 1.0)
    grey = seg.albedo * (0.15 + 0.85 * diffuse) * (1.0 + 0.08 * np.interp(along * length, np.arange(64), streaks))
    if seg.stripes_px > 0:
        grey *= 0.8 + 0.2 * np.cos(2 * math.pi * along * length / seg.stripes_px) ** 2
    if specular:
        half = np.array([lateral, lz + 1.0]) / math.hypot(lateral, lz + 1.0)
        grey = grey + 0.9 * np.clip(t * half[0] + nz * half[1], 0.0, 1.0) ** seg.shininess
    return coverage.astype(np.float32), grey.astype(np.float32)


def _bounding_box(inst: _Instrument, shape: tuple[int, int], pad: float) -> tuple[slice, slice]:
    """Rows and columns that can hold the instrument (plus `pad` pixels), clipped to the image."""
    ends = np.array([p for s in inst.segments for p in (s.start, s.end)])
    reach = max(max(s.radius) for s in inst.segments) + pad
    lo = np.floor(ends.min(axis=0) - reach).astype(int)
    hi = np.ceil(ends.max(axis=0) + reach).astype(int) + 1
    return (slice(max(lo[1], 0), min(hi[1], shape[0])), slice(max(lo[0], 0), min(hi[0], shape[1])))


def _render_instrument(
    inst: _Instrument, shape: tuple[int, int], light: np.ndarray, config: EndoscopyConfig, rng: np.random.Generator
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray]:
    """(box, alpha, premultiplied RGB, part map) of one instrument inside its bounding box (motion-blurred)."""
    pad = 2.0 + (inst.blur.shape[0] if inst.blur is not None else 0)
    box = _bounding_box(inst, shape, pad)
    x, y = pixel_grid(shape)
    x, y = x[box], y[box]
    alpha = np.zeros(x.shape, np.float32)
    grey = np.zeros(x.shape, np.float32)
    parts = np.zeros(x.shape, np.int8)
    streaks = rng.standard_normal(64)
    for seg in inst.segments:  # shaft, wrist, then jaws: later parts lie on top where they overlap
        coverage, shade = _shade_segment(seg, x, y, light, config.specular_highlights, streaks)
        grey = coverage * shade + (1.0 - coverage) * grey
        alpha = coverage + (1.0 - coverage) * alpha
        parts[coverage > 0.5] = seg.part
    tint = np.array([1.0, 0.98, 0.96], np.float32) * rng.uniform(0.9, 1.1)  # slightly warm light on the metal
    rgb = grey[..., None] * tint
    if inst.blur is not None:
        kernel = inst.blur.astype(np.float32)
        alpha = ndimage.convolve(alpha, kernel, mode="constant")
        rgb = np.stack([ndimage.convolve(rgb[..., c], kernel, mode="constant") for c in range(3)], axis=-1)
    else:
        rgb = rgb * alpha[..., None]
    return box, alpha, rgb, parts


def _tissue(config: EndoscopyConfig, rng: np.random.Generator, shape: tuple[int, int], light: np.ndarray) -> np.ndarray:
    """Lit wet tissue, float32 RGB ``(rows, columns, 3)`` in [0, ~1.3]."""
    scale = min(shape) / 256.0
    base = np.array([rng.uniform(0.72, 0.88), rng.uniform(0.28, 0.42), rng.uniform(0.26, 0.38)], np.float32)
    if not config.tissue_texture:
        return np.broadcast_to(base * 0.85, (*shape, 3)).astype(np.float32)
    folds = smooth_noise(rng, shape, 30.0 * scale)
    mid = smooth_noise(rng, shape, 8.0 * scale)
    bumps = smooth_noise(rng, shape, 3.5 * scale)
    vessel_field = smooth_noise(rng, shape, 18.0 * scale)
    vessel_gate = smooth_noise(rng, shape, 40.0 * scale)
    fat = smooth_step(smooth_noise(rng, shape, 24.0 * scale) - rng.uniform(1.2, 2.2), 0.6)

    height = 14.0 * scale * folds + 2.0 * scale * mid + 0.8 * scale * bumps
    gy, gx = np.gradient(height)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny, nz = -gx / norm, -gy / norm, 1.0 / norm
    lz = math.sqrt(1.0 - float(light @ light))
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * lz, 0.0, 1.0)

    vessels = np.exp(-((vessel_field / 0.12) ** 2)) * smooth_step(vessel_gate - 0.3, 0.5)
    vessels = ndimage.gaussian_filter(vessels, 0.7 * scale)[..., None]
    crease = np.clip(-folds - 0.3, 0.0, 2.0)[..., None] / 2.0
    albedo = base * (1.0 + 0.12 * mid[..., None]) * (1.0 - 0.45 * crease)
    albedo = albedo * (1.0 - 0.45 * vessels) + 0.45 * vessels * np.array([0.42, 0.06, 0.14], np.float32)
    fat = fat[..., None] * rng.uniform(0.5, 0.9)
    albedo = albedo * (1.0 - fat) + fat * np.array([0.9, 0.74, 0.5], np.float32) * (1.0 + 0.1 * bumps[..., None])
    rgb = albedo * (0.25 + 0.8 * diffuse[..., None] ** 1.5)
    if config.specular_highlights:
        half = np.array([light[0], light[1], lz + 1.0]) / math.hypot(light[0], light[1], lz + 1.0)
        n_dot_h = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0.0, 1.0)
        wet = smooth_step(smooth_noise(rng, shape, 10.0 * scale) - rng.uniform(0.0, 0.8), 0.5)
        glint = n_dot_h ** rng.uniform(300.0, 600.0) * smooth_step(bumps - 0.8, 0.4)
        rgb = rgb + (rng.uniform(0.8, 1.2) * wet * glint)[..., None]
    return rgb.astype(np.float32)


def _blood(rng: np.random.Generator, shape: tuple[int, int], rgb: np.ndarray, specular: bool) -> np.ndarray:
    """`rgb` with glossy dark-red blood pools."""
    scale = min(shape) / 256.0
    pool = smooth_step(smooth_noise(rng, shape, 14.0 * scale) - rng.uniform(1.2, 1.9), 0.15)[..., None]
    colour = np.array([rng.uniform(0.3, 0.45), 0.02, 0.03], np.float32)
    shading = (rgb.mean(axis=-1, keepdims=True) / rgb.mean()).clip(0.5, 1.5)  # the pools follow the tissue's relief
    out = rgb * (1.0 - pool) + pool * colour * shading
    if specular:
        glint = smooth_step(smooth_noise(rng, shape, 2.0 * scale) - 2.0, 0.3)[..., None]
        out = out + 0.8 * pool * glint
    return out


def _flap(
    rng: np.random.Generator, shape: tuple[int, int], tissue: np.ndarray, target: np.ndarray, size: float
) -> tuple[np.ndarray, np.ndarray]:
    """A foreground tissue flap of about `size` pixels reaching over `target` ``(x, y)``: (alpha, RGB)."""
    x, y = pixel_grid(shape)
    angle = rng.uniform(0, 2 * math.pi)
    centre = target + np.array([math.cos(angle), math.sin(angle)]) * size * rng.uniform(0.8, 1.3)
    dx, dy = x - centre[0], y - centre[1]
    theta = np.arctan2(dy, dx)
    phases = rng.uniform(0, 2 * math.pi, 3)
    radius = (
        size
        * rng.uniform(1.0, 1.5)
        * (1.0 + 0.18 * np.sin(2 * theta + phases[0]) + 0.1 * np.sin(3 * theta + phases[1]) + 0.05 * np.sin(5 * theta))
    )
    inside = radius - np.hypot(dx, dy)
    alpha = np.clip(inside + 0.5, 0.0, 1.0)
    rim = 0.55 + 0.45 * smooth_step(inside - 0.25 * size, 0.25 * size)
    shift = rng.integers(-shape[0] // 3, shape[0] // 3, 2)
    rgb = np.roll(tissue, tuple(shift), axis=(0, 1)) * (rng.uniform(1.05, 1.25) * rim)[..., None]
    return alpha.astype(np.float32), rgb.astype(np.float32)


def _smoke(config: EndoscopyConfig, rng: np.random.Generator, shape: tuple[int, int], rgb: np.ndarray) -> np.ndarray:
    """`rgb` seen through a bright, patchy haze."""
    haze = smooth_step(smooth_noise(rng, shape, 45.0 * min(shape) / 256.0) + rng.uniform(-0.5, 0.8), 1.2)
    opacity = (rng.uniform(*config.smoke_density) * haze)[..., None]
    colour = np.array([0.86, 0.84, 0.82], np.float32) * rng.uniform(0.85, 1.05)
    return rgb * (1.0 - opacity) + opacity * colour


def _illumination(rng: np.random.Generator, shape: tuple[int, int], vignetting: bool) -> np.ndarray:
    """Relative brightness ``(rows, columns)``: the scope light's fall-off towards the borders."""
    if not vignetting:
        return np.ones(shape, np.float32)
    h, w = shape
    x, y = pixel_grid(shape)
    centre = np.array([w, h]) * (0.5 + rng.normal(0.0, 0.06, 2))
    r = np.hypot(x - centre[0], y - centre[1]) / (0.5 * math.hypot(h, w))
    direction = rng.uniform(0, 2 * math.pi)
    ramp = ((x - w / 2) * math.cos(direction) + (y - h / 2) * math.sin(direction)) / max(h, w)
    return ((1.0 - rng.uniform(0.35, 0.65) * r**2) * (1.0 + rng.uniform(-0.3, 0.3) * ramp)).astype(np.float32)


def _scope_mask(rng: np.random.Generator, shape: tuple[int, int], on: bool) -> np.ndarray:
    """Circular field of the scope ``(rows, columns)``: 1 inside, 0 outside, a 1-2 px soft edge."""
    if not on:
        return np.ones(shape, np.float32)
    h, w = shape
    x, y = pixel_grid(shape)
    centre = np.array([w, h]) * (0.5 + rng.normal(0.0, 0.02, 2))
    radius = rng.uniform(0.46, 0.6) * w
    return smooth_step(radius - np.hypot(x - centre[0], y - centre[1]), rng.uniform(1.0, 2.0)).astype(np.float32)


def _in_field(point: np.ndarray, field: np.ndarray) -> bool:
    """Whether ``(x, y)`` lies inside the image and the scope's field."""
    h, w = field.shape
    if not (-0.5 <= point[0] < w - 0.5 and -0.5 <= point[1] < h - 0.5):
        return False
    return bool(field[round(point[1]), round(point[0])] > 0.5)


def generate_endoscopy_frame(config: EndoscopyConfig, rng: np.random.Generator) -> EndoscopyFrame:
    """One synthetic laparoscopic frame with its clasper points; see `EndoscopyFrame` and the module docstring.

    Deterministic for the state of `rng`: the same seed gives the same frame, bit for bit.
    """
    shape = (config.rows, config.columns)
    k_max = config.max_instances
    light = rng.normal(0.0, 0.2, 2).clip(-0.4, 0.4)  # in-plane offset of the light from the viewing axis
    n_instruments = int(rng.integers(config.instruments[0], config.instruments[1] + 1))
    kinds = ["needle_driver"] * n_instruments
    if n_instruments and rng.random() < config.scissors_probability:
        kinds[int(rng.integers(n_instruments))] = "scissors"
    instruments = [_sample_instrument(config, rng, kind, shape) for kind in kinds]

    rgb = _tissue(config, rng, shape, light)
    if rng.random() < config.blood_probability:
        rgb = _blood(rng, shape, rgb, config.specular_highlights)
    tissue = rgb
    instance_map = np.zeros(shape, np.int8)
    part_map = np.zeros(shape, np.int8)
    shadow_offset = -light * 25.0 * min(shape) / 256.0
    for i, inst in enumerate(instruments):
        box, alpha, premultiplied, parts = _render_instrument(inst, shape, light, config, rng)
        if config.shadows:
            cast = np.zeros(shape, np.float32)
            cast[box] = alpha
            cast = ndimage.gaussian_filter(ndimage.shift(cast, shadow_offset[::-1], order=1), 5.0)
            rgb = rgb * (1.0 - 0.55 * cast)[..., None]
        rgb[box] = premultiplied + (1.0 - alpha[..., None]) * rgb[box]
        seen = parts > 0
        instance_map[box][seen] = i + 1
        part_map[box][seen] = parts[seen]

    drivers = [inst for inst in instruments if inst.kind == "needle_driver"]
    if drivers and rng.random() < config.tissue_occlusion_probability:
        target = drivers[int(rng.integers(len(drivers)))]
        jaw_length = float(np.linalg.norm(target.tips[0] - target.segments[1].end))
        alpha, flap = _flap(rng, shape, tissue, target.tips.mean(axis=0), jaw_length)
        rgb = rgb * (1.0 - alpha[..., None]) + alpha[..., None] * flap
        instance_map[alpha > 0.5] = 0
        part_map[alpha > 0.5] = 0
    if rng.random() < config.smoke_probability:
        rgb = _smoke(config, rng, shape, rgb)
    field = _scope_mask(rng, shape, rng.random() < config.scope_mask_probability)
    rgb = rgb * (_illumination(rng, shape, config.vignetting) * field)[..., None]
    if config.sensor_noise:
        sigma = rng.uniform(0.008, 0.025)
        rgb = rgb + sigma * rng.standard_normal((*shape, 3), dtype=np.float32)
    raster = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)

    landmarks = np.full((len(LANDMARK_NAMES), k_max, 2), np.nan)
    visible = np.zeros((len(LANDMARK_NAMES), k_max), bool)
    scissors_tips = []
    for i, inst in enumerate(instruments):
        in_field = [tip for tip in inst.tips if _in_field(tip, field)]
        if inst.kind == "scissors":
            scissors_tips.extend(in_field)
            continue
        slot = sum(other.kind == "needle_driver" for other in instruments[:i])
        for channel, tip in enumerate(inst.tips):
            if _in_field(tip, field):
                landmarks[channel, slot] = tip
                pixel = (round(tip[1]), round(tip[0]))
                visible[channel, slot] = instance_map[pixel] == i + 1 and part_map[pixel] == PART_JAW
    noise = rng.normal(0.0, config.annotation_noise_px, landmarks.shape) if config.annotation_noise_px else 0.0
    return EndoscopyFrame(
        image=raster.transpose(2, 1, 0),
        landmarks=landmarks,
        landmarks_annotated=landmarks + noise,
        visible=visible,
        instruments=tuple(kinds),
        instance_map=instance_map.T,
        part_map=part_map.T,
        scissors_tips=np.array(scissors_tips, dtype=np.float64).reshape(-1, 2),
    )


# --------------------------------------------------------------------------------------------- dataset


def _points_json(points: np.ndarray) -> list[list[float]]:
    """``(K, 2)`` points -> ``[[x, y], ...]`` of the present ones (no NaN), rounded to 1e-4 pixel."""
    return [[round(float(x), 4), round(float(y), 4)] for x, y in points if not np.isnan([x, y]).any()]


def _entry(frame: EndoscopyFrame, image: str) -> dict:
    names = frame.landmark_names
    present = ~np.isnan(frame.landmarks).any(axis=-1)
    return {
        "image": image,
        "label": {n: _points_json(p) for n, p in zip(names, frame.landmarks_annotated, strict=True)},
        "label_true": {n: _points_json(p) for n, p in zip(names, frame.landmarks, strict=True)},
        "label_visible": {
            n: [bool(v) for v in vis[ok]] for n, vis, ok in zip(names, frame.visible, present, strict=True)
        },
        "has_scissors": "scissors" in frame.instruments,
        "scissors_tips": _points_json(frame.scissors_tips),
    }


def make_endoscopy_dataset(
    output_dir: str | Path,
    n_train: int,
    n_val: int,
    n_test: int,
    config: EndoscopyConfig | None = None,
    seed: int = 0,
    scissors_in_test: bool = False,
) -> Path:
    """Write synthetic laparoscopic PNG frames and a MONAI-style datalist (format: module docstring).

    Args:
        output_dir: folder for ``datalist.json`` and the split folders of PNG files.
        n_train, n_val, n_test: number of frames per split.
        config: frame content; default `EndoscopyConfig()` (needle drivers only).
        seed: everything follows from it; the same seed writes the same bytes.
        scissors_in_test: also write a ``test_scissors`` split of `n_test` frames in which one instrument is a
            curved scissors (the unseen distractor); the other splits follow `config`.

    Returns:
        Path of ``datalist.json``.
    """
    config = config if config is not None else EndoscopyConfig()
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < 0:
            raise ValueError(f"Argument `{name}` must be >= 0, got {n}.")
    splits = [(split, n, config) for split, n in zip(_SPLITS, (n_train, n_val, n_test), strict=True)]
    if scissors_in_test:
        at_least_one = (max(1, config.instruments[0]), max(1, config.instruments[1]))
        scissors = replace(config, scissors_probability=1.0, instruments=at_least_one)
        splits.append((_SCISSORS_SPLIT, n_test, scissors))
    output_dir = Path(output_dir)
    datalist: dict = {"landmark_names": list(LANDMARK_NAMES), "max_instances": config.max_instances}
    for split_index, (split, n, split_config) in enumerate(splits):
        (output_dir / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for i in range(n):
            frame = generate_endoscopy_frame(split_config, np.random.default_rng([seed, split_index, i]))
            relative = f"{split}/{i:06d}.png"
            Image.fromarray(frame.raster).save(output_dir / relative)
            entries.append(_entry(frame, relative))
        datalist[split] = entries
    path = output_dir / "datalist.json"
    path.write_text(json.dumps(datalist, indent=1))
    return path


def save_endoscopy_preview_grid(datalist_path: str | Path, out_png: str | Path, n: int = 12) -> Path:
    """Save a grid of up to `n` frames with their claspers marked (for docs); returns `out_png`.

    Frames are read back from the PNG files, so the picture also checks the files and the ``(x, y) =
    (column, row)`` convention end to end. Left claspers: green circles; right claspers: cyan circles
    (faint when hidden); scissors jaw tips (not labels): red crosses.
    """
    from matplotlib.figure import Figure

    datalist_path = Path(datalist_path)
    data = json.loads(datalist_path.read_text())
    entries = [e for split in (*_SPLITS, _SCISSORS_SPLIT) for e in data.get(split, [])]
    picks = [entries[i] for i in np.linspace(0, len(entries) - 1, min(n, len(entries))).round().astype(int)]
    cols = math.ceil(math.sqrt(len(picks) * 1.5))
    rows = math.ceil(len(picks) / cols)
    fig = Figure(figsize=(2.6 * cols, 2.25 * rows), dpi=110)
    for i, entry in enumerate(picks):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(np.asarray(Image.open(datalist_path.parent / entry["image"])), interpolation="nearest")
        for name, colour in zip(LANDMARK_NAMES, ("#40ff40", "#40e0ff"), strict=True):
            for (x, y), seen in zip(entry["label_true"][name], entry["label_visible"][name], strict=True):
                ax.plot(
                    x,
                    y,
                    marker="o",
                    markersize=8,
                    markerfacecolor="none",
                    color=colour,
                    mew=1.1,
                    linestyle="none",
                    **({} if seen else {"alpha": 0.5}),
                )
        for x, y in entry["scissors_tips"]:
            ax.plot(x, y, marker="x", markersize=6, color="#ff3030", mew=1.2)
        ax.set_title(Path(entry["image"]).parent.name + (" (scissors)" if entry["has_scissors"] else ""), fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
