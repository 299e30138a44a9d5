"""Tests for monai_adaloss.io.dicom: layout, spacing, intensities, frames, decoders and bad files.

Every DICOM file is written by the tests into ``tmp_path`` with pydicom (ITK for JPEG Lossless).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import ITKReader, PydicomReader, list_data_collate
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import (
    MPEG2MPML,
    JPEG2000Lossless,
    RLELossless,
    XRayAngiographicImageStorage,
    generate_uid,
)

from monai_adaloss.io import (
    DicomDecoderUnavailableError,
    DicomReadError,
    DicomSpacingError,
    LoadDicomFrame,
    LoadDicomFramed,
    XRayDicomReader,
    read_all_frames,
)
from monai_adaloss.io import dicom as dicom_module

ROWS, COLUMNS = 64, 80


def make_xa(pixels: np.ndarray, **tags) -> Dataset:
    """A valid 12-bit MONOCHROME2 XA dataset with file meta; ``pixels`` is (rows, cols) or (frames, rows, cols)."""
    pixels = np.asarray(pixels)
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = XRayAngiographicImageStorage
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
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


def write_xa(path: Path, pixels: np.ndarray, **tags) -> Path:
    """Write :func:`make_xa` to ``path`` in the DICOM file format and return the path."""
    make_xa(pixels, **tags).save_as(path, enforce_file_format=True)
    return path


def ramp(frames: int | None = None) -> np.ndarray:
    """Distinct 12-bit test pixels, (rows, cols) or (frames, rows, cols)."""
    shape = (ROWS, COLUMNS) if frames is None else (frames, ROWS, COLUMNS)
    return (np.arange(np.prod(shape)).reshape(shape) * 7) % 4096


def load(path: Path, **reader_args) -> torch.Tensor:
    """Load with ``LoadImage`` and our reader, as a pipeline would."""
    return LoadImage(reader=XRayDicomReader(**reader_args))(path)


# --- layout -------------------------------------------------------------------------------------


def test_known_pixel_loads_at_column_row_like_monai_readers(tmp_path):
    pixels = np.zeros((ROWS, COLUMNS))
    pixels[5, 50] = 4000  # file row 5, column 50
    path = write_xa(tmp_path / "known.dcm", pixels)

    ours = load(path)
    theirs = LoadImage(reader=PydicomReader())(path)
    itk = LoadImage(reader=ITKReader())(path)[..., 0]  # ITK reads one DICOM file as (X, Y, 1)
    for image in (ours, theirs, itk):
        assert tuple(image.shape) == (COLUMNS, ROWS)
        assert np.unravel_index(int(image.argmax()), image.shape) == (50, 5)

    sample = Compose([LoadImaged(keys="image", reader=XRayDicomReader()), EnsureChannelFirstd(keys="image")])(
        {"image": str(path)}
    )
    image = sample["image"]
    assert tuple(image.shape) == (1, COLUMNS, ROWS)
    x, y = 50, 5  # a point is (x, y) = (column, row)
    assert image[0, x, y] == 1.0 and float(image.sum()) == 1.0
    assert image.dtype == torch.float32
    assert tuple(image.meta["spatial_shape"]) == (COLUMNS, ROWS)
    assert image.meta["filename_or_obj"] == str(path)


def test_meta_records_dicom_identity(tmp_path):
    ds = make_xa(ramp(3))
    ds.save_as(tmp_path / "ids.dcm", enforce_file_format=True)
    meta = LoadDicomFrame()(tmp_path / "ids.dcm", 2).meta
    assert meta["frame"] == 2 and meta["NumberOfFrames"] == 3
    assert (meta["Rows"], meta["Columns"]) == (ROWS, COLUMNS)
    assert meta["SOPInstanceUID"] == ds.SOPInstanceUID
    assert meta["SeriesInstanceUID"] == ds.SeriesInstanceUID
    assert meta["StudyInstanceUID"] == ds.StudyInstanceUID
    assert meta["PhotometricInterpretation"] == "MONOCHROME2"
    assert meta["Modality"] == "XA"
    assert meta["TransferSyntaxUID"] == pydicom.uid.ExplicitVRLittleEndian
    assert meta["decoder"] == "pydicom"


# --- spacing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "pixdim", "source"),
    [
        ({"PixelSpacing": [0.2, 0.3]}, (0.3, 0.2), "PixelSpacing"),
        ({"PixelSpacing": [0.2, 0.3], "ImagerPixelSpacing": [0.4, 0.4]}, (0.3, 0.2), "PixelSpacing"),
        (
            {"ImagerPixelSpacing": [0.3, 0.6], "EstimatedRadiographicMagnificationFactor": 1.5},
            (0.4, 0.2),
            "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
        ),
        (
            {
                "ImagerPixelSpacing": [0.3, 0.6],
                "EstimatedRadiographicMagnificationFactor": 1.5,
                "DistanceSourceToDetector": 1000,
                "DistanceSourceToPatient": 500,
            },
            (0.4, 0.2),
            "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
        ),
        (
            {"ImagerPixelSpacing": [0.25, 0.5], "DistanceSourceToDetector": 1000, "DistanceSourceToPatient": 800},
            (0.4, 0.2),
            "ImagerPixelSpacing/(DistanceSourceToDetector/DistanceSourceToPatient)",
        ),
        ({"ImagerPixelSpacing": [0.2, 0.3]}, (0.3, 0.2), "ImagerPixelSpacing"),
        ({"ImagerPixelSpacing": [0.2, 0.3], "DistanceSourceToDetector": 1000}, (0.3, 0.2), "ImagerPixelSpacing"),
        ({}, (1.0, 1.0), "none"),
    ],
)
def test_spacing_rules(tmp_path, tags, pixdim, source):
    image = load(write_xa(tmp_path / "spacing.dcm", ramp(), **tags))
    assert image.meta["spacing_source"] == source
    np.testing.assert_allclose(image.pixdim, pixdim)
    np.testing.assert_allclose(image.meta["spacing"], pixdim)
    np.testing.assert_allclose(image.affine, np.diag([*pixdim, 1.0, 1.0]))


@pytest.mark.parametrize(
    ("tags", "tag"),
    [
        ({"PixelSpacing": [0.0, 0.2]}, "PixelSpacing"),
        ({"PixelSpacing": [-0.1, 0.2]}, "PixelSpacing"),
        ({"PixelSpacing": [float("nan"), 0.2]}, "PixelSpacing"),
        ({"PixelSpacing": [20.0, 20.0]}, "PixelSpacing"),
        ({"PixelSpacing": [0.0001, 0.0001]}, "PixelSpacing"),
        ({"PixelSpacing": [0.2]}, "PixelSpacing"),
        ({"ImagerPixelSpacing": [0.0, 0.2]}, "ImagerPixelSpacing"),
        (
            {"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 0.0},
            "EstimatedRadiographicMagnificationFactor",
        ),
        (
            {"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 50.0},
            "EstimatedRadiographicMagnificationFactor",
        ),
        (
            {"ImagerPixelSpacing": [0.2, 0.2], "DistanceSourceToDetector": 1000, "DistanceSourceToPatient": 0},
            "DistanceSourceToPatient",
        ),
        (
            {"ImagerPixelSpacing": [0.2, 0.2], "DistanceSourceToDetector": 500, "DistanceSourceToPatient": 1000},
            "(DistanceSourceToDetector/DistanceSourceToPatient)",
        ),
    ],
)
def test_bad_spacing_raises_naming_file_and_tag(tmp_path, tags, tag):
    path = write_xa(tmp_path / "bad_spacing.dcm", ramp(), **tags)
    with pytest.raises(DicomSpacingError) as info:
        load(path)
    assert info.value.tag == tag and info.value.path == str(path)
    assert str(path) in str(info.value) and tag in str(info.value)


# --- intensities --------------------------------------------------------------------------------


def test_monochrome1_is_inverted(tmp_path):
    pixels = ramp()
    for window in ({}, {"WindowCenter": 1500, "WindowWidth": 2000}):
        mono2 = load(write_xa(tmp_path / "m2.dcm", pixels, **window))
        mono1 = load(write_xa(tmp_path / "m1.dcm", pixels, PhotometricInterpretation="MONOCHROME1", **window))
        torch.testing.assert_close(mono1, 1.0 - mono2)
    bright = np.zeros((ROWS, COLUMNS))
    bright[5, 50] = 4000  # highest stored value: displayed black in MONOCHROME1
    image = load(write_xa(tmp_path / "m1_bright.dcm", bright, PhotometricInterpretation="MONOCHROME1"))
    assert image[50, 5] == 0.0 and float(image.min()) == 0.0 and float(image.max()) == 1.0


def test_modality_and_voi_window_by_hand(tmp_path):
    pixels = np.zeros((ROWS, COLUMNS))
    pixels[0, :5] = [0, 100, 150, 200, 300]  # modality values 2 s - 100: -100, 100, 200, 300, 500
    tags = {"RescaleSlope": 2, "RescaleIntercept": -100, "WindowCenter": 300, "WindowWidth": 401}
    image = load(write_xa(tmp_path / "voi.dcm", pixels, **tags))
    # LINEAR window: (x - (c - 0.5)) / (w - 1) + 0.5, clipped to [0, 1]
    np.testing.assert_allclose(image[:5, 0], [0.0, 0.00125, 0.25125, 0.50125, 1.0], atol=1e-6)
    assert image.meta["intensity_mapping"] == "VOI window"


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_voi_window_matches_pydicom(tmp_path, function):
    tags = {
        "RescaleSlope": 0.5,
        "RescaleIntercept": 20,
        "WindowCenter": [700, 100],
        "WindowWidth": [900, 50],
        "VOILUTFunction": function,
    }
    ds = make_xa(ramp(), **tags)
    ds.save_as(tmp_path / "voi.dcm", enforce_file_format=True)
    # pydicom windows into [y_min, y_max] = the rescaled stored range; ours is [0, 1]
    y_min, y_max = 0 * 0.5 + 20, 4095 * 0.5 + 20
    expected = (apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds) - y_min) / (y_max - y_min)
    image = load(tmp_path / "voi.dcm")
    np.testing.assert_allclose(image.numpy(), expected.T, atol=1e-6)


def test_voi_lut_sequence_is_preferred_and_switchable(tmp_path):
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 12]
    lut.add_new(0x00283006, "US", list(range(4095, -1, -1)))  # LUT Data: an inverting LUT
    pixels = ramp()
    path = write_xa(tmp_path / "lut.dcm", pixels, VOILUTSequence=[lut], WindowCenter=2048, WindowWidth=4096)
    image = load(path)
    assert image.meta["intensity_mapping"] == "VOI LUT"
    np.testing.assert_allclose(image.numpy(), (4095 - pixels.T) / 4095, atol=1e-6)

    raw = load(path, apply_voi_lut=False)
    assert raw.meta["intensity_mapping"] == "frame min-max"
    np.testing.assert_allclose(raw.numpy(), (pixels.T - pixels.min()) / (pixels.max() - pixels.min()), atol=1e-6)


def test_invalid_window_raises(tmp_path):
    path = write_xa(tmp_path / "window.dcm", ramp(), WindowCenter=100, WindowWidth=0.5)
    with pytest.raises(DicomReadError, match="WindowWidth"):
        load(path)


# --- frames -------------------------------------------------------------------------------------


def frames_with_markers(num_frames: int) -> np.ndarray:
    """Frames where frame k has its only bright pixel at file (row k, column 10 + k)."""
    pixels = np.full((num_frames, ROWS, COLUMNS), 100)
    for k in range(num_frames):
        pixels[k, k, 10 + k] = 4000
    return pixels


def test_frame_k_gives_frame_k(tmp_path):
    path = write_xa(tmp_path / "cine.dcm", frames_with_markers(5))
    pipeline = Compose([LoadDicomFramed(keys="image", frame_key="frame"), EnsureChannelFirstd(keys="image")])
    for k in range(5):
        image = pipeline({"image": str(path), "frame": k})["image"]
        assert tuple(image.shape) == (1, COLUMNS, ROWS)
        assert np.unravel_index(int(image.argmax()), image.shape) == (0, 10 + k, k)
        assert image.meta["frame"] == k
        torch.testing.assert_close(image[0].as_tensor(), load(path, frame=k).as_tensor())

    frames, meta = read_all_frames(path)
    assert frames.shape == (5, COLUMNS, ROWS) and frames.dtype == np.float32
    for k in range(5):
        np.testing.assert_array_equal(frames[k], load(path, frame=k).numpy())
    assert meta["NumberOfFrames"] == 5 and "frame" not in meta


def test_frames_collate_into_a_batch(tmp_path):
    path = write_xa(tmp_path / "cine.dcm", frames_with_markers(3), PixelSpacing=[0.2, 0.3])
    load_sample = Compose([LoadDicomFramed(keys="image"), EnsureChannelFirstd(keys="image")])
    batch = list_data_collate([load_sample({"image": str(path), "frame": k}) for k in range(3)])
    image = batch["image"]
    assert tuple(image.shape) == (3, 1, COLUMNS, ROWS)
    assert image.meta["frame"].tolist() == [0, 1, 2]
    assert image.meta["spacing_source"] == ["PixelSpacing"] * 3
    np.testing.assert_allclose(image.pixdim[0], (0.3, 0.2))


def test_only_the_requested_frame_is_decoded(tmp_path, monkeypatch):
    path = write_xa(tmp_path / "cine.dcm", frames_with_markers(4))
    requested = []

    def spy(src, **kwargs):
        requested.append(kwargs.get("index"))
        return pydicom.pixels.pixel_array(src, **kwargs)

    monkeypatch.setattr(dicom_module, "pixel_array", spy)
    LoadDicomFrame()(path, 3)
    assert requested == [3]


def test_frame_errors(tmp_path):
    path = write_xa(tmp_path / "cine.dcm", frames_with_markers(3))
    with pytest.raises(DicomReadError, match="frame 3 is out of range") as info:
        LoadDicomFramed(keys="image")({"image": str(path), "frame": 3})
    assert info.value.path == str(path)
    with pytest.raises(KeyError, match="frame"):
        LoadDicomFramed(keys="image")({"image": str(path)})
    with pytest.raises(ValueError, match="non-negative"):
        LoadDicomFrame()(path, -1)
    with pytest.raises(ValueError, match="non-negative"):
        XRayDicomReader(frame=1.5)


# --- transfer syntaxes --------------------------------------------------------------------------


def test_rle_decodes_to_identical_pixels(tmp_path):
    pixels = frames_with_markers(3) + ramp(3)
    plain = write_xa(tmp_path / "plain.dcm", pixels)
    ds = make_xa(pixels)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    for k in range(3):
        image = LoadDicomFrame()(tmp_path / "rle.dcm", k)
        assert image.meta["TransferSyntaxUID"] == RLELossless
        torch.testing.assert_close(image.as_tensor(), LoadDicomFrame()(plain, k).as_tensor(), rtol=0, atol=0)


def test_jpeg_lossless_decodes_through_pydicom_or_itk(tmp_path):
    itk = pytest.importorskip("itk")
    pixels = (frames_with_markers(3) + ramp(3)).astype(np.uint16)
    image_io = itk.GDCMImageIO.New()
    image_io.SetCompressionType(itk.GDCMImageIOEnums.Compression_JPEG)
    itk.imwrite(itk.image_from_array(pixels), str(tmp_path / "jpeg.dcm"), imageio=image_io, compression=True)
    assert pydicom.dcmread(tmp_path / "jpeg.dcm").file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1

    frames, meta = read_all_frames(tmp_path / "jpeg.dcm")
    expected = (pixels - pixels.min(axis=(1, 2), keepdims=True)) / np.ptp(pixels, axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(frames, expected.transpose(0, 2, 1), atol=1e-6)
    assert meta["decoder"] == ("pydicom" if get_decoder(pydicom.uid.JPEGLosslessSV1).is_available else "itk")


def write_garbage_encapsulated(path: Path, transfer_syntax: str, **tags) -> Path:
    """A dataset claiming ``transfer_syntax`` whose single fragment is not a valid codestream."""
    ds = make_xa(np.zeros((16, 16)), **tags)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([b"\x00\x01not a codestream" * 8])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def no_jpeg2000_decoder(monkeypatch):
    """Make pydicom report that no JPEG 2000 plugin is installed (pydicom's own bookkeeping)."""
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(
        decoder,
        "_unavailable",
        {"gdcm": ("gdcm>=3.0.10",), "pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")},
    )


@pytest.mark.parametrize("itk_fallback", [False, True])
def test_missing_decoder_names_syntax_and_packages(tmp_path, no_jpeg2000_decoder, itk_fallback):
    path = write_garbage_encapsulated(tmp_path / "j2k.dcm", JPEG2000Lossless)
    with pytest.raises(DicomDecoderUnavailableError) as info:
        load(path, itk_fallback=itk_fallback)
    error = info.value
    assert isinstance(error, DicomReadError) and isinstance(error, RuntimeError)
    assert error.path == str(path) and error.transfer_syntax_uid == JPEG2000Lossless
    assert error.packages == ("python-gdcm>=3.0.10", "pylibjpeg>=2.0 pylibjpeg-openjpeg>=2.0")
    message = str(error)
    for text in (str(path), JPEG2000Lossless, JPEG2000Lossless.name, "pylibjpeg-openjpeg", "python-gdcm"):
        assert text in message
    assert ("ITK/GDCM fallback failed" in message) == itk_fallback


def test_itk_fallback_skips_monochrome1(tmp_path, no_jpeg2000_decoder):
    path = write_garbage_encapsulated(tmp_path / "j2k.dcm", JPEG2000Lossless, PhotometricInterpretation="MONOCHROME1")
    with pytest.raises(DicomDecoderUnavailableError, match="not used for MONOCHROME1"):
        load(path)


def test_syntax_without_any_decoder(tmp_path):
    path = write_garbage_encapsulated(tmp_path / "mpeg.dcm", MPEG2MPML)
    with pytest.raises(DicomDecoderUnavailableError, match="MPEG2") as info:
        load(path)
    assert info.value.packages == () and str(path) in str(info.value)


def test_corrupt_compressed_data_raises(tmp_path):
    ds = make_xa(ramp())
    ds.compress(RLELossless)
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x00" * 60 + b"\xff" * 8])
    ds.save_as(tmp_path / "bad_rle.dcm", enforce_file_format=True)
    with pytest.raises(DicomReadError, match="cannot decode the pixel data") as info:
        load(tmp_path / "bad_rle.dcm")
    assert info.value.path == str(tmp_path / "bad_rle.dcm")


# --- bad inputs ---------------------------------------------------------------------------------


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Bad inputs: name -> (file, expected words of the reason)."""
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "text.dcm").write_text("not a DICOM file\n" * 20)
    full = write_xa(tmp_path / "full.dcm", ramp(3)).read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(full[: len(full) - 5000])
    (tmp_path / "truncated_header.dcm").write_bytes(full[:300])
    no_pixels = make_xa(ramp())
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / "no_pixels.dcm", enforce_file_format=True)
    rgb = np.zeros((ROWS, COLUMNS, 3), dtype=np.uint8)
    write_xa(
        tmp_path / "rgb.dcm",
        ramp(),
        SamplesPerPixel=2,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelData=rgb.tobytes(),
    )
    write_xa(tmp_path / "zero_rows.dcm", ramp(), Rows=0, PixelData=b"")
    write_xa(tmp_path / "short_pixels.dcm", ramp(), Rows=ROWS * 2)
    return {
        "empty": (tmp_path / "empty.dcm", "empty file"),
        "not DICOM": (tmp_path / "text.dcm", "not a DICOM file"),
        "missing": (tmp_path / "missing.dcm", "no such file"),
        "truncated": (tmp_path / "truncated.dcm", "truncated"),
        "truncated header": (tmp_path / "truncated_header.dcm", "no Pixel Data"),
        "no PixelData": (tmp_path / "no_pixels.dcm", "no Pixel Data"),
        "two samples": (tmp_path / "rgb.dcm", "SamplesPerPixel 2 with PhotometricInterpretation 'RGB'"),
        "zero rows": (tmp_path / "zero_rows.dcm", "absurd dimensions"),
        "short PixelData": (tmp_path / "short_pixels.dcm", "Pixel Data holds"),
    }


def test_bad_inputs_raise_naming_the_file(tmp_path):
    for name, (path, reason) in bad_files(tmp_path).items():
        # LoadImaged must surface our error, not retry the file with MONAI's other readers
        with pytest.raises(DicomReadError) as info:
            LoadImaged(keys="image", reader=XRayDicomReader())({"image": str(path)})
        assert info.value.path == str(path), name
        assert reason in info.value.reason, (name, info.value.reason)
        assert str(path) in str(info.value), name


def test_pixel_limit(tmp_path):
    path = write_xa(tmp_path / "cine.dcm", ramp(4))
    with pytest.raises(DicomReadError, match="absurd dimensions"):
        load(path, max_pixels=3 * ROWS * COLUMNS)
    assert tuple(load(path, max_pixels=4 * ROWS * COLUMNS).shape) == (COLUMNS, ROWS)


def test_errors_pickle(tmp_path):
    errors = [
        DicomReadError(tmp_path / "a.dcm", "empty file (0 bytes)"),
        DicomSpacingError(tmp_path / "a.dcm", "PixelSpacing", "is [0.0, 0.2] mm"),
        DicomDecoderUnavailableError(tmp_path / "a.dcm", JPEG2000Lossless, ("pylibjpeg",), "detail"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.__dict__ == error.__dict__


def test_verify_suffix(tmp_path):
    reader = XRayDicomReader()
    suffixless = write_xa(tmp_path / "IM0001", ramp())
    (tmp_path / "notes.txt").write_text("hello")
    assert reader.verify_suffix(tmp_path / "a.dcm") and reader.verify_suffix(suffixless)
    assert not reader.verify_suffix(tmp_path / "notes.txt")


# --- real-world quirks (issue 13) ----------------------------------------------------------------


def test_legacy_file_without_preamble_or_file_meta_reads_like_the_full_file(tmp_path):
    """An ACR-NEMA-style file (no preamble, no File Meta, implicit VR) reads with force=True."""
    full = write_xa(tmp_path / "full.dcm", ramp(), PixelSpacing=[0.5, 0.25])
    legacy = make_xa(ramp(), PixelSpacing=[0.5, 0.25])
    del legacy.file_meta
    legacy.save_as(tmp_path / "legacy.dcm", implicit_vr=True, little_endian=True)
    assert tmp_path.joinpath("legacy.dcm").read_bytes()[128:132] != b"DICM"
    expected, _ = read_all_frames(full)
    array, meta = read_all_frames(tmp_path / "legacy.dcm")
    np.testing.assert_array_equal(array, expected)
    assert meta["legacy"] and meta["TransferSyntaxUID"] == pydicom.uid.ImplicitVRLittleEndian
    assert meta["spacing_source"] == "PixelSpacing"


def test_missing_transfer_syntax_and_absent_pixel_attributes_are_inferred(tmp_path):
    ds = make_xa(ramp())
    del ds.SamplesPerPixel, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.PhotometricInterpretation
    ds.save_as(tmp_path / "sparse.dcm", enforce_file_format=True)
    raw = pydicom.dcmread(tmp_path / "sparse.dcm")
    del raw.file_meta.TransferSyntaxUID
    raw.save_as(tmp_path / "no_syntax.dcm", implicit_vr=False, little_endian=True)
    array, meta = read_all_frames(tmp_path / "no_syntax.dcm")
    assert meta["TransferSyntaxUID"] == pydicom.uid.ExplicitVRLittleEndian
    assert "SamplesPerPixel=1" in meta["defaults"] and "BitsStored=16" in meta["defaults"]
    values = ramp().astype(np.float64)
    np.testing.assert_allclose(array[0], ((values - values.min()) / np.ptp(values)).T, atol=1e-6)


def test_colour_frames_become_bt601_luminance(tmp_path):
    rgb = np.zeros((ROWS, COLUMNS, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    rgb[5, 50] = (255, 255, 255)
    colour = dict(SamplesPerPixel=3, PlanarConfiguration=0, BitsAllocated=8, BitsStored=8, HighBit=7)
    write_xa(tmp_path / "rgb.dcm", ramp(), PhotometricInterpretation="RGB", PixelData=rgb.tobytes(), **colour)
    array, meta = read_all_frames(tmp_path / "rgb.dcm")
    assert meta["colour_conversion"] == "BT.601 luminance of RGB"
    assert array[0, 20, 20] == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, abs=1e-5)
    assert array[0, 50, 5] == pytest.approx(1.0)  # (x, y) = (column, row)
    palette = make_xa(np.zeros((ROWS, COLUMNS)), PhotometricInterpretation="PALETTE COLOR", BitsAllocated=8,
                      BitsStored=8, HighBit=7)  # fmt: skip
    indices = np.zeros((ROWS, COLUMNS), dtype=np.uint8)
    indices[5, 50] = 1
    palette.PixelData = indices.tobytes()
    for channel, values in (("Red", [0, 65535]), ("Green", [0, 0]), ("Blue", [0, 0])):
        setattr(palette, f"{channel}PaletteColorLookupTableDescriptor", [2, 0, 16])
        setattr(palette, f"{channel}PaletteColorLookupTableData", np.array(values, dtype=np.uint16).tobytes())
    palette.save_as(tmp_path / "palette.dcm", enforce_file_format=True)
    array, meta = read_all_frames(tmp_path / "palette.dcm")
    assert meta["colour_conversion"].startswith("BT.601 luminance of PALETTE COLOR")
    assert array[0, 50, 5] == pytest.approx(0.299, abs=1e-5) and array[0, 0, 0] == 0.0


def test_invalid_spacing_can_fall_back_to_pixel_units(tmp_path):
    path = write_xa(tmp_path / "three.dcm", ramp(), PixelSpacing=[0.2, 0.0, 0.2])
    with pytest.raises(DicomSpacingError, match="must have 2 values"):
        read_all_frames(path)
    _, meta = read_all_frames(path, XRayDicomReader(invalid_spacing="pixels"))
    assert meta["spacing_source"].startswith("none (PixelSpacing must have 2 values")
    np.testing.assert_array_equal(meta["spacing"], [1.0, 1.0])


def test_modality_policy_skips_before_validating(tmp_path):
    from monai_adaloss.io import DicomSkippedError

    path = write_xa(tmp_path / "ct.dcm", ramp(), Modality="CT", PixelSpacing=[0.0, 0.0])
    with pytest.raises(DicomSkippedError, match="Modality 'CT' is not one of --modalities XA,RF") as info:
        read_all_frames(path, XRayDicomReader(modalities=["XA", "RF"]))
    assert pickle.loads(pickle.dumps(info.value)).modality == "CT"
    read_all_frames(write_xa(tmp_path / "xa.dcm", ramp()), XRayDicomReader(modalities=["xa"]))
