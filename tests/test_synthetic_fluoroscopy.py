"""Synthetic fluoroscopy frames and their DICOM files: conventions, ground truth, switches, validity.

Everything is written under pytest's ``tmp_path``. Points are ``(x, y) = (column, row)``; a file raster
pixel is ``pixel_array[row, column]`` and MONAI's reader layout is ``image[x, y]`` (DESIGN.md section 2).
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import validate_file_meta
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless

from monai_adaloss.synthetic import (
    SOP_CLASS_UIDS,
    SPACING_SOURCES,
    DicomWriteOptions,
    FluoroscopyConfig,
    MarkerLandmark,
    generate_frame,
    generate_sequence,
    lossless_transfer_syntaxes,
    make_dataset,
    save_preview_grid,
    write_dicom,
)

SWITCHES = tuple(
    f.name for f in dataclasses.fields(FluoroscopyConfig) if f.type == "bool" or f.name.endswith("_probability")
)


def _switched_off(**keep) -> FluoroscopyConfig:
    """A config with every switch off (booleans False, probabilities 0), except what `keep` sets."""
    values = {name: False if isinstance(getattr(FluoroscopyConfig, name), bool) else 0.0 for name in SWITCHES}
    return FluoroscopyConfig(**{**values, **keep})


def _annulus_median(raster: np.ndarray, point: np.ndarray, inner: float, outer: float) -> float:
    """Median of the exposed (non-black) raster pixels between `inner` and `outer` px from ``(x, y)``."""
    rows, cols = np.mgrid[0 : raster.shape[0], 0 : raster.shape[1]]
    distance = np.hypot(cols - point[0], rows - point[1])
    ring = (distance >= inner) & (distance <= outer) & (raster > 0.05 * raster.max())
    return float(np.median(raster[ring]))


def _spacing_from_tags(ds: pydicom.Dataset) -> float:
    """Spacing at the patient plane by DESIGN.md's rule (PixelSpacing, else ImagerPixelSpacing / magnification)."""
    if "PixelSpacing" in ds:
        return float(ds.PixelSpacing[1])
    imager = float(ds.ImagerPixelSpacing[1])
    if "EstimatedRadiographicMagnificationFactor" in ds:
        return imager / float(ds.EstimatedRadiographicMagnificationFactor)
    return imager * float(ds.DistanceSourceToPatient) / float(ds.DistanceSourceToDetector)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset with every file variant (multi-frame, compressed, MONOCHROME1), written strictly."""
    from pydicom import config

    mode = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.RAISE
    try:
        return make_dataset(
            tmp_path_factory.mktemp("fluoro"),
            n_train=14,
            n_val=4,
            n_test=4,
            config=FluoroscopyConfig(rows=80, columns=96),
            seed=11,
            multiframe_fraction=0.4,
            compressed_fraction=0.5,
            monochrome1_fraction=0.25,
        )
    finally:
        config.settings.writing_validation_mode = mode


def _entries(datalist_path: Path) -> list[dict]:
    data = json.loads(datalist_path.read_text())
    return [e for split in ("training", "validation", "test") for e in data[split]]


class TestFrames:
    def test_same_seed_same_frame(self):
        config = FluoroscopyConfig(rows=64, columns=64, annotation_noise_px=1.0)
        a, b = (generate_frame(config, np.random.default_rng(5)) for _ in range(2))
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        np.testing.assert_array_equal(a.landmarks_annotated, b.landmarks_annotated)
        c = generate_frame(config, np.random.default_rng(6))
        assert not np.array_equal(a.image, c.image)

    def test_layout_is_monai_reader_layout(self):
        frame = generate_frame(FluoroscopyConfig(rows=96, columns=128), np.random.default_rng(0))
        assert frame.image.shape == (128, 96)  # (columns, rows): indexed [x, y]
        assert frame.raster.shape == (96, 128)  # (rows, columns): the DICOM raster
        assert frame.image.dtype == np.float32
        np.testing.assert_array_equal(frame.image[17, 40], frame.raster[40, 17])
        x, y = frame.tip
        assert 0 <= x <= 127 and 0 <= y <= 95
        assert frame.spacing_mm[0] == frame.spacing_mm[1] == pytest.approx(frame.geometry.pixel_spacing_mm)
        max_value = 2**frame.bits_stored - 1
        assert frame.image.min() >= 0 and frame.image.max() <= max_value
        np.testing.assert_array_equal(frame.image, np.rint(frame.image))

    @pytest.mark.parametrize("seed", range(12))
    def test_tip_is_darker_than_its_surroundings(self, seed):
        """Noise-free: the file pixel raster[row, col] at the tip (x, y) = (col, row) is dark (tip marker)."""
        config = FluoroscopyConfig(rows=128, columns=128, quantum_noise=False)
        frame = generate_frame(config, np.random.default_rng(seed))
        x, y = frame.tip
        value = frame.raster[round(y), round(x)]
        assert value < 0.85 * _annulus_median(frame.raster, frame.tip, 8.0, 16.0)
        np.testing.assert_array_equal(frame.tip, frame.tip_annotated)  # default: no annotation noise

    def test_guidewire_continues_past_the_tip(self):
        base = {"rows": 128, "columns": 128, "quantum_noise": False, "curl_probability": 0.0}
        with_wire = FluoroscopyConfig(**base, guidewire_probability=1.0)
        without = FluoroscopyConfig(**base, guidewire_probability=0.0)
        checked = 0
        for seed in range(30):
            on = generate_frame(with_wire, np.random.default_rng(seed))
            off = generate_frame(without, np.random.default_rng(seed))
            np.testing.assert_array_equal(on.tip, off.tip)  # the wire has its own random stream
            assert on.guidewire_beyond_tip and not off.guidewire_beyond_tip
            spacing = on.spacing_mm[0]
            assert np.hypot(*(on.guidewire_tip - on.tip)) > 0.5 * with_wire.guidewire_extension_mm[0] / spacing
            col, row = np.rint(on.guidewire_tip).astype(int)
            if 4 <= col < 124 and 4 <= row < 124 and off.raster[row, col] > 0.2 * off.raster.max():
                assert on.raster[row, col] < off.raster[row, col]  # the wire's end darkens the image
                checked += 1
        assert checked >= 5

    def test_curled_catheter_keeps_its_wire_inside(self):
        config = FluoroscopyConfig(rows=96, columns=96, curl_probability=1.0, guidewire_probability=1.0)
        frame = generate_frame(config, np.random.default_rng(3))
        assert not frame.guidewire_beyond_tip and frame.guidewire_tip is not None

    def test_every_switch_off_leaves_a_uniform_field(self):
        config = _switched_off(rows=96, columns=96, collimation=True, round_collimation_probability=1.0)
        frame = generate_frame(config, np.random.default_rng(0))
        assert np.isnan(frame.tip).all() and frame.guidewire_tip is None
        raster = frame.raster
        from scipy import ndimage

        field = ndimage.binary_erosion(raster > 0.5 * raster.max(), iterations=3)
        assert field.mean() > 0.3
        assert raster[field].std() <= 1e-3 * raster[field].mean() + 1.0
        assert (raster[0, 0], raster[-1, -1]) == (0.0, 0.0)  # black behind the round iris

    @pytest.mark.parametrize("switch", SWITCHES)
    def test_each_switch_can_be_turned_off(self, switch):
        off = False if isinstance(getattr(FluoroscopyConfig, switch), bool) else 0.0
        frame = generate_frame(FluoroscopyConfig(rows=64, columns=64, **{switch: off}), np.random.default_rng(1))
        assert np.isfinite(frame.image).all()

    def test_sequence_advances_the_catheter(self):
        frames = generate_sequence(FluoroscopyConfig(rows=96, columns=96), np.random.default_rng(2), 4)
        tips = np.stack([f.tip for f in frames])
        assert np.all(np.hypot(*np.diff(tips, axis=0).T) > 0.1)
        assert len({f.geometry for f in frames}) == 1 and len({f.bits_stored for f in frames}) == 1

    def test_extra_landmarks_along_the_catheter_with_their_own_noise(self):
        markers = (MarkerLandmark("band_10mm", 10.0), MarkerLandmark("band_20mm", 20.0, annotation_noise_px=3.0))
        config = FluoroscopyConfig(rows=96, columns=96, extra_landmarks=markers, curl_probability=0.0)
        assert config.landmark_names == ("tip", "band_10mm", "band_20mm")
        errors = []
        for seed in range(40):
            frame = generate_frame(config, np.random.default_rng(seed))
            assert frame.landmarks.shape == frame.landmarks_annotated.shape == (3, 2)
            spacing = frame.spacing_mm[0]
            for i, marker in enumerate(markers, start=1):
                if np.isnan(frame.landmarks[i]).any():
                    continue
                chord = np.hypot(*(frame.landmarks[i] - frame.tip))
                assert 0.3 * marker.arc_length_mm / spacing < chord <= marker.arc_length_mm / spacing + 1e-6
            np.testing.assert_array_equal(frame.landmarks[:2], frame.landmarks_annotated[:2])
            if not np.isnan(frame.landmarks[2]).any():
                errors.append(frame.landmarks_annotated[2] - frame.landmarks[2])
        assert len(errors) >= 15
        assert 1.5 < np.std(errors) < 4.5

    def test_invalid_config_is_rejected(self):
        with pytest.raises(ValueError, match="ribs_probability"):
            FluoroscopyConfig(ribs_probability=1.5)
        with pytest.raises(ValueError, match="bits_stored"):
            FluoroscopyConfig(bits_stored=(9,))
        with pytest.raises(ValueError, match="extra_landmarks"):
            FluoroscopyConfig(extra_landmarks=(MarkerLandmark("tip", 5.0),))


class TestDicom:
    def test_files_are_valid_dicom(self, dataset):
        for path in sorted(dataset.parent.rglob("*.dcm")):
            ds = pydicom.dcmread(path)
            validate_file_meta(ds.file_meta, enforce_standard=True)
            assert ds.SOPClassUID in SOP_CLASS_UIDS.values()
            assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
            assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
            for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.file_meta.TransferSyntaxUID):
                assert UID(uid).is_valid
            assert ds.Modality == next(k for k, v in SOP_CLASS_UIDS.items() if v == ds.SOPClassUID)
            assert str(ds.PatientName) == "SYNTHETIC^CATHETER"
            assert (ds.SamplesPerPixel, ds.PixelRepresentation, ds.Rows, ds.Columns) == (1, 0, 80, 96)
            assert ds.BitsStored in (8, 10, 12, 16) and ds.HighBit == ds.BitsStored - 1
            assert ds.BitsAllocated == (8 if ds.BitsStored == 8 else 16)
            if ds.Modality in ("XA", "RF"):
                assert ds.PhotometricInterpretation == "MONOCHROME2"
            else:
                assert "NumberOfFrames" not in ds and "WindowCenter" in ds
            frames = int(ds.get("NumberOfFrames", 1))
            assert ds.pixel_array.shape == ((frames, 80, 96) if frames > 1 else (80, 96))

    def test_variants_are_all_present(self, dataset):
        entries = _entries(dataset)
        seen = {(e["photometric_interpretation"], "frame" in e, e["transfer_syntax"]) for e in entries}
        assert any(p == "MONOCHROME1" for p, _, _ in seen)
        assert any(multi for _, multi, _ in seen)
        assert {ts for _, _, ts in seen} >= {ExplicitVRLittleEndian, RLELossless}
        assert {e["spacing_source"] for e in entries} == set(SPACING_SOURCES)

    def test_datalist_format(self, dataset):
        data = json.loads(dataset.read_text())
        assert data["landmark_names"] == ["tip"]
        assert [len(data[s]) for s in ("training", "validation", "test")] == [14, 4, 4]
        for entry in _entries(dataset):
            assert (dataset.parent / entry["image"]).is_file()
            assert entry["label"]["tip"] == [entry["tip_true"]]  # default annotation noise is 0
            assert entry["label_true"]["tip"] == [entry["tip_true"]]
            assert len(entry["spacing_mm"]) == 2

    def test_datalist_loads_with_monai(self, dataset):
        from monai.data import load_decathlon_datalist

        items = load_decathlon_datalist(str(dataset), is_segmentation=False, data_list_key="training")
        assert len(items) == 14 and all(Path(item["image"]).is_file() for item in items)
        assert all(len(item["label"]["tip"]) == 1 for item in items)

    def test_multiframe_files_have_one_entry_per_frame(self, dataset):
        by_file = defaultdict(list)
        for entry in _entries(dataset):
            by_file[entry["image"]].append(entry)
        multi = {k: v for k, v in by_file.items() if "frame" in v[0]}
        assert multi
        for image, entries in multi.items():
            ds = pydicom.dcmread(dataset.parent / image)
            assert [e["frame"] for e in entries] == list(range(int(ds.NumberOfFrames)))
            tips = np.array([e["tip_true"] for e in entries])
            assert len(np.unique(tips, axis=0)) == len(tips)  # each frame has its own tip
        assert all(len(v) == 1 and "frame" not in v[0] for k, v in by_file.items() if k not in multi)

    def test_spacing_tags_match_the_datalist(self, dataset):
        for entry in _entries(dataset):
            ds = pydicom.dcmread(dataset.parent / entry["image"], stop_before_pixels=True)
            assert ("PixelSpacing" in ds) == (entry["spacing_source"] == "PixelSpacing")
            assert ("EstimatedRadiographicMagnificationFactor" in ds) == entry["spacing_source"].endswith("Factor")
            assert _spacing_from_tags(ds) == pytest.approx(entry["spacing_mm"][0], rel=1e-9)
            assert 0.3 - 1e-3 <= entry["spacing_mm"][0] <= 0.4 + 1e-3
            imager = float(ds.ImagerPixelSpacing[0])
            assert 1.15 * 0.3 <= imager <= 1.6 * 0.4 + 1e-3

    def test_tip_is_dark_as_displayed_in_every_file(self, dataset):
        """File raster pixel_array[row, col] at the tip (x, y) = (col, row) is darker than its surroundings once
        displayed, i.e. after undoing MONOCHROME1's inversion (there it is brighter than its surroundings)."""
        for entry in _entries(dataset):
            ds = pydicom.dcmread(dataset.parent / entry["image"])
            raster = (ds.pixel_array[entry["frame"]] if "frame" in entry else ds.pixel_array).astype(np.int64)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                raster = (2**ds.BitsStored - 1) - raster
            col, row = np.rint(entry["tip_true"]).astype(int)
            tip = raster[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2].mean()
            assert tip < _annulus_median(raster, entry["tip_true"], 8.0, 16.0)

    def test_monochrome1_stores_inverted_values(self, tmp_path):
        frame = generate_frame(FluoroscopyConfig(rows=64, columns=64, bits_stored=(12,)), np.random.default_rng(4))
        mono1 = DicomWriteOptions("DX", "MONOCHROME1", voi_lut=True)
        mono2 = DicomWriteOptions("DX", "MONOCHROME2", voi_lut=True)
        a = pydicom.dcmread(write_dicom(tmp_path / "m1.dcm", [frame], mono1, ["m1"]))
        b = pydicom.dcmread(write_dicom(tmp_path / "m2.dcm", [frame], mono2, ["m2"]))
        assert (a.PhotometricInterpretation, a.PresentationLUTShape) == ("MONOCHROME1", "INVERSE")
        np.testing.assert_array_equal(a.pixel_array.astype(int) + b.pixel_array, 4095)
        np.testing.assert_array_equal(b.pixel_array, frame.raster)
        assert float(a.WindowCenter) == pytest.approx(4095 - float(b.WindowCenter))

    @pytest.mark.parametrize("syntax", lossless_transfer_syntaxes())
    def test_compressed_multiframe_is_lossless(self, tmp_path, syntax):
        frames = generate_sequence(FluoroscopyConfig(rows=48, columns=64), np.random.default_rng(8), 3)
        path = write_dicom(tmp_path / "c.dcm", frames, DicomWriteOptions("RF", transfer_syntax=syntax), ["c"])
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == syntax and int(ds.NumberOfFrames) == 3
        np.testing.assert_array_equal(ds.pixel_array, np.stack([f.raster for f in frames]))

    def test_monai_reader_layout_matches_frame_image(self, tmp_path):
        from monai.transforms import LoadImage

        frame = generate_frame(FluoroscopyConfig(rows=48, columns=64), np.random.default_rng(9))
        path = write_dicom(tmp_path / "x.dcm", [frame], DicomWriteOptions("XA"), ["x"])
        image = LoadImage(reader="PydicomReader", image_only=True)(str(path))
        np.testing.assert_array_equal(np.asarray(image), frame.image)

    def test_same_seed_same_bytes(self, tmp_path):
        config = FluoroscopyConfig(rows=48, columns=48)
        kwargs = {"n_train": 4, "n_val": 1, "n_test": 1, "config": config, "seed": 3, "multiframe_fraction": 0.5}
        a, b = make_dataset(tmp_path / "a", **kwargs), make_dataset(tmp_path / "b", **kwargs)
        assert a.read_text() == b.read_text()
        for path in sorted(a.parent.rglob("*.dcm")):
            assert path.read_bytes() == (b.parent / path.relative_to(a.parent)).read_bytes()

    def test_single_frame_validation_leaves_the_other_splits_unchanged(self, tmp_path):
        config = FluoroscopyConfig(rows=48, columns=48)
        kwargs = {"n_train": 6, "n_val": 6, "n_test": 6, "config": config, "seed": 1, "multiframe_fraction": 1.0,
                  "monochrome1_fraction": 0.0, "frames_per_file": (3, 3)}  # fmt: skip
        a = json.loads(make_dataset(tmp_path / "a", **kwargs).read_text())
        b = json.loads(make_dataset(tmp_path / "b", multiframe_splits=("training", "test"), **kwargs).read_text())
        assert [len({e["image"] for e in a[split]}) for split in ("training", "validation", "test")] == [2, 2, 2]
        assert len({e["image"] for e in b["validation"]}) == 6 and all("frame" not in e for e in b["validation"])
        for split in ("training", "test"):
            assert a[split] == b[split]
            for entry in a[split]:
                assert (tmp_path / "a" / entry["image"]).read_bytes() == (tmp_path / "b" / entry["image"]).read_bytes()
        with pytest.raises(ValueError, match="multiframe_splits"):
            make_dataset(tmp_path / "c", multiframe_splits=("train",), **kwargs)

    def test_invalid_options_are_rejected(self):
        with pytest.raises(ValueError, match="MONOCHROME1"):
            DicomWriteOptions("XA", "MONOCHROME1")
        with pytest.raises(ValueError, match="voi_lut"):
            DicomWriteOptions("DX")
        with pytest.raises(ValueError, match="transfer_syntax"):
            DicomWriteOptions(transfer_syntax="1.2.840.10008.1.2.4.50")

    def test_dx_holds_one_frame(self, tmp_path):
        frames = generate_sequence(FluoroscopyConfig(rows=48, columns=48), np.random.default_rng(0), 2)
        with pytest.raises(ValueError, match="one frame"):
            write_dicom(tmp_path / "dx.dcm", frames, DicomWriteOptions("DX", voi_lut=True), ["dx"])

    def test_preview_grid(self, dataset, tmp_path):
        out = save_preview_grid(dataset, tmp_path / "grid.png", n=4)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
