"""The paper's Table 1 (fixed sigma vs Adaloss) on synthetic catheter-tip fluoroscopy frames.

Every run trains the same catheter U-Net (``catheter_unet``, kernel 5, BatchNorm + ReLU) from the same seed,
on the same frames, for the same number of epochs, with Adam and a plain PyTorch loop (no augmentation);
only the target sigma (fixed or an ``AdalossSchedule``) and the learning rate differ. The loss is always
``AdalossHeatmapLoss`` (targets rendered from the points inside the loss); an Adaloss run calls
``schedule.update(epoch sums / epoch counts)`` of the loss's per-landmark values once per epoch, exactly as
``AdalossHandler`` does at ``EPOCH_COMPLETED``.

Data: ``generate_frame`` renders ``--frame-size`` (256) frames in memory; they are scaled to [0, 1] by their
DICOM range, downsampled to ``--size`` with area interpolation (the bundle's ``Resized(mode="area")``), and
the exact tips move with them: ``p_small = (p + 0.5) * size / frame_size - 0.5``. Points are ``(x, y)`` =
(column, row), the frames' MONAI layout. Decoding: ``decode_single_instance`` (argmax + sub-pixel fit).

Runs (``--runs`` picks a subset; sigmas in pixels of the working grid):

- ``fixed_5``, ``fixed_25``, ``fixed_40``, ``fixed_60``: the paper's fixed sigmas at 256, times size / 256.
- ``adaloss_lr1e-3``, ``adaloss_lr1e-4``: the shipped schedule (sigma_0 = size / 4, max_step_fraction 0.1,
  sigma_min 2) at both learning rates (all other runs use 1e-3).
- ``adaloss_step_none`` (the paper's unbounded eq. 5, floor sigma_min only), ``adaloss_step0.05``,
  ``adaloss_step0.1``, ``adaloss_step0.2``: the step bound.
- ``adaloss_smin1``, ``adaloss_smin2``: the floor, with max_step_fraction 0.1.

Runs with the same settings (``adaloss_step0.1`` and ``adaloss_smin2`` are ``adaloss_lr1e-3``) are trained
once per invocation and reported under each name.

Errors are reported in pixels of the working grid and at 256-equivalent (times 256 / size), at the last
epoch (no model selection). Outputs in ``--output-dir``: ``per_epoch.csv`` (validation mean / median tip
distance and the sigma of every epoch of every run, for the learning-rate figure), ``results.csv`` and
``results.md``.

    python benchmarks/catheter_sigma_sweep.py --output-dir sweep_out [--size 128] [--n-train 300] [--n-test 60]
        [--epochs 40] [--batch-size 8] [--channels 16 32 64] [--seed 0] [--threads 2] [--runs fixed_25 ...]
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from monai_adaloss.adaloss import AdalossSchedule, initial_sigma
from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.networks import catheter_unet
from monai_adaloss.synthetic.fluoroscopy import FluoroscopyConfig, generate_frame

REFERENCE_SIZE = 256
"""The paper's heatmap resolution: fixed sigmas are given at it and errors are also reported at it."""


@dataclass(frozen=True)
class RunSpec:
    """One row of the table. ``fixed_sigma_256`` set: a fixed-sigma run; else an Adaloss run."""

    name: str
    lr: float = 1e-3
    fixed_sigma_256: float | None = None
    max_step_fraction: float | None = 0.1
    sigma_min: float = 2.0

    def key(self) -> tuple:
        """Settings that determine the training (runs with equal keys are trained once)."""
        if self.fixed_sigma_256 is not None:
            return ("fixed", self.lr, self.fixed_sigma_256)
        return ("adaloss", self.lr, self.max_step_fraction, self.sigma_min)


RUNS: dict[str, RunSpec] = {
    spec.name: spec
    for spec in (
        *(RunSpec(f"fixed_{s}", fixed_sigma_256=float(s)) for s in (5, 25, 40, 60)),
        RunSpec("adaloss_lr1e-3", lr=1e-3),
        RunSpec("adaloss_lr1e-4", lr=1e-4),
        RunSpec("adaloss_step_none", max_step_fraction=None),
        *(RunSpec(f"adaloss_step{f}", max_step_fraction=f) for f in (0.05, 0.1, 0.2)),
        *(RunSpec(f"adaloss_smin{m:g}", sigma_min=float(m)) for m in (1, 2)),
    )
}


@dataclass
class RunResult:
    """What one run measured; errors at the last epoch, ``*_256`` at 256-equivalent pixels."""

    spec: RunSpec
    sigma_0: float
    final_sigma: float
    mean_px: float
    median_px: float
    mean_px_256: float
    median_px_256: float
    misses: int
    wall_s: float
    sigma_history: list[float]
    """Sigma used in each epoch, then the sigma after the last update (epochs + 1 values)."""
    val_mean_px: list[float] = field(default_factory=list)
    val_median_px: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    same_as: str | None = None

    def row(self, size: int) -> dict[str, object]:
        spec = self.spec
        return {
            "run": spec.name,
            "kind": "fixed" if spec.fixed_sigma_256 is not None else "adaloss",
            "lr": spec.lr,
            "max_step_fraction": "" if spec.fixed_sigma_256 is not None else str(spec.max_step_fraction),
            "sigma_min": "" if spec.fixed_sigma_256 is not None else spec.sigma_min,
            "sigma_0": self.sigma_0,
            "final_sigma": self.final_sigma,
            "final_sigma_256": self.final_sigma * REFERENCE_SIZE / size,
            "mean_px": self.mean_px,
            "median_px": self.median_px,
            "mean_px_256": self.mean_px_256,
            "median_px_256": self.median_px_256,
            "misses": self.misses,
            "wall_s": self.wall_s,
            "same_as": self.same_as or "",
        }


def make_frames(n: int, size: int, frame_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` frames ``(n, 1, size, size)`` in [0, 1] and their exact tips ``(n, 1, 1, 2)`` at ``size``, (x, y)."""
    config = FluoroscopyConfig(rows=frame_size, columns=frame_size)
    images, tips = [], []
    for frame_rng in rng.spawn(n):
        frame = generate_frame(config, frame_rng)
        images.append(frame.image / float(2**frame.bits_stored - 1))
        tips.append(frame.landmarks[:1])
    image = torch.from_numpy(np.stack(images)).float()[:, None]
    points = torch.from_numpy(np.stack(tips)).float()[:, :, None, :]  # (n, L=1, K=1, 2)
    if size != frame_size:
        image = F.interpolate(image, size=(size, size), mode="area")
        points = (points + 0.5) * (size / frame_size) - 0.5
    return image, points


def evaluate(net: torch.nn.Module, images: torch.Tensor, points: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Tip distance per test frame in working-grid pixels (NaN where no point was decoded)."""
    net.eval()
    predicted = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            decoded, _ = decode_single_instance(net(images[start : start + batch_size]))
            predicted.append(decoded)
    net.train()
    pred = torch.cat(predicted)[:, 0, 0].double()  # (n, 2)
    return torch.linalg.vector_norm(pred - points[:, 0, 0].double(), dim=-1)


def train_run(
    spec: RunSpec,
    data: dict[str, torch.Tensor],
    size: int,
    epochs: int,
    batch_size: int,
    channels: Sequence[int],
    seed: int,
    log: bool = True,
) -> RunResult:
    """Train one run from ``seed`` and evaluate it on the test frames after every epoch."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    net = catheter_unet(channels=tuple(channels))
    optimizer = torch.optim.Adam(net.parameters(), lr=spec.lr)
    sigma_0 = initial_sigma((size, size))
    schedule = None
    if spec.fixed_sigma_256 is None:
        schedule = AdalossSchedule(
            sigma_0, num_landmarks=1, max_step_fraction=spec.max_step_fraction, sigma_min=spec.sigma_min
        )
        loss_fn = AdalossHeatmapLoss(schedule=schedule)
    else:
        sigma_0 = spec.fixed_sigma_256 * size / REFERENCE_SIZE
        loss_fn = AdalossHeatmapLoss(sigma=sigma_0)
    shuffle = torch.Generator().manual_seed(seed)
    train_x, train_p = data["train_images"], data["train_points"]
    result = RunResult(spec, sigma_0, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0.0, [sigma_0])
    errors = torch.empty(0)
    for epoch in range(epochs):
        sums = torch.zeros(1, dtype=torch.float64)
        counts = torch.zeros(1, dtype=torch.float64)
        for batch in torch.randperm(len(train_x), generator=shuffle).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(train_x[batch]), train_p[batch])
            loss.backward()
            optimizer.step()
            sums += loss_fn.last_channel_sums.double()  # what AdalossHandler accumulates per iteration
            counts += loss_fn.last_channel_counts.double()
        epoch_losses = sums / counts
        sigma_next = sigma_0 if schedule is None else float(schedule.update(epoch_losses)[0])
        errors = evaluate(net, data["test_images"], data["test_points"], batch_size)
        finite = errors[torch.isfinite(errors)]
        result.train_loss.append(float(epoch_losses[0]))
        result.val_mean_px.append(float(finite.mean()) if finite.numel() else math.nan)
        result.val_median_px.append(float(finite.median()) if finite.numel() else math.nan)
        result.sigma_history.append(sigma_next)
        if log:
            print(
                f"  {spec.name} epoch {epoch + 1}/{epochs}: loss {epoch_losses[0]:.3e}, sigma "
                f"{result.sigma_history[-2]:.2f} -> {sigma_next:.2f}, val mean {result.val_mean_px[-1]:.2f} px "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    finite = errors[torch.isfinite(errors)]
    scale = REFERENCE_SIZE / size
    result.final_sigma = result.sigma_history[-1]
    result.mean_px = float(finite.mean()) if finite.numel() else math.nan
    result.median_px = float(finite.median()) if finite.numel() else math.nan
    result.mean_px_256 = result.mean_px * scale
    result.median_px_256 = result.median_px * scale
    result.misses = int((~torch.isfinite(errors)).sum())
    result.wall_s = time.perf_counter() - start
    return result


def markdown_table(results: Sequence[RunResult], size: int) -> str:
    lines = [
        f"| run | lr | max step | sigma_min | sigma_0 | final sigma ({size} / 256) | mean / median px ({size}) "
        "| mean / median px (256-eq.) | misses | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row = r.row(size)
        fixed = row["kind"] == "fixed"
        note = f" (= {r.same_as})" if r.same_as else ""
        lines.append(
            f"| {r.spec.name}{note} | {r.spec.lr:g} | {'-' if fixed else row['max_step_fraction']} | "
            f"{'-' if fixed else f'{r.spec.sigma_min:g}'} | {r.sigma_0:.2f} | "
            f"{r.final_sigma:.2f} / {row['final_sigma_256']:.1f} | {r.mean_px:.2f} / {r.median_px:.2f} | "
            f"{r.mean_px_256:.2f} / {r.median_px_256:.2f} | {r.misses} | {r.wall_s:.0f} |"
        )
    return "\n".join(lines)


def write_outputs(results: Sequence[RunResult], size: int, output_dir: Path, header: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    scale = REFERENCE_SIZE / size
    with open(output_dir / "per_epoch.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([
            "run", "lr", "epoch", "sigma", "sigma_next", "train_loss", "val_mean_px", "val_median_px",
            "val_mean_px_256", "val_median_px_256",
        ])  # fmt: skip
        for r in results:
            for epoch, (loss, mean, median) in enumerate(
                zip(r.train_loss, r.val_mean_px, r.val_median_px, strict=True), start=1
            ):
                writer.writerow([
                    r.spec.name, r.spec.lr, epoch, r.sigma_history[epoch - 1], r.sigma_history[epoch], loss,
                    mean, median, mean * scale, median * scale,
                ])  # fmt: skip
    rows = [r.row(size) for r in results]
    with open(output_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (output_dir / "results.md").write_text(header + "\n\n" + markdown_table(results, size) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), metavar="RUN",
                        help=f"runs to train (default: all): {', '.join(RUNS)}")  # fmt: skip
    parser.add_argument("--size", type=int, default=128, help="working grid (frames and heatmaps), pixels")
    parser.add_argument("--frame-size", type=int, default=REFERENCE_SIZE, help="generated frame size, pixels")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--output-dir", type=Path, default=Path("catheter_sigma_sweep"))
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = parser.parse_args(argv)
    if args.size > args.frame_size:
        parser.error(f"--size ({args.size}) must not exceed --frame-size ({args.frame_size}).")
    if args.size % 2 ** (len(args.channels) - 1):
        parser.error(f"--size must be divisible by 2 ** (len(channels) - 1) = {2 ** (len(args.channels) - 1)}.")
    return args


def main(argv: Sequence[str] | None = None) -> list[RunResult]:
    """Run the sweep; returns one :class:`RunResult` per requested run, in order."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    train_rng, test_rng = rng.spawn(2)
    start = time.perf_counter()
    train_x, train_p = make_frames(args.n_train, args.size, args.frame_size, train_rng)
    test_x, test_p = make_frames(args.n_test, args.size, args.frame_size, test_rng)
    keep = ~torch.isnan(test_p).any(dim=-1).flatten()  # test frames need a tip (training masks absent ones)
    data = {"train_images": train_x, "train_points": train_p, "test_images": test_x[keep], "test_points": test_p[keep]}
    print(f"data: {args.n_train} train / {int(keep.sum())} test frames, {args.frame_size} -> {args.size} px, "
          f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip

    results: list[RunResult] = []
    trained: dict[tuple, RunResult] = {}
    for name in dict.fromkeys(args.runs):
        spec = RUNS[name]
        if spec.key() in trained:
            first = trained[spec.key()]
            results.append(RunResult(**{**first.__dict__, "spec": spec, "same_as": first.spec.name}))
            continue
        print(f"run {name}", flush=True)
        result = train_run(
            spec, data, args.size, args.epochs, args.batch_size, args.channels, args.seed, log=not args.quiet
        )
        trained[spec.key()] = result
        results.append(result)

    header = (
        f"Catheter sigma sweep: synthetic frames {args.frame_size} -> {args.size} px, {args.n_train} train / "
        f"{int(keep.sum())} test, catheter_unet channels {list(args.channels)}, {args.epochs} epochs, batch "
        f"{args.batch_size}, Adam, seed {args.seed}, {args.threads} threads; errors at the last epoch, "
        f"sub-pixel decoding; 256-eq. = x {REFERENCE_SIZE / args.size:g}."
    )
    write_outputs(results, args.size, args.output_dir, header)
    print()
    print(header)
    print()
    print(markdown_table(results, args.size))
    print(f"\nwritten: {args.output_dir / 'results.md'}, results.csv, per_epoch.csv")
    return results


if __name__ == "__main__":
    main()
