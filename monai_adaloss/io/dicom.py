"""Read 2D X-ray DICOM frames (XA, RF, CR, DX) as MONAI images with spacing and display intensities.

Layout (DESIGN.md section 2): a frame is returned exactly as MONAI's ``PydicomReader`` and
``ITKReader`` lay out a 2D image, as ``(columns, rows)``: axis 0 is x (file column), axis 1 is y
(file row). A pixel at file row 5, column 50 loads at index ``[50, 5]``, and a landmark is the
point ``(x, y) = (column, row)``. ``read_all_frames`` returns ``(F, X, Y)``.

Intensity (every output, float32): the stored values go through the Modality LUT (Rescale
Slope/Intercept or Modality LUT Sequence), then the VOI transform, and are mapped to
``[0, 1]`` with 0 displayed black and 1 displayed white (MONOCHROME1 is inverted, so every
output reads like MONOCHROME2):

- ``"VOI LUT"``: the first item of the VOI LUT Sequence, divided by ``2**bits - 1`` (bits from
  its LUT Descriptor). Preferred over a window when a file has both, as pydicom does.
- ``"VOI window"``: the first Window Center/Width pair with its VOI LUT Function (LINEAR,
  LINEAR_EXACT or SIGMOID; DICOM PS3.3 C.11.2.1.2), with an output range of ``[0, 1]``.
- ``"frame min-max"``: no VOI in the file, or ``apply_voi_lut=False``: the frame's minimum and
  maximum Modality LUT values map to 0 and 1 (what a viewer's automatic window shows); a
  constant frame gives 0 (1 for MONOCHROME1).

The window and LUT mappings depend only on the file's tags, not on the frame's content, so
intensities are comparable across the frames of a run; the mapping used is recorded in
``meta["intensity_mapping"]``. Presentation LUT Shape is not applied separately: in DX and CR
files it only restates the MONOCHROME1/2 polarity.

Spacing (DESIGN.md section 2), in mm per pixel: Pixel Spacing if present; else Imager Pixel
Spacing divided by the Estimated Radiographic Magnification Factor, or by Distance Source to
Detector / Distance Source to Patient; else Imager Pixel Spacing as is; else unknown (pixdim
1, 1). The rule used is recorded in ``meta["spacing_source"]``. DICOM spacings are
(row spacing, column spacing), so ``pixdim = (column spacing, row spacing)``. A spacing outside
``SPACING_RANGE_MM`` or a magnification outside ``MAGNIFICATION_RANGE`` (zero, negative,
non-finite or absurd) is an error (:class:`DicomSpacingError`), not silently "unknown": a wrong
spacing would make every millimetre figure wrong.

Affine: ``diag(column spacing, row spacing, 1, 1)``, origin 0, labelled RAS like MONAI's default.
It maps pixel indices to millimetres in the detector plane (x along columns, y along rows), not
to patient coordinates, which projection images do not define; an orientation transform to
RAS leaves the image unchanged.

Decoding uses pydicom's pixel data plugins: native, big endian, deflate and RLE always; JPEG
2000, JPEG-LS and JPEG baseline / extended / lossless through the permissively licensed decoders
this package depends on (pylibjpeg-openjpeg, pyjpegls, python-gdcm, Pillow; not the GPL
pylibjpeg-libjpeg, so 12-bit JPEG Extended, which only it decodes, is not readable). For a
transfer syntax no pydicom plugin can decode, MONOCHROME2 files fall back to ITK's GDCM
(``itk.imread``), which decodes all JPEG lossless variants without extra packages. A file that
still cannot be decoded raises :class:`DicomDecoderUnavailableError` naming the transfer syntax
and the packages to install.

Real-world files (DESIGN.md section 2, issue 13): a file without the 128-byte preamble and File
Meta (ACR-NEMA style) is read with ``force=True`` when the data set parses and has an image pixel
module (Rows, Columns, Pixel Data); a missing Transfer Syntax UID is inferred from the encoding the
data set was read with; absent SamplesPerPixel (1), PhotometricInterpretation (MONOCHROME2 for one
sample), BitsStored (BitsAllocated), HighBit (BitsStored - 1) and PixelRepresentation (0) take the
values the pixel data implies (listed in ``meta["defaults"]``, comma-separated ``Keyword=value``).
Such files, deflated files and files whose decoding from the path fails are decoded from the
(patched) data set in memory. Colour frames (RGB, YBR_* converted to RGB by pydicom, PALETTE
COLOR expanded through its LUT) become the ITU-R BT.601 luminance ``0.299 R + 0.587 G + 0.114 B``
divided by the largest sample value; the conversion is recorded in ``meta["colour_conversion"]``
("" for greyscale) and no Modality LUT or VOI is applied to them. With
``invalid_spacing="pixels"`` a malformed or absurd spacing gives pixel units (spacing unknown) with
``spacing_source = "none (<tag> <problem>)"`` instead of an error. With ``modalities`` a file
whose Modality is not listed raises :class:`DicomSkippedError` right after its header is read.

Every problem with an input file raises a :class:`DicomReadError` (a ``ValueError``) whose
``path`` and ``reason`` say which file and what is wrong, so batch inference can catch it per
file. The reader does all its work in ``get_data``: ``LoadImage`` catches errors from a
reader's ``read`` and retries the file with MONAI's other readers, which would load it with a
different intensity convention, so ``read`` never fails on a bad file.
"""

from __future__ import annotations

import copy
import math
import operator
import re
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.config import DtypeLike, KeysCollection, PathLike
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImage, MapTransform, Transform
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder, iter_pixels, pixel_array
from pydicom.uid import UID

from .modalities import modality_allowed, modality_code, parse_modalities

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAGNIFICATION_RANGE",
    "SPACING_RANGE_MM",
    "DicomDecoderUnavailableError",
    "DicomReadError",
    "DicomSkippedError",
    "DicomSpacingError",
    "LoadDicomFrame",
    "LoadDicomFrameD",
    "LoadDicomFrameDict",
    "LoadDicomFramed",
    "XRayDicomReader",
    "XRayDicomSource",
    "read_all_frames",
]

SPACING_RANGE_MM: tuple[float, float] = (0.001, 10.0)
"""Accepted pixel spacing in mm per pixel, inclusive; anything else raises DicomSpacingError."""

MAGNIFICATION_RANGE: tuple[float, float] = (1.0, 10.0)
"""Accepted radiographic magnification, inclusive (a projection never magnifies by less than 1)."""

DEFAULT_MAX_PIXELS = 2**31
"""Default limit on Rows x Columns x NumberOfFrames (about 4 GiB of 16-bit pixel data)."""

_PIXEL_DATA_TAG = 0x7FE00010
_DEFER_SIZE = 1024  # bytes; larger values (pixel data, LUT data) are read only when needed
_UNDEFINED_LENGTH = 0xFFFFFFFF
_GREY = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "YBR_PARTIAL_422")
_PALETTE = "PALETTE COLOR"
BT601_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of (R, G, B): colour frames are converted to this luminance."""
_IMAGE_PIXEL_KEYWORDS = ("Rows", "Columns")
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class DicomReadError(ValueError):
    """A DICOM file cannot be read as a 2D X-ray frame.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.reason)


class DicomSpacingError(DicomReadError):
    """A spacing or magnification tag is zero, negative, non-finite, malformed or absurd.

    Attributes:
        tag: the keyword of the offending tag (or the ratio of two tags).
    """

    def __init__(self, path: PathLike, tag: str, problem: str) -> None:
        self.tag = tag
        self.problem = problem
        super().__init__(path, f"{tag} {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.tag, self.problem)


class DicomSkippedError(DicomReadError):
    """The file is outside the reader's ``modalities`` policy: skipped, not failed.

    Attributes:
        modality: the file's Modality ("" when absent).
    """

    def __init__(self, path: PathLike, modality: str, allowed: Sequence[str]) -> None:
        self.modality = modality
        self.allowed = tuple(allowed)
        shown = repr(modality) if modality else "absent"
        super().__init__(path, f"Modality {shown} is not one of --modalities {','.join(self.allowed)}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.modality, self.allowed)


class DicomDecoderUnavailableError(DicomReadError, RuntimeError):
    """No installed decoder handles the file's transfer syntax.

    Both a :class:`DicomReadError` (so per-file error handling catches it) and a
    ``RuntimeError`` (like pydicom's own missing-plugin error).

    Attributes:
        transfer_syntax_uid: the transfer syntax UID.
        transfer_syntax_name: its name, or the UID when pydicom does not know it.
        packages: alternative ``pip install`` arguments, any one of which adds a decoder;
            empty when no Python package decodes the syntax.
        detail: why the ITK/GDCM fallback was not used or failed ("" when it was not tried).
    """

    def __init__(
        self, path: PathLike, transfer_syntax_uid: str, packages: Sequence[str] = (), detail: str = ""
    ) -> None:
        self.transfer_syntax_uid = str(transfer_syntax_uid)
        self.transfer_syntax_name = UID(transfer_syntax_uid).name
        self.packages = tuple(packages)
        self.detail = detail
        if self.packages:
            remedy = "install one of: " + " | ".join(f"`pip install {p}`" for p in self.packages)
        else:
            remedy = "no Python package decodes it; convert the file to an uncompressed transfer syntax"
        reason = (
            f"no pixel data decoder installed for transfer syntax '{self.transfer_syntax_name}' "
            f"({self.transfer_syntax_uid}); {remedy}"
        )
        super().__init__(path, f"{reason}. {detail}" if detail else reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.transfer_syntax_uid, self.packages, self.detail)


@dataclass(frozen=True)
class XRayDicomSource:
    """What :meth:`XRayDicomReader.read` returns: the file(s) to read and the frame to take.

    Attributes:
        filenames: the paths given to ``read`` (``get_data`` accepts exactly one).
        frame: 0-based frame index.
    """

    filenames: tuple[str, ...]
    frame: int


@dataclass(frozen=True)
class _FrameLayout:
    """The validated facts ``get_data`` needs about one file, taken from its header."""

    header: Dataset
    transfer_syntax: UID
    rows: int
    columns: int
    num_frames: int
    spacing_xy: tuple[float, float] | None
    spacing_source: str
    intensity_mapping: str
    samples: int = 1
    photometric: str = "MONOCHROME2"
    from_dataset: bool = False
    legacy: bool = False
    defaults: tuple[str, ...] = ()
    colour_conversion: str | None = None


def _check_frame(frame: Any) -> int:
    """Return ``frame`` as an ``int`` (ints, numpy ints and integer 0-d tensors), checking it is >= 0."""
    try:
        index = operator.index(frame)
    except TypeError:
        raise ValueError(f"Argument `frame` must be a non-negative integer, got {frame!r}.") from None
    if index < 0:
        raise ValueError(f"Argument `frame` must be a non-negative integer, got {index}.")
    return index


class XRayDicomReader(ImageReader):
    """MONAI ``ImageReader`` for one frame of a 2D X-ray DICOM file (XA, RF, CR, DX).

    Use it as ``LoadImaged(keys="image", reader=XRayDicomReader())`` (frame 0, or the frame given
    to the constructor), or through :class:`LoadDicomFramed` to take the frame index from each
    sample's dictionary. See the module docstring for the array layout, the intensity
    convention, spacing and errors.

    ``get_data`` returns a float32 array of shape ``(X, Y)`` = ``(Columns, Rows)`` with values in
    ``[0, 1]``, and a meta dict with MONAI's keys (``affine``, ``original_affine``,
    ``spatial_shape``, ``space``, ``original_channel_dim`` = NaN so ``EnsureChannelFirstd`` adds a
    channel, ``spacing`` = pixdim) and ours: ``spacing_source``, ``intensity_mapping``,
    ``decoder`` ("pydicom" or "itk"), ``frame``, ``NumberOfFrames``, ``Rows``, ``Columns``,
    ``PhotometricInterpretation``, ``Modality``, ``TransferSyntaxUID``, ``SOPInstanceUID``,
    ``SeriesInstanceUID``, ``StudyInstanceUID`` (absent text tags are "").

    Args:
        frame: 0-based index of the frame to read from multi-frame files.
        apply_voi_lut: apply the file's VOI LUT or window (default ``True``); when ``False``,
            or when the file has none, each frame is min-max scaled to ``[0, 1]``.
        max_pixels: files with Rows x Columns x NumberOfFrames above this are rejected.
        itk_fallback: decode transfer syntaxes that no installed pydicom plugin handles with
            ITK's GDCM (MONOCHROME2 only: GDCM inverts MONOCHROME1 pixel values itself).
        invalid_spacing: ``"raise"`` (default): a malformed or absurd spacing raises
            :class:`DicomSpacingError`; ``"pixels"``: the spacing is unknown (pixel units) and
            ``spacing_source`` says why, e.g. ``"none (PixelSpacing must have 2 values ...)"``.
        modalities: read only files whose Modality is one of these (others raise
            :class:`DicomSkippedError`); ``None`` or empty: every modality (the rule of
            :mod:`monai_adaloss.io.modalities`, shared with ``monai-adaloss serve``).

    Raises:
        ValueError: when an argument is invalid.
    """

    def __init__(
        self,
        frame: int = 0,
        apply_voi_lut: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        itk_fallback: bool = True,
        invalid_spacing: str = "raise",
        modalities: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if max_pixels < 1:
            raise ValueError(f"Argument `max_pixels` must be positive, got {max_pixels}.")
        if invalid_spacing not in ("raise", "pixels"):
            raise ValueError(f"Argument `invalid_spacing` must be 'raise' or 'pixels', got {invalid_spacing!r}.")
        self.invalid_spacing = invalid_spacing
        self.modalities = parse_modalities(modalities)
        self.frame = _check_frame(frame)
        self.apply_voi_lut = apply_voi_lut
        self.max_pixels = max_pixels
        self.itk_fallback = itk_fallback

    def for_frame(self, frame: int) -> XRayDicomReader:
        """Return a copy of this reader that reads frame ``frame``."""
        reader = copy.copy(self)
        reader.frame = _check_frame(frame)
        return reader

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Return ``True`` if every file ends in ``.dcm``/``.dicom`` or starts like a DICOM file."""
        return all(
            Path(name).suffix.lower() in (".dcm", ".dicom") or (Path(name).is_file() and pydicom.misc.is_dicom(name))
            for name in ensure_tuple(filename)
        )

    def read(self, data: Sequence[PathLike] | PathLike, frame: int | None = None) -> XRayDicomSource:
        """Record the file and the frame to read; all checks happen in :meth:`get_data`.

        Args:
            data: one path (``LoadImage`` passes it as a 1-tuple).
            frame: frame index overriding the constructor's ``frame``.
        """
        return XRayDicomSource(
            filenames=tuple(str(name) for name in ensure_tuple(data)),
            frame=self.frame if frame is None else _check_frame(frame),
        )

    def get_data(self, img: XRayDicomSource) -> tuple[np.ndarray, dict]:
        """Decode the frame and return ``(array (X, Y) float32 in [0, 1], meta dict)``.

        Raises:
            DicomReadError: for any problem with the file (see the module docstring).
            ValueError: when ``img`` names more than one file.
        """
        if len(img.filenames) != 1:
            raise ValueError(f"XRayDicomReader reads one file at a time, got {len(img.filenames)}: {img.filenames}.")
        path = img.filenames[0]
        layout = self._inspect(path)
        if img.frame >= layout.num_frames:
            raise DicomReadError(
                path, f"frame {img.frame} is out of range for a file with {layout.num_frames} frame(s)"
            )
        frames, decoder = self._decode(path, layout, img.frame)
        stored = next(frames)
        meta = self._meta(path, layout, decoder)
        meta["frame"] = img.frame
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")
        return np.ascontiguousarray(self._to_display(path, layout, stored).T), meta

    def get_all_frames(self, filename: PathLike) -> tuple[np.ndarray, dict]:
        """Decode every frame of ``filename``: ``(array (F, X, Y) float32 in [0, 1], meta dict)``.

        The meta dict is that of :meth:`get_data` without ``frame`` and ``original_channel_dim``
        (axis 0 is the frame axis; ``spatial_shape``, ``affine`` and ``spacing`` describe each frame).

        Raises:
            DicomReadError: for any problem with the file.
        """
        path = str(filename)
        layout = self._inspect(path)
        frames, decoder = self._decode(path, layout, None)
        out = np.empty((layout.num_frames, layout.columns, layout.rows), dtype=np.float32)
        decoded = 0
        for decoded, stored in enumerate(frames, start=1):
            out[decoded - 1] = self._to_display(path, layout, stored).T
        if decoded != layout.num_frames:
            raise DicomReadError(path, f"decoded {decoded} frames, NumberOfFrames is {layout.num_frames}")
        return out, self._meta(path, layout, decoder)

    def _inspect(self, path: str) -> _FrameLayout:
        """Read and validate the header of ``path`` (pixel data deferred), applying the documented defaults."""
        header, legacy = _read_header(path)
        if not modality_allowed(header.get("Modality"), self.modalities):
            raise DicomSkippedError(path, modality_code(header.get("Modality")), self.modalities)
        from_dataset = legacy
        transfer_syntax = UID(header.file_meta.get("TransferSyntaxUID", "") or "")
        if not transfer_syntax:
            transfer_syntax = _encoding_syntax(header)
            header.file_meta.TransferSyntaxUID = transfer_syntax
            from_dataset = True
        if transfer_syntax.is_deflated:
            from_dataset = True  # the path-based decoders cannot seek into a deflated stream
        if _PIXEL_DATA_TAG not in header:
            raise DicomReadError(path, "no Pixel Data (7FE0,0010) element (missing, or the file is truncated)")
        rows = _int_tag(path, header, "Rows")
        columns = _int_tag(path, header, "Columns")
        num_frames = _int_tag(path, header, "NumberOfFrames", default=1)
        if min(rows, columns, num_frames) < 1 or rows * columns * num_frames > self.max_pixels:
            raise DicomReadError(
                path,
                f"absurd dimensions: Rows {rows} x Columns {columns} x NumberOfFrames {num_frames} "
                f"(must be positive, at most {self.max_pixels} pixels in all)",
            )
        defaults = _apply_defaults(path, header, transfer_syntax, rows * columns * num_frames)
        from_dataset = from_dataset or bool(defaults)
        samples = _int_tag(path, header, "SamplesPerPixel")
        photometric = str(header.get("PhotometricInterpretation", "")).strip().upper()
        colour_conversion = _colour_conversion(path, samples, photometric)
        _check_pixel_data_length(path, header, transfer_syntax, rows * columns * num_frames * samples)
        _check_rescale(path, header)
        try:
            spacing_xy, spacing_source = _spacing(path, header)
        except DicomSpacingError as err:
            if self.invalid_spacing == "raise":
                raise
            spacing_xy, spacing_source = None, f"none ({err.reason})"
        return _FrameLayout(
            header=header,
            transfer_syntax=transfer_syntax,
            rows=rows,
            columns=columns,
            num_frames=num_frames,
            spacing_xy=spacing_xy,
            spacing_source=spacing_source,
            intensity_mapping=(
                "colour luminance" if colour_conversion else _intensity_mapping(path, header, self.apply_voi_lut)
            ),
            samples=samples,
            photometric=photometric,
            from_dataset=from_dataset,
            legacy=legacy,
            defaults=defaults,
            colour_conversion=colour_conversion,
        )

    def _decode(self, path: str, layout: _FrameLayout, frame: int | None) -> tuple[Iterator[np.ndarray], str]:
        """Return an iterator over the stored frames ``(Rows, Columns)`` (``frame``, or all) and the decoder name."""
        try:
            decoder = get_decoder(layout.transfer_syntax)
        except NotImplementedError:
            raise DicomDecoderUnavailableError(path, layout.transfer_syntax) from None
        if decoder.is_available:
            return _pydicom_frames(path, layout, frame), "pydicom"
        packages = _pip_packages(decoder.missing_dependencies)
        if layout.from_dataset or layout.samples != 1:
            raise DicomDecoderUnavailableError(path, layout.transfer_syntax, packages)
        if not self.itk_fallback:
            raise DicomDecoderUnavailableError(path, layout.transfer_syntax, packages)
        if layout.photometric != "MONOCHROME2":
            raise DicomDecoderUnavailableError(
                path,
                layout.transfer_syntax,
                packages,
                "The ITK/GDCM fallback is not used for MONOCHROME1 files: GDCM inverts their pixel values.",
            )
        try:
            stored = _itk_stored_frames(path, layout)
        except Exception as err:
            raise DicomDecoderUnavailableError(
                path, layout.transfer_syntax, packages, f"The ITK/GDCM fallback failed: {err}"
            ) from err
        return iter(stored if frame is None else stored[frame : frame + 1]), "itk"

    def _to_display(self, path: str, layout: _FrameLayout, stored: np.ndarray) -> np.ndarray:
        """Stored values ``(Rows, Columns)`` -> Modality LUT -> VOI -> ``[0, 1]``, MONOCHROME2-like, float32."""
        header = layout.header
        if layout.colour_conversion is not None:
            return _luminance(path, layout, stored)
        if stored.shape != (layout.rows, layout.columns):
            expected = (layout.rows, layout.columns)
            raise DicomReadError(path, f"decoded frame has shape {stored.shape}, expected (Rows, Columns) = {expected}")
        modality = np.asarray(apply_modality_lut(stored, header), dtype=np.float64)
        if layout.intensity_mapping == "VOI LUT":
            lut = header.VOILUTSequence[0]
            display = apply_voi(np.rint(modality).astype(np.int64), header) / (2.0 ** int(lut.LUTDescriptor[2]) - 1.0)
        elif layout.intensity_mapping == "VOI window":
            display = _window(modality, header)
        else:
            low, high = float(modality.min()), float(modality.max())
            display = (modality - low) / (high - low) if high > low else np.zeros_like(modality)
        display = np.clip(display, 0.0, 1.0)
        if layout.photometric == "MONOCHROME1":
            display = 1.0 - display
        return display.astype(np.float32)

    def _meta(self, path: str, layout: _FrameLayout, decoder: str) -> dict:
        """Meta dict shared by one frame and all frames of ``path``."""
        header = layout.header
        spacing = layout.spacing_xy or (1.0, 1.0)
        affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
        meta: dict[str, Any] = {
            MetaKeys.ORIGINAL_AFFINE: affine,
            MetaKeys.AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: (layout.columns, layout.rows),
            MetaKeys.SPACE: SpaceKeys.RAS,
            "spacing": np.asarray(spacing),
            "spacing_source": layout.spacing_source,
            "intensity_mapping": layout.intensity_mapping,
            "colour_conversion": layout.colour_conversion or "",
            "defaults": ", ".join(layout.defaults),
            "legacy": layout.legacy,
            "decoder": decoder,
            "filename_or_obj": path,
            "NumberOfFrames": layout.num_frames,
            "Rows": layout.rows,
            "Columns": layout.columns,
            "TransferSyntaxUID": str(layout.transfer_syntax),
        }
        for keyword in (
            "PhotometricInterpretation",
            "Modality",
            "SOPInstanceUID",
            "SeriesInstanceUID",
            "StudyInstanceUID",
        ):
            meta[keyword] = str(header.get(keyword, "") or "")
        return meta


def read_all_frames(filename: PathLike, reader: XRayDicomReader | None = None) -> tuple[np.ndarray, dict]:
    """Read every frame of a 2D X-ray DICOM file as ``(F, X, Y)`` float32 in ``[0, 1]`` plus meta.

    For batch inference: ``array[:, None]`` is a ``(F, 1, X, Y)`` batch for a 2D network.

    Args:
        filename: the DICOM file.
        reader: reader whose settings (VOI, limits, fallback) to use; a default one if ``None``.

    Raises:
        DicomReadError: for any problem with the file.
    """
    return (reader or XRayDicomReader()).get_all_frames(filename)


class LoadDicomFrame(Transform):
    """Load one frame of a 2D X-ray DICOM file as a MetaTensor ``(X, Y)``, exactly as ``LoadImage`` would.

    The image and its meta are what ``LoadImage(reader=XRayDicomReader(frame=frame))`` returns,
    including ``filename_or_obj``, so ``EnsureChannelFirst`` afterwards gives ``(1, X, Y)``.

    Args:
        reader: the reader (its ``frame`` is replaced per call); a default one if ``None``.
        dtype: dtype of the loaded image (as in ``LoadImage``).
        ensure_channel_first: add the channel dimension directly (as in ``LoadImage``).
    """

    def __init__(
        self,
        reader: XRayDicomReader | None = None,
        dtype: DtypeLike | None = np.float32,
        ensure_channel_first: bool = False,
    ) -> None:
        self.reader = reader or XRayDicomReader()
        self._loader = LoadImage(reader=self.reader, dtype=dtype, ensure_channel_first=ensure_channel_first)

    def __call__(self, filename: PathLike, frame: int) -> MetaTensor:
        """Load frame ``frame`` (0-based) of ``filename``.

        Raises:
            DicomReadError: for any problem with the file, including a frame out of range.
            ValueError: when ``frame`` is not a non-negative integer.
        """
        return self._loader(filename, reader=self.reader.for_frame(frame))


class LoadDicomFramed(MapTransform):
    """Dictionary-based :class:`LoadDicomFrame`: load ``data[key]`` at frame ``data[frame_key]``.

    Example::

        Compose([
            LoadDicomFramed(keys="image", frame_key="frame"),
            EnsureChannelFirstd(keys="image"),
        ])({"image": "run.dcm", "frame": 12})["image"]  # MetaTensor (1, Columns, Rows)

    Args:
        keys: keys of the file paths to load.
        frame_key: key of the 0-based frame index, shared by all ``keys`` of a sample.
        reader: the reader (its ``frame`` is replaced per sample); a default one if ``None``.
        dtype: dtype of the loaded image (as in ``LoadImaged``).
        ensure_channel_first: add the channel dimension directly (as in ``LoadImaged``).
        allow_missing_keys: skip missing ``keys`` instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        frame_key: str = "frame",
        reader: XRayDicomReader | None = None,
        dtype: DtypeLike | None = np.float32,
        ensure_channel_first: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.frame_key = frame_key
        self.loader = LoadDicomFrame(reader=reader, dtype=dtype, ensure_channel_first=ensure_channel_first)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key's frame.

        Raises:
            KeyError: when ``frame_key`` is missing from ``data``.
        """
        d = dict(data)
        if self.frame_key not in d:
            raise KeyError(f"LoadDicomFramed needs the frame index under key {self.frame_key!r}; keys: {list(d)}.")
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key], d[self.frame_key])
        return d


LoadDicomFrameD = LoadDicomFrameDict = LoadDicomFramed


def _read_header(path: str) -> tuple[Dataset, bool]:
    """``dcmread`` with the pixel data deferred, turning every failure into a DicomReadError.

    Returns ``(header, legacy)``: ``legacy`` is true for a file without the 'DICM' prefix (no
    preamble / File Meta, ACR-NEMA style), which is accepted when ``force=True`` parses it into a
    data set with an image pixel module (Rows, Columns and Pixel Data).
    """
    file = Path(path)
    if not file.is_file():
        raise DicomReadError(path, "no such file" if not file.exists() else "not a regular file")
    size = file.stat().st_size
    if size == 0:
        raise DicomReadError(path, "empty file (0 bytes)")
    with file.open("rb") as stream:
        stream.seek(128)
        has_prefix = stream.read(4) == b"DICM"
    if not has_prefix:
        try:
            header = pydicom.dcmread(file, defer_size=_DEFER_SIZE, force=True)
            is_image = all(k in header for k in _IMAGE_PIXEL_KEYWORDS) and _PIXEL_DATA_TAG in header
        except Exception:
            is_image = False
        if not is_image:
            raise DicomReadError(
                path,
                "not a DICOM file (no 'DICM' prefix at byte 128, and it does not parse as a data set with an "
                "image pixel module)",
            )
        return header, True
    try:
        return pydicom.dcmread(file, defer_size=_DEFER_SIZE), False
    except Exception as err:
        raise DicomReadError(path, f"truncated or corrupt DICOM file ({type(err).__name__}: {err})") from err


def _encoding_syntax(header: Dataset) -> UID:
    """The uncompressed transfer syntax a data set was read with (for a File Meta without one)."""
    implicit, little = header.original_encoding
    if implicit:
        return pydicom.uid.ImplicitVRLittleEndian
    return pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian


def _apply_defaults(path: str, header: Dataset, transfer_syntax: UID, num_pixels: int) -> tuple[str, ...]:
    """Set absent image pixel attributes whose value the pixel data implies; return ``"Keyword=value"`` of each."""
    applied: list[str] = []

    def absent(keyword: str) -> bool:
        value = header.get(keyword)
        return value is None or value == ""

    def set_default(keyword: str, value: Any) -> None:
        setattr(header, keyword, value)
        applied.append(f"{keyword}={value}")

    photometric = str(header.get("PhotometricInterpretation", "") or "").strip().upper()
    if absent("SamplesPerPixel"):
        set_default("SamplesPerPixel", 3 if photometric in _COLOUR else 1)
    if absent("PhotometricInterpretation") and int(header.SamplesPerPixel) == 1:
        set_default("PhotometricInterpretation", "MONOCHROME2")
    if absent("BitsAllocated"):
        element = header.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
        samples = int(header.SamplesPerPixel) if not absent("SamplesPerPixel") else 1
        bits = None
        if not transfer_syntax.is_compressed and element.length not in (None, _UNDEFINED_LENGTH) and num_pixels:
            bits = 8 * element.length // (num_pixels * samples)
        if bits not in (8, 16, 32):
            raise DicomReadError(path, "missing BitsAllocated, and the pixel data length does not imply it")
        set_default("BitsAllocated", bits)
    if absent("BitsStored"):
        set_default("BitsStored", int(header.BitsAllocated))
    if absent("HighBit"):
        set_default("HighBit", int(header.BitsStored) - 1)
    if absent("PixelRepresentation"):
        set_default("PixelRepresentation", 0)
    if int(header.get("SamplesPerPixel", 1)) > 1 and absent("PlanarConfiguration"):
        set_default("PlanarConfiguration", 0)
    return tuple(applied)


def _colour_conversion(path: str, samples: int, photometric: str) -> str | None:
    """How a colour file becomes luminance (``None`` for greyscale); DicomReadError if unsupported."""
    if samples == 1 and photometric in _GREY:
        return None
    if samples == 1 and photometric == _PALETTE:
        return "BT.601 luminance of PALETTE COLOR (expanded through its LUT)"
    if samples == 3 and photometric == "RGB":
        return "BT.601 luminance of RGB"
    if samples == 3 and photometric in _COLOUR:
        return f"BT.601 luminance of {photometric} (converted to RGB)"
    raise DicomReadError(
        path,
        f"SamplesPerPixel {samples} with PhotometricInterpretation {photometric!r} is not supported "
        f"(greyscale {' / '.join(_GREY)}, {_PALETTE}, or 3 samples RGB / YBR)",
    )


def _luminance(path: str, layout: _FrameLayout, stored: np.ndarray) -> np.ndarray:
    """A colour frame ``(Rows, Columns, 3)`` (or palette indices ``(Rows, Columns)``) -> BT.601 luminance in [0, 1]."""
    header = layout.header
    if layout.photometric == _PALETTE:
        rgb = apply_color_lut(stored, header)
        bits = int(header.RedPaletteColorLookupTableDescriptor[2])
        bits = 8 if bits <= 8 else 16
    else:
        rgb = stored
        bits = int(header.get("BitsStored", header.BitsAllocated))
    if rgb.shape != (layout.rows, layout.columns, 3):
        expected = (layout.rows, layout.columns, 3)
        raise DicomReadError(path, f"decoded colour frame has shape {rgb.shape}, expected {expected}")
    luma = np.tensordot(rgb.astype(np.float64), np.asarray(BT601_WEIGHTS), axes=([2], [0]))
    return np.clip(luma / (2.0**bits - 1.0), 0.0, 1.0).astype(np.float32)


def _int_tag(path: str, header: Dataset, keyword: str, default: int | None = None) -> int:
    """Integer value of ``keyword``; ``default`` when absent or empty, else a DicomReadError."""
    value = header.get(keyword)
    if value is None or value == "":
        if default is None:
            raise DicomReadError(path, f"missing {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DicomReadError(path, f"{keyword} is not an integer: {value!r}") from None


def _check_pixel_data_length(path: str, header: Dataset, transfer_syntax: UID, num_pixels: int) -> None:
    """For native pixel data, check the element holds and the file contains every frame."""
    element = header.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    if element.length == _UNDEFINED_LENGTH or not transfer_syntax.is_transfer_syntax:
        return  # encapsulated or unknown syntax: the decoder checks the fragments
    expected = (num_pixels * _int_tag(path, header, "BitsAllocated") + 7) // 8
    if str(header.get("PhotometricInterpretation", "")).strip().upper() == "YBR_FULL_422":
        expected = expected * 2 // 3  # two samples per pixel: Y for each, Cb and Cr shared by two pixels
    if element.length < expected:
        raise DicomReadError(
            path, f"Pixel Data holds {element.length} bytes, expected {expected} for Rows x Columns x NumberOfFrames"
        )
    if not transfer_syntax.is_deflated and element.value_tell + expected > Path(path).stat().st_size:
        raise DicomReadError(path, "truncated file: it ends inside the Pixel Data")


def _check_rescale(path: str, header: Dataset) -> None:
    """Rescale Slope must be finite and non-zero and Rescale Intercept finite."""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        value = header.get(keyword)
        if value is None or value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DicomReadError(path, f"{keyword} is not numeric: {value!r}") from None
        if not math.isfinite(number) or (keyword == "RescaleSlope" and number == 0):
            raise DicomReadError(path, f"{keyword} is {value!r}")


def _spacing_pair(path: str, header: Dataset, keyword: str) -> tuple[float, float] | None:
    """``(row, column)`` spacing from ``keyword``, ``None`` if absent/empty; DicomSpacingError if invalid."""
    value = header.get(keyword)
    if value is None or value == "" or (isinstance(value, Sequence) and len(value) == 0):
        return None
    try:
        pair = tuple(float(v) for v in _values(value))
    except (TypeError, ValueError):
        raise DicomSpacingError(path, keyword, f"is not numeric: {value!r}") from None
    if len(pair) != 2:
        raise DicomSpacingError(path, keyword, f"must have 2 values (row, column), got {len(pair)}: {value!r}")
    _check_spacing(path, keyword, pair)
    return pair[0], pair[1]


def _check_spacing(path: str, source: str, pair: tuple[float, ...]) -> None:
    """Raise DicomSpacingError unless both spacings are finite and within SPACING_RANGE_MM."""
    low, high = SPACING_RANGE_MM
    if not all(math.isfinite(v) and low <= v <= high for v in pair):
        raise DicomSpacingError(path, source, f"is {list(pair)} mm; expected values in [{low}, {high}] mm per pixel")


def _positive_number(path: str, header: Dataset, keyword: str) -> float | None:
    """Value of ``keyword`` as a finite positive float, ``None`` if absent/empty; DicomSpacingError if not."""
    value = header.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DicomSpacingError(path, keyword, f"is not numeric: {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise DicomSpacingError(path, keyword, f"is {value!r}; expected a finite positive number")
    return number


def _spacing(path: str, header: Dataset) -> tuple[tuple[float, float] | None, str]:
    """Apply the DESIGN.md spacing rule: ``((column spacing, row spacing) or None, source)``."""
    pixel_spacing = _spacing_pair(path, header, "PixelSpacing")
    if pixel_spacing is not None:
        return (pixel_spacing[1], pixel_spacing[0]), "PixelSpacing"
    imager = _spacing_pair(path, header, "ImagerPixelSpacing")
    if imager is None:
        return None, "none"
    magnification = _positive_number(path, header, "EstimatedRadiographicMagnificationFactor")
    source = "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    if magnification is None:
        source_to_detector = _positive_number(path, header, "DistanceSourceToDetector")
        source_to_patient = _positive_number(path, header, "DistanceSourceToPatient")
        if source_to_detector is None or source_to_patient is None:
            return (imager[1], imager[0]), "ImagerPixelSpacing"
        magnification = source_to_detector / source_to_patient
        source = "ImagerPixelSpacing/(DistanceSourceToDetector/DistanceSourceToPatient)"
    low, high = MAGNIFICATION_RANGE
    if not low <= magnification <= high:
        raise DicomSpacingError(
            path, source.split("/", 1)[1], f"gives a magnification of {magnification:g}; expected [{low}, {high}]"
        )
    spacing = (imager[1] / magnification, imager[0] / magnification)
    _check_spacing(path, source, spacing)
    return spacing, source


def _values(value: Any) -> list[Any]:
    """The values of a possibly multi-valued element as a list."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]


def _intensity_mapping(path: str, header: Dataset, apply_voi_lut: bool) -> str:
    """Choose "VOI LUT", "VOI window" or "frame min-max", validating the VOI tags used."""
    if not apply_voi_lut:
        return "frame min-max"
    if header.get("VOILUTSequence"):
        descriptor = header.VOILUTSequence[0].get("LUTDescriptor")
        if descriptor is None or len(descriptor) != 3 or int(descriptor[2]) not in (8, *range(10, 17)):
            raise DicomReadError(path, f"VOILUTSequence[0].LUTDescriptor is invalid: {descriptor!r}")
        return "VOI LUT"
    center, width = header.get("WindowCenter"), header.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return "frame min-max"
    function = str(header.get("VOILUTFunction", "") or "LINEAR").upper()
    if function not in _VOI_FUNCTIONS:
        raise DicomReadError(path, f"VOILUTFunction {function!r} is not one of {_VOI_FUNCTIONS}")
    try:
        center, width = float(_values(center)[0]), float(_values(width)[0])
    except (TypeError, ValueError, IndexError):
        raise DicomReadError(path, f"WindowCenter {center!r} / WindowWidth {width!r} is not numeric") from None
    valid_width = width >= 1.0 if function == "LINEAR" else width > 0.0
    if not (math.isfinite(center) and math.isfinite(width) and valid_width):
        raise DicomReadError(
            path, f"WindowCenter {center!r} / WindowWidth {width!r} is invalid for VOILUTFunction {function}"
        )
    return "VOI window"


def _window(values: np.ndarray, header: Dataset) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing of Modality LUT values with output range [0, 1]."""
    center = float(_values(header.WindowCenter)[0])
    width = float(_values(header.WindowWidth)[0])
    function = str(header.get("VOILUTFunction", "") or "LINEAR").upper()
    if function == "SIGMOID":
        return 0.5 * (1.0 + np.tanh(2.0 * (values - center) / width))  # = 1 / (1 + exp(-4 (x - c) / w))
    if function == "LINEAR":
        low, high = center - 0.5 - (width - 1.0) / 2.0, center - 0.5 + (width - 1.0) / 2.0
    else:  # LINEAR_EXACT
        low, high = center - width / 2.0, center + width / 2.0
    if high == low:  # LINEAR with width 1: a threshold
        return (values > high).astype(np.float64)
    return (values - low) / (high - low)


def _pydicom_frames(path: str, layout: _FrameLayout, frame: int | None) -> Iterator[np.ndarray]:
    """Decode with pydicom, reading only ``frame`` (or every frame in turn) from the file.

    Attempts, in order, each used only when the ones before fail before their first frame: frame by
    frame from the path (skipped for files that need the patched data set: legacy, inferred transfer
    syntax, defaults, deflate); frame by frame from the data set in memory; the whole pixel array at
    once from the data set (pydicom's frame iterator fails on some files its ``pixel_array`` reads).
    """

    def from_path() -> Iterator[np.ndarray]:
        if frame is not None:
            yield pixel_array(path, index=frame)
        else:
            yield from iter_pixels(path)

    def from_dataset() -> Iterator[np.ndarray]:
        dataset = _full_dataset(path, layout)
        if frame is not None:
            yield pixel_array(dataset, index=frame)
        else:
            yield from iter_pixels(dataset)

    def whole_array() -> Iterator[np.ndarray]:
        array = pixel_array(_full_dataset(path, layout))
        if frame is not None:
            yield array[frame] if layout.num_frames > 1 else array
        elif layout.num_frames > 1:
            yield from array
        else:
            yield array

    attempts = [from_dataset, whole_array] if layout.from_dataset else [from_path, from_dataset, whole_array]
    for number, attempt in enumerate(attempts, start=1):
        started = False
        try:
            for array in attempt():
                started = True
                yield array
            return
        except DicomReadError:
            raise
        except Exception as err:
            if started or number == len(attempts):
                raise DicomReadError(
                    path,
                    f"cannot decode the pixel data ('{layout.transfer_syntax.name}', {layout.transfer_syntax}): "
                    f"{type(err).__name__}: {err}",
                ) from err


def _full_dataset(path: str, layout: _FrameLayout) -> Dataset:
    """The whole data set of ``path`` with the inferred transfer syntax and the defaults of ``layout`` applied."""
    try:
        dataset = pydicom.dcmread(path, force=True)
    except Exception as err:
        raise DicomReadError(path, f"truncated or corrupt DICOM file ({type(err).__name__}: {err})") from err
    dataset.file_meta.TransferSyntaxUID = layout.transfer_syntax
    for default in layout.defaults:
        keyword, _, value = default.partition("=")
        setattr(dataset, keyword, int(value) if value.lstrip("-").isdigit() else value)
    return dataset


def _itk_stored_frames(path: str, layout: _FrameLayout) -> np.ndarray:
    """Decode every frame with ITK's GDCM as stored values ``(F, Rows, Columns)``.

    GDCM applies Rescale Slope/Intercept itself; it is undone here so that the Modality LUT is
    applied once, by pydicom, on every decoding path.
    """
    import itk

    image_io = itk.GDCMImageIO.New()
    values = itk.array_from_image(itk.imread(path, imageio=image_io))
    values = values.reshape(layout.num_frames, layout.rows, layout.columns)
    slope, intercept = image_io.GetRescaleSlope(), image_io.GetRescaleIntercept()
    if slope != 1.0 or intercept != 0.0:
        values = np.rint((values - intercept) / slope).astype(np.int64)
    return values


def _pip_packages(missing_dependencies: Sequence[str]) -> tuple[str, ...]:
    """Turn pydicom's "label - requires a and b" strings into ``pip install`` arguments."""
    packages = []
    for line in missing_dependencies:
        _, _, requirements = line.partition(" - requires ")
        if requirements:
            names = re.split(r", | and ", requirements)
            packages.append(" ".join(re.sub(r"^gdcm\b", "python-gdcm", name) for name in names))
    return tuple(packages)
