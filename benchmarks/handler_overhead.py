"""Cost of the AdalossHandler in a training epoch: one epoch of a small MONAI UNet with and without it.

Both arms train the same network with an ``AdalossHeatmapLoss`` driven by an ``AdalossSchedule`` (targets
rendered on the device from the live sigma, per-landmark sums kept by the loss); the "with" arm also attaches
the ``AdalossHandler`` (per-iteration accumulation of those sums, all-reduce and schedule update at
``EPOCH_COMPLETED``). After one warm-up epoch per arm, the arms alternate, each repeat timing one full epoch of
a fresh ``SupervisedTrainer``, and the medians are compared. Epoch times on a shared machine vary by a few
per cent, more than the handler costs, so the script also times the handler's own event handlers directly.

    python benchmarks/handler_overhead.py [--size 128] [--batch 8] [--iterations 40] [--repeats 5]
        [--landmarks 2] [--channels 16 32 64 128] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ignite.engine import Engine
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.networks.nets import UNet

from monai_adaloss.adaloss import AdalossSchedule
from monai_adaloss.handlers import AdalossHandler
from monai_adaloss.heatmaps import render_gaussian_heatmaps
from monai_adaloss.losses import AdalossHeatmapLoss


class TimedAdalossHandler(AdalossHandler):
    """An AdalossHandler that adds the wall time spent in its own event handlers to ``seconds``."""

    seconds = 0.0

    def iteration_completed(self, engine: Engine) -> None:
        start = time.perf_counter()
        super().iteration_completed(engine)
        self.seconds += time.perf_counter() - start

    def __call__(self, engine: Engine) -> None:
        start = time.perf_counter()
        super().__call__(engine)
        self.seconds += time.perf_counter() - start


def synthetic_data(num_samples: int, num_landmarks: int, size: int) -> list[dict[str, torch.Tensor]]:
    """Images ``(1, size, size)`` with a Gaussian blob per landmark plus noise; labels ``(L, 1, 2)`` points."""
    generator = torch.Generator().manual_seed(0)
    points = size * (0.1 + 0.8 * torch.rand(num_samples, num_landmarks, 1, 2, generator=generator))
    blobs = render_gaussian_heatmaps(points, size / 32.0, (size, size)).sum(dim=1, keepdim=True)
    images = blobs + 0.1 * torch.randn(num_samples, 1, size, size, generator=generator)
    return [{"image": images[i], "label": points[i]} for i in range(num_samples)]


def epoch_seconds(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    loss_fn: AdalossHeatmapLoss,
    handler: TimedAdalossHandler | None,
    device: torch.device,
) -> float:
    """Wall time of one epoch of a fresh SupervisedTrainer (construction not timed)."""
    handlers = [] if handler is None else [handler]
    trainer = SupervisedTrainer(device, 1, loader, net, optimizer, loss_fn, train_handlers=handlers)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    trainer.run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="image and heatmap size (square)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=40, help="iterations per epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per arm")
    parser.add_argument("--landmarks", type=int, default=2)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128], help="UNet channels")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    channels = tuple(args.channels)
    strides = (2,) * (len(channels) - 1)
    net = UNet(2, 1, args.landmarks, channels=channels, strides=strides, num_res_units=2).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = synthetic_data(args.batch * args.iterations, args.landmarks, args.size)
    loader = DataLoader(Dataset(data), batch_size=args.batch, shuffle=True, num_workers=0)
    sigma_0 = args.size / 4.0
    loss_without = AdalossHeatmapLoss(AdalossSchedule(sigma_0, num_landmarks=args.landmarks))
    loss_with = AdalossHeatmapLoss(AdalossSchedule(sigma_0, num_landmarks=args.landmarks))

    times: dict[str, list[float]] = {"without": [], "with": []}
    handler_seconds: list[float] = []
    for repeat in range(args.repeats + 1):  # repeat 0 warms both arms up and is not recorded
        without = epoch_seconds(net, optimizer, loader, loss_without, None, device)
        handler = TimedAdalossHandler(loss_with)
        with_handler = epoch_seconds(net, optimizer, loader, loss_with, handler, device)
        if repeat > 0:
            times["without"].append(without)
            times["with"].append(with_handler)
            handler_seconds.append(handler.seconds)

    median_without = statistics.median(times["without"])
    median_with = statistics.median(times["with"])
    median_handler = statistics.median(handler_seconds)
    print(
        f"device {device}, {torch.get_num_threads()} threads, UNet {channels} on {args.size}x{args.size}, "
        f"{args.landmarks} landmarks, batch {args.batch}, {args.iterations} iterations per epoch, "
        f"{args.repeats} repeats per arm (alternating, after 1 warm-up)"
    )
    for arm in ("without", "with"):
        values = " ".join(f"{t:.3f}" for t in times[arm])
        print(f"epoch seconds {arm:>7} handler: {values}  median {statistics.median(times[arm]):.3f}")
    print(f"overhead, median with / median without - 1: {100.0 * (median_with / median_without - 1.0):+.2f} %")
    fastest = min(times["with"]) / min(times["without"]) - 1.0
    print(f"overhead, fastest with / fastest without - 1: {100.0 * fastest:+.2f} % (least disturbed epochs)")
    print(
        f"handler's own time per epoch (median): {1000.0 * median_handler:.2f} ms "
        f"= {100.0 * median_handler / median_without:.3f} % of an epoch without it"
    )
    print(f"sigma after the run, with handler: {[round(s, 3) for s in loss_with.schedule.sigma.tolist()]}")


if __name__ == "__main__":
    main()
