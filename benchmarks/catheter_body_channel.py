"""How well does the body channel of a ``catheter_body_target.py`` model find the catheter, on training and test frames?

``catheter_body_target.py`` trains a second output channel against a tube along the catheter's centre line
(binary cross-entropy). Its training loss falls from about 0.6 to 0.05, but the tube covers only a few percent of
the pixels, so a channel that answers "background" almost everywhere already has a low loss. This script loads one
saved epoch (``model_e<N>.pt``) and measures the channel itself on frames without augmentation (the bundle's
loading and an "area" resize to ``--input-size``, as the probe's evaluation):

- ``mean_probability_on_tube``: the mean sigmoid output over the tube's pixels (target > 0.5);
- ``tube_share_above_background_p99``: the share of tube pixels whose output exceeds the 99th percentile of the
  output over all other pixels of the same frame (a threshold-free detection rate: 1 = the tube stands out from
  everything else, about 0.01 = no better than chance);
- ``iou_at_half``: intersection over union of output > 0.5 and target > 0.5.

Each is averaged over the first ``--n-frames`` frames of the training split of ``--data`` (the frames the model
trained on) and of the test split of ``--test-data``. Prints one JSON line per split and writes them to
``--output`` when given::

    python benchmarks/catheter_body_channel.py --run benchmarks_out/s10_body/s1_w1 --epoch 21 \\
        --data runs/s9/cpuov_s1/data --data-seed 1 --test-data benchmarks_out/s9_outliers200/test_data --test-seed 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from catheter_body_target import CatheterBodyd, _plain, bundle_parser, catheter_centrelines
from monai.transforms import Compose, EnsureTyped, Resized

from monai_adaloss.bundles import load_datalist
from monai_adaloss.networks import catheter_unet


def body_channel_scores(probability: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Scores of one frame: ``probability`` and ``target`` ``(X, Y)`` in [0, 1] on the same grid (see module doc)."""
    tube = target > 0.5
    if not bool(tube.any()):
        raise ValueError("The frame's body target has no pixel above 0.5 (no catheter on the grid).")
    background_p99 = torch.quantile(probability[~tube], 0.99)
    predicted = probability > 0.5
    return {
        "mean_probability_on_tube": float(probability[tube].mean()),
        "tube_share_above_background_p99": float((probability[tube] > background_p99).float().mean()),
        "iou_at_half": float((predicted & tube).sum()) / max(float((predicted | tube).sum()), 1.0),
    }


def score_split(
    net: torch.nn.Module,
    load: Compose,
    datalist: Path,
    split: str,
    seed: int,
    input_size: int,
    n_frames: int,
    radius: float,
) -> dict[str, float]:
    """Mean :func:`body_channel_scores` over the first ``n_frames`` frames of ``split``, each read with ``load`` (the
    bundle's loading transforms); ``seed`` wrote the data."""
    entries = load_datalist(datalist, split)[:n_frames]
    lines = catheter_centrelines(datalist, split, seed)
    keys = ["image", "body"]
    resize = Compose([Resized(keys=keys, spatial_size=[input_size] * 2, mode="area"), EnsureTyped(keys=keys)])
    to_target = CatheterBodyd(radius)
    rows = []
    net.eval()
    with torch.no_grad():
        for entry in entries:
            image = Path(entry["image"])
            sample = load(dict(entry))
            sample["body_line"] = lines[(f"{image.parent.name}/{image.name}", entry.get("frame", 0))]
            sample = resize(to_target(sample))
            probability = torch.sigmoid(net(_plain(sample["image"]).float()[None])[0, 1])
            try:
                rows.append(body_channel_scores(probability, _plain(sample["body"])[0]))
            except ValueError as error:
                raise ValueError(f"{image} (frame {entry.get('frame', 0)}): {error}") from error
    return {"split": split, "frames": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a catheter_body_target.py output folder")
    parser.add_argument("--epoch", type=int, required=True, help="which model_e<N>.pt")
    parser.add_argument("--data", type=Path, required=True, help="the run's --data (its training split is scored)")
    parser.add_argument("--data-seed", type=int, required=True, help="the seed that wrote --data")
    parser.add_argument("--test-data", type=Path, required=True, help="a dataset whose test split is scored")
    parser.add_argument("--test-seed", type=int, required=True, help="the seed that wrote --test-data")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--radius", type=float, default=3.0, help="body tube radius, px of the frame")
    parser.add_argument("--n-frames", type=int, default=200, help="frames scored per split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="JSON file for the two rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = catheter_unet(1, 2, args.channels, output="heatmap")
    net.load_state_dict(torch.load(args.run / f"model_e{args.epoch}.pt", weights_only=True))
    load = Compose(bundle_parser().get_parsed_content("load_transforms"))
    splits = ((args.data, "training", args.data_seed), (args.test_data, "test", args.test_seed))
    rows = [
        score_split(net, load, data / "datalist.json", split, seed, args.input_size, args.n_frames, args.radius)
        for data, split, seed in splits
    ]
    for row in rows:
        print(json.dumps(row))
    if args.output is not None:
        args.output.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
