"""Turn one input file into network inputs: the work a decoding worker process does.

The checkpoint's ``preprocessing["reader"]`` selects how :func:`decode_file` reads a file:

- ``"XRayDicomReader"`` (the default): every frame of a 2D X-ray DICOM file, with
  :class:`~monai_adaloss.io.XRayDicomReader` (intensities in ``[0, 1]``, MONOCHROME2-like; colour
  frames as BT.601 luminance; legacy files without File Meta), with the file's pixel spacing (pixel
  units, with the reason in ``spacing_source``, when it is malformed) and UIDs; files outside
  ``DecodeSettings.modalities`` are skipped (:class:`DecodeFailure` with ``skipped``);
- ``"PILReader"`` (MONAI's reader for natural images): one PNG / JPEG frame with ``channels`` 1 or 3
  (:mod:`.images`, intensities ``value / 255``), without spacing or UIDs.

Either way the layout is ``(C, X, Y)`` = (channels, columns, rows) and each frame is brought to the
model's input size by the checkpoint's ``preprocessing["transforms"]``: the bundle's own frame
transforms, the ones its training used (:mod:`monai_adaloss.frame_transforms`); checkpoints without them
name a MONAI ``Resize`` mode instead (``resize_mode``, ``anti_aliasing``). It runs in a
worker process, so that a decoder that crashes takes only that process down (see :mod:`.pool`);
anything it returns must pickle.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Resize
from monai.utils import InterpolateMode
from pydicom.dataset import Dataset

from ..frame_transforms import build_frame_transforms, check_frame_transform_configs
from ..io import DEFAULT_MAX_PIXELS, XRayDicomReader, read_all_frames
from ..model_info import LandmarkModelInfo
from .errors import InferenceConfigError
from .images import IMAGE_MODES, read_image

__all__ = ["DICOM_READER", "IMAGE_READER", "DecodeFailure", "DecodeFn", "DecodeSettings", "DecodedFile", "decode_file"]

DICOM_READER = "XRayDicomReader"
"""``preprocessing["reader"]`` of models that read 2D X-ray DICOM frames (the default)."""
IMAGE_READER = "PILReader"
"""``preprocessing["reader"]`` of models that read PNG / JPEG frames (MONAI's ``LoadImage(reader="PILReader")``)."""


_NAMING_UID = re.compile(r"[0-9][0-9.]{0,63}")  # a SOP Instance UID that can name output files
_UID_KEYWORDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
_PREPROCESSING_KEYS = ("reader", "apply_voi_lut", "resize_mode", "anti_aliasing", "intensity", "channels", "transforms")


@dataclass(frozen=True)
class DecodeSettings:
    """How a file becomes network inputs (from the checkpoint's ``preprocessing``), plus what to keep.

    Attributes:
        input_size: the network's input grid ``(X, Y)``, tensor-axis order.
        reader: :data:`DICOM_READER` or :data:`IMAGE_READER`.
        channels: input channels of the network (1 for DICOM; 1 or 3 for images).
        apply_voi_lut: apply the file's VOI LUT/window (``XRayDicomReader``).
        resize_mode: MONAI ``Resize`` interpolation mode (``align_corners`` is left at MONAI's default).
        anti_aliasing: MONAI ``Resize`` anti-aliasing when down-sampling.
        transforms: the model's frame-transform configs (plain dicts, checked); when given they replace
            ``resize_mode`` / ``anti_aliasing``.
        max_pixels: files with more than Rows x Columns x NumberOfFrames pixels are rejected.
        keep_header: return the header attributes an SR references (for ``write_sr``; DICOM only).
        keep_display: return the frames at full resolution as uint8 (for overlays).
        modalities: DICOM Modality values to read (upper case); other files are skipped.
            ``None``: every file.
        invalid_spacing: ``"pixels"`` (default): a malformed spacing gives pixel units with the reason
            in ``spacing_source``; ``"raise"``: the file fails (see ``XRayDicomReader``).
    """

    input_size: tuple[int, int]
    reader: str = DICOM_READER
    channels: int = 1
    apply_voi_lut: bool = True
    resize_mode: str = InterpolateMode.AREA.value
    anti_aliasing: bool = False
    transforms: tuple[dict[str, Any], ...] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_header: bool = False
    keep_display: bool = False
    modalities: tuple[str, ...] | None = None
    invalid_spacing: str = "pixels"

    @classmethod
    def from_model_info(cls, info: LandmarkModelInfo, **kwargs: Any) -> DecodeSettings:
        """Read ``info.preprocessing`` and ``info.input_size``; ``kwargs`` set the other fields.

        Known preprocessing keys: ``reader`` (``"XRayDicomReader"``, the default, or ``"PILReader"``),
        ``apply_voi_lut`` (DICOM only, default true), ``resize_mode`` (default ``"area"``, MONAI
        ``Resize``'s default), ``anti_aliasing`` (default false), ``intensity`` (``"[0, 1]"``: what the
        DICOM reader gives, or 8-bit values / 255) and ``channels`` (1 for DICOM; 1 or 3 for images).

        Raises:
            InferenceConfigError: a 2D input size is missing, a key or value is not one inference
                can apply (applying part of a preprocessing would give wrong results silently), or
                ``keep_header`` (SR output) is asked of a model that reads images without UIDs.
        """
        pre: Mapping[str, Any] = info.preprocessing
        unknown = sorted(set(pre) - set(_PREPROCESSING_KEYS))
        if unknown:
            raise InferenceConfigError(
                f"The checkpoint's preprocessing has keys inference cannot apply: {unknown} "
                f"(known: {list(_PREPROCESSING_KEYS)})."
            )
        reader = pre.get("reader", DICOM_READER)
        channels = pre.get("channels", 1)
        supported: dict[str, tuple[Any, ...]] = {
            "reader": (DICOM_READER, IMAGE_READER),
            "intensity": ("[0, 1]",),
            "channels": (1,) if reader == DICOM_READER else tuple(IMAGE_MODES),
        }
        for key, values in supported.items():
            if key in pre and pre[key] not in values:
                raise InferenceConfigError(
                    f"The checkpoint's preprocessing `{key}` is {pre[key]!r}; inference supports "
                    f"{' or '.join(repr(v) for v in values)} (reader {reader!r})."
                )
        if reader != DICOM_READER and "apply_voi_lut" in pre:
            raise InferenceConfigError(f"The checkpoint's preprocessing `apply_voi_lut` is for DICOM, not {reader!r}.")
        if reader != DICOM_READER and kwargs.get("keep_header"):
            raise InferenceConfigError(
                f"DICOM SR output needs DICOM inputs with UIDs to reference; this model reads PNG/JPEG images "
                f"(preprocessing reader {reader!r}). Run without --sr (write_sr=False)."
            )
        if len(info.input_size) != 2:
            raise InferenceConfigError(f"2D frame inference needs a 2D `input_size`, got {list(info.input_size)}.")
        transforms: tuple[dict[str, Any], ...] = ()
        if "transforms" in pre:
            if {"resize_mode", "anti_aliasing"} & set(pre):
                raise InferenceConfigError(
                    "The checkpoint's preprocessing has both `transforms` and `resize_mode`/`anti_aliasing`."
                )
            try:
                transforms = tuple(check_frame_transform_configs(pre["transforms"]))
            except ValueError as err:
                raise InferenceConfigError(f"The checkpoint's preprocessing: {err}") from err
        mode = str(pre.get("resize_mode", cls.resize_mode))
        if mode not in {m.value for m in InterpolateMode}:
            raise InferenceConfigError(f"The checkpoint's preprocessing `resize_mode` {mode!r} is not a MONAI mode.")
        return cls(
            input_size=(int(info.input_size[0]), int(info.input_size[1])),
            reader=str(reader),
            channels=int(channels),
            apply_voi_lut=bool(pre.get("apply_voi_lut", True)),
            resize_mode=mode,
            anti_aliasing=bool(pre.get("anti_aliasing", False)),
            transforms=transforms,
            **kwargs,
        )


@dataclass
class DecodedFile:
    """One decoded input file.

    Attributes:
        path: the file.
        images: ``(F, C, *input_size)`` float32 network inputs, one per frame, in frame order.
        original_size: ``(X, Y)`` = (Columns, Rows) of the file's frames.
        spacing: ``(column spacing, row spacing)`` in mm per pixel, ``None`` when unknown.
        spacing_source: the tag (rule) that gave the spacing, ``"none"`` when unknown.
        uids: ``SOPInstanceUID``, ``SeriesInstanceUID``, ``StudyInstanceUID`` as stored ("" if absent;
            always "" for a non-DICOM file).
        header: the attributes an SR needs (with ``keep_header``), else ``None``.
        display: ``(F, X, Y)`` (greyscale) or ``(F, X, Y, 3)`` (colour) uint8 frames at full resolution
            (with ``keep_display``), else ``None``.
        dicom: whether the file is DICOM (its UIDs name its outputs).
        colour_conversion: how colour frames became the network's greyscale input (e.g.
            ``"BT.601 luminance of RGB"``); ``None`` for greyscale files.
    """

    path: str
    images: np.ndarray
    original_size: tuple[int, int]
    spacing: tuple[float, float] | None
    spacing_source: str
    uids: dict[str, str]
    header: Dataset | None = None
    display: np.ndarray | None = None
    dicom: bool = True
    colour_conversion: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def output_name(self) -> str:
        """What names the file's SR and overlays (unsanitised): the SOPInstanceUID of a DICOM file; for
        another file, or a DICOM file without a usable SOPInstanceUID (1-64 digits and dots), its stem and
        8 hex digits of its path's SHA-1 (stems repeat across folders)."""
        if self.dicom and _NAMING_UID.fullmatch(self.uids["SOPInstanceUID"]):
            return self.uids["SOPInstanceUID"]
        return f"{Path(self.path).stem}_{hashlib.sha1(self.path.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class DecodeFailure:
    """An input file that could not be decoded.

    Attributes:
        path: the file.
        reason: what is wrong, for the errors file.
        error: the error's kind: an exception class name, ``"DecoderCrash"`` or ``"DecoderTimeout"``.
        skipped: the file is outside the ``modalities`` policy: skipped, not failed.
    """

    path: str
    reason: str
    error: str
    skipped: bool = False


DecodeFn = Callable[[str, DecodeSettings], DecodedFile]
"""A module-level function ``(path, settings) -> DecodedFile`` that raises on a bad file."""


def decode_file(path: str, settings: DecodeSettings) -> DecodedFile:
    """Read every frame of ``path`` with ``settings.reader`` and resize it to the network's input grid.

    Raises:
        DicomReadError: for any problem with a DICOM file (see :mod:`monai_adaloss.io.dicom`).
        ImageReadError: for any problem with an image file (see :mod:`.images`).
    """
    if settings.reader == IMAGE_READER:
        return _decode_image(path, settings)
    reader = XRayDicomReader(
        apply_voi_lut=settings.apply_voi_lut,
        max_pixels=settings.max_pixels,
        invalid_spacing=settings.invalid_spacing,
        modalities=settings.modalities,
    )
    frames, meta = read_all_frames(path, reader)  # (F, X, Y) in [0, 1]
    images = _to_network_grid(path, frames[:, None], settings)  # (F, 1, *input_size)
    spacing_source = str(meta["spacing_source"])
    spacing = None if spacing_source.startswith("none") else (float(meta["spacing"][0]), float(meta["spacing"][1]))
    return DecodedFile(
        path=path,
        images=images,
        original_size=(int(frames.shape[1]), int(frames.shape[2])),
        spacing=spacing,
        spacing_source=spacing_source,
        uids={keyword: str(meta[keyword]) for keyword in _UID_KEYWORDS},
        header=_sr_source_header(path) if settings.keep_header else None,
        display=np.rint(frames * 255.0).astype(np.uint8) if settings.keep_display else None,
        colour_conversion=str(meta["colour_conversion"]) or None,
    )


def _decode_image(path: str, settings: DecodeSettings) -> DecodedFile:
    """One PNG / JPEG frame: ``(1, C, *input_size)``, no spacing, empty UIDs."""
    image = read_image(path, settings.channels, settings.max_pixels)  # (C, X, Y) in [0, 1]
    resized = _to_network_grid(path, image[None], settings)[0]
    display = None
    if settings.keep_display:
        pixels = np.rint(image * 255.0).astype(np.uint8)
        display = pixels[:1] if settings.channels == 1 else np.moveaxis(pixels, 0, -1)[None]
    return DecodedFile(
        path=path,
        images=np.ascontiguousarray(resized[None], dtype=np.float32),
        original_size=(int(image.shape[1]), int(image.shape[2])),
        spacing=None,
        spacing_source="none",
        uids=dict.fromkeys(_UID_KEYWORDS, ""),
        display=display,
        dicom=False,
    )


def _to_network_grid(path: str, frames: np.ndarray, settings: DecodeSettings) -> np.ndarray:
    """``(F, C, X, Y)`` original frames -> ``(F, C, *input_size)`` float32 network inputs.

    With the model's frame transforms (each frame as ``{"image": (C, X, Y)}``), else MONAI ``Resize``.

    Raises:
        ValueError: the frame transforms do not give the model's input size.
    """
    if not settings.transforms:
        resize = Resize(settings.input_size, mode=settings.resize_mode, anti_aliasing=settings.anti_aliasing)
        out = [torch.as_tensor(resize(torch.from_numpy(frame))).numpy() for frame in frames]
    else:
        pipeline = _frame_pipeline(json.dumps(settings.transforms))
        out = [torch.as_tensor(pipeline({"image": torch.from_numpy(frame)})["image"]).numpy() for frame in frames]
    images = np.ascontiguousarray(np.stack(out), dtype=np.float32)
    if tuple(images.shape[2:]) != tuple(settings.input_size):
        raise ValueError(
            f"`{path}`: the model's frame transforms give frames of {list(images.shape[2:])}, "
            f"not its input size {list(settings.input_size)}"
        )
    return images


@functools.lru_cache(maxsize=4)
def _frame_pipeline(transforms_json: str) -> Callable[[dict], dict]:
    """The frame transforms of a (checked) JSON config list, built once per worker process."""
    return build_frame_transforms(json.loads(transforms_json))


def _sr_source_header(path: str) -> Dataset:
    """The attributes of ``path`` its SR uses (:func:`.sr.source_header`)."""
    from .sr import source_header  # sr imports records, which imports this module

    return source_header(path)
