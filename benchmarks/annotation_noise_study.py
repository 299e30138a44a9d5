"""Claim (b) on controlled data: does Adaloss's final per-landmark sigma follow the annotation noise?

Synthetic fluoroscopy frames (``generate_frame``) with the catheter tip and ``len(--noise-px)`` radiopaque
marker bands on the catheter (``MarkerLandmark`` at ``--arc-lengths-mm`` from the tip). Every marker gets
one annotation-noise level (Gaussian, pixels per axis at the frame size); the tip is annotated exactly.
For each seed the levels are assigned to the markers in a different (random) order, so that a marker's
position along the catheter (how visible it is, how often it leaves the field) is not confounded with
its noise. The network is trained on the noisy annotations; test errors are measured against the exact
positions.

Every seed trains the catheter U-Net with ``AdalossHeatmapLoss`` (mean-normalised targets, the paper's
choice for several landmarks) and the shipped ``AdalossSchedule`` (per-landmark sigma, sigma_0 = size / 4,
``--max-step-fraction``, ``--sigma-min``) in a plain PyTorch loop with Adam (the update is
``schedule.update(epoch sums / epoch counts)`` once per epoch, exactly as ``AdalossHandler`` does).

Reported: per seed and landmark the noise level, the measured annotation noise (std of annotated - exact
over the training frames, per axis), the final sigma and the mean test error; Spearman's rank correlation
of final sigma with the noise level over the markers of each seed and pooled over seeds (scipy
``spearmanr``, two-sided p-value). Outputs in ``--output-dir``: ``landmarks.csv``, ``sigma_per_epoch.csv``,
``results.md``.

    python benchmarks/annotation_noise_study.py --output-dir noise_out [--seeds 0 1] [--noise-px 0 2 4 8]
        [--frame-size 256] [--size 64] [--n-train 300] [--n-test 60] [--epochs 40] [--threads 2]
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
from scipy.stats import spearmanr

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.networks import catheter_unet
from monai_adaloss.synthetic.fluoroscopy import FluoroscopyConfig, MarkerLandmark, generate_frame


@dataclass
class Frames:
    """Frames at the working size and their landmarks ``(n, L, 1, 2)`` (x, y), NaN when absent."""

    images: torch.Tensor
    annotated: torch.Tensor
    exact: torch.Tensor


@dataclass
class SeedResult:
    """One seed's training: per landmark (``L`` = tip + markers) noise, sigma and test error."""

    seed: int
    names: list[str]
    noise_px: list[float]
    """Configured annotation noise per landmark, pixels per axis at the frame size."""
    measured_noise_px: list[float]
    """Std of (annotated - exact) over the training frames, pixels per axis at the frame size."""
    final_sigma: list[float]
    test_error_px: list[float]
    """Mean distance to the exact position over the test frames where the landmark is visible, frame pixels."""
    sigma_history: list[list[float]] = field(default_factory=list)
    """Sigma per landmark used in each epoch, then after the last update (epochs + 1 rows)."""
    wall_s: float = 0.0


def landmark_config(frame_size: int, arc_lengths_mm: Sequence[float], noise_px: Sequence[float]) -> FluoroscopyConfig:
    """Frames with the tip (exact) and one marker per (arc length, noise) pair, named ``m<arc length>mm``."""
    markers = tuple(
        MarkerLandmark(f"m{arc:g}mm", arc_length_mm=float(arc), annotation_noise_px=float(noise))
        for arc, noise in zip(arc_lengths_mm, noise_px, strict=True)
    )
    return FluoroscopyConfig(rows=frame_size, columns=frame_size, extra_landmarks=markers)


def make_frames(config: FluoroscopyConfig, n: int, size: int, rng: np.random.Generator) -> Frames:
    """``n`` frames scaled to [0, 1] and area-downsampled to ``size``; points moved with them."""
    images, annotated, exact = [], [], []
    for frame_rng in rng.spawn(n):
        frame = generate_frame(config, frame_rng)
        images.append(frame.image / float(2**frame.bits_stored - 1))
        annotated.append(frame.landmarks_annotated)
        exact.append(frame.landmarks)
    image = torch.from_numpy(np.stack(images)).float()[:, None]
    scale = size / config.rows

    def points(values: list[np.ndarray]) -> torch.Tensor:
        return (torch.from_numpy(np.stack(values)).float()[:, :, None, :] + 0.5) * scale - 0.5

    if size != config.rows:
        image = F.interpolate(image, size=(size, size), mode="area")
    return Frames(image, points(annotated), points(exact))


def measured_noise(frames: Frames, frame_scale: float) -> list[float]:
    """Per landmark: std of annotated - exact over visible points, per axis, in frame pixels."""
    diff = (frames.annotated - frames.exact)[:, :, 0, :] * frame_scale  # (n, L, 2)
    result = []
    for landmark in range(diff.shape[1]):
        values = diff[:, landmark]
        values = values[torch.isfinite(values).all(dim=-1)]
        result.append(float(values.double().pow(2).mean().sqrt()) if values.numel() else math.nan)
    return result


def test_errors(net: torch.nn.Module, frames: Frames, batch_size: int) -> torch.Tensor:
    """``(n, L)`` distance to the exact points in working-grid pixels, NaN where absent or not decoded."""
    net.eval()
    decoded = []
    with torch.no_grad():
        for start in range(0, len(frames.images), batch_size):
            decoded.append(decode_single_instance(net(frames.images[start : start + batch_size]))[0])
    net.train()
    predicted = torch.cat(decoded)[:, :, 0].double()
    return torch.linalg.vector_norm(predicted - frames.exact[:, :, 0].double(), dim=-1)


def train_seed(seed: int, noise_levels: Sequence[float], args: argparse.Namespace, log: bool = True) -> SeedResult:
    """Assign the noise levels to the markers in a seed-dependent order, make data, train, evaluate."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    order_rng, train_rng, test_rng = rng.spawn(3)
    marker_noise = [float(noise_levels[i]) for i in order_rng.permutation(len(noise_levels))]
    config = landmark_config(args.frame_size, args.arc_lengths_mm, marker_noise)
    train = make_frames(config, args.n_train, args.size, train_rng)
    test = make_frames(config, args.n_test, args.size, test_rng)
    frame_scale = args.frame_size / args.size
    names = list(config.landmark_names)

    torch.manual_seed(seed)
    net = catheter_unet(out_channels=len(names), channels=tuple(args.channels))
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    schedule = AdalossSchedule.for_spatial_shape(
        (args.size, args.size), num_landmarks=len(names), max_step_fraction=args.max_step_fraction,
        sigma_min=args.sigma_min,
    )  # fmt: skip
    loss_fn = AdalossHeatmapLoss(schedule=schedule, normalize="mean")
    shuffle = torch.Generator().manual_seed(seed)
    history = [schedule.sigma.tolist()]
    for epoch in range(args.epochs):
        sums = torch.zeros(len(names), dtype=torch.float64)
        counts = torch.zeros(len(names), dtype=torch.float64)
        for batch in torch.randperm(len(train.images), generator=shuffle).split(args.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(train.images[batch]), train.annotated[batch])
            loss.backward()
            optimizer.step()
            sums += loss_fn.last_channel_sums.double()
            counts += loss_fn.last_channel_counts.double()
        history.append(schedule.update(sums / counts).tolist())  # 0 / 0 = NaN: no update (as the handler)
        if log:
            sigma = " ".join(f"{s:.2f}" for s in history[-1])
            print(f"  seed {seed} epoch {epoch + 1}/{args.epochs}: sigma {sigma} ({time.perf_counter() - start:.0f} s)",
                  flush=True)  # fmt: skip
    errors = test_errors(net, test, args.batch_size) * frame_scale
    mean_errors = [float(e[torch.isfinite(e)].mean()) if torch.isfinite(e).any() else math.nan for e in errors.T]
    return SeedResult(
        seed=seed,
        names=names,
        noise_px=[0.0, *marker_noise],
        measured_noise_px=measured_noise(train, frame_scale),
        final_sigma=history[-1],
        test_error_px=mean_errors,
        sigma_history=history,
        wall_s=time.perf_counter() - start,
    )


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and two-sided p-value; NaN when undefined (fewer than 3 points or a constant input)."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return math.nan, math.nan
    result = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return float(result.statistic), float(result.pvalue)


def correlations(results: Sequence[SeedResult]) -> dict[str, tuple[float, float]]:
    """Spearman (final sigma vs noise) over the markers of each seed and pooled; also sigma vs test error."""
    out = {}
    for r in results:
        out[f"seed {r.seed}: sigma vs noise"] = spearman(r.noise_px[1:], r.final_sigma[1:])
    markers = [
        triple for r in results for triple in zip(r.noise_px[1:], r.final_sigma[1:], r.test_error_px[1:], strict=True)
    ]
    out["pooled: sigma vs noise"] = spearman([m[0] for m in markers], [m[1] for m in markers])
    out["pooled: sigma vs test error"] = spearman([m[1] for m in markers], [m[2] for m in markers])
    out["pooled: test error vs noise"] = spearman([m[0] for m in markers], [m[2] for m in markers])
    return out


def write_outputs(results: Sequence[SeedResult], output_dir: Path, header: str) -> str:
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "landmarks.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "landmark", "noise_px", "measured_noise_px", "final_sigma", "test_error_px"])
        for r in results:
            for row in zip(r.names, r.noise_px, r.measured_noise_px, r.final_sigma, r.test_error_px, strict=True):
                writer.writerow([r.seed, *row])
    with open(output_dir / "sigma_per_epoch.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "epoch", *results[0].names])
        for r in results:
            for epoch, sigma in enumerate(r.sigma_history):
                writer.writerow([r.seed, epoch, *sigma])
    lines = [header, "", "| seed | landmark | noise px | measured noise px | final sigma | test error px |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        for name, noise, measured, sigma, error in zip(
            r.names, r.noise_px, r.measured_noise_px, r.final_sigma, r.test_error_px, strict=True
        ):
            lines.append(f"| {r.seed} | {name} | {noise:g} | {measured:.2f} | {sigma:.2f} | {error:.2f} |")
    lines += ["", "| Spearman | rho | p |", "|---|---|---|"]
    lines += [f"| {k} | {rho:.3f} | {p:.3g} |" for k, (rho, p) in correlations(results).items()]
    lines += ["", "wall time per seed: " + ", ".join(f"seed {r.seed} {r.wall_s:.0f} s" for r in results)]
    text = "\n".join(lines) + "\n"
    (output_dir / "results.md").write_text(text)
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--noise-px", type=float, nargs="+", default=[0.0, 2.0, 4.0, 8.0],
                        help="annotation noise levels, pixels per axis at the frame size; one marker each")  # fmt: skip
    parser.add_argument("--arc-lengths-mm", type=float, nargs="+", default=None,
                        help="marker distances from the tip along the catheter, default 6, 12, 18 ... mm")  # fmt: skip
    parser.add_argument("--frame-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=64, help="working grid (network input and heatmaps)")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-step-fraction", type=float, default=0.1)
    parser.add_argument("--sigma-min", type=float, default=1.0, help="sigma floor, working-grid pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=Path("annotation_noise_study"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if len(args.noise_px) < 2:
        parser.error("--noise-px needs at least two levels.")
    if args.arc_lengths_mm is None:
        args.arc_lengths_mm = [6.0 * (i + 1) for i in range(len(args.noise_px))]
    if len(args.arc_lengths_mm) != len(args.noise_px):
        parser.error("--arc-lengths-mm needs one value per --noise-px level.")
    if args.size % 2 ** (len(args.channels) - 1):
        parser.error(f"--size must be divisible by 2 ** (len(channels) - 1) = {2 ** (len(args.channels) - 1)}.")
    return args


def main(argv: Sequence[str] | None = None) -> list[SeedResult]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = [train_seed(seed, args.noise_px, args, log=not args.quiet) for seed in args.seeds]
    header = (
        f"Annotation-noise study: frames {args.frame_size} -> {args.size} px, tip + markers at "
        f"{[f'{a:g}' for a in args.arc_lengths_mm]} mm, noise levels {args.noise_px} px (frame pixels, per axis, "
        f"order permuted per seed), {args.n_train} train / {args.n_test} test frames, catheter_unet "
        f"{list(args.channels)}, {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr:g}, "
        f"max_step_fraction {args.max_step_fraction:g}, sigma_min {args.sigma_min:g} (working px), mean-normalised "
        f"targets, {args.threads} threads; sigma in working-grid px, errors in frame px; total wall "
        f"{time.perf_counter() - start:.0f} s."
    )
    text = write_outputs(results, args.output_dir, header)
    print()
    print(text)
    return results


if __name__ == "__main__":
    main()
