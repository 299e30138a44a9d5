"""AdalossSchedule against hand-computed eq. 3-5 numbers, its guards, and its state_dict."""

from __future__ import annotations

import io
import logging
import math

import pytest
import torch

from monai_adaloss.adaloss import AdalossSchedule, initial_sigma

# One landmark, w = 3, rho = 0.9. Sums of squared deviations of each 3-epoch window, by hand:
#   S2 = ss(1.0, 0.6, 0.5)  = 0.09 + 0.01 + 0.04           = 0.14
#   S3 = ss(0.6, 0.5, 0.45) = 0.035 / 3                     = 0.011666...   -> V2 / V3 = 12
#   S4 = ss(0.5, 0.45, 0.5) = 0.005 / 3                     = 0.001666...   -> V3 / V4 = 7
#   S5 = ss(0.45, 0.5, 0.3) = 0.065 / 3                     = 0.021666...   -> V4 / V5 = 1 / 13
#   S6 = ss(0.5, 0.3, 0.9)  = 0.56 / 3                      = 0.186666...   -> V5 / V6 = 13 / 112
# (population variance V = S / 3; the 1/3 cancels in the ratios).
LOSSES = [1.0, 0.6, 0.5, 0.45, 0.5, 0.3, 0.9]
# eq. 5 step per epoch, and whether the loss went up (the "step back")
# epoch 3: 0.9 * (1 - 12)  = -9.9          (loss down)
# epoch 4: 0.9 * (1 - 7)   = -5.4          (loss up, but step negative anyway)
# epoch 5: 0.9 * (1 - 1/13) = +0.830769... (variance up, loss down: refused by the non-increasing rule)
# epoch 6: 0.9 * (1 - 13/112) = +0.795535...  (variance up and loss up: step back, kept)
STEP_BACK = 0.9 * (1.0 - 13.0 / 112.0)


def run(schedule: AdalossSchedule, losses: list[float]) -> list[float]:
    return [schedule.update([loss]).item() for loss in losses]


def test_paper_rule_matches_hand_computed_numbers() -> None:
    schedule = AdalossSchedule(32.0, num_landmarks=1, max_step_fraction=None, sigma_max=None, sigma_min=1.0)
    history = run(schedule, LOSSES)
    expected = [32.0, 32.0, 32.0, 32.0 - 9.9, 32.0 - 9.9 - 5.4, 32.0 - 9.9 - 5.4, 32.0 - 15.3 + STEP_BACK]
    assert history == pytest.approx(expected, abs=1e-9)
    assert schedule.sigma_history[:, 0].tolist() == pytest.approx([32.0, *expected], abs=1e-9)
    assert schedule.loss_history[:, 0].tolist() == LOSSES


def test_first_update_is_after_window_plus_one_epochs() -> None:
    for window in (2, 3, 5):
        schedule = AdalossSchedule(32.0, num_landmarks=1, window=window, max_step_fraction=None, sigma_max=None)
        # a steadily falling loss whose variance shrinks: every possible update is negative
        history = run(schedule, [1.0 / (epoch + 1) ** 2 for epoch in range(window + 2)])
        assert history[:window] == [32.0] * window
        assert history[window] < 32.0


def test_refused_positive_step_without_step_back() -> None:
    schedule = AdalossSchedule(32.0, num_landmarks=1, max_step_fraction=None, sigma_max=None, sigma_min=1.0)
    history = run(schedule, LOSSES[:6])
    assert history[5] == history[4]  # variance grew (V4 < V5) but loss fell 0.5 -> 0.3


def test_positive_step_kept_without_non_increasing_rule() -> None:
    schedule = AdalossSchedule(
        32.0, num_landmarks=1, non_increasing=False, max_step_fraction=None, sigma_max=None, sigma_min=1.0
    )
    history = run(schedule, LOSSES[:6])
    assert history[5] - history[4] == pytest.approx(0.9 * (1.0 - 1.0 / 13.0), abs=1e-9)


def test_step_bound_floor_and_cap_defaults() -> None:
    schedule = AdalossSchedule(32.0, num_landmarks=1)  # bound 20 % of sigma, floor 2, cap sigma_0
    history = run(schedule, LOSSES)
    # -9.9 bounded to -6.4; -5.4 bounded to -5.12; refused; +0.7955 within the 4.096 bound
    assert history == pytest.approx([32.0, 32.0, 32.0, 25.6, 20.48, 20.48, 20.48 + STEP_BACK], abs=1e-9)

    tenth = AdalossSchedule(32.0, num_landmarks=1, max_step_fraction=0.1)
    # -9.9 bounded to -3.2; -5.4 bounded to -2.88; refused; +0.7955 within the 2.592 bound
    assert run(tenth, LOSSES) == pytest.approx([32.0, 32.0, 32.0, 28.8, 25.92, 25.92, 25.92 + STEP_BACK], abs=1e-9)

    floored = AdalossSchedule(3.0, num_landmarks=1, max_step_fraction=None, sigma_max=None, sigma_min=1.0)
    assert run(floored, LOSSES[:4])[-1] == 1.0

    capped = AdalossSchedule(10.0, num_landmarks=1, max_step_fraction=None, sigma_min=1.0)
    sigma = run(capped, [0.45, 0.5, 0.3, 0.9])  # V grows and loss grows at the first update
    assert sigma[-1] == 10.0
    uncapped = AdalossSchedule(10.0, num_landmarks=1, max_step_fraction=None, sigma_max=None, sigma_min=1.0)
    assert run(uncapped, [0.45, 0.5, 0.3, 0.9])[-1] > 10.0


def test_landmarks_are_independent() -> None:
    schedule = AdalossSchedule([32.0, 8.0], max_step_fraction=None, sigma_max=None, sigma_min=1.0)
    for loss in LOSSES[:4]:
        schedule.update([loss, 0.2])  # landmark 1: constant loss -> zero variance -> no update
    assert schedule.sigma.tolist() == pytest.approx([32.0 - 9.9, 8.0])


def test_zero_variance_and_non_finite_losses_leave_sigma_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    schedule = AdalossSchedule([16.0, 16.0, 16.0], max_step_fraction=None, sigma_max=None)
    with caplog.at_level(logging.WARNING, logger="monai_adaloss.adaloss"):
        for epoch, loss in enumerate(LOSSES[:4]):
            bad = [loss, loss, 0.5]
            if epoch == 3:
                bad = [loss, math.nan, 0.5]
            sigma = schedule.update(bad)
    assert torch.isfinite(sigma).all()
    assert sigma.tolist() == pytest.approx([16.0 - 9.9, 16.0, 16.0])
    assert "no sigma update for landmark 1" in caplog.text
    assert "no sigma update for landmark 2" in caplog.text
    sigma = schedule.update([0.5, math.inf, 0.5])
    assert sigma[1].item() == 16.0


def test_initial_sigma_and_factory() -> None:
    assert initial_sigma((256, 256)) == 64.0
    assert initial_sigma((96, 128, 64)) == 16.0
    schedule = AdalossSchedule.for_spatial_shape((128, 128), num_landmarks=3)
    assert schedule.sigma.tolist() == [32.0, 32.0, 32.0]


def test_state_dict_round_trips_through_weights_only_load() -> None:
    schedule = AdalossSchedule([32.0, 20.0], max_step_fraction=0.1, sigma_max=None)
    for loss in LOSSES[:5]:
        schedule.update([loss, 2 * loss])
    buffer = io.BytesIO()
    torch.save({"adaloss": schedule.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["adaloss"]
    restored = AdalossSchedule([32.0, 20.0], max_step_fraction=0.1, sigma_max=None)
    restored.load_state_dict(state)
    assert torch.equal(restored.sigma, schedule.sigma)
    assert torch.equal(restored.sigma_history, schedule.sigma_history)
    assert torch.equal(restored.loss_history, schedule.loss_history)
    # both continue identically
    assert torch.equal(restored.update([0.9, 1.8]), schedule.update([0.9, 1.8]))
    with pytest.raises(ValueError, match="holds 2 landmarks, this schedule has 3"):
        AdalossSchedule([1.0, 2.0, 3.0], sigma_min=1.0).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma_0": -1.0, "num_landmarks": 1}, "`sigma_0` must be positive, got -1.0"),
        ({"sigma_0": 0.0, "num_landmarks": 1}, "`sigma_0` must be positive, got 0.0"),
        ({"sigma_0": 8.0, "num_landmarks": 1, "window": 1}, "`window` must be an integer >= 2, got 1"),
        ({"sigma_0": 8.0, "num_landmarks": 1, "rho": 0.0}, "`rho` must be positive, got 0.0"),
        ({"sigma_0": 8.0, "num_landmarks": 1, "rho": -0.9}, "`rho` must be positive, got -0.9"),
        ({"sigma_0": 8.0, "num_landmarks": 1, "sigma_min": 0.0}, "`sigma_min` must be positive, got 0.0"),
        ({"sigma_0": 8.0, "num_landmarks": 1, "max_step_fraction": -0.1}, "`max_step_fraction` must be positive"),
        ({"sigma_0": 8.0, "num_landmarks": 1, "sigma_max": 1.0}, "`sigma_max` must be >= sigma_min"),
        ({"sigma_0": 1.0, "num_landmarks": 1}, "`sigma_0` must be >= sigma_min=2.0"),
        ({"sigma_0": [4.0, 5.0], "num_landmarks": 3}, "`sigma_0` must hold one value or num_landmarks=3"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AdalossSchedule(**kwargs)


def test_update_rejects_wrong_shape() -> None:
    schedule = AdalossSchedule(8.0, num_landmarks=2)
    with pytest.raises(ValueError, match=r"`epoch_losses` must have shape \(L,\)=\(2,\), got \(3,\)"):
        schedule.update([1.0, 2.0, 3.0])
