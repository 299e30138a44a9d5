"""Outlier metric (model selection), confidence AUROC / threshold, test-time augmentation, low_confidence records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_adaloss.confidence import choose_confidence_threshold, outlier_auroc
from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.inference.decode import DecodedFile
from monai_adaloss.inference.records import LOW_CONFIDENCE, RECORD_FIELDS, file_records
from monai_adaloss.metrics import LandmarkOutlierMetric
from monai_adaloss.tta import TestTimeAugmentation

NAN = float("nan")


def points(*xy: tuple[float, float]) -> torch.Tensor:
    return torch.tensor([[[list(p)]] for p in xy], dtype=torch.float32)  # (B, 1, 1, 2)


def test_outlier_metric_rate_and_selection_order() -> None:
    truth = points((0, 0), (0, 0), (0, 0), (0, 0))
    metric = LandmarkOutlierMetric(radius=10.0, reduction="rate_then_median")
    metric(points((0, 0), (20, 0), (NAN, NAN), (3, 4)), truth)
    assert metric.aggregate("rate").item() == pytest.approx(0.5)  # one > 10 px, one missed
    # the tie-breaker: 0.5 / n * median / (median + radius), median of the found errors (0, 20, 5) = 5
    assert metric.aggregate().item() == pytest.approx(0.5 + 0.125 * 5 / 15)

    def score(predictions: torch.Tensor) -> float:
        m = LandmarkOutlierMetric(radius=10.0, reduction="rate_then_median")
        m(predictions, truth)
        return m.aggregate().item()

    precise_but_lost = score(points((0, 0), (0, 0), (0, 0), (90, 0)))  # median 0, one gross error
    imprecise_but_found = score(points((9, 0), (9, 0), (9, 0), (9, 0)))  # median 9, no gross error
    nothing_found = score(points(*[(NAN, NAN)] * 4))
    assert imprecise_but_found < precise_but_lost < nothing_found
    assert score(points((1, 0), (1, 0), (1, 0), (1, 0))) < imprecise_but_found  # equal rates: the median decides
    with pytest.raises(ValueError, match="reduction"):
        LandmarkOutlierMetric(radius=10.0, reduction="mean")


def test_outlier_auroc() -> None:
    errors = [1.0, 2.0, 50.0, NAN]
    assert outlier_auroc([0.9, 0.8, 0.1, 0.0], errors, 10.0) == 1.0  # wrong ones least confident
    assert outlier_auroc([0.1, 0.0, 0.9, 0.8], errors, 10.0) == 0.0
    assert outlier_auroc([0.5, 0.5, 0.5, 0.5], errors, 10.0) == 0.5
    assert math.isnan(outlier_auroc([0.5, 0.4], [1.0, 2.0], 10.0))  # no wrong detection


def test_confidence_threshold() -> None:
    right = np.linspace(0.5, 1.0, 101)
    # no wrong detection on validation: the 5 % quantile of the right ones
    assert choose_confidence_threshold(right, np.zeros(101), 10.0) == pytest.approx(0.525)
    # wrong detections with low confidence: raised to flag them (Youden's J)
    threshold = choose_confidence_threshold(
        np.concatenate([right, [0.55, 0.6]]), np.concatenate([np.zeros(101), [40.0, NAN]]), 10.0
    )
    assert 0.6 < threshold < 0.61
    with pytest.raises(ValueError, match="No right detection"):
        choose_confidence_threshold([0.1], [50.0], 10.0)


def test_tta_maps_shifted_and_flipped_points_back() -> None:
    truth = torch.tensor([[[[20.3, 11.7]], [[5.0, 27.0]]]])  # (1, L=2, 1, 2)

    def network(images: torch.Tensor) -> torch.Tensor:
        # a 'network' whose heatmap peaks where the image is brightest per channel (channel l = image l)
        return images.clone()

    image = render_gaussian_heatmaps(truth, torch.tensor([2.0, 2.0]), (32, 32))[:, :, ...]
    tta = TestTimeAugmentation(shifts=((0, 0), (3, 0), (0, -2)), flip_axes=(0, 1))
    combined, confidence, agreement = tta(image, network, decode_single_instance)
    torch.testing.assert_close(combined, truth, atol=1e-3, rtol=0)
    torch.testing.assert_close(agreement, torch.ones(1, 2, 1))
    assert confidence.shape == (1, 2, 1) and bool((confidence > 0.9).all())


def test_tta_disagreement_lowers_confidence() -> None:
    calls = []

    def network(images: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        centre = (16.0, 16.0) if len(calls) < 3 else (2.0, 30.0)  # the last copies jump elsewhere
        return render_gaussian_heatmaps(torch.tensor([[[centre]]]), torch.tensor([2.0]), (32, 32))

    _, confidence, agreement = TestTimeAugmentation(shifts=((0, 0), (0, 0), (0, 0), (0, 0)))(
        torch.zeros(1, 1, 32, 32), network, decode_single_instance
    )
    assert agreement.item() == pytest.approx(0.5)
    assert confidence.item() == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="at least one"):
        TestTimeAugmentation(shifts=(), flip_axes=())


def test_records_flag_low_confidence() -> None:
    decoded = DecodedFile.__new__(DecodedFile)
    object.__setattr__(decoded, "path", "a.dcm")
    uids = {"SOPInstanceUID": "1.2", "SeriesInstanceUID": "1.3", "StudyInstanceUID": "1.4"}
    for name, value in (("uids", uids), ("spacing", None), ("spacing_source", "none")):
        object.__setattr__(decoded, name, value)
    pts = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]], [[NAN, NAN]]]])  # (F=1, L=3, K=1, 2)
    conf = torch.tensor([[[0.9], [0.2], [0.0]]])
    records = file_records(decoded, pts, conf, ["a", "b", "c"], "sha", confidence_threshold=0.5)
    assert [r["flag"] for r in records] == [None, LOW_CONFIDENCE, None]  # a missing point is not flagged
    assert "flag" in RECORD_FIELDS
    assert [r["flag"] for r in file_records(decoded, pts, conf, ["a", "b", "c"], "sha")] == [None] * 3


def test_infer_command_with_tta_flags_low_confidence(tmp_path) -> None:
    """A tiny demo model (threshold chosen on its validation frames) inferred with --tta writes the flag column."""
    import csv

    import torch

    from monai_adaloss.cli import main

    torch.set_num_threads(1)
    assert main(["demo", "--tiny", "-o", str(tmp_path / "demo"), "--threads", "1", "--quiet"]) in (0, 1)
    checkpoint = tmp_path / "demo" / "bundle" / "models" / "model.pt"
    info = torch.load(checkpoint, map_location="cpu", weights_only=True)["model_info"]
    code = main(["infer", "--tta", "shifts-flips", "-c", str(checkpoint), "-o", str(tmp_path / "out"), "-q",
                 str(tmp_path / "demo" / "data" / "test")])  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "out" / "records.csv").open()))
    assert rows and {row["flag"] for row in rows} <= {"", "low_confidence"}
    if info["confidence_threshold"] is not None:
        for row in rows:
            low = row["x"] != "" and float(row["confidence"]) < info["confidence_threshold"]
            assert (row["flag"] == "low_confidence") == low
