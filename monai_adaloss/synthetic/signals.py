"""Synthetic 1D ECG-like traces (one beat: P wave, QRS complex, T wave) with sub-sample landmarks.

Each trace is a beat-centred segment of one lead, in mV, sampled at ``sampling_rate_hz``: the sum of
Gaussian waves (P; Q, R, S; an asymmetric T whose descent is steeper than its rise) with a random
heart rate, PR interval and QT interval (Bazett: ``QT = QTc * sqrt(RR)``), plus baseline wander (two
slow sinusoids), powerline interference and white noise. The neighbouring beats are left out, so
each landmark occurs once per trace (single instance, K = 1).

Landmarks (``ECG_LANDMARKS``), at exact sub-sample positions of the clean waves:

- ``p_onset``: the start of the P wave, its centre minus 2.5 standard deviations (where the wave
  has risen to exp(-2.5^2 / 2) = 4.4 % of its peak);
- ``r_peak``: the centre of the R wave;
- ``t_end``: the end of the T wave, its centre plus 2.5 standard deviations of its descending side.

Coordinates (DESIGN.md section 2): a point is the float sample index ``n`` of the trace
``signal[n]`` (sample centres at integers; time ``n / sampling_rate_hz`` s). One trace's landmarks
are ``(L, 1, 1)``; as a MONAI sample the trace is a channel-first ``(1, N)`` image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ECG_LANDMARKS", "ECGConfig", "ECGTrace", "generate_ecg", "make_ecg_samples"]

ECG_LANDMARKS = ("p_onset", "r_peak", "t_end")
_ONSET_SDS = 2.5  # a wave starts / ends this many standard deviations from its centre
_QRS_HALF_WIDTH_S = 0.04  # from QRS onset to the R peak
_MIN_DURATION_S = 0.8  # P onset to T end spans up to about 0.7 s


@dataclass(frozen=True)
class ECGConfig:
    """What `generate_ecg` renders.

    Args:
        length: N, samples per trace; ``length / sampling_rate_hz`` must be at least 0.8 s.
        sampling_rate_hz: samples per second.
        heart_rate_bpm: range ``(low, high)`` of the heart rate, which sets RR and (Bazett) QT.
        margin_s: the smallest distance from a landmark to either end of the trace, in seconds.
        noise_mv: standard deviation of the white noise (mV).
        baseline_wander_mv: amplitude of the baseline wander (mV), two sinusoids of 0.05-0.5 Hz.
        powerline_mv: amplitude of the powerline interference (mV).
        powerline_hz: its frequency (50 or 60 Hz).
    """

    length: int = 256
    sampling_rate_hz: float = 250.0
    heart_rate_bpm: tuple[float, float] = (55.0, 100.0)
    margin_s: float = 0.06
    noise_mv: float = 0.03
    baseline_wander_mv: float = 0.15
    powerline_mv: float = 0.02
    powerline_hz: float = 50.0

    def __post_init__(self) -> None:
        if not self.sampling_rate_hz > 0:
            raise ValueError(f"Argument `sampling_rate_hz` must be positive, got {self.sampling_rate_hz}.")
        duration = self.length / self.sampling_rate_hz
        if duration - 2 * self.margin_s < _MIN_DURATION_S:
            raise ValueError(
                f"Argument `length` must cover {_MIN_DURATION_S} s plus two margins of {self.margin_s} s at "
                f"{self.sampling_rate_hz} Hz, got {self.length} samples ({duration:.3f} s)."
            )
        low, high = self.heart_rate_bpm
        if not 30.0 <= low <= high <= 200.0:
            raise ValueError(f"Argument `heart_rate_bpm` must be a range within [30, 200], got {self.heart_rate_bpm}.")
        if min(self.margin_s, self.noise_mv, self.baseline_wander_mv, self.powerline_mv) < 0:
            raise ValueError("Arguments `margin_s`, `noise_mv`, `baseline_wander_mv` and `powerline_mv` must be >= 0.")


@dataclass(frozen=True)
class ECGTrace:
    """One generated trace.

    Attributes:
        signal: ``(N,)`` float32, mV.
        points: ``(L, 1, 1)`` float64 sample positions of ``ECG_LANDMARKS``, in that order.
        clean: ``(N,)`` float32, the waves alone (no wander, interference or noise), mV.
    """

    signal: np.ndarray
    points: np.ndarray
    clean: np.ndarray


def _gaussian(t: np.ndarray, centre: float, sd: float | np.ndarray, amplitude: float) -> np.ndarray:
    return amplitude * np.exp(-0.5 * ((t - centre) / sd) ** 2)


def generate_ecg(config: ECGConfig | None = None, rng: np.random.Generator | None = None) -> ECGTrace:
    """Render one single-beat trace and the sample positions of its landmarks (see the module docstring).

    Args:
        config: what to render; default `ECGConfig()`.
        rng: the random generator; a fresh ``np.random.default_rng()`` when None.

    Returns:
        An `ECGTrace`: ``signal`` ``(N,)`` mV and ``points`` ``(3, 1, 1)`` (P onset, R peak, T end)
        in samples, each at least ``margin_s`` from either end.
    """
    config = config if config is not None else ECGConfig()
    rng = rng if rng is not None else np.random.default_rng()
    fs = config.sampling_rate_hz
    t = np.arange(config.length) / fs

    rr = 60.0 / rng.uniform(*config.heart_rate_bpm)
    qt = rng.uniform(0.38, 0.44) * math.sqrt(rr)
    pr = rng.uniform(0.12, 0.2)  # P onset to QRS onset
    p_sd, t_sd_rise, t_sd_fall = rng.uniform(0.018, 0.028), rng.uniform(0.04, 0.07), rng.uniform(0.025, 0.04)
    before_r = pr + _QRS_HALF_WIDTH_S  # P onset -> R peak
    after_r = qt - _QRS_HALF_WIDTH_S  # R peak -> T end
    duration = config.length / fs
    r_peak = rng.uniform(config.margin_s + before_r, duration - config.margin_s - after_r)
    p_onset, t_end = r_peak - before_r, r_peak + after_r
    p_centre = p_onset + _ONSET_SDS * p_sd
    t_centre = t_end - _ONSET_SDS * t_sd_fall

    clean = (
        _gaussian(t, p_centre, p_sd, rng.uniform(0.08, 0.25))
        + _gaussian(t, r_peak - rng.uniform(0.02, 0.03), rng.uniform(0.007, 0.011), -rng.uniform(0.03, 0.15))
        + _gaussian(t, r_peak, rng.uniform(0.008, 0.013), rng.uniform(0.7, 1.6))
        + _gaussian(t, r_peak + rng.uniform(0.02, 0.035), rng.uniform(0.008, 0.014), -rng.uniform(0.1, 0.4))
        + _gaussian(t, t_centre, np.where(t < t_centre, t_sd_rise, t_sd_fall), rng.uniform(0.15, 0.45))
    )
    wander = sum(
        rng.uniform(0.3, 0.7) * np.sin(2 * math.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * math.pi))
        for _ in range(2)
    )
    noise = (
        config.baseline_wander_mv * wander
        + config.powerline_mv * np.sin(2 * math.pi * config.powerline_hz * t + rng.uniform(0, 2 * math.pi))
        + config.noise_mv * rng.standard_normal(config.length)
    )
    points = np.array([p_onset, r_peak, t_end]) * fs
    return ECGTrace(
        signal=(clean + noise).astype(np.float32),
        points=points.reshape(len(ECG_LANDMARKS), 1, 1),
        clean=clean.astype(np.float32),
    )


def make_ecg_samples(num_samples: int, config: ECGConfig | None = None, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``num_samples`` traces as MONAI samples: ``{"image": (1, N) float32 mV, "label": (3, 1, 1) float32 samples}``.

    Trace ``n`` is drawn from ``np.random.default_rng([seed, n])``, so a larger set extends a smaller one.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"Argument `num_samples` must be a non-negative integer, got {num_samples!r}.")
    samples = []
    for index in range(num_samples):
        trace = generate_ecg(config, np.random.default_rng([seed, index]))
        samples.append(
            {
                "image": torch.from_numpy(trace.signal)[None],
                "label": torch.from_numpy(trace.points).to(torch.float32),
            }
        )
    return samples
