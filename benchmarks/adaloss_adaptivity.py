"""Does sigma adapt per landmark? Adaloss, its variants and the controls on a test-bed with known annotation noise.

Test-bed (fast, truth known): synthetic single-beat ECG traces (``monai_adaloss.synthetic.signals``, 256
samples at 250 Hz). The R peak is annotated ``L = len(--noise)`` times, once per output channel, each
channel with its own Gaussian annotation noise (default 0, 1, 2, 4, 8 samples; one channel exact). The
channels see the same input and the same landmark, so the only thing that tells them apart is how
precisely they were annotated: an adaptive schedule should end with a larger sigma for a noisier
channel (the paper's claim b), and localise each channel about as well as the best fixed sigma of that
channel. The noise is drawn once per training trace (an annotation, not an augmentation); validation
errors are against the exact R peak.

Every run trains ``HeatmapUNet(spatial_dims=1)`` with MONAI's ``SupervisedTrainer``, ``AdalossHeatmapLoss``
(mean-normalised targets: the paper's choice for several landmarks, and what learned sigma needs) and
``AdalossHandler`` (the shipped loop), then decodes the validation traces with ``decode_single_instance``.
Schedules (``monai_adaloss.schedules.make_schedule``): ``fixed_<s>`` (a grid), ``paper`` (eq. 5, no bound or
cap), ``bounded`` (``AdalossSchedule`` defaults), ``relative_restart`` (bounded eq. 5 on the relative loss,
window restarted at each change), ``spread`` (the spread rule), ``geometric`` and ``linear`` (matched per
seed to end at the geometric mean of that seed's final ``spread`` sigmas), ``learned`` (Payer et al.).

Results go to ``--out`` (default ``benchmarks_out/adaloss_adaptivity[_quick].jsonl``; one JSON line per
schedule x seed; finished pairs are skipped, so a run can be chunked per schedule and resumed; ``--quick``
without ``--out`` starts afresh) and are summarised into ``--out``'s ``.md`` twin. The last printed line is
a JSON object: per schedule name ``spearman_sigma_noise`` (mean over seeds), ``clipped_fraction``,
``error_vs_best_fixed`` (mean over seeds and channels of error / error of the channel's best fixed sigma),
and ``"default"`` (the schedule ``AdalossSchedule`` uses with its default arguments).

    python benchmarks/adaloss_adaptivity.py --quick                  # <= 5 min on 2 cores, 3 seeds
    python benchmarks/adaloss_adaptivity.py --seeds 0 1 2 ... --schedules spread --out results.jsonl
    python benchmarks/adaloss_adaptivity.py --summarise --out results.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from scipy.stats import spearmanr
from scipy.stats import t as student_t

from monai_adaloss.adaloss import AdalossSchedule, SigmaSchedule
from monai_adaloss.decoding import decode_single_instance
from monai_adaloss.handlers import AdalossHandler
from monai_adaloss.losses import AdalossHeatmapLoss
from monai_adaloss.networks import HeatmapUNet
from monai_adaloss.plotting import plot_sigma_history
from monai_adaloss.schedules import GeometricDecay, LinearDecay, make_schedule
from monai_adaloss.synthetic.signals import ECG_LANDMARKS, ECGConfig, generate_ecg

R_PEAK = ECG_LANDMARKS.index("r_peak")
ADAPTIVE = ("paper", "bounded", "relative_restart", "spread", "learned")
MATCHED = ("geometric", "linear")  # matched per seed to the final sigma of MATCHED_TO
MATCHED_TO = "spread"


@dataclass(frozen=True)
class Testbed:
    """One configuration of the test-bed (everything a run depends on besides the schedule and the seed)."""

    noise: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)
    length: int = 256
    n_train: int = 160
    n_val: int = 128
    epochs: int = 40
    batch_size: int = 16
    channels: tuple[int, ...] = (8, 16, 32)
    lr: float = 1e-3
    sigma_min: float = 1.0
    fixed_grid: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    spread_step: float = 0.5
    learned_penalty: float = 1e-3
    learned_lr: float = 5e-2
    normalize: str | None = "mean"
    threads: int = 1


QUICK = Testbed(n_train=96, n_val=64, epochs=24, fixed_grid=(2.0, 4.0, 8.0))


def make_data(bed: Testbed, seed: int) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor, torch.Tensor]:
    """Training samples (annotated R peak per channel, ``(L, 1, 1)``), validation traces ``(n, 1, N)`` and exact
    R peaks ``(n,)``, all in samples; trace ``n`` of the training set uses ``default_rng([seed, 0, n])``."""
    config = ECGConfig(length=bed.length)
    noise = np.asarray(bed.noise, dtype=np.float64)
    train = []
    for index in range(bed.n_train):
        rng = np.random.default_rng([seed, 0, index])
        trace = generate_ecg(config, rng)
        peak = trace.points[R_PEAK, 0, 0]
        annotated = peak + noise * rng.standard_normal(len(noise))
        train.append({"image": torch.from_numpy(trace.signal)[None],
                      "label": torch.from_numpy(annotated).float().reshape(-1, 1, 1)})  # fmt: skip
    val = [generate_ecg(config, np.random.default_rng([seed, 1, index])) for index in range(bed.n_val)]
    images = torch.stack([torch.from_numpy(v.signal)[None] for v in val])
    exact = torch.tensor([v.points[R_PEAK, 0, 0] for v in val], dtype=torch.float64)
    return train, images, exact


def build_schedule(name: str, bed: Testbed, done: dict[tuple[str, int], dict]) -> tuple[SigmaSchedule, dict]:
    """The schedule for ``name`` (``fixed_<sigma>`` or a ``make_schedule`` name) and its settings."""
    num = len(bed.noise)
    shape = (bed.length,)
    if name.startswith("fixed_"):
        sigma = float(name.split("_", 1)[1])
        return make_schedule("fixed", shape, num, sigma=sigma), {"sigma": sigma}
    if name == "paper":
        return make_schedule("paper", shape, num, sigma_min=bed.sigma_min), {"sigma_min": bed.sigma_min}
    if name in ("bounded", "relative_restart"):
        return make_schedule(name, shape, num, sigma_min=bed.sigma_min), {"sigma_min": bed.sigma_min}
    if name == "spread":
        settings = {"sigma_min": bed.sigma_min, "max_step_fraction": bed.spread_step}
        return make_schedule("spread", shape, num, **settings), settings
    if name == "learned":
        settings = {"sigma_min": bed.sigma_min, "penalty_weight": bed.learned_penalty}
        return make_schedule("learned", shape, num, **settings), settings
    raise ValueError(f"unknown schedule {name!r}")


def build_matched(name: str, bed: Testbed, reference: dict) -> tuple[SigmaSchedule, dict]:
    """Geometric / linear decay ending at the geometric mean of ``reference``'s final sigmas (same seed)."""
    target = math.exp(statistics.fmean(math.log(s) for s in reference["final_sigma"]))
    sigma_0 = bed.length / 4.0
    settings = {"sigma_final": target, "matched_to": MATCHED_TO, "sigma_min": bed.sigma_min}
    if name == "geometric":
        geometric = GeometricDecay.matched(sigma_0, target, bed.epochs, len(bed.noise), sigma_min=bed.sigma_min)
        return geometric, {**settings, "rate": geometric.rate}
    linear = LinearDecay.matched(sigma_0, target, bed.epochs, len(bed.noise), sigma_min=bed.sigma_min)
    return linear, {**settings, "step": linear.step}


def train_run(name: str, seed: int, bed: Testbed, done: dict[tuple[str, int], dict]) -> dict:
    """Train one schedule x seed and return its record (plain values)."""
    start = time.perf_counter()
    train, val_images, exact = make_data(bed, seed)
    if name in MATCHED:
        schedule, settings = build_matched(name, bed, done[(MATCHED_TO, seed)])
    else:
        schedule, settings = build_schedule(name, bed, done)
    torch.manual_seed(seed)
    net = HeatmapUNet(1, 1, len(bed.noise), channels=bed.channels, kernel_size=5)
    loss_fn = AdalossHeatmapLoss(schedule, normalize=bed.normalize)  # type: ignore[arg-type]
    groups = [{"params": list(net.parameters())}]
    if list(loss_fn.parameters()):  # learned sigma: log sigma in its own group (see monai_adaloss.schedules)
        groups.append({"params": list(loss_fn.parameters()), "lr": bed.learned_lr})
    loader = DataLoader(Dataset(train), batch_size=bed.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=bed.epochs,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.Adam(groups, lr=bed.lr),
        loss_function=loss_fn,
        train_handlers=[AdalossHandler(loss_fn)],
    )
    trainer.run()
    net.eval()
    with torch.no_grad():
        points = torch.cat([decode_single_instance(net(chunk))[0] for chunk in val_images.split(64)])
    errors = (points[:, :, 0, 0].double() - exact[:, None]).abs()  # (n, L); NaN when nothing decoded
    errors = torch.where(torch.isfinite(errors), errors, torch.full_like(errors, float(bed.length)))
    sigma_history = schedule.sigma_history
    changed = sigma_history[1:] != sigma_history[:-1]
    clipped = schedule.clipped_history
    updates = changed | clipped
    return {
        "schedule": name,
        "seed": seed,
        "settings": settings,
        "noise": list(bed.noise),
        "final_sigma": sigma_history[-1].tolist(),
        "sigma_history": sigma_history.tolist(),
        "clipped": int(clipped.sum()),
        "updates": int(updates.sum()),
        "clip_codes": schedule.clip_history,
        "mean_error": errors.mean(dim=0).tolist(),
        "median_error": errors.median(dim=0).values.tolist(),
        "outlier_rate": (errors > 10.0).double().mean(dim=0).tolist(),
        "wall_s": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------------------ summary


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over seeds (NaNs dropped); (mean, low, high)."""
    data = [v for v in values if math.isfinite(v)]
    if not data:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(data)
    if len(data) < 2:
        return mean, math.nan, math.nan
    half = float(student_t.ppf(0.975, len(data) - 1)) * statistics.stdev(data) / math.sqrt(len(data))
    return mean, mean - half, mean + half


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho, NaN when one side is constant."""
    if len(set(x)) < 2 or len(set(np.round(y, 9))) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def fmt(triple: tuple[float, float, float], digits: int = 2) -> str:
    mean, low, high = triple
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def summarise(records: list[dict], bed: Testbed, default: str) -> tuple[str, dict]:
    """Markdown tables and the JSON summary from the run records."""
    by_key = {(r["schedule"], r["seed"]): r for r in records}
    names = sorted({r["schedule"] for r in records})
    fixed = sorted((n for n in names if n.startswith("fixed_")), key=lambda n: float(n.split("_")[1]))
    others = [
        n for n in ("paper", "bounded", "relative_restart", "spread", "geometric", "linear", "learned") if n in names
    ]
    num = len(bed.noise)
    noise = list(bed.noise)
    lines: list[str] = []
    summary: dict = {}

    # best fixed sigma per channel: lowest mean error over the seeds every fixed run has
    fixed_seeds = sorted(set.intersection(*[{s for (n, s) in by_key if n == f} for f in fixed])) if fixed else []
    best_fixed: list[str] = []
    if fixed_seeds:
        lines += ["### Fixed sigma grid: mean error (samples) per channel, mean [95 % CI] over seeds "
                  f"{fixed_seeds}", "", "| sigma | " + " | ".join(f"noise {n:g}" for n in noise) + " |",
                  "|---|" + "---|" * num]  # fmt: skip
        means = {}
        for name in fixed:
            cells = []
            for channel in range(num):
                triple = mean_ci([by_key[(name, s)]["mean_error"][channel] for s in fixed_seeds])
                means[(name, channel)] = triple[0]
                cells.append(fmt(triple))
            lines.append(f"| {name.split('_')[1]} | " + " | ".join(cells) + " |")
        best_fixed = [min(fixed, key=lambda n, c=channel: means[(n, c)]) for channel in range(num)]
        lines += ["", "best fixed sigma per channel: " + ", ".join(
            f"noise {n:g} -> {b.split('_')[1]}" for n, b in zip(noise, best_fixed, strict=True)), ""]  # fmt: skip
        oracle = [float(b.split("_")[1]) for b in best_fixed]
        summary["fixed_best"] = {"spearman_sigma_noise": spearman(noise, oracle), "clipped_fraction": 0.0,
                                 "error_vs_best_fixed": 1.0, "sigma": oracle}  # fmt: skip

    def ratio_to_best(record: dict) -> float:
        seed = record["seed"]
        ratios = []
        for channel, best in enumerate(best_fixed):
            reference = by_key.get((best, seed))
            if reference is None:
                return math.nan
            ratios.append(record["mean_error"][channel] / max(reference["mean_error"][channel], 1e-9))
        return statistics.fmean(ratios)

    lines += ["### Per schedule (mean [95 % CI] over seeds)", "",
              "| schedule | seeds | Spearman(final sigma, noise) | clipped updates | mean error (samples) | "
              "error / best fixed | final sigma per channel (noise " + ", ".join(f"{n:g}" for n in noise) + ") |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in others + fixed:
        runs = [r for r in records if r["schedule"] == name]
        seeds = sorted(r["seed"] for r in runs)
        rho = mean_ci([spearman(noise, r["final_sigma"]) for r in runs])
        clipped = sum(r["clipped"] for r in runs) / max(sum(r["updates"] for r in runs), 1)
        error = mean_ci([statistics.fmean(r["mean_error"]) for r in runs])
        vs_best = mean_ci([ratio_to_best(r) for r in runs]) if best_fixed else (math.nan,) * 3
        sigma = [statistics.fmean(r["final_sigma"][c] for r in runs) for c in range(num)]
        lines.append(f"| {name} | {len(seeds)} | {fmt(rho)} | {clipped:.2f} | {fmt(error, 3)} | {fmt(vs_best)} | "
                     + ", ".join(f"{s:.1f}" for s in sigma) + " |")  # fmt: skip
        if not name.startswith("fixed_"):
            summary[name] = {"spearman_sigma_noise": rho[0], "clipped_fraction": clipped,
                             "error_vs_best_fixed": vs_best[0], "spearman_ci95": [rho[1], rho[2]], "seeds": len(seeds),
                             "final_sigma": sigma}  # fmt: skip

    lines += ["", "### Mean error per channel (samples), mean [95 % CI] over seeds", "",
              "| schedule | " + " | ".join(f"noise {n:g}" for n in noise) + " |", "|---|" + "---|" * num]  # fmt: skip
    for name in others:
        runs = [r for r in records if r["schedule"] == name]
        lines.append(f"| {name} | " + " | ".join(
            fmt(mean_ci([r["mean_error"][c] for r in runs])) for c in range(num)) + " |")  # fmt: skip
    if best_fixed:
        lines.append("| best fixed | " + " | ".join(
            fmt(mean_ci([by_key[(b, s)]["mean_error"][c] for s in fixed_seeds])) for c, b in enumerate(best_fixed))
            + " |")  # fmt: skip

    lines += ["", "### Paired per-seed comparisons of the mean error over channels (A - B, samples)", "",
              "| A | B | pairs | mean difference [95 % CI] | A better in |", "|---|---|---|---|---|"]  # fmt: skip
    for a in others:
        for b in [*others, "best_fixed"]:
            if a == b or (b != "best_fixed" and b not in ("spread", "geometric", "learned", "bounded")):
                continue
            diffs = []
            for seed in sorted({r["seed"] for r in records if r["schedule"] == a}):
                ra = by_key.get((a, seed))
                if b == "best_fixed":
                    if not best_fixed or any((f, seed) not in by_key for f in best_fixed):
                        continue
                    rb_error = statistics.fmean(by_key[(f, seed)]["mean_error"][c] for c, f in enumerate(best_fixed))
                else:
                    if (b, seed) not in by_key:
                        continue
                    rb_error = statistics.fmean(by_key[(b, seed)]["mean_error"])
                diffs.append(statistics.fmean(ra["mean_error"]) - rb_error)
            if diffs:
                lines.append(f"| {a} | {b} | {len(diffs)} | {fmt(mean_ci(diffs), 3)} | "
                             f"{sum(d < 0 for d in diffs)} of {len(diffs)} |")  # fmt: skip
    summary["default"] = default
    return "\n".join(lines) + "\n", summary


def default_schedule_name() -> str:
    """The name of what ``AdalossSchedule`` does with its default arguments."""
    return AdalossSchedule(64.0, num_landmarks=1).name


def _finite_or_null(value: object) -> object:
    """``value`` with every NaN / inf float replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, smaller net and data (<= 5 min on 2 cores)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--schedules", nargs="+", default=None,
                        help="default: the fixed grid, " + ", ".join((*ADAPTIVE, *MATCHED)))  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--learned-penalty", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON-lines results file (appended, resumable)")
    parser.add_argument("--summarise", action="store_true", help="only summarise --out")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--normalize", choices=["mean", "peak", "none"], default=None,
                        help="target normalisation (default mean; learned sigma needs mean)")  # fmt: skip
    parser.add_argument("--plot-dir", type=Path, default=None,
                        help="write sigma_<schedule>_seed<k>.png (clipped updates marked), first seed")  # fmt: skip
    return parser.parse_args(argv)


def plot_runs(records: list[dict], plot_dir: Path) -> list[Path]:
    """Sigma per epoch of the first seed of every non-fixed schedule, clipped updates marked."""
    written = []
    for name in sorted({r["schedule"] for r in records if not r["schedule"].startswith("fixed_")}):
        record = min((r for r in records if r["schedule"] == name), key=lambda r: r["seed"])
        channels = [f"noise {n:g}" for n in record["noise"]]
        clipped = [[code != "" for code in row] for row in record["clip_codes"]]
        path = plot_dir / f"sigma_{name}_seed{record['seed']}.png"
        written.append(plot_sigma_history(record["sigma_history"], channels, path, unit="samples", clipped=clipped))
    return written


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    bed = QUICK if args.quick else Testbed()
    overrides = {k: v for k, v in (("epochs", args.epochs), ("learned_penalty", args.learned_penalty),
                                   ("threads", args.threads)) if v is not None}  # fmt: skip
    if args.normalize is not None:
        overrides["normalize"] = None if args.normalize == "none" else args.normalize
    bed = Testbed(**{**asdict(bed), **overrides})
    torch.set_num_threads(bed.threads)
    seeds = args.seeds if args.seeds is not None else ([0, 1, 2] if args.quick else list(range(10)))
    if args.out is not None:
        out = args.out
    else:  # --quick without --out starts afresh: its figures always come from this code
        out = Path("benchmarks_out") / ("adaloss_adaptivity_quick.jsonl" if args.quick else "adaloss_adaptivity.jsonl")
        if args.quick and not args.summarise:
            out.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = args.schedules or [*(f"fixed_{s:g}" for s in bed.fixed_grid), *ADAPTIVE, *MATCHED]
    records = load_records(out)
    done = {(r["schedule"], r["seed"]): r for r in records}
    if not args.summarise:
        # matched schedules need MATCHED_TO of the same seed first
        order = sorted(names, key=lambda n: n in MATCHED)
        for name in order:
            for seed in seeds:
                if (name, seed) in done:
                    continue
                if name in MATCHED and (MATCHED_TO, seed) not in done:
                    print(f"skip {name} seed {seed}: no {MATCHED_TO} run of that seed yet", flush=True)
                    continue
                record = train_run(name, seed, bed, done)
                done[(name, seed)] = record
                records.append(record)
                with open(out, "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(f"{name} seed {seed}: final sigma {[round(s, 2) for s in record['final_sigma']]}, "
                      f"mean error {[round(e, 2) for e in record['mean_error']]} ({record['wall_s']:.0f} s)",
                      flush=True)  # fmt: skip
    text, summary = summarise(records, bed, default_schedule_name())
    header = f"Test-bed: {asdict(bed)}; results file {out}; seeds per schedule in the table.\n\n"
    out.with_suffix(".md").write_text(header + text)
    print(header + text)
    if args.plot_dir is not None:
        for path in plot_runs(records, args.plot_dir):
            print(f"wrote {path}")
    print(json.dumps(_finite_or_null(summary), allow_nan=False))
    return summary


if __name__ == "__main__":
    main()
