"""Where a catheter model's gross errors are: by scene content, and a figure of its worst test frames.

Reads a run of ``benchmarks/catheter_body_target.py`` (``per_frame.npz``: test errors per evaluated epoch;
``model_e<N>.pt``) and the synthetic test set it was scored on. Every test frame's scene is drawn again from
the generator's seeds (``--test-seed``: the seed that wrote ``--test-data``): catheter curled or not, guidewire,
contrast (and a vessel from the tip), multi-frame file, and the distractors switched on (ECG electrodes and
leads, sternal wires, clips, a second tube, stents). A frame's gross-error share is the share of the run's
evaluated epochs in which it was more than 10 px off (less noisy than one epoch). Prints one line per property
(frames with / without it and their gross-error shares) and the confidence of epoch ``--epoch``'s right and
wrong frames, and draws the 16 largest errors of epoch ``--epoch`` into ``--figure`` (true tip green,
prediction red, confidence in each title).

    python benchmarks/catheter_error_breakdown.py --run benchmarks_out/body/s1_w0 --epoch 20 \\
        --test-data benchmarks_out/outliers200/test_data --test-seed 1000 --figure worst.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from catheter_body_target import bundle_parser, predict_tips, regenerated_scenes

from monai_adaloss.bundles import load_datalist
from monai_adaloss.demo import OUTLIER_RADIUS_PX
from monai_adaloss.networks import catheter_unet
from monai_adaloss.synthetic.fluoroscopy import _STREAMS

DISTRACTORS = ("electrodes", "sternal", "clips", "tube", "stents")
"""The generator's random streams whose first draw switches a distractor on (``_sample_scene``)."""


def scene_properties(datalist: Path, seed: int, split: str = "test") -> list[dict[str, bool]]:
    """One dict of booleans per entry of ``split``: what its scene holds (see the module docstring)."""
    entries, scenes = regenerated_scenes(datalist, split, seed)
    config = next(iter(scenes.values()))[0].config
    chance = {
        "electrodes": config.ecg_electrodes_probability,
        "sternal": config.sternal_wires_probability,
        "clips": config.clips_probability,
        "tube": config.second_tube_probability,
        "stents": config.stents_probability,
    }
    per_file: dict[str, dict[str, bool]] = {}
    for image, (scene, n_frames, file_seed) in scenes.items():
        streams = dict(zip(_STREAMS, np.random.default_rng(file_seed).spawn(len(_STREAMS)), strict=True))
        vessels = streams["vessels"]
        vessels.random()  # the contrast draw
        devices = scene.devices
        per_file[image] = {
            "curled": bool(devices is not None and devices.path.curled),
            "guidewire": bool(devices is not None and devices.guidewire),
            "contrast": scene.contrast,
            "vessel from the tip": scene.contrast and bool(vessels.random() < config.vessel_from_tip_probability),
            "multi-frame file": n_frames > 1,
            **{name: bool(streams[name].random() < chance[name]) for name in DISTRACTORS},
        }
    return [{**per_file[entry["image"]], "guidewire past the tip": entry["guidewire_beyond_tip"]} for entry in entries]


def breakdown(per_frame: np.lib.npyio.NpzFile, properties: list[dict[str, bool]]) -> list[str]:
    """Lines ``property: n with, share gross | n without, share gross`` (shares over the evaluated epochs)."""
    epochs = sorted(key for key in per_frame.files if key.startswith("test_e"))
    gross = np.mean([per_frame[key] > OUTLIER_RADIUS_PX for key in epochs], axis=0)
    lines = [f"all {len(gross)} frames, {len(epochs)} evaluated epochs: gross-error share {gross.mean():.3f}"]
    for name in properties[0]:
        has = np.array([p[name] for p in properties])
        with_share = f"{gross[has].mean():.3f}" if has.any() else "-"
        without_share = f"{gross[~has].mean():.3f}" if (~has).any() else "-"
        counts = f"with: {has.sum():3d} frames, {with_share} | without: {(~has).sum():3d}, {without_share}"
        lines.append(f"{name:24s} {counts}")
    return lines


def confidence_line(per_frame: np.lib.npyio.NpzFile, epoch: int) -> str:
    """Median and 10-90 % range of the confidence of epoch ``epoch``'s right (<= 10 px) and wrong test frames."""
    errors, confidence = per_frame[f"test_e{epoch}"], per_frame[f"conf_e{epoch}"]
    parts = []
    for label, chosen in (("<= 10 px", errors <= OUTLIER_RADIUS_PX), ("> 10 px", ~(errors <= OUTLIER_RADIUS_PX))):
        if chosen.any():
            low, median, high = np.percentile(confidence[chosen], [10, 50, 90])
            parts.append(f"{label}: {chosen.sum()} frames, median {median:.3f} (10-90 %: {low:.3f}-{high:.3f})")
    return f"epoch {epoch} confidence, " + "; ".join(parts)


def worst_frames_figure(run: Path, epoch: int, test_data: Path, input_size: int, out: Path, n: int = 16) -> Path:
    """The ``n`` largest tip errors of ``run``'s model of ``epoch`` on the test split, drawn on the input grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net = catheter_unet(1, 2, (8, 16, 32), output="heatmap")
    net.load_state_dict(torch.load(run / f"model_e{epoch}.pt", weights_only=True))
    load = bundle_parser().get_parsed_content("load_transforms")
    entries = load_datalist(test_data / "datalist.json", "test")
    rows = []
    for entry, x, xy, confidence, scale in predict_tips(net, entries, load, input_size):
        tip = np.asarray(entry["tip_true"])
        rows.append((float(np.hypot(*(xy - tip))), x[0].numpy(), xy, tip, confidence, entry["image"], scale))
    rows.sort(key=lambda row: -row[0])
    columns = (n + 1) // 2
    fig, axes = plt.subplots(2, columns, figsize=(3 * columns, 7.4), squeeze=False)
    for ax, (error, image, xy, tip, confidence, name, scale) in zip(axes.flat, rows[:n], strict=False):
        ax.imshow(image.T, cmap="gray")
        ax.plot((tip[0] - (scale - 1) / 2) / scale, (tip[1] - (scale - 1) / 2) / scale, "go", mfc="none", ms=10)
        ax.plot((xy[0] - (scale - 1) / 2) / scale, (xy[1] - (scale - 1) / 2) / scale, "r+", ms=12)
        ax.set_title(f"{Path(name).name}: {error:.0f} px, c {confidence:.2f}", fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{run.name}, epoch {epoch}: the {n} largest tip errors (green: true tip, red: prediction)")
    fig.tight_layout(rect=(0, 0, 1, 0.95), h_pad=2.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=50)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a catheter_body_target.py output folder")
    parser.add_argument("--epoch", type=int, required=True, help="the epoch whose model draws the figure")
    parser.add_argument("--test-data", type=Path, required=True)
    parser.add_argument("--test-seed", type=int, required=True, help="the seed that wrote --test-data")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--figure", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    properties = scene_properties(args.test_data / "datalist.json", args.test_seed)
    per_frame = np.load(args.run / "per_frame.npz")
    print("\n".join(breakdown(per_frame, properties)))
    print(confidence_line(per_frame, args.epoch))
    print(worst_frames_figure(args.run, args.epoch, args.test_data, args.input_size, args.figure))


if __name__ == "__main__":
    main()
