"""Helpers for the inference tests: DICOM corpus, oracle networks, checkpoints, crashing decoders.

It has no tests itself; it is a module so that worker processes, ``ConfigParser`` and the
subprocesses of the tests can import what it defines (``tests/`` is on ``sys.path`` under pytest
and is put on ``PYTHONPATH`` for subprocesses).
"""

from __future__ import annotations

import faulthandler
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import (
    MPEG2MPML,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    XRayAngiographicImageStorage,
    generate_uid,
)
from torch import nn

from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.inference import decode_file
from monai_adaloss.inference.decode import DecodedFile, DecodeSettings
from monai_adaloss.model_info import LandmarkModelInfo

TESTS_DIR = Path(__file__).parent
SUPPORT_MODULE = "test_inference_support"
CRASH_MARKER = "crash-me"
HANG_MARKER = "hang-me"


# --- DICOM files ----------------------------------------------------------------------------------


def make_dataset(pixels: np.ndarray, **tags: object) -> Dataset:
    """A valid 12-bit MONOCHROME2 XA dataset; ``pixels`` is (rows, cols) or (frames, rows, cols)."""
    pixels = np.asarray(pixels)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = XRayAngiographicImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "ANON"
    ds.PatientName = "Test^Patient"
    ds.Modality = "XA"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def write(path: Path, ds: Dataset) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def marker_frames(shape: tuple[int, int], markers: Sequence[tuple[int, int]], seed: int = 0) -> np.ndarray:
    """Frames (F, rows, cols): a textured background in [200, 1200) with one bright pixel (4000) at each (row, col)."""
    rng = np.random.default_rng([seed, *shape, len(markers)])
    frames = rng.integers(200, 1200, size=(len(markers), *shape)).astype(np.uint16)
    for k, (row, col) in enumerate(markers):
        frames[k, row, col] = 4000
    return frames


def good_files(folder: Path) -> dict[str, Path]:
    """Good inputs of every kind the issue names: name -> path (sizes differ from the network's)."""
    files = {
        "single": write(
            folder / "single.dcm", make_dataset(marker_frames((24, 40), [(5, 20)])[0], PixelSpacing=[0.2, 0.3])
        ),
        "multi": write(
            folder / "cine" / "IM0001",  # no suffix, in a subfolder
            make_dataset(
                marker_frames((48, 36), [(3, 4), (10, 30), (40, 7)]),
                ImagerPixelSpacing=[0.4, 0.4],
                EstimatedRadiographicMagnificationFactor=2.0,
            ),
        ),
        "no spacing": write(folder / "nospacing.dcm", make_dataset(marker_frames((32, 32), [(8, 9)])[0])),
    }
    mono1 = make_dataset(
        4095 - marker_frames((30, 50), [(12, 44)])[0],  # stored inverted: the marker displays bright
        PhotometricInterpretation="MONOCHROME1",
        SOPClassUID=DigitalXRayImageStorageForPresentation,
        Modality="DX",
        WindowCenter=2048,
        WindowWidth=4096,
        PixelSpacing=[0.15, 0.15],
    )
    mono1.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    files["monochrome1"] = write(folder / "mono1.dcm", mono1)
    for name, syntax in (("rle", RLELossless), ("jpeg-ls", JPEGLSLossless)):
        if not get_encoder(syntax).is_available:
            continue
        ds = make_dataset(marker_frames((40, 40), [(20, 10), (21, 11)]), PixelSpacing=[0.25, 0.25])
        ds.compress(syntax, generate_instance_uid=False)
        files[name] = write(folder / f"{name}.dcm", ds)
    return files


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Bad inputs: name -> (path, words expected in the error reason). Eight kinds.

    Files that used to be refused but whose pixels decode (colour, bad spacing, unusable UIDs) are
    :func:`quirky_files` now: they get records.
    """
    folder.mkdir(parents=True, exist_ok=True)
    good = make_dataset(marker_frames((24, 24), [(1, 1), (2, 2)]))
    full = write(folder / "template.dcm", good).read_bytes()
    (folder / "template.dcm").unlink()
    (folder / "notes.txt").write_text("not a DICOM file\n" * 20)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "truncated.dcm").write_bytes(full[: len(full) - 500])
    no_pixels = make_dataset(marker_frames((24, 24), [(1, 1)])[0])
    del no_pixels.PixelData
    write(folder / "nopixels.dcm", no_pixels)
    mpeg = make_dataset(np.zeros((16, 16)))
    mpeg.file_meta.TransferSyntaxUID = MPEG2MPML
    mpeg.PixelData = encapsulate([b"\x00\x00\x01\xb3 not really mpeg" * 4])
    mpeg["PixelData"].VR = "OB"
    write(folder / "mpeg.dcm", mpeg)
    corrupt = make_dataset(marker_frames((24, 24), [(1, 1)])[0])
    corrupt.compress(RLELossless, generate_instance_uid=False)
    corrupt.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x00" * 60 + b"\xff" * 8])
    write(folder / "corrupt_rle.dcm", corrupt)
    write(folder / "absurd_dims.dcm", make_dataset(np.zeros((24, 24)), Rows=0, PixelData=b""))
    write(folder / f"{CRASH_MARKER}.dcm", make_dataset(marker_frames((24, 24), [(1, 1)])[0]))
    return {
        "not DICOM": (folder / "notes.txt", "not a DICOM file"),
        "empty": (folder / "empty.dcm", "empty file"),
        "truncated": (folder / "truncated.dcm", "truncated"),
        "no pixel data": (folder / "nopixels.dcm", "no Pixel Data"),
        "no decoder": (folder / "mpeg.dcm", "no pixel data decoder"),
        "corrupt compressed": (folder / "corrupt_rle.dcm", "cannot decode the pixel data"),
        "absurd dimensions": (folder / "absurd_dims.dcm", "absurd dimensions"),
        "decoder crash": (folder / f"{CRASH_MARKER}.dcm", "decoder crashed (signal 6, SIGABRT)"),
    }


def quirky_files(folder: Path) -> dict[str, tuple[Path, dict[str, object]]]:
    """Real-world quirks whose pixels decode (issue 13): name -> (path, what the outputs must say).

    The expectations: ``sr`` True (an SR is written) or the words of its error; ``spacing_source``
    (start of), ``colour`` (start of ``colour_conversion``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Path, dict[str, object]]] = {}

    def add(name: str, ds: Dataset, expect: dict[str, object], **save: object) -> None:
        path = folder / f"{name}.dcm"
        if save:
            ds.save_as(path, **save)
        else:
            write(path, ds)
        files[name] = (path, {"sr": True, **expect})

    pixels = marker_frames((24, 24), [(3, 5)])[0]
    rgb = np.zeros((24, 24, 3), dtype=np.uint8)
    rgb[3, 5] = 255
    colour = dict(SamplesPerPixel=3, PlanarConfiguration=0, BitsAllocated=8, BitsStored=8, HighBit=7)
    add("rgb", make_dataset(pixels, PhotometricInterpretation="RGB", PixelData=rgb.tobytes(), **colour),
        {"colour": "BT.601 luminance of RGB"})  # fmt: skip
    ybr = make_dataset(pixels, PhotometricInterpretation="YBR_FULL", PixelData=rgb.tobytes(), **colour)
    add("ybr", ybr, {"colour": "BT.601 luminance of YBR_FULL"})
    add("zero_spacing", make_dataset(pixels, PixelSpacing=[0.0, 0.0]), {"spacing_source": "none (PixelSpacing is"})
    add("three_spacing", make_dataset(pixels, PixelSpacing=[0.2, 0.0, 0.2]),
        {"spacing_source": "none (PixelSpacing must have 2 values"})  # fmt: skip
    add("colon_time", make_dataset(pixels, StudyTime="08:30:00", StudyDate="20240131", PatientSex="?"), {})
    add("odd_patient", make_dataset(pixels, PatientSex="0000", PatientBirthDate="31.01.1970"), {})
    add("leading_zero_uid", make_dataset(pixels, StudyInstanceUID="1.2.840.0123.04"), {})
    add("unknown_class", make_dataset(pixels, SOPClassUID="1.2.840.10008.5.1.4.1.1.3"), {})  # retired US MF
    no_series = make_dataset(pixels)
    del no_series.SeriesInstanceUID
    add("no_series", no_series, {})
    add("missing_study", make_dataset(pixels, StudyInstanceUID=""), {})
    add("crafted_uid", make_dataset(pixels, SOPInstanceUID="1.2/../../../etc/passwd"),
        {"sr": "an SR cannot reference it"})  # fmt: skip
    sparse = make_dataset(pixels)
    del sparse.SamplesPerPixel, sparse.PhotometricInterpretation, sparse.BitsStored, sparse.HighBit
    add("no_samples_per_pixel", sparse, {})
    legacy = make_dataset(marker_frames((24, 24), [(3, 5), (7, 9)]))
    del legacy.file_meta
    add("legacy_no_meta", legacy, {}, implicit_vr=True, little_endian=True)
    big = make_dataset(pixels)
    big.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.2"
    add("big_endian", big, {})
    deflated = make_dataset(pixels)
    deflated.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    add("deflate", deflated, {})
    if get_encoder(JPEG2000Lossless).is_available:
        j2k = make_dataset(marker_frames((64, 64), [(3, 5)])[0])
        j2k.compress(JPEG2000Lossless, generate_instance_uid=False)
        add("jpeg2000", j2k, {})
    return files


# --- decode functions for the workers -------------------------------------------------------------


def crashing_decode(path: str, settings: DecodeSettings) -> DecodedFile:
    """``decode_file``, except that it aborts the process (as a native decoder can) on the marked file."""
    if CRASH_MARKER in Path(path).name:
        faulthandler.disable()  # pytest's fault handler would print this process's stack
        os.abort()
    return decode_file(path, settings)


def hanging_decode(path: str, settings: DecodeSettings) -> DecodedFile:
    """``decode_file``, except that it never returns on the marked file."""
    if HANG_MARKER in Path(path).name:
        time.sleep(3600)
    return decode_file(path, settings)


def main_with_slow_decode(argv: Sequence[str]) -> int:
    """The ``monai-adaloss`` command with decoding slowed to 0.1 s a file, so that a test can kill it part-way."""
    from monai_adaloss import cli
    from monai_adaloss.inference import decode

    read_all_frames = decode.read_all_frames

    def slow_read_all_frames(path: str, reader: object = None) -> tuple:
        time.sleep(0.1)
        return read_all_frames(path, reader)

    decode.read_all_frames = slow_read_all_frames  # the forked decoding workers inherit it
    return cli.main(argv)


# --- networks -------------------------------------------------------------------------------------


class FixedPointOracle(nn.Module):
    """Renders Gaussians at fixed network-grid points whatever the input: ``(B, 1, X, Y) -> (B, L, X, Y)``.

    Args:
        points: ``(L, K, 2)`` points in the network grid (NaN: no instance).
        sigma: Gaussian sigma in voxels.
    """

    def __init__(self, points: Sequence, sigma: float = 2.0) -> None:
        super().__init__()
        self.register_buffer("points", torch.tensor(points, dtype=torch.float32), persistent=False)
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        points = self.points.expand(x.shape[0], *self.points.shape)
        return render_gaussian_heatmaps(points, self.sigma, x.shape[2:]).to(x.dtype)


class BrightestPixelOracle(nn.Module):
    """One landmark at each image's brightest voxel (a Gaussian there): ``(B, 1, X, Y) -> (B, 1, X, Y)``."""

    def __init__(self, sigma: float = 1.5) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).argmax(dim=1)
        points = torch.stack([flat // x.shape[3], flat % x.shape[3]], dim=-1).to(x.dtype)  # (B, 2): (x, y)
        return render_gaussian_heatmaps(points[:, None, None], self.sigma, x.shape[2:]).to(x.dtype)


def save_checkpoint(
    path: Path,
    network_config: dict,
    landmark_names: Sequence[str] = ("tip",),
    input_size: Sequence[int] = (32, 32),
    max_instances: int = 1,
    decoding: dict | None = None,
    preprocessing: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Build the network from ``network_config`` and save a bundle-contract checkpoint ``{"model", "model_info"}``."""
    from monai.bundle import ConfigParser

    network = ConfigParser({"n": network_config}).get_parsed_content("n")
    info = LandmarkModelInfo(
        landmark_names=list(landmark_names),
        input_size=list(input_size),
        network=network_config,
        preprocessing=preprocessing or {"reader": "XRayDicomReader", "apply_voi_lut": True, "resize_mode": "bilinear"},
        max_instances=max_instances,
        decoding=decoding or {},
        sigma=[2.0] * len(landmark_names),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": network.state_dict(), "model_info": info.state_dict(), **(extra or {})}, path)
    return path


TINY_UNET = {
    "_target_": "monai_adaloss.networks.HeatmapUNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8],
    "kernel_size": 3,
}


def tiny_unet_checkpoint(path: Path) -> Path:
    """A randomly initialised 2-landmark HeatmapUNet (channels 4, 8) on a 32x32 grid, fixed seed."""
    torch.manual_seed(0)
    return save_checkpoint(path, TINY_UNET, landmark_names=("tip", "marker"))


def subprocess_env() -> dict[str, str]:
    """Environment for subprocesses: this folder importable, one torch thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env
