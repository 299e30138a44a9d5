"""The body-channel scores of benchmarks/catheter_body_channel.py on maps whose answers are known."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@functools.cache
def _scores():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling catheter_body_target
    try:
        spec = importlib.util.spec_from_file_location("catheter_body_channel", BENCHMARKS / "catheter_body_channel.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module.body_channel_scores


def _tube() -> torch.Tensor:
    target = torch.zeros(32, 32)
    target[10:13, 4:28] = 1.0  # a horizontal tube of 3 x 24 pixels
    return target


def test_a_channel_that_is_the_target_scores_one_everywhere() -> None:
    scores = _scores()(_tube(), _tube())
    assert scores == {"mean_probability_on_tube": 1.0, "tube_share_above_background_p99": 1.0, "iou_at_half": 1.0}


def test_a_channel_that_answers_background_has_no_detection_and_no_overlap() -> None:
    scores = _scores()(torch.full((32, 32), 0.01), _tube())
    assert scores["mean_probability_on_tube"] == pytest.approx(0.01)
    assert scores["tube_share_above_background_p99"] == 0.0  # not above the background's own level
    assert scores["iou_at_half"] == 0.0


def test_half_the_tube_found_among_weak_distractors() -> None:
    probability = torch.zeros(32, 32)
    probability[10:13, 4:16] = 0.4  # the left half of the tube, below 0.5
    probability[20, 0:8] = 0.3  # a distractor of 8 pixels: under 1 % of the 1024 - 72 background pixels
    scores = _scores()(probability, _tube())
    assert scores["tube_share_above_background_p99"] == pytest.approx(0.5)
    assert scores["mean_probability_on_tube"] == pytest.approx(0.2)
    assert scores["iou_at_half"] == 0.0


def test_a_frame_without_a_tube_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no pixel above 0\.5"):
        _scores()(torch.rand(8, 8), torch.zeros(8, 8))
