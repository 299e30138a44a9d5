"""Probe: do averaged weights or an ensemble of epoch snapshots steady the catheter detector's gross errors?

The ``cpu`` recipe's share of test tips > 10 px off swings by 15-35 points from one epoch to the next
(docs/accuracy.md, session 10), so which epoch 40 validation frames pick decides much of a run's figure. This
script trains the demo's ``cpu`` recipe once (the paper's U-Net 8-16-32 with a spatial log-softmax, 128 px
input, cross-entropy against a Gaussian of fixed sigma 3 px, Adam 1e-3, batch 4, the catheter bundle's
augmentation with device layers on half of the samples; ``--lr-schedule cosine`` as the demo's option) and,
from the same training trajectory, scores several *readings* of it every epoch from ``--eval-from`` on:

- ``raw``: the network's weights after the epoch (what the demo selects from);
- ``ema<d>``: an exponential moving average of the weights and BatchNorm statistics, updated after every
  optimiser step with decay ``d`` (``torch.optim.swa_utils.AveragedModel``; 0.99 averages over about one
  epoch of 100 steps, 0.998 over about five);
- ``snap<k>``: the mean probability map of the raw network's last ``k`` evaluated epochs (a snapshot
  ensemble; ``k`` forward passes per frame at inference).

All readings share one run, so they are paired by construction. Errors are in px of each frame (``> 10 px``
= gross) on the validation split of ``--data`` and on the fixed test set ``--test-data``. Per reading, the
result is the epoch with the lowest validation outlier rate (then median), as the demo selects it, the last
epoch and the mean of the last five evaluations. Writes ``history.json``, ``per_frame.npz`` (test errors per
reading and epoch) and ``result.json`` into ``--output-dir``.

    python benchmarks/catheter_weight_averaging.py --data runs/demo_s0/data \\
        --test-data benchmarks_out/outliers200/test_data --seed 0 --output-dir benchmarks_out/averaging_s0
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from typing import Any

import numpy as np
import torch
from catheter_body_target import _plain, add_recipe_arguments, recipe_parser, select_epoch, summary
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, EnsureTyped, Resized
from monai.utils import set_determinism
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from monai_adaloss.bundles import load_datalist
from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.networks import catheter_unet


def training_transforms(seed: int, input_size: int, overlay: float) -> tuple[Compose, list]:
    """The catheter bundle's loading, a resize ("area") to ``input_size`` and its augmentation.

    Returns the training ``Compose`` and the bundle's loading transforms (for evaluation).
    """
    parser = recipe_parser(seed, input_size, overlay)
    load = parser.get_parsed_content("load_transforms")
    steps = [
        *load,
        Resized(keys="image", spatial_size=[input_size] * 2, mode="area"),
        *parser.get_parsed_content("train#augmentation"),
        *parser.get_parsed_content("train#points_and_types"),
    ]
    return Compose(steps), load


class EvaluationFrames:
    """Frames loaded and resized once: ``inputs`` ``(N, 1, S, S)``, ``scales`` (frame px per input px), ``tips``.

    ``tips`` ``(N, 2)`` are the true tips ``(x, y)`` in px of each frame.
    """

    def __init__(self, entries: list[dict], load: list, input_size: int) -> None:
        load_frame = Compose(load)
        resize = Compose([Resized(keys="image", spatial_size=[input_size] * 2, mode="area"), EnsureTyped(keys="image")])
        frames = [load_frame(dict(entry)) for entry in entries]
        self.scales = np.asarray([frame["image"].shape[1] / input_size for frame in frames])
        self.inputs = torch.stack([_plain(resize(frame)["image"]).float() for frame in frames])
        self.tips = np.asarray([entry["tip_true"] for entry in entries], dtype=float)

    def log_probabilities(self, net: torch.nn.Module, batch_size: int = 40) -> torch.Tensor:
        """The network's ``(N, 1, S, S)`` log-probability maps (eval mode, no gradients)."""
        was_training = net.training
        net.eval()
        with torch.no_grad():
            maps = torch.cat([net(self.inputs[i : i + batch_size]) for i in range(0, len(self.inputs), batch_size)])
        net.train(was_training)
        return maps

    def errors(self, log_probabilities: torch.Tensor) -> np.ndarray:
        """Tip errors (px of each frame) of the maps' argmax + refinement."""
        points, _ = decode_single_instance(log_probabilities, log_probabilities=True)
        xy = points[:, 0, 0].numpy() * self.scales[:, None] + (self.scales[:, None] - 1) / 2
        return np.hypot(*(xy - self.tips).T)


def select(history: list[dict], reading: str) -> dict[str, Any]:
    """:func:`select_epoch` over the epochs at which ``reading`` was scored."""
    return select_epoch([{"epoch": row["epoch"], **row[reading]} for row in history if reading in row])


def train(args: argparse.Namespace) -> dict:
    """One run (see the module docstring); returns what ``result.json`` holds."""
    torch.set_num_threads(args.threads)
    set_determinism(args.seed)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    datalist = args.data / "datalist.json"
    transform, load = training_transforms(args.seed, args.input_size, args.device_overlay)
    training = load_datalist(datalist, "training")
    dataset = CacheDataset(training, transform, cache_rate=1.0, num_workers=1, progress=False)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=0)
    splits = {
        "val": EvaluationFrames(load_datalist(datalist, "validation"), load, args.input_size),
        "test": EvaluationFrames(load_datalist(args.test_data / "datalist.json", "test"), load, args.input_size),
    }
    net = catheter_unet(1, 1, (8, 16, 32), output="log_probability")
    averages = {
        f"ema{decay:g}": AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        for decay in args.ema_decays
    }
    loss_function = AdalossHeatmapLoss(sigma=args.sigma, criterion="cross_entropy")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = None
    if args.lr_schedule == "cosine":  # the demo's --lr-schedule cosine: to 1 % over all iterations
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(loader), eta_min=1e-5)
    snapshots: dict[str, deque] = {split: deque(maxlen=max(args.snapshots)) for split in splits}
    history: list[dict] = []
    per_frame: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        loss_sum = 0.0
        for batch in loader:
            loss = loss_function(net(_plain(batch["image"])), _plain(batch["label"])).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            for average in averages.values():
                average.update_parameters(net)
            loss_sum += float(loss.detach())
        row: dict[str, Any] = {"epoch": epoch, "loss": loss_sum / len(loader)}
        row["train_time"] = time.perf_counter() - started
        if epoch >= args.eval_from:
            maps: dict[str, dict[str, torch.Tensor]] = {"raw": {}}
            for split, frames in splits.items():
                maps["raw"][split] = frames.log_probabilities(net)
                snapshots[split].append(maps["raw"][split])
                for name, average in averages.items():
                    maps.setdefault(name, {})[split] = frames.log_probabilities(average.module)
                for k in args.snapshots:
                    if len(snapshots[split]) >= k:
                        recent = torch.stack(list(snapshots[split])[-k:])
                        maps.setdefault(f"snap{k}", {})[split] = torch.logsumexp(recent, dim=0) - np.log(k)
            for reading, by_split in maps.items():
                errors = {split: splits[split].errors(by_split[split]) for split in splits}
                row[reading] = {split: summary(errors[split]) for split in splits}
                per_frame[f"{reading}_e{epoch}"] = errors["test"]
            np.savez(out / "per_frame.npz", **per_frame)
        row["time"] = time.perf_counter() - started
        history.append(row)
        print(json.dumps({k: (v["test"]["gross"] if isinstance(v, dict) else v) for k, v in row.items()}), flush=True)
        (out / "history.json").write_text(json.dumps(history, indent=1))
    readings = [key for key in history[-1] if isinstance(history[-1][key], dict)]
    result = {
        "readings": {reading: select(history, reading) for reading in readings},
        "wall": time.perf_counter() - started,
        "args": {key: str(value) for key, value in vars(args).items()},
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_recipe_arguments(parser, eval_from=1)  # the demo selects from all epochs
    parser.add_argument("--ema-decays", type=float, nargs="*", default=[0.99, 0.998], help="per-step EMA decays")
    parser.add_argument("--snapshots", type=int, nargs="+", default=[5], help="snapshot-ensemble sizes (epochs)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant", help="Adam 1e-3 schedule")
    print(json.dumps(train(parser.parse_args())["readings"]))


if __name__ == "__main__":
    main()
