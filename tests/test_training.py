"""Real MONAI engines on tiny synthetic data.

- a ``SupervisedTrainer`` with the ``AdalossHandler``: sigma history against an independent plain-Python
  implementation of the rule, epoch losses against per-sample losses recomputed from the outputs;
- handler order: epoch- and iteration-level ``CheckpointSaver`` listed first still save the updated sigma and
  the current batch's sums, and ``StatsHandler`` / ``TensorBoardStatsHandler`` log the updated sigma;
- resume: N epochs straight == N/2 + checkpoint (with ``RandomStateCheckpoint``) + fresh objects + N/2, bit
  for bit, with and without DataLoader workers;
- two gloo processes with different data end with the sigma of the all-reduced losses;
- 1D and 3D: render -> gradient descent with the loss -> decode, with an absent landmark.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import random
import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver, StatsHandler, TensorBoardStatsHandler
from monai.networks.nets import UNet
from monai.transforms import Compose, RandGaussianNoised, RandScaleIntensityd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn.parallel import DistributedDataParallel

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.handlers import AdalossHandler
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.reproducibility import RandomStateCheckpoint

NAN = float("nan")
SIZE = 32  # images and heatmaps are SIZE x SIZE
SIGMA_0 = 8.0
# the shipped step bound (10 % of sigma) and a floor below the shipped one, so that sigma moves in a few epochs
SCHEDULE = {"window": 3, "rho": 0.9, "non_increasing": True, "max_step_fraction": 0.1, "sigma_min": 1.0}
EPOCHS = 8


# ----------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny networks run faster, and much steadier on a busy machine, with one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_samples(
    num_samples: int, num_landmarks: int, noise: float, seed: int, absent_fraction: float = 0.0
) -> list[dict[str, torch.Tensor]]:
    """Landmark images: a Gaussian blob (std 2 px) per present landmark, bright for even and dark for odd
    landmark indices, plus Gaussian noise of std ``noise``.

    Returns dicts with ``image`` ``(1, SIZE, SIZE)`` and ``label`` ``(L, 1, 2)`` points in spatial-axis order;
    landmarks other than 0 are absent (NaN) with probability ``absent_fraction``.
    """
    generator = torch.Generator().manual_seed(seed)
    points = 6.0 + (SIZE - 12.0) * torch.rand(num_samples, num_landmarks, 1, 2, generator=generator)
    absent = torch.rand(num_samples, num_landmarks, generator=generator) < absent_fraction
    absent[:, 0] = False
    points[absent] = NAN
    signs = torch.tensor([1.0 if landmark % 2 == 0 else -1.0 for landmark in range(num_landmarks)])
    blobs = render_gaussian_heatmaps(points, 2.0, (SIZE, SIZE)) * signs[:, None, None]
    images = blobs.sum(dim=1, keepdim=True) + noise * torch.randn(num_samples, 1, SIZE, SIZE, generator=generator)
    return [{"image": images[i], "label": points[i]} for i in range(num_samples)]


def make_net(num_landmarks: int) -> UNet:
    """A tiny 2D UNet: 1 input channel -> ``num_landmarks`` heatmap channels."""
    return UNet(2, 1, num_landmarks, channels=(8, 16), strides=(2,), num_res_units=1)


def reference_target(points: torch.Tensor, sigma: Sequence[float], shape: Sequence[int]) -> torch.Tensor:
    """``(L, *shape)`` float64 ``exp(-|x - p_l|^2 / (2 sigma_l^2))`` for one sample's ``(L, 1, D)`` points.

    Written out on an explicit coordinate grid (no use of the library's renderer); absent landmarks give zeros.
    """
    axes = [torch.arange(size, dtype=torch.float64) for size in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    channels = []
    for point, sigma_l in zip(points[:, 0].to(torch.float64), sigma, strict=True):
        if bool(torch.isnan(point).any()):
            channels.append(torch.zeros(tuple(shape), dtype=torch.float64))
        else:
            channels.append(torch.exp(-((grid - point) ** 2).sum(dim=-1) / (2.0 * sigma_l**2)))
    return torch.stack(channels)


def reference_sigma_history(
    losses: list[list[float]],
    sigma_0: float,
    window: int,
    rho: float,
    non_increasing: bool,
    max_step_fraction: float | None,
    sigma_min: float,
    sigma_max: float = math.inf,
) -> list[list[float]]:
    """Eq. 3-5 with the non-increasing rule, step bound, floor and cap, in plain Python.

    ``losses`` is ``T`` rows of ``L`` epoch losses; returns ``T + 1`` rows of ``L`` sigmas (row t: sigma of epoch t).
    """

    def variance(values: list[float]) -> float:
        mean = sum(values) / len(values)
        return sum((value - mean) ** 2 for value in values) / len(values)

    sigma = [sigma_0] * len(losses[0])
    history = [list(sigma)]
    for t in range(len(losses)):
        for landmark in range(len(sigma)):
            if t < window:  # V_{t-1} needs `window` losses before epoch t
                continue
            v_now = variance([losses[s][landmark] for s in range(t - window + 1, t + 1)])
            v_prev = variance([losses[s][landmark] for s in range(t - window, t)])
            if not (math.isfinite(v_now) and math.isfinite(v_prev) and v_now > 0):
                continue
            step = rho * (1.0 - v_prev / v_now)
            if non_increasing and step > 0 and not losses[t][landmark] > losses[t - 1][landmark]:
                step = 0.0
            if max_step_fraction is not None:
                bound = max_step_fraction * sigma[landmark]
                step = min(max(step, -bound), bound)
            sigma[landmark] = min(max(sigma[landmark] + step, sigma_min), sigma_max)
        history.append(list(sigma))
    return history


class ListHandler(logging.Handler):
    """Keeps the formatted messages of a logger."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# ------------------------------------------------------------ (a, b) SupervisedTrainer + AdalossHandler


@dataclass
class SupervisedRun:
    """What the ``supervised_run`` fixture's training leaves behind.

    ``outputs`` holds, per sample and iteration, ``(epoch, sigma the loss used, pred (1, SIZE, SIZE),
    label (1, 1, 2))``; ``epoch_metrics`` a copy of ``engine.state.metrics`` at the end of each epoch.
    """

    schedule: AdalossSchedule
    trainer: SupervisedTrainer
    outputs: list[tuple[int, list[float], torch.Tensor, torch.Tensor]]
    epoch_metrics: list[dict[str, Any]]
    stats_messages: list[str]
    checkpoint_dir: Path
    iteration_checkpoint_dir: Path
    tensorboard_dir: Path


@pytest.fixture(scope="module")
def supervised_run(tmp_path_factory: pytest.TempPathFactory) -> SupervisedRun:
    """``EPOCHS`` epochs of a SupervisedTrainer whose ``train_handlers`` list epoch- and iteration-level
    CheckpointSavers, a StatsHandler and a TensorBoardStatsHandler BEFORE the AdalossHandler."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("supervised")
    net = make_net(1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    schedule = AdalossSchedule(SIGMA_0, num_landmarks=1, **SCHEDULE)
    loss_fn = AdalossHeatmapLoss(schedule)
    adaloss = AdalossHandler(loss_fn, landmark_names=["tip"])
    saver = CheckpointSaver(str(root / "ckpt"), {"net": net, "opt": optimizer, "adaloss": adaloss}, save_interval=1)
    iteration_saver = CheckpointSaver(str(root / "iter_ckpt"), {"adaloss": adaloss}, save_interval=1, epoch_level=False)
    stats = StatsHandler(iteration_log=False, name="adaloss_test_stats")
    collector = ListHandler()
    logging.getLogger("adaloss_test_stats").addHandler(collector)
    tensorboard = TensorBoardStatsHandler(log_dir=str(root / "tb"), iteration_log=False)
    loader = DataLoader(Dataset(synthetic_samples(16, 1, noise=0.1, seed=1)), batch_size=4, shuffle=True)
    handlers = [saver, iteration_saver, stats, tensorboard, adaloss]
    trainer = SupervisedTrainer("cpu", EPOCHS, loader, net, optimizer, loss_fn, train_handlers=handlers)
    outputs: list[tuple[int, list[float], torch.Tensor, torch.Tensor]] = []
    epoch_metrics: list[dict[str, Any]] = []
    sigma_in_use: list[float] = []

    @trainer.on(Events.ITERATION_STARTED)
    def read_sigma(engine: Engine) -> None:
        sigma_in_use[:] = loss_fn.sigma.tolist()

    @trainer.on(Events.ITERATION_COMPLETED)
    def record_outputs(engine: Engine) -> None:  # decollated: one dict per sample, pred from before the step
        for item in engine.state.output:
            outputs.append((engine.state.epoch, list(sigma_in_use), torch.as_tensor(item["pred"]), item["label"]))

    @trainer.on(Events.EPOCH_COMPLETED)
    def record_metrics(engine: Engine) -> None:
        epoch_metrics.append(dict(engine.state.metrics))

    trainer.run()
    tensorboard.close()
    logging.getLogger("adaloss_test_stats").removeHandler(collector)
    return SupervisedRun(
        schedule, trainer, outputs, epoch_metrics, collector.messages, root / "ckpt", root / "iter_ckpt", root / "tb"
    )


def test_sigma_history_follows_the_rule_from_the_epoch_losses(supervised_run: SupervisedRun) -> None:
    schedule = supervised_run.schedule
    losses = schedule.loss_history.tolist()
    assert len(losses) == EPOCHS
    expected = reference_sigma_history(losses, SIGMA_0, **SCHEDULE, sigma_max=SIGMA_0)
    torch.testing.assert_close(schedule.sigma_history, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    sigmas = schedule.sigma_history[:, 0].tolist()
    changes = sum(1 for before, after in itertools.pairwise(sigmas) if after != before)
    assert changes >= 2, sigmas
    assert sigmas[: SCHEDULE["window"] + 1] == [SIGMA_0] * (SCHEDULE["window"] + 1)  # first update after w + 1 epochs


def test_epoch_losses_are_the_means_of_per_sample_losses(supervised_run: SupervisedRun) -> None:
    sigma_history = supervised_run.schedule.sigma_history.tolist()
    per_epoch: dict[int, list[float]] = {}
    for epoch, sigma_used, pred, label in supervised_run.outputs:
        assert sigma_used == sigma_history[epoch - 1]  # the loss reads the live sigma
        target = reference_target(label, sigma_history[epoch - 1], (SIZE, SIZE))
        per_epoch.setdefault(epoch, []).append(((pred.to(torch.float64) - target) ** 2).mean().item())
    assert sorted(per_epoch) == list(range(1, EPOCHS + 1))
    assert all(len(values) == 16 for values in per_epoch.values())
    means = [sum(per_epoch[epoch]) / 16 for epoch in range(1, EPOCHS + 1)]
    assert supervised_run.schedule.loss_history[:, 0].tolist() == pytest.approx(means, rel=1e-5)


def test_sigma_and_epoch_loss_are_engine_metrics(supervised_run: SupervisedRun) -> None:
    schedule = supervised_run.schedule
    assert supervised_run.trainer.state.metrics["sigma/tip"] == schedule.sigma_history[-1, 0].item()
    assert [m["sigma/tip"] for m in supervised_run.epoch_metrics] == schedule.sigma_history[1:, 0].tolist()
    assert [m["adaloss_loss/tip"] for m in supervised_run.epoch_metrics] == schedule.loss_history[:, 0].tolist()


def test_checkpoint_saver_listed_first_saves_the_updated_sigma(supervised_run: SupervisedRun) -> None:
    sigma_history = supervised_run.schedule.sigma_history.tolist()
    files = {int(re.search(r"epoch=(\d+)", p.name).group(1)): p for p in supervised_run.checkpoint_dir.glob("*.pt")}
    assert sorted(files) == list(range(1, EPOCHS + 1))
    changed_epochs = [epoch for epoch in files if sigma_history[epoch] != sigma_history[epoch - 1]]
    assert len(changed_epochs) >= 2
    for epoch, path in files.items():
        state = torch.load(path, weights_only=True)["adaloss"]
        assert state["schedule"]["sigma"] == sigma_history[epoch]
        assert len(state["schedule"]["loss_history"]) == epoch
        assert state["epoch_sums"] is None and state["epoch_counts"] is None


def test_iteration_checkpoint_listed_first_holds_the_current_batch(supervised_run: SupervisedRun) -> None:
    """A mid-epoch checkpoint's running sums include the iteration the trainer state counts as done."""
    files = list(supervised_run.iteration_checkpoint_dir.glob("*.pt"))
    assert len(files) == EPOCHS * 4
    for path in files:
        iteration = int(re.search(r"iteration=(\d+)", path.name).group(1))
        state = torch.load(path, weights_only=True)  # a single saved object is stored unwrapped
        assert state["epoch_counts"] == [4.0 * ((iteration - 1) % 4 + 1)], path.name
        assert len(state["schedule"]["loss_history"]) == (iteration - 1) // 4


def test_stats_and_tensorboard_handlers_log_the_updated_sigma(supervised_run: SupervisedRun) -> None:
    sigmas = supervised_run.schedule.sigma_history[1:, 0].tolist()
    epoch_lines = [m for m in supervised_run.stats_messages if "Metrics --" in m]
    assert len(epoch_lines) == EPOCHS
    for epoch, (line, sigma) in enumerate(zip(epoch_lines, sigmas, strict=True), start=1):
        assert line.startswith(f"Epoch[{epoch}] Metrics -- ")
        assert f"sigma/tip: {sigma:.4f} " in line
    events = EventAccumulator(str(supervised_run.tensorboard_dir))
    events.Reload()
    scalars = events.Scalars("sigma/tip")
    assert [s.step for s in scalars] == list(range(1, EPOCHS + 1))
    assert [s.value for s in scalars] == pytest.approx(sigmas, rel=1e-6)


# --------------------------------------------------------------------------------------------- (c) resume

RESUME_EPOCHS = 6


@dataclass
class ResumableRun:
    """The objects of one (possibly resumed) training script."""

    trainer: SupervisedTrainer
    net: torch.nn.Module
    schedule: AdalossSchedule
    save_dict: dict[str, Any]


def build_resumable_run(seed: int, max_epochs: int, num_workers: int = 0) -> ResumableRun:
    """Everything a training script builds, from global seeds ``seed`` (which a resume must make irrelevant):
    shuffled DataLoader, random intensity augmentation, fresh network, optimiser, schedule, handler."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    transforms = Compose(
        [
            RandGaussianNoised(keys="image", prob=0.9, std=0.2),
            RandScaleIntensityd(keys="image", factors=0.3, prob=0.5),
        ]
    )
    dataset = Dataset(synthetic_samples(12, 1, noise=0.05, seed=7), transform=transforms)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=num_workers)
    net = make_net(1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    schedule = AdalossSchedule(SIGMA_0, num_landmarks=1, **SCHEDULE)
    loss_fn = AdalossHeatmapLoss(schedule)
    adaloss = AdalossHandler(loss_fn)
    trainer = SupervisedTrainer("cpu", max_epochs, loader, net, optimizer, loss_fn, train_handlers=[adaloss])
    save_dict = {
        "net": net,
        "opt": optimizer,
        "trainer": trainer,
        "adaloss": adaloss,
        "rng": RandomStateCheckpoint(transforms),
    }
    return ResumableRun(trainer, net, schedule, save_dict)


def assert_same_run(resumed: ResumableRun, straight: ResumableRun) -> None:
    assert resumed.schedule.loss_history.tolist() == straight.schedule.loss_history.tolist()
    assert resumed.schedule.sigma_history.tolist() == straight.schedule.sigma_history.tolist()
    for name, value in straight.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[name], value, rtol=0, atol=1e-6)


def test_random_state_checkpoint_round_trip(caplog: pytest.LogCaptureFixture) -> None:
    transforms = Compose(
        [
            RandGaussianNoised(keys="image", prob=1.0),
            Compose([RandScaleIntensityd(keys="image", factors=0.5, prob=0.5)]),
        ]
    )
    rng = RandomStateCheckpoint(transforms)
    buffer = io.BytesIO()
    torch.save({"rng": rng.state_dict()}, buffer)

    def draw() -> list[Any]:
        image = transforms({"image": torch.zeros(1, 4, 4)})["image"]
        return [torch.rand(3), np.random.rand(3), random.random(), torch.as_tensor(image)]

    first = draw()
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["rng"]
    assert state["world_size"] == 1
    # Compose, RandGaussianNoised, its inner RandGaussianNoise, the nested Compose, RandScaleIntensityd and its inner
    assert len(state["ranks"][0]["transforms"]) == 6
    rng.load_state_dict(state)
    second = draw()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="6 transform random states"):
        RandomStateCheckpoint(RandGaussianNoised(keys="image")).load_state_dict(state)
    # a checkpoint written by two processes is not restored in a one-process run
    generator_state = torch.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="monai_adaloss.reproducibility"):
        rng.load_state_dict({"world_size": 2, "ranks": state["ranks"] * 2})
    assert "written by 2 processes" in caplog.text
    assert torch.equal(torch.get_rng_state(), generator_state)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_from_checkpoint_is_bit_identical(tmp_path: Path, num_workers: int) -> None:
    straight = build_resumable_run(seed=0, max_epochs=RESUME_EPOCHS, num_workers=num_workers)
    straight.trainer.run()
    sigmas = straight.schedule.sigma_history[:, 0].tolist()
    assert len(set(sigmas)) > 1  # sigma moves, so the restored schedule state matters

    first_half = build_resumable_run(seed=0, max_epochs=RESUME_EPOCHS // 2, num_workers=num_workers)
    CheckpointSaver(str(tmp_path), first_half.save_dict, save_interval=1, n_saved=1).attach(first_half.trainer)
    first_half.trainer.run()
    (path,) = tmp_path.glob("*.pt")
    assert f"epoch={RESUME_EPOCHS // 2}" in path.name

    # a restart with MONAI's CheckpointLoader (which loads with weights_only=True) at STARTED
    resumed = build_resumable_run(seed=1, max_epochs=RESUME_EPOCHS, num_workers=num_workers)
    CheckpointLoader(str(path), load_dict=resumed.save_dict).attach(resumed.trainer)
    resumed.trainer.run()
    assert resumed.trainer.state.epoch == RESUME_EPOCHS
    assert_same_run(resumed, straight)

    # a restart that loads the file itself, restricted to tensors and plain values
    resumed = build_resumable_run(seed=2, max_epochs=RESUME_EPOCHS, num_workers=num_workers)
    Checkpoint.load_objects(resumed.save_dict, torch.load(path, weights_only=True))
    resumed.trainer.state.max_epochs = RESUME_EPOCHS
    resumed.trainer.run()
    assert_same_run(resumed, straight)

    # without the random state the continuation differs (other shuffles, other noise)
    resumed = build_resumable_run(seed=3, max_epochs=RESUME_EPOCHS, num_workers=num_workers)
    Checkpoint.load_objects(
        {k: v for k, v in resumed.save_dict.items() if k != "rng"}, torch.load(path, weights_only=True)
    )
    resumed.trainer.state.max_epochs = RESUME_EPOCHS
    resumed.trainer.run()
    assert resumed.schedule.loss_history.tolist() != straight.schedule.loss_history.tolist()


# ---------------------------------------------------------------------------------------- (d) distributed

DDP_EPOCHS = 6  # >= w + 2
DDP_NOISE = (0.05, 1.0)  # rank 1 sees much noisier images, so its losses are higher
DDP_ABSENT = (0.0, 0.5)  # rank 1 misses landmark 1 in about half of its samples: different counts
DDP_SCHEDULE = {"window": 3, "rho": 0.9, "non_increasing": True, "max_step_fraction": 0.5, "sigma_min": 1.0}
DDP_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def distributed_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One rank: DDP training with its own data; writes its schedule and its own per-epoch sums/counts."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        samples = synthetic_samples(8, 2, DDP_NOISE[rank], seed=100 + rank, absent_fraction=DDP_ABSENT[rank])
        net = DistributedDataParallel(make_net(2))
        torch.manual_seed(1000 + rank)  # different generator states per rank, for the random-state gather
        schedule = AdalossSchedule(SIGMA_0, num_landmarks=2, **DDP_SCHEDULE)
        loss_fn = AdalossHeatmapLoss(schedule)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        loader = DataLoader(Dataset(samples), batch_size=4, shuffle=False)
        trainer = SupervisedTrainer(
            "cpu", DDP_EPOCHS, loader, net, optimizer, loss_fn, train_handlers=[AdalossHandler(loss_fn)]
        )
        sums: list[list[float]] = []
        counts: list[list[float]] = []

        @trainer.on(Events.EPOCH_STARTED)
        def new_epoch(engine: Engine) -> None:
            sums.append([0.0, 0.0])
            counts.append([0.0, 0.0])

        @trainer.on(Events.ITERATION_COMPLETED)
        def record(engine: Engine) -> None:
            for landmark in range(2):
                sums[-1][landmark] += float(loss_fn.last_channel_sums[landmark].to(torch.float64))
                counts[-1][landmark] += float(loss_fn.last_channel_counts[landmark])

        trainer.run()
        rng = RandomStateCheckpoint()
        rng_state = rng.state_dict()
        own_rng = torch.get_rng_state()
        torch.rand(10)
        rng.load_state_dict(rng_state)
        result = {
            "sigma_history": schedule.sigma_history.tolist(),
            "loss_history": schedule.loss_history.tolist(),
            "sums": sums,
            "counts": counts,
            "metrics": [trainer.state.metrics["sigma/landmark_0"], trainer.state.metrics["sigma/landmark_1"]],
            "rng_world_size": rng_state["world_size"],
            "rng_own_state_at_own_rank": torch.equal(rng_state["ranks"][rank]["torch"], own_rng),
            "rng_rank_states_differ": not torch.equal(rng_state["ranks"][0]["torch"], rng_state["ranks"][1]["torch"]),
            "rng_restored": torch.equal(torch.get_rng_state(), own_rng),
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        # both ranks leave together: a rank tearing gloo down while its peer is still in the last
        # collective made the other process abort ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def schedule_sigma(losses: list[list[float]]) -> list[list[float]]:
    """The sigma history an AdalossSchedule with the DDP settings gives for these epoch losses."""
    schedule = AdalossSchedule(SIGMA_0, num_landmarks=2, **DDP_SCHEDULE)
    for row in losses:
        schedule.update(row)
    return schedule.sigma_history.tolist()


def test_two_processes_share_the_sigma_of_the_all_reduced_losses(tmp_path: Path) -> None:
    context = mp.spawn(distributed_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + DDP_TIMEOUT_S
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f"two-process training did not finish within {DDP_TIMEOUT_S} s")
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]

    assert ranks[0]["sigma_history"] == ranks[1]["sigma_history"]
    assert ranks[0]["loss_history"] == ranks[1]["loss_history"]
    assert ranks[0]["counts"] != ranks[1]["counts"]  # rank 1 misses landmark 1 in some samples
    pooled = [
        [(s0 + s1) / (c0 + c1) for s0, s1, c0, c1 in zip(*row, strict=True)]
        for row in zip(ranks[0]["sums"], ranks[1]["sums"], ranks[0]["counts"], ranks[1]["counts"], strict=True)
    ]
    torch.testing.assert_close(torch.tensor(ranks[0]["loss_history"]), torch.tensor(pooled), rtol=1e-12, atol=0)
    expected = schedule_sigma(pooled)
    torch.testing.assert_close(torch.tensor(ranks[0]["sigma_history"]), torch.tensor(expected), rtol=0, atol=1e-12)
    assert ranks[0]["metrics"] == ranks[0]["sigma_history"][-1]
    for result in ranks:
        own = [
            [s / c for s, c in zip(row_s, row_c, strict=True)]
            for row_s, row_c in zip(result["sums"], result["counts"], strict=True)
        ]
        assert schedule_sigma(own) != expected  # one rank's losses alone would give another sigma

    for result in ranks:
        assert result["rng_world_size"] == 2
        assert result["rng_own_state_at_own_rank"] and result["rng_rank_states_differ"] and result["rng_restored"]


# ------------------------------------------------------------------------------------ (e) 1D and 3D end to end


@pytest.mark.parametrize(
    ("spatial_shape", "points"),
    [((48,), [[17.3], [30.6]]), ((14, 12, 10), [[4.4, 6.2, 3.7], [9.6, 3.3, 6.1]])],
    ids=["1d", "3d"],
)
def test_render_train_decode(spatial_shape: tuple[int, ...], points: list[list[float]]) -> None:
    ndim = len(spatial_shape)
    points_t = torch.tensor(points).reshape(1, 2, 1, ndim).repeat(2, 1, 1, 1)
    points_t[1, 1] = NAN  # landmark 1 is absent in sample 1
    present = ~torch.isnan(points_t).any(dim=-1)

    decoded, confidence = decode_single_instance(render_gaussian_heatmaps(points_t, 2.0, spatial_shape))
    torch.testing.assert_close(decoded[present], points_t[present], rtol=0, atol=0.05)
    assert bool(torch.isnan(decoded[1, 1]).all()) and confidence[1, 1].item() == 0.0

    loss_fn = AdalossHeatmapLoss(AdalossSchedule(2.0, num_landmarks=2, sigma_min=1.0))
    heatmaps = torch.zeros(2, 2, *spatial_shape, requires_grad=True)
    optimizer = torch.optim.Adam([heatmaps], lr=0.05)
    losses = []
    for _ in range(80):
        optimizer.zero_grad()
        loss = loss_fn(heatmaps, points_t)
        loss.backward()
        assert not bool(heatmaps.grad[1, 1].any())  # the absent channel gets no gradient
        optimizer.step()
        losses.append(loss.item())
    assert loss_fn.last_channel_counts.tolist() == [2.0, 1.0]
    assert losses[-1] < 0.05 * losses[0]
    altered = heatmaps.detach().clone()
    altered[1, 1] = 5.0  # whatever is predicted for the absent landmark does not count
    assert loss_fn(altered, points_t).item() == loss_fn(heatmaps.detach(), points_t).item()
    decoded, _ = decode_single_instance(heatmaps.detach())
    torch.testing.assert_close(decoded[present], points_t[present], rtol=0, atol=0.25)


def test_clipped_flag_is_an_engine_metric(supervised_run: SupervisedRun) -> None:
    clipped = supervised_run.schedule.clipped_history[:, 0].tolist()
    assert [m["adaloss_clipped/tip"] for m in supervised_run.epoch_metrics] == [float(c) for c in clipped]
