"""The peer library's figure on our hand X-ray split, re-measured: landmarker's spatial-configuration network.

``landmarker`` (PyPI, MIT) is a benchmark-only optional dependency: install it in a separate
virtual environment, never in the project's (it requires torchvision, whose PyPI wheels need a CUDA
torch; see docs/accuracy.md for the CPU-only install used here). This script imports
``landmarker`` and ``monai_adaloss`` (for the data: the same datalist, 128 px input, pre-processing
and mapping back to PNG pixels as ``benchmarks/outliers.py hand``), and trains landmarker's
``OriginalSpatialConfigurationNet`` with its published ISBI-2015 recipe:

- heatmaps ``GaussianHeatmapGenerator(sigma 3, gamma 100)``, fixed or learnable sigma (``--learnable``);
- ``GaussianHeatmapL2Loss(alpha=5)``: L2 summed over the heatmap plus the sigma penalty;
- SGD lr 1e-6, momentum 0.99, Nesterov, weight decay 1e-3, batch 1, 20 epochs;
- a random affine on every training sample (the bundle's augmentation plus ``RandAffined`` with
  probability 1);
- local soft-argmax decoding.

The last epoch's model is evaluated on the test split (no model selection, as in the peer's example):
MRE, median, p95 and outlier rate (> 20 PNG px, PNG longer side 512).

    /work/peer-venv/bin/python benchmarks/peer_landmarker.py --data ../shared/data/hand_xray \\
        --output-dir benchmarks_out/peer_landmarker [--learnable] [--epochs 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from landmarker.heatmap.decoder import heatmap_to_coord
from landmarker.heatmap.generator import GaussianHeatmapGenerator
from landmarker.losses import GaussianHeatmapL2Loss
from landmarker.models import OriginalSpatialConfigurationNet
from monai.bundle import ConfigParser
from monai.data import DataLoader, decollate_batch, list_data_collate
from monai.engines.utils import engine_apply_transform
from monai.transforms import Compose

from monai_adaloss.bundles import bundle_path
from monai_adaloss.io.hand_xray import HAND_XRAY_LANDMARKS, hand_xray_datalist

HAND_OUTLIER_PX = 20.0
"""Outlier radius in PNG pixels (longer side 512), as in ``benchmarks/outliers.py``."""


def data(args: argparse.Namespace) -> tuple:
    datalist = args.output_dir / "datalist.json"
    datalist.write_text(json.dumps(hand_xray_datalist(args.data), indent=1), encoding="utf-8")
    parser = ConfigParser()
    parser.read_config(str(bundle_path("hand_xray_landmarks") / "configs" / "train.json"))
    affine = {
        "_target_": "monai.transforms.RandAffined",
        "keys": "image",
        "prob": 1.0,
        "rotate_range": [0.26],
        "translate_range": [8, 8],
        "scale_range": [0.1, 0.1],
        "padding_mode": "zeros",
        "mode": "bilinear",
    }
    parser.update(
        {
            "bundle_root": str(args.output_dir),
            "datalist": str(datalist),
            "num_workers": 0,
            "seed": args.seed,
            "train::augmentation": [affine, *parser["train"]["augmentation"]],
            "validate::dataset::data": "$monai_adaloss.bundles.load_datalist(@datalist, 'test')",
        }
    )
    return (
        parser.get_parsed_content("train::dataset"),
        parser.get_parsed_content("validate::dataset"),
        parser.get_parsed_content("validate::postprocessing"),
    )


@torch.no_grad()
def evaluate(model, test_ds, postprocessing) -> np.ndarray:
    """Errors ``(N, L)`` in PNG pixels; points from landmarker's local soft-argmax, mapped back by our transforms."""
    model.eval()
    errors = []
    for index in range(len(test_ds)):
        batch = list_data_collate([test_ds[index]])
        heatmaps = model(batch["image"].as_tensor())
        coords = heatmap_to_coord(heatmaps, method="local_soft_argmax")  # (1, L, 2), order of the tensor's axes
        sample = decollate_batch(batch)[0]
        out = {
            "pred_points": sample["label"].new_tensor(coords[0, :, None, :]),
            "label": sample["label"],
            "label_original": sample["label_original"],
        }
        _, out = engine_apply_transform(sample, out, Compose(postprocessing.transforms[1:]))  # skip our decoder
        pred, true = out["pred_points_original"].as_tensor(), out["label_points_original"].as_tensor()
        errors.append(torch.linalg.vector_norm(pred - true, dim=-1)[:, 0].double().numpy())
    return np.stack(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--learnable", action="store_true", help="learnable sigma (landmarker's adaptive variant)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    train_ds, test_ds, postprocessing = data(args)
    train_ds.transform.set_random_state(seed=args.seed)
    num = len(HAND_XRAY_LANDMARKS)
    model = OriginalSpatialConfigurationNet(in_channels=1, out_channels=num)
    generator = GaussianHeatmapGenerator(
        num, sigmas=3.0, gamma=100.0, heatmap_size=(128, 128), learnable=args.learnable
    )
    loss_fn = GaussianHeatmapL2Loss(alpha=5)
    params = list(model.parameters()) + (list(generator.parameters()) if args.learnable else [])
    optimizer = torch.optim.SGD(params, lr=1e-6, momentum=0.99, nesterov=True, weight_decay=1e-3)
    loader = DataLoader(train_ds, batch_size=1, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    start = time.perf_counter()
    diverged_at = None
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for batch in loader:
            points = batch["label"].as_tensor()[:, :, 0, :]  # (1, L, 2), the tensor's axis order
            optimizer.zero_grad(set_to_none=True)
            target = generator(points)
            loss = loss_fn(model(batch["image"].as_tensor()), generator.sigmas, target)
            loss.backward()
            optimizer.step()
            total += float(loss)
        print(f"epoch {epoch}/{args.epochs}: loss {total / len(loader):.4g}, {time.perf_counter() - start:.0f} s",
              flush=True)  # fmt: skip
        if not math.isfinite(total):  # the recipe diverged: every later epoch stays NaN
            diverged_at = epoch
            break
    train_s = time.perf_counter() - start
    errors = evaluate(model, test_ds, postprocessing)
    found = errors[np.isfinite(errors)]
    if not found.size:  # no point decoded (a diverged model's heatmaps are NaN)
        found = np.full(1, math.nan)
    row = {
        "run": f"landmarker SCN, {'learnable' if args.learnable else 'fixed'} sigma 3",
        "seed": args.seed,
        "epochs": args.epochs,
        "mre_png_px": float(found.mean()),
        "median_png_px": float(np.median(found)),
        "p95_png_px": float(np.percentile(found, 95)),
        "outlier_rate": float(np.mean(~(errors <= HAND_OUTLIER_PX))),
        "missed": int((~np.isfinite(errors)).sum()),
        "diverged_at_epoch": diverged_at,
        "train_s": train_s,
        "torch_threads": torch.get_num_threads(),
    }
    name = f"peer_{'learnable' if args.learnable else 'fixed'}_seed{args.seed}.csv"
    with (args.output_dir / name).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    print(json.dumps(row, indent=1), flush=True)
    if not math.isfinite(row["mre_png_px"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
