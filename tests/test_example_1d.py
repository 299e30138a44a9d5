"""The 1D ECG example (examples/landmarks_1d.py) at a tiny size, and the synthetic ECG traces it trains on."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.synthetic.signals import ECG_LANDMARKS, ECGConfig, generate_ecg, make_ecg_samples

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "landmarks_1d.py"
EPOCHS = 5  # window + 2: the first sigma update comes after epoch 4


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("landmarks_1d_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_ecg_trace_landmarks_sit_on_the_waves() -> None:
    config = ECGConfig()
    for index in range(8):
        trace = generate_ecg(config, np.random.default_rng([0, index]))
        assert trace.signal.shape == trace.clean.shape == (256,) and trace.signal.dtype == np.float32
        assert trace.points.shape == (3, 1, 1)
        p_onset, r_peak, t_end = trace.points[:, 0, 0]
        margin = config.margin_s * config.sampling_rate_hz
        assert margin <= p_onset < r_peak < t_end <= config.length - margin
        assert abs(int(np.argmax(trace.clean)) - r_peak) <= 1.0  # the R wave is the tallest
        assert (p_onset, r_peak, t_end) != tuple(np.round((p_onset, r_peak, t_end)))  # sub-sample positions
        # onset / end: 4.4 % of the P / T wave above the flat line, far below the wave's peak
        assert 0.0 < float(np.interp(p_onset, np.arange(256), trace.clean)) < 0.02
        assert 0.0 < float(np.interp(t_end, np.arange(256), trace.clean)) < 0.03
    samples = make_ecg_samples(3, config, seed=0)
    assert tuple(samples[0]["image"].shape) == (1, 256) and tuple(samples[0]["label"].shape) == (3, 1, 1)
    np.testing.assert_allclose(samples[2]["label"].numpy(), generate_ecg(config, np.random.default_rng([0, 2])).points)
    with pytest.raises(ValueError, match="length"):
        ECGConfig(length=128)


def test_example_runs_and_reports(example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    result = example.main(num_train=16, num_val=8, epochs=EPOCHS, batch_size=8, channels=(4, 8), seed=0)
    num_landmarks = len(ECG_LANDMARKS)
    assert result.landmark_names == ECG_LANDMARKS
    assert result.sigma_history.shape == (EPOCHS + 1, num_landmarks)
    assert result.loss_history.shape == (EPOCHS, num_landmarks)
    assert bool(torch.isfinite(result.loss_history).all())
    sigma_0 = 256 / 4
    # sigma is constant for the first window + 1 = 4 epochs, then the schedule moves it
    assert result.sigma_history[:4].eq(sigma_0).all()
    assert bool((result.sigma_history[4] < sigma_0).any())
    # the handler fed the epoch losses to the schedule: an independent schedule gives the same sigma
    reference = AdalossSchedule(sigma_0, num_landmarks=num_landmarks, max_step_fraction=0.1)
    for losses in result.loss_history:
        reference.update(losses)
    torch.testing.assert_close(result.sigma_history, reference.sigma_history, rtol=0, atol=1e-12)
    assert result.mean_error.shape == (num_landmarks,)
    assert bool(torch.isfinite(result.mean_error).all()) and bool((result.mean_error >= 0).all())

    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == [str(e) for e in range(1, EPOCHS + 1)]
    for name, error in zip(ECG_LANDMARKS, result.mean_error.tolist(), strict=True):
        assert any(line.split()[:2] == [name, f"{error:.2f}"] for line in lines)
