"""Our Gaussian target renderer vs MONAI's ``GenerateHeatmap``: speed and the accuracy of the targets.

Prints, for each case, the median time per sample of both renderers (ours on one sample and on a
batch, MONAI's per sample, as it takes one sample's ``(N, D)`` points), their ratio, and the mean
localisation error of each renderer's targets after our sub-voxel decoding
(``decode_single_instance``): MONAI rounds centres to integer voxels, ours keeps them exact.

    python benchmarks/render_speed.py [--repeats 7] [--batch 8] [--threads 2] [--cases 0 1 2]

MONAI's renderer needs about 25 GB of memory for the 3D case (case 2) with torch 2.13: its 3D
convolution asked for a 24.6 GB buffer (measured under ``ulimit -v``); on a smaller machine the
kernel's OOM killer ends the process, so run ``--cases 0 1`` there.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from monai.transforms import GenerateHeatmap

from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.heatmaps import render_gaussian_heatmaps

CASES = [
    ("68 landmarks, 256x256, sigma 2", 68, (256, 256), 2.0),
    ("68 landmarks, 256x256, sigma 64", 68, (256, 256), 64.0),
    ("4 landmarks, 96^3, sigma 24", 4, (96, 96, 96), 24.0),
]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_points(batch: int, landmarks: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``(B, L, 1, D)`` sub-voxel points at least 8 voxels from every border."""
    size = torch.tensor(shape, dtype=torch.float32)
    unit = torch.rand(batch, landmarks, 1, len(shape), generator=generator)
    return 8.0 + unit * (size - 17.0)


def mean_error(heatmaps: torch.Tensor, points: torch.Tensor) -> float:
    decoded, _ = decode_single_instance(heatmaps)
    return (decoded - points).norm(dim=-1).mean().item()


def run_case(name: str, landmarks: int, shape: tuple[int, ...], sigma: float, batch: int, repeats: int) -> None:
    generator = torch.Generator().manual_seed(0)
    points = random_points(batch, landmarks, shape, generator)
    monai_renderer = GenerateHeatmap(sigma=sigma, spatial_shape=shape, normalize=True, dtype=torch.float32)

    ours_one = median_seconds(lambda: render_gaussian_heatmaps(points[:1], sigma, shape), repeats)
    ours_batch = median_seconds(lambda: render_gaussian_heatmaps(points, sigma, shape), repeats) / batch
    monai_one = median_seconds(lambda: monai_renderer(points[0, :, 0]), repeats)

    ours_error = mean_error(render_gaussian_heatmaps(points, sigma, shape), points)
    monai_maps = torch.stack([monai_renderer(points[b, :, 0]) for b in range(batch)])
    monai_error = mean_error(monai_maps, points)

    print(f"\n{name}  (batch {batch}, median of {repeats})")
    print(f"  {'renderer':<34}{'ms / sample':>12}{'vs MONAI':>10}{'mean error (vox)':>18}")
    print(f"  {'monai GenerateHeatmap (per sample)':<34}{monai_one * 1e3:>12.2f}{1.0:>10.2f}{monai_error:>18.4f}")
    print(f"  {'ours, one sample':<34}{ours_one * 1e3:>12.2f}{monai_one / ours_one:>9.1f}x{ours_error:>18.4f}")
    print(f"  {'ours, batched':<34}{ours_batch * 1e3:>12.2f}{monai_one / ours_batch:>9.1f}x{ours_error:>18.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CI machines have 2 cores)")
    parser.add_argument(
        "--cases", type=int, nargs="+", choices=range(len(CASES)), default=list(range(len(CASES))),
        help="which cases to run: " + "; ".join(f"{i}: {case[0]}" for i, case in enumerate(CASES)),
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print("speed-up = MONAI time / our time per sample (> 1: ours is faster)")
    for name, landmarks, shape, sigma in (CASES[i] for i in args.cases):
        run_case(name, landmarks, shape, sigma, args.batch, args.repeats)


if __name__ == "__main__":
    main()
