"""How hard is the synthetic fluoroscopy test set for simple, non-learned tip detectors?

Generates the demo's test split (``monai_adaloss.demo.make_synthetic_dataset``, the function
``monai-adaloss demo`` uses, with its ``cpu`` profile sizes: 60 test frames of 256x256, seed 0; the
test split's pixels depend only on the seed and the frame size, not on ``n_train`` / ``n_val``) or reads
an existing ``datalist.json`` (``--datalist``), loads every test frame with
``monai_adaloss.io.read_all_frames`` and runs two hand-made baselines:

1. ``darkest blob``: Gaussian-smooth the frame (sigma 2 px) and take the argmin inside the collimated
   field. The field is the largest connected region of pixels above a small threshold (3 % of the value
   range above the frame minimum: the collimator shutters are black), holes filled, eroded by 4 px so
   the black border and its edge are excluded.
2. ``end of longest dark line``: dark-line pixels are those whose value lies more than ``k`` standard
   deviations (of that difference inside the field) below a smoothed background (Gaussian, sigma 6 px)
   of the lightly smoothed (sigma 1 px) frame, inside the field. The largest connected dark component
   (8-connectivity, ``scipy.ndimage.label``) stands in for the catheter. Rule for its end: the component's
   *entry point* is its pixel closest to the field border (smallest Euclidean distance-transform value
   of the field mask); the tip is the component pixel with the largest geodesic distance
   (8-neighbour steps inside the component) from that entry point. A catheter enters the field at the
   border and ends at its tip, so the far end of the path is the guess.

Errors are Euclidean distances in pixels of the original frame, against ``tip_true``; frames without a
tip are skipped. The centre guess (``((X - 1) / 2, (Y - 1) / 2)``, as in the demo) is the reference.
With ``--demo-results`` the model's statistics from a demo ``results.json`` are added to the table.

    python benchmarks/synthetic_realism.py [--n-test 60] [--seed 0] [--output-dir DIR]
        [--datalist PATH] [--demo-results PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
from scipy import ndimage

from monai_adaloss.demo import PROFILES, make_synthetic_dataset
from monai_adaloss.io import read_all_frames

FIELD_THRESHOLD = 0.03  # above the frame minimum (the collimator), as a fraction of the value range
FIELD_EROSION_PX = 4
BLOB_SIGMA_PX = 2.0
LINE_BACKGROUND_SIGMA_PX = 6.0
LINE_K = 2.0
_EIGHT = ndimage.generate_binary_structure(2, 2)


def field_mask(image: np.ndarray) -> np.ndarray:
    """Collimated field: largest region above ``FIELD_THRESHOLD`` (after a light blur), holes filled, eroded."""
    low, high = float(image.min()), float(image.max())
    bright = ndimage.gaussian_filter(image, 1.0) > low + FIELD_THRESHOLD * (high - low)
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.ones_like(image, dtype=bool)
    sizes = ndimage.sum_labels(bright, labels, index=np.arange(1, n + 1))
    field = ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)
    eroded = ndimage.binary_erosion(field, iterations=FIELD_EROSION_PX, border_value=0)
    return eroded if eroded.any() else field


def darkest_blob(image: np.ndarray, field: np.ndarray) -> tuple[float, float]:
    """Argmin of the Gaussian-smoothed frame inside the field, as ``(x, y)``."""
    smooth = ndimage.gaussian_filter(image, BLOB_SIGMA_PX)
    smooth = np.where(field, smooth, np.inf)
    x, y = np.unravel_index(int(np.argmin(smooth)), smooth.shape)
    return float(x), float(y)


def longest_dark_line_end(image: np.ndarray, field: np.ndarray) -> tuple[float, float]:
    """Far end (geodesic) of the largest dark connected component from its entry point nearest the border."""
    smooth = ndimage.gaussian_filter(image, 1.0)
    background = ndimage.gaussian_filter(smooth, LINE_BACKGROUND_SIGMA_PX)
    depth = background - smooth  # > 0 where darker than the surroundings
    values = depth[field]
    dark = field & (depth > values.mean() + LINE_K * values.std())
    labels, n = ndimage.label(dark, structure=_EIGHT)
    if n == 0:
        return darkest_blob(image, field)
    sizes = ndimage.sum_labels(dark, labels, index=np.arange(1, n + 1))
    component = labels == int(np.argmax(sizes)) + 1
    border_distance = ndimage.distance_transform_edt(field)
    pixels = np.argwhere(component)
    entry = tuple(pixels[int(np.argmin(border_distance[component]))])
    # breadth-first search over 8-neighbours inside the component: geodesic step counts from the entry
    distance = np.full(component.shape, -1, dtype=np.int64)
    distance[entry] = 0
    queue = deque([entry])
    far = entry
    nx, ny = component.shape
    while queue:
        x, y = queue.popleft()
        d = distance[x, y] + 1
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                u, v = x + dx, y + dy
                if 0 <= u < nx and 0 <= v < ny and component[u, v] and distance[u, v] < 0:
                    distance[u, v] = d
                    queue.append((u, v))
                    far = (u, v)  # BFS order: the last pixel reached is the farthest
    return float(far[0]), float(far[1])


BASELINES = {"darkest blob": darkest_blob, "end of longest dark line": longest_dark_line_end}


def statistics(errors: list[float]) -> dict[str, float]:
    e = np.asarray(errors, dtype=np.float64)
    if e.size == 0:
        return {"mean_px": math.nan, "median_px": math.nan, "p95_px": math.nan}
    return {"mean_px": float(e.mean()), "median_px": float(np.median(e)), "p95_px": float(np.percentile(e, 95))}


def evaluate(datalist: Path) -> tuple[dict[str, dict[str, float]], int, int]:
    """Errors of every baseline and the centre guess; also the number of frames with and without a tip."""
    data = json.loads(datalist.read_text(encoding="utf-8"))
    errors: dict[str, list[float]] = {name: [] for name in [*BASELINES, "centre guess"]}
    cache: dict[str, np.ndarray] = {}
    skipped = 0
    for entry in data["test"]:
        if entry.get("tip_true") is None:
            skipped += 1
            continue
        path = str(datalist.parent / entry["image"])
        if path not in cache:
            cache[path] = read_all_frames(path)[0]
        image = cache[path][int(entry.get("frame", 0))]
        truth = np.asarray(entry["tip_true"], dtype=np.float64)  # (x, y) == image[x, y]
        field = field_mask(image)
        for name, fn in BASELINES.items():
            errors[name].append(float(np.hypot(*(np.asarray(fn(image, field)) - truth))))
        centre = np.array([(s - 1) / 2.0 for s in image.shape])
        errors["centre guess"].append(float(np.hypot(*(centre - truth))))
    return {k: statistics(v) for k, v in errors.items()}, len(errors["centre guess"]), skipped


def main() -> None:
    cpu = PROFILES["cpu"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=cpu.n_test, help=f"test frames (default {cpu.n_test})")
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0, the demo's default)")
    parser.add_argument("--frame-size", type=int, default=cpu.frame_size, help="frame size (default: demo's)")
    parser.add_argument("--output-dir", type=Path, default=None, help="where to write the data (default: temp)")
    parser.add_argument("--datalist", type=Path, default=None, help="use this datalist.json instead of generating")
    parser.add_argument("--demo-results", type=Path, default=None, help="a demo results.json to add to the table")
    args = parser.parse_args()

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        datalist = args.datalist
        if datalist is None:
            out = args.output_dir if args.output_dir is not None else Path(tmp)
            # test split only: its files depend on (seed, frame size), not on n_train / n_val
            datalist = make_synthetic_dataset(out, 0, 0, args.n_test, args.frame_size, args.seed, progress=False)
        stats, n_frames, skipped = evaluate(datalist)
    rows = list(stats.items())
    if args.demo_results is not None:
        results = json.loads(args.demo_results.read_text(encoding="utf-8"))
        rows.insert(0, ("model (demo results.json)", results["model"]))
        rows.append(("centre guess (demo results.json)", results["centre_guess"]))

    print("| tip error on the test frames | mean px | median px | p95 px |")
    print("|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['mean_px']:.2f} | {s['median_px']:.2f} | {s['p95_px']:.2f} |")
    print()
    print(f"- datalist: {datalist if args.datalist is not None or args.output_dir is not None else '(temporary)'}")
    print(f"- test frames: {n_frames} with a tip, {skipped} without; seed {args.seed}")
    print(f"- wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
