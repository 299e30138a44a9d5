"""Schedule diagnostics, the relative-loss and spread variants of AdalossSchedule, the controls (fixed, linear,
geometric), learned sigma, the loss's all-zero-prediction statistic, and all of them under the handler."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.handlers import AdalossHandler
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.networks import HeatmapUNet
from monai_adaloss.plotting import plot_sigma_history
from monai_adaloss.schedules import SCHEDULE_NAMES, FixedSigma, GeometricDecay, LearnedSigma, LinearDecay, make_schedule

LOSSES = [1.0, 0.6, 0.5, 0.45, 0.5, 0.3, 0.9]  # the hand-computed sequence of tests/test_adaloss.py


def run(schedule, losses, references=None):
    references = references if references is not None else [None] * len(losses)
    return [
        schedule.update([loss], None if ref is None else [ref]).item()
        for loss, ref in zip(losses, references, strict=True)
    ]


def test_bounded_rule_diagnostics() -> None:
    schedule = AdalossSchedule(32.0, num_landmarks=1)  # bound 20 %, floor 2, cap sigma_0
    run(schedule, LOSSES)
    diagnostics = schedule.diagnostics
    ratio = diagnostics["ratio"][:, 0].tolist()
    assert all(math.isnan(r) for r in ratio[:3])
    assert ratio[3:] == pytest.approx([12.0, 7.0, 1.0 / 13.0, 13.0 / 112.0])
    assert diagnostics["raw_step"][:, 0].tolist() == pytest.approx([0, 0, 0, -9.9, -5.4, 0.0, 0.9 * (1 - 13 / 112)])
    assert diagnostics["dropped"][:, 0].tolist() == [False] * 5 + [True, False]  # epoch 5: variance up, loss down
    assert schedule.clip_history == [[""], [""], [""], ["bound"], ["bound"], [""], [""]]
    assert diagnostics["clipped"][:, 0].tolist() == [False, False, False, True, True, False, False]

    paper = AdalossSchedule(3.0, num_landmarks=1, max_step_fraction=None, sigma_max=None, sigma_min=1.0)
    run(paper, LOSSES[:4])
    assert paper.clip_history[-1] == ["floor"] and paper.sigma.item() == 1.0

    capped = AdalossSchedule(10.0, num_landmarks=1, max_step_fraction=None, sigma_min=1.0)
    run(capped, [0.45, 0.5, 0.3, 0.9])
    assert capped.clip_history[-1] == ["cap"]


def test_relative_statistic_needs_references_and_is_scale_free(caplog: pytest.LogCaptureFixture) -> None:
    schedule = AdalossSchedule(32.0, num_landmarks=1, statistic="relative")
    assert schedule.needs_reference and schedule.name == "bounded_variant"
    with pytest.raises(ValueError, match="`reference_losses` is required by the 'bounded_variant' schedule"):
        schedule.update([1.0])
    # loss = 0.3 x the all-zero loss every epoch: the relative loss is constant, its variance 0 -> no update
    with caplog.at_level(logging.WARNING, logger="monai_adaloss.adaloss"):
        sigma = run(schedule, LOSSES, [loss / 0.3 for loss in LOSSES])
    assert sigma == [32.0] * len(LOSSES)
    assert "no sigma update for landmark 0" in caplog.text
    # the same losses with a constant reference: eq. 5 on loss / 2 gives the same ratios as on the loss
    plain, scaled = AdalossSchedule(32.0, num_landmarks=1), AdalossSchedule(32.0, num_landmarks=1, statistic="relative")
    assert run(plain, LOSSES) == pytest.approx(run(scaled, LOSSES, [2.0] * len(LOSSES)))


def test_restarted_window_compares_epochs_of_one_sigma() -> None:
    schedule = AdalossSchedule(32.0, num_landmarks=1, statistic="relative", restart_window=True)
    assert schedule.name == "relative_restart"
    sigma = run(schedule, [*LOSSES, 0.8, 0.7, 0.6, 0.5], [1.0] * 11)
    # first change after epoch 3 (bounded to 25.6); the next update needs 4 epochs at 25.6: epochs 4..7
    assert sigma[:4] == pytest.approx([32.0, 32.0, 32.0, 25.6])
    assert sigma[4:7] == [25.6] * 3
    assert schedule.diagnostics["ratio"][4:7, 0].isnan().all()
    assert not math.isnan(schedule.diagnostics["ratio"][7, 0].item())


def test_spread_rule_hand_computed() -> None:
    # d = 1: R = 1 - sigma / sqrt(sigma^2 + s^2)  ->  s / sigma = sqrt((1 - R)^-2 - 1); spread_ratio c = 1.5
    schedule = AdalossSchedule([10.0, 10.0, 10.0], rule="spread", spatial_dims=1, max_step_fraction=0.5)
    assert schedule.name == "spread" and schedule.statistic == "relative" and schedule.restart_window
    ones = [1.0, 1.0, 1.0]  # references of 1: the relative loss is the loss
    # at sigma_0: landmark 0 R = 0.01 -> s / sigma = 0.1425, aim 0.214 sigma: bounded to -50 %;
    # landmarks 1 (R = 0.5) and 2 (R = 0.2) do not follow, but the first decision is a narrowing: -50 %
    for _ in range(2):
        assert schedule.update([0.01, 0.5, 0.2], ones).tolist() == [10.0] * 3  # window not full yet
    assert schedule.update([0.01, 0.5, 0.2], ones).tolist() == [5.0] * 3
    assert schedule.clip_history[-1] == ["bound", "", ""]
    assert schedule.diagnostics["ratio"][-1].tolist() == pytest.approx([math.sqrt(0.99**-2 - 1), math.sqrt(3), 0.75])
    # at 5: landmark 0 R rose 0.01 -> 0.2 and does not follow (1.5 x 0.75 > 1): hold;
    # landmark 1 R fell 0.5 -> 0.4 (a narrower target fits better): -50 %;
    # landmark 2 R = 0.1 -> s / sigma = 0.4843, aim 1.5 x 0.4843 x 5 = 3.632 (inside the bound)
    for _ in range(2):
        assert schedule.update([0.2, 0.4, 0.1], ones).tolist() == [5.0] * 3
    sigma = schedule.update([0.2, 0.4, 0.1], ones).tolist()
    assert sigma == pytest.approx([5.0, 2.5, 5.0 * 1.5 * math.sqrt(0.9**-2 - 1)])
    assert schedule.diagnostics["dropped"][-1].tolist() == [True, False, False]
    # a held landmark keeps its window and decides again every epoch; it never grows
    assert schedule.update([0.5, 0.4, 0.1], ones)[0].item() == 5.0
    with pytest.raises(ValueError, match="`spatial_dims` must be 1, 2 or 3 with rule='spread'"):
        AdalossSchedule(10.0, num_landmarks=1, rule="spread")
    assert AdalossSchedule.for_spatial_shape((64, 64), 2, rule="spread").spatial_dims == 2


def test_controls() -> None:
    fixed = FixedSigma([3.0, 5.0])
    assert fixed.update([1.0, 1.0]).tolist() == [3.0, 5.0] and not fixed.clipped_history.any()

    linear = LinearDecay(5.0, 1, step=1.5, sigma_min=2.0)
    assert run(linear, [1.0] * 3) == [3.5, 2.0, 2.0]
    assert linear.clip_history == [[""], [""], ["floor"]]  # epoch 1: 3.5 - 1.5 = 2.0 exactly, not below
    assert LinearDecay.matched(64.0, 4.0, 30, 1, sigma_min=1.0).step == pytest.approx(2.0)

    geometric = GeometricDecay.matched(64.0, 8.0, 9, 2, period=3.0, sigma_min=1.0)
    assert geometric.rate == pytest.approx(0.5)
    sigma = [geometric.update([1.0, 1.0])[0].item() for _ in range(9)]
    assert sigma[2] == pytest.approx(32.0) and sigma[-1] == pytest.approx(8.0)
    assert sigma[0] == pytest.approx(64.0 * 0.5 ** (1 / 3))
    with pytest.raises(ValueError, match="`rate` must be in"):
        GeometricDecay(8.0, 1, rate=1.5)
    for name in SCHEDULE_NAMES:
        assert make_schedule(name, (64, 64), 3).num_landmarks == 3
    assert make_schedule("bounded", (64,), 1).name == "bounded" and make_schedule("paper", (64,), 1).name == "paper"
    with pytest.raises(ValueError, match="`name` must be one of"):
        make_schedule("nope", (64,), 1)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_schedule_round_trips_through_weights_only_load(name: str) -> None:
    schedule = make_schedule(name, (64,), 2)
    for loss in LOSSES:
        schedule.update([loss, 2 * loss], [3.0, 3.0])
    buffer = io.BytesIO()
    torch.save({"adaloss": schedule.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["adaloss"]
    restored = make_schedule(name, (64,), 2)
    restored.load_state_dict(state)
    assert torch.equal(restored.sigma_history, schedule.sigma_history)
    assert restored.clip_history == schedule.clip_history
    assert torch.equal(restored.update([0.9, 1.8], [3.0, 3.0]), schedule.update([0.9, 1.8], [3.0, 3.0]))


def test_state_from_before_the_diagnostics_loads() -> None:
    schedule = AdalossSchedule(32.0, num_landmarks=1)
    run(schedule, LOSSES[:5])
    old = {key: schedule.state_dict()[key] for key in ("sigma", "loss_history", "sigma_history", "window", "rho")}
    restored = AdalossSchedule(32.0, num_landmarks=1)
    restored.load_state_dict(old)
    assert restored.clip_history == [[""]] * 5 and restored.diagnostics["ratio"].isnan().all()
    assert restored.update([0.3]).tolist() == schedule.update([0.3]).tolist()


def test_loss_reports_the_all_zero_prediction_loss() -> None:
    points = torch.tensor([[[[10.0]], [[float("nan")]]], [[[20.3]], [[5.0]]]])  # (B=2, L=2, K=1, D=1)
    loss_fn = AdalossHeatmapLoss(sigma=[3.0, 4.0], normalize="mean")
    loss_fn(torch.zeros(2, 2, 32), points)
    target = render_gaussian_heatmaps(points, torch.tensor([3.0, 4.0]), (32,), normalize="mean")
    expected = target.pow(2).mean(dim=2)
    assert loss_fn.last_channel_reference_sums.tolist() == pytest.approx(
        [expected[:, 0].sum().item(), expected[1, 1].item()]
    )
    # the all-zero prediction's loss is the reference itself
    assert loss_fn.last_channel_sums.tolist() == pytest.approx(loss_fn.last_channel_reference_sums.tolist())


def test_learned_sigma_gets_gradients_and_a_penalty() -> None:
    schedule = LearnedSigma(8.0, 2, penalty_weight=0.5, sigma_min=1.0)
    loss_fn = AdalossHeatmapLoss(schedule, normalize="mean")
    assert [p is schedule.log_sigma for p in loss_fn.parameters()] == [True]
    points = torch.tensor([[[[10.0]], [[20.0]]]])
    pred = torch.zeros(1, 2, 32)
    loss = loss_fn(pred, points)
    assert loss.item() == pytest.approx(loss_fn.last_channel_sums.sum().item() / 2 + 0.5 * 64.0, rel=1e-5)
    loss.backward()
    assert schedule.log_sigma.grad is not None and bool((schedule.log_sigma.grad != 0).all())
    assert list(AdalossHeatmapLoss(sigma=4.0).parameters()) == []


def _ecg_like(n: int, length: int = 32) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        peak = float(torch.randint(6, length - 6, (1,), generator=generator))
        signal = torch.exp(-0.5 * ((torch.arange(length) - peak) / 1.5) ** 2)
        samples.append({"image": signal[None], "label": torch.tensor([[[peak]], [[peak + 0.5]]])})
    return samples


@pytest.mark.parametrize("name", ["relative_restart", "spread", "learned", "geometric"])
def test_handler_trains_every_kind_of_schedule(name: str, single_thread: None) -> None:
    torch.manual_seed(0)
    schedule = make_schedule(name, (32,), 2, sigma_min=1.0)
    loss_fn = AdalossHeatmapLoss(schedule, normalize="mean")
    net = HeatmapUNet(1, 1, 2, channels=(4, 8), kernel_size=3)
    groups = [{"params": list(net.parameters())}, {"params": list(loss_fn.parameters()), "lr": 0.05}]
    trainer = SupervisedTrainer(
        "cpu", 5, DataLoader(Dataset(_ecg_like(8)), batch_size=4), net, torch.optim.Adam(groups, lr=1e-2), loss_fn,
        train_handlers=[AdalossHandler(loss_fn, ["a", "b"])],
    )  # fmt: skip
    trainer.run()
    assert schedule.sigma_history.shape == (6, 2)
    assert bool(torch.isfinite(schedule.reference_history).all())
    assert trainer.state.metrics["sigma/b"] == schedule.sigma[1].item()
    assert trainer.state.metrics["adaloss_clipped/a"] in (0.0, 1.0)
    if name == "geometric":
        assert bool((schedule.sigma < 8.0).all())
    if name == "learned":  # the optimiser moved log sigma, and the history recorded it
        assert bool((schedule.sigma != 8.0).all()) and torch.equal(schedule.sigma_history[-1], schedule.sigma)


def test_plot_marks_clipped_updates(tmp_path: Path) -> None:
    schedule = AdalossSchedule(32.0, num_landmarks=1)
    run(schedule, LOSSES)
    out = plot_sigma_history(schedule.sigma_history, ["tip"], tmp_path / "s.png", clipped=schedule.clipped_history)
    assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="`clipped` must have shape"):
        plot_sigma_history(schedule.sigma_history, ["tip"], tmp_path / "t.png", clipped=torch.zeros(3, 1, dtype=bool))
