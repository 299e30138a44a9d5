"""The ``monai-adaloss synth`` and ``monai-adaloss demo`` commands.

``synth`` writes a synthetic fluoroscopy DICOM dataset and its datalist
(:func:`monai_adaloss.synthetic.make_dataset`), by default into ``data/catheter_tip_fluoro``: the
``dataset_dir`` of the ``catheter_tip_fluoro`` bundle when it is run from the same folder.

``demo`` runs the whole pipeline on the CPU in about ten minutes:

1. a synthetic dataset (``synth``), frames of ``frame_size`` x ``frame_size`` pixels;
2. training with the bundle's ``configs/train.json`` through MONAI's ``ConfigWorkflow`` (the code
   path of ``python -m monai.bundle run``), with a smaller input grid, network and epoch count given
   as config overrides (:data:`PROFILES`); the best validation model is ``models/model.pt``;
3. inference on the test DICOMs with :class:`~monai_adaloss.inference.InferenceRunner`;
4. tip errors in original pixels and mm (reader spacing) against the ground truth, next to the error
   of guessing the image centre: a table (printed and ``results.md``), ``results.json``,
   ``predictions.csv``, ``sigma_per_epoch.png`` (the paper's Figure 6) and ``overlays.png``.

The demo fails (exit code 1) when the model's mean or median tip error is not below the centre
guess's on the same test frames; it refuses (exit code 2) an output folder that is not empty.

Points are ``(x, y)`` = (column, row) in pixels of the original frame (DESIGN.md section 2).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from tqdm import tqdm

from .bundles import bundle_path, load_datalist
from .confidence import choose_confidence_threshold, outlier_auroc
from .demo_command import add_demo_command, add_synth_command
from .demo_profiles import BUNDLE_NAME, DATASET_SPLITS, PROFILES, DemoProfile
from .inference import InferenceRunner
from .io import LoadDicomFrame
from .plotting import plot_prediction_overlays, plot_sigma_history
from .schedules import SCHEDULE_NAMES
from .synthetic import FluoroscopyConfig, make_dataset
from .tta import TestTimeAugmentation

__all__ = [
    "BUNDLE_NAME",
    "PROFILES",
    "DemoProfile",
    "DemoReport",
    "FrameResult",
    "add_demo_command",
    "add_synth_command",
    "make_synthetic_dataset",
    "make_training_workflow",
    "run_demo",
]

_KEY_METRIC = "val_selection_score"
_EPOCH_METRICS = ("val_selection_score", "val_outlier_rate", "val_mean_dist_px", "val_median_dist_px")
OUTLIER_RADIUS_PX = 10.0
"""A test frame whose tip error exceeds this (pixels of the original frame) is a gross error (an outlier)."""
_OVERLAY_PANELS = 12
_CSV_FIELDS = (
    "image", "frame", "x_true", "y_true", "x_pred", "y_pred", "confidence", "flag", "error_px", "error_mm",
    "centre_error_px", "centre_error_mm", "spacing_x_mm", "spacing_y_mm", "spacing_source",
)  # fmt: skip


@dataclass
class FrameResult:
    """One test frame: ground truth, prediction and errors (points ``(x, y)`` in original pixels, NaN if absent)."""

    image: str
    frame: int
    truth: tuple[float, float]
    prediction: tuple[float, float]
    confidence: float
    spacing: tuple[float, float]
    spacing_source: str
    centre: tuple[float, float]
    flag: str | None = None

    def error(self, point: tuple[float, float], mm: bool = False) -> float:
        """Distance from ``point`` to the truth in pixels (or mm with the frame's spacing); NaN if either is missing."""
        scale = self.spacing if mm else (1.0, 1.0)
        return math.hypot((point[0] - self.truth[0]) * scale[0], (point[1] - self.truth[1]) * scale[1])

    def row(self) -> dict[str, Any]:
        """The frame's ``predictions.csv`` row."""
        return {
            "image": self.image, "frame": self.frame, "x_true": self.truth[0], "y_true": self.truth[1],
            "x_pred": self.prediction[0], "y_pred": self.prediction[1], "confidence": self.confidence,
            "flag": self.flag or "", "error_px": self.error(self.prediction),
            "error_mm": self.error(self.prediction, mm=True),
            "centre_error_px": self.error(self.centre), "centre_error_mm": self.error(self.centre, mm=True),
            "spacing_x_mm": self.spacing[0], "spacing_y_mm": self.spacing[1], "spacing_source": self.spacing_source,
        }  # fmt: skip


@dataclass
class DemoReport:
    """What a demo run measured and wrote."""

    profile: DemoProfile
    frames: list[FrameResult]
    sigma_history: list[list[float]]
    loss_history: list[list[float]]
    val_history: list[dict[str, float]]
    model_sigma: list[float]
    timings_s: dict[str, float]
    outputs: dict[str, str] = field(default_factory=dict)
    confidence_threshold: float | None = None
    tta: bool = False
    schedule: dict[str, Any] | None = None

    @property
    def best_epoch(self) -> int:
        """1-based epoch whose model is ``model.pt``: the lowest selection score (outlier rate, then median)."""
        return int(np.argmin([row["val_selection_score"] for row in self.val_history])) + 1

    def outlier_rate(self, radius: float = OUTLIER_RADIUS_PX) -> float:
        """Share of test frames with a tip whose error exceeds ``radius`` px or that have no prediction."""
        errors = [f.error(f.prediction) for f in self.frames if math.isfinite(f.truth[0])]
        return float(np.mean([not (e <= radius) for e in errors])) if errors else math.nan

    def confidence_auroc(self, radius: float = OUTLIER_RADIUS_PX) -> float:
        """AUROC of low confidence for a test frame more than ``radius`` px off (NaN without both kinds)."""
        frames = [f for f in self.frames if math.isfinite(f.truth[0])]
        return outlier_auroc([f.confidence for f in frames], [f.error(f.prediction) for f in frames], radius)

    def errors(self, which: str, mm: bool) -> np.ndarray:
        """Errors of the ``"model"`` or the ``"centre"`` guess over frames with a truth and a prediction."""
        values = [f.error(f.prediction if which == "model" else f.centre, mm) for f in self.frames]
        return np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)

    def statistics(self, which: str) -> dict[str, float]:
        """Mean, median and 95th percentile in px and mm."""
        stats = {}
        for unit, mm in (("px", False), ("mm", True)):
            errors = self.errors(which, mm)
            for name, value in (("mean", np.mean), ("median", np.median), ("p95", lambda e: np.percentile(e, 95))):
                stats[f"{name}_{unit}"] = float(value(errors)) if errors.size else math.nan
        return stats

    @property
    def misses(self) -> int:
        """Test frames with a ground-truth tip but no prediction."""
        return sum(math.isfinite(f.truth[0]) and not math.isfinite(f.prediction[0]) for f in self.frames)

    @property
    def sigma_updates(self) -> int:
        """Epochs after which sigma changed (any landmark)."""
        sigma = np.asarray(self.sigma_history)
        return int((np.abs(np.diff(sigma, axis=0)) > 0).any(axis=1).sum())

    @property
    def passed(self) -> bool:
        """The model's mean and median pixel errors are both below the centre guess's."""
        model, centre = self.statistics("model"), self.statistics("centre")
        return all(model[k] < centre[k] for k in ("mean_px", "median_px"))

    @property
    def succeeded(self) -> bool:
        """What the command's exit code reports: a smoke test succeeds when every step ran, else :attr:`passed`."""
        return True if self.profile.smoke_test else self.passed

    def result_line(self) -> str:
        """The result, true for what was run."""
        model, centre = self.statistics("model"), self.statistics("centre")
        versus = f"model {model['mean_px']:.2f} px vs centre guess {centre['mean_px']:.2f} px mean"
        if self.profile.smoke_test:
            return (
                f"- result: SMOKE TEST DONE: every step ran and wrote its outputs ({self.profile.epochs} epochs are "
                f"too few to learn the tip, so accuracy is not judged: {versus}; run without --tiny for that)"
            )
        verdict = "PASS" if self.passed else "FAIL"
        return f"- result: {verdict} (model vs centre guess, mean and median px: {versus})"

    def _schedule_name(self) -> str:
        """The sigma schedule as the table names it: the bundle's Adaloss rule or ``name(arg=value, ...)``."""
        if self.schedule is None:
            return "the bundle's Adaloss schedule"
        args = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.schedule.items() if k != "name"
        )
        return f"{self.schedule['name']}({args})"

    def table(self) -> str:
        """The results as a Markdown table plus a few lines."""
        p = self.profile
        lines = [
            "| tip error on the test frames | mean px | median px | p95 px | mean mm | median mm | p95 mm |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, which in (("model", "model"), ("centre guess", "centre")):
            s = self.statistics(which)
            lines.append(
                f"| {label} | {s['mean_px']:.2f} | {s['median_px']:.2f} | {s['p95_px']:.2f} | "
                f"{s['mean_mm']:.2f} | {s['median_mm']:.2f} | {s['p95_mm']:.2f} |"
            )
        t = self.timings_s
        best = self.val_history[self.best_epoch - 1]
        lines += [
            "",
            f"- test frames: {len(self.errors('centre', False))} with a tip, {self.misses} without a prediction; "
            f"errors in pixels of the original {p.frame_size}x{p.frame_size} frames",
            f"- training: {p.n_train} frames, input {p.input_size}x{p.input_size}, {p.network} {list(p.channels)} "
            f"({p.heatmap_output} output), "
            f"{p.epochs} epochs, {p.lr_schedule} learning rate"
            f"{f', device layers on {100 * p.device_overlay_prob:g} % of the samples' if p.device_overlay_prob else ''}"
            f"{f', moving average of the weights (momentum {p.ema_momentum:g})' if p.ema_momentum else ''}"
            f"; best validation epoch {self.best_epoch} (outlier rate "
            f"{100 * best['val_outlier_rate']:.1f} %, median {best['val_median_dist_px']:.2f} px, "
            f"mean {best['val_mean_dist_px']:.2f} px)",
            f"- gross errors: {100 * self.outlier_rate():.1f} % of the test frames more than "
            f"{OUTLIER_RADIUS_PX:g} px off (or missed); mean / median = "
            f"{self.statistics('model')['mean_px'] / self.statistics('model')['median_px']:.2f}"
            f"{'; test-time augmentation on' if self.tta else ''}",
            f"- confidence: AUROC {self.confidence_auroc():.3f} for a frame > {OUTLIER_RADIUS_PX:g} px off "
            f"(NaN: the test set has no such frame, or only such frames); low_confidence threshold "
            f"{self.confidence_threshold if self.confidence_threshold is None else round(self.confidence_threshold, 4)}"
            f" (chosen on the validation frames) flags {sum(f.flag == 'low_confidence' for f in self.frames)} "
            f"test frame(s)",
            f"- sigma ({self._schedule_name()}): {self.sigma_updates} updates in {p.epochs} epochs, "
            f"{self.sigma_history[0][0]:.2f} -> "
            f"final {self.sigma_history[-1][0]:.2f} px of the input grid (model.pt: {self.model_sigma[0]:.2f})",
            f"- wall time: {t['total']:.0f} s (data {t['data']:.0f} s, training {t['training']:.0f} s, "
            f"inference {t['inference']:.0f} s) on {torch.get_num_threads()} torch thread(s)",
            self.result_line(),
        ]
        return "\n".join(lines)


def make_synthetic_dataset(
    output_dir: str | os.PathLike,
    n_train: int,
    n_val: int,
    n_test: int,
    frame_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    multiframe_splits: Sequence[str] = DATASET_SPLITS,
) -> Path:
    """:func:`~monai_adaloss.synthetic.make_dataset` with a progress bar of the DICOM files written.

    ``multiframe_splits``: the splits that may hold multi-frame files (the others: single-frame files only).

    Returns:
        The path of ``datalist.json``.
    """
    config = FluoroscopyConfig(rows=frame_size, columns=frame_size)
    output_dir = Path(output_dir)
    result: dict[str, Any] = {}

    def write() -> None:
        try:
            result["path"] = make_dataset(
                output_dir,
                n_train,
                n_val,
                n_test,
                config=config,
                seed=seed,
                multiframe_splits=multiframe_splits,
            )
        except BaseException as err:  # re-raised in the calling thread
            result["error"] = err

    worker = threading.Thread(target=write, daemon=True)
    worker.start()
    with tqdm(desc="synth", unit="file", disable=not progress, dynamic_ncols=True) as bar:
        while worker.is_alive():
            worker.join(timeout=0.5)
            bar.update(len(list(output_dir.glob("*/*.dcm"))) - bar.n)
    if "error" in result:
        raise result["error"]
    return result["path"]


def _network_overrides(network: str) -> dict[str, Any]:
    """Config overrides that swap the bundle's network for ``network`` (kept unchanged for the bundle's own)."""
    if network == "catheter_unet":
        return {}
    return {
        "network_def": {
            "_target_": f"monai_adaloss.networks.{network}",
            "in_channels": 1,
            "out_channels": "$len(@landmark_names)",
            "channels": "@network_channels",
            "output": "@heatmap_output",
        },
        "network_config": f"$dict(_target_='monai_adaloss.networks.{network}', in_channels=1, "
        "out_channels=len(@landmark_names), channels=list(@network_channels), output=@heatmap_output)",
    }


def _schedule_overrides(schedule: str | None, schedule_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config overrides that swap the bundle's ``AdalossSchedule`` for ``make_schedule(schedule, ...)``.

    ``None`` keeps the bundle's own schedule. A ``learned`` sigma also switches the loss to
    mean-normalised targets (with peak-1 targets the data term alone shrinks a learned sigma; the
    bundle's optimiser already owns ``loss.parameters()``).
    """
    if schedule is None:
        if schedule_args:
            raise ValueError("Argument `schedule_args` needs a `schedule` name.")
        return {}
    if schedule not in SCHEDULE_NAMES:
        raise ValueError(f"Argument `schedule` must be one of {SCHEDULE_NAMES}, got {schedule!r}.")
    overrides: dict[str, Any] = {
        "adaloss_schedule": {
            "_target_": "monai_adaloss.schedules.make_schedule",
            "name": schedule,
            "spatial_shape": "@input_size",
            "num_landmarks": "$len(@landmark_names)",
            **dict(schedule_args or {}),
        }
    }
    if schedule == "learned":
        overrides["loss#normalize"] = "mean"
    return overrides


def _lr_overrides(lr_schedule: str) -> dict[str, Any]:
    """Config overrides for the profile's learning-rate schedule (``"constant"``: the bundle's own, none)."""
    if lr_schedule == "constant":
        return {}
    return {
        "train::lr_scheduler": {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "optimizer": "@optimizer",
            "T_max": "$@max_epochs * len(@train::dataloader)",
            "eta_min": "$@learning_rate / 100",
        }
    }


def make_training_workflow(
    datalist: Path,
    root: Path,
    profile: DemoProfile,
    seed: int = 0,
    progress: bool = False,
    schedule_overrides: Mapping[str, Any] | None = None,
) -> ConfigWorkflow:
    """The bundle's initialized training workflow with the profile's overrides (what the demo trains).

    Args:
        datalist: the synthetic dataset's ``datalist.json`` (:func:`make_synthetic_dataset`).
        root: the bundle root the run writes into (``models/``, ``eval/``).
        schedule_overrides: see :func:`_schedule_overrides`; ``None`` keeps the profile's or bundle's schedule.
    """
    configs = bundle_path(BUNDLE_NAME) / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "train.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        bundle_root=str(root),
        dataset_dir=str(datalist.parent),
        input_size=[profile.input_size] * 2,
        network_channels=list(profile.channels),
        heatmap_output=profile.heatmap_output,
        device_overlay_prob=profile.device_overlay_prob,
        ema_momentum=profile.ema_momentum or None,
        max_epochs=profile.epochs,
        train_batch_size=profile.batch_size,
        num_workers=0,
        seed=seed,
        progress_bar=progress,
        log_stats=False,  # no StatsHandler lines: the demo prints one line per epoch itself
        **{
            "train::dataset::progress": progress,  # CacheDataset's "Loading dataset" bars
            "validate::dataset::progress": progress,
            **_network_overrides(profile.network),
            **_lr_overrides(profile.lr_schedule),
            **dict(schedule_overrides or {}),
        },
    )
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        raise RuntimeError(f"The bundle misses the required properties {missing}.")
    return workflow


def _train(
    datalist: Path,
    root: Path,
    profile: DemoProfile,
    seed: int,
    progress: bool,
    schedule_overrides: Mapping[str, Any] | None = None,
) -> tuple[ConfigWorkflow, list[dict[str, float]]]:
    """Train the bundle with the profile's overrides; return the finished workflow and the validation history."""
    workflow = make_training_workflow(datalist, root, profile, seed, progress, schedule_overrides)
    trainer = workflow.parser.get_parsed_content("train::trainer")
    evaluator = workflow.parser.get_parsed_content("validate::evaluator")
    val_history: list[dict[str, float]] = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def report(engine: Any) -> None:
        row = {key: float(evaluator.state.metrics[key]) for key in _EPOCH_METRICS}
        val_history.append(row)
        best = min(val_history, key=lambda r: r[_KEY_METRIC])
        sigma = ", ".join(f"{v:.2f}" for k, v in engine.state.metrics.items() if k.startswith("sigma/"))
        tqdm.write(
            f"epoch {engine.state.epoch}/{engine.state.max_epochs}: loss {engine.state.output['loss'].item():.3g}, "
            f"next sigma {sigma} px, validation: {100 * row['val_outlier_rate']:.1f} % tips > "
            f"{OUTLIER_RADIUS_PX:g} px off, median {row['val_median_dist_px']:.2f} px, mean "
            f"{row['val_mean_dist_px']:.2f} px (best epoch {val_history.index(best) + 1})"
        )

    workflow.run()
    workflow.finalize()
    return workflow, val_history


def _predict(
    model_path: Path,
    entries: list[dict],
    output_dir: Path,
    loader: LoadDicomFrame,
    progress: bool,
    tta: TestTimeAugmentation | None = None,
) -> list[FrameResult]:
    """Run :class:`InferenceRunner` on the entries' files and pair each frame's tip with its ground truth."""
    images = sorted({entry["image"] for entry in entries})
    InferenceRunner(
        checkpoint=model_path, inputs=images, output_dir=output_dir, num_workers=0, progress=progress, tta=tta
    ).run()
    found = {}
    with (output_dir / "records.jsonl").open(encoding="utf-8") as stream:
        for line in stream:
            record = json.loads(line)
            if record["landmark"] == "tip" and record["instance"] == 0:
                point = (math.nan, math.nan) if record["x"] is None else (record["x"], record["y"])
                key = (str(Path(record["path"]).resolve()), record["frame"])
                found[key] = (point, record["confidence"], record.get("flag"))
    results = []
    for entry in tqdm(entries, desc="score", unit="frame", disable=not progress, dynamic_ncols=True):
        image = loader(entry["image"], entry["frame"])
        tips = entry["label"]["tip"]
        key = (str(Path(entry["image"]).resolve()), entry["frame"])
        point, confidence, flag = found.get(key, ((math.nan,) * 2, 0.0, None))
        results.append(
            FrameResult(
                image=str(entry["image"]),
                frame=int(entry["frame"]),
                truth=tuple(tips[0]) if tips else (math.nan, math.nan),
                prediction=tuple(point),
                confidence=float(confidence),
                spacing=tuple(float(s) for s in image.meta["spacing"]),
                spacing_source=str(image.meta["spacing_source"]),
                centre=tuple((s - 1) / 2.0 for s in image.shape),
                flag=flag,
            )
        )
    return results


def _calibrate_confidence(model_path: Path, frames: list[FrameResult]) -> float | None:
    """Choose the ``low_confidence`` threshold on validation frames and store it in ``model.pt``'s model info.

    Returns the threshold, or ``None`` (nothing stored) when no validation frame was right.
    """
    frames = [f for f in frames if math.isfinite(f.truth[0])]
    try:
        threshold = choose_confidence_threshold(
            [f.confidence for f in frames], [f.error(f.prediction) for f in frames], OUTLIER_RADIUS_PX
        )
    except ValueError as err:
        logging.getLogger(__name__).warning("No low_confidence threshold: %s", err)
        return None
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    state["model_info"]["confidence_threshold"] = threshold
    torch.save(state, model_path)
    return threshold


def _overlays(frames: list[FrameResult], out_png: Path, loader: LoadDicomFrame) -> Path:
    """Draw up to :data:`_OVERLAY_PANELS` test frames spread over the test set."""
    picks = [frames[i] for i in np.linspace(0, len(frames) - 1, min(_OVERLAY_PANELS, len(frames))).round().astype(int)]
    return plot_prediction_overlays(
        [loader(f.image, f.frame).numpy() for f in picks],
        [f.prediction for f in picks],
        [f.truth for f in picks],
        out_png,
        titles=[f"{Path(f.image).name} f{f.frame}: {f.error(f.prediction):.1f} px" for f in picks],
    )


def run_demo(
    output_dir: str | os.PathLike,
    profile: DemoProfile,
    seed: int = 0,
    progress: bool = True,
    tta: bool = False,
    schedule: str | None = None,
    schedule_args: Mapping[str, Any] | None = None,
) -> DemoReport:
    """Synthetic data -> bundle training -> inference on the test DICOMs -> errors, table and figures.

    After training, inference on the validation frames chooses the ``low_confidence`` threshold
    (:func:`~monai_adaloss.confidence.choose_confidence_threshold`), stored in ``model.pt``; the test
    records carry the flag. ``tta``: infer with :class:`~monai_adaloss.tta.TestTimeAugmentation`
    (shifts and both flips, which the bundle's training augmentation includes). ``schedule``: train
    with :func:`~monai_adaloss.schedules.make_schedule` ``(schedule, **schedule_args)`` instead of the
    bundle's default ``AdalossSchedule`` (a comparison of schedules; see :func:`_schedule_overrides`).

    Writes into ``output_dir``: ``data/`` (DICOMs, ``datalist.json``), ``bundle/models/`` (``model.pt``
    and the last training checkpoint), ``bundle/eval/`` (TensorBoard), ``inference/`` (the runner's
    records), ``predictions.csv``, ``sigma_per_epoch.png``, ``overlays.png``, ``results.md`` and
    ``results.json``.

    Raises:
        FileExistsError: when ``output_dir`` exists and is not empty (nothing is overwritten).
    """
    if schedule is None:
        schedule, schedule_args = profile.schedule, dict(profile.schedule_args, **dict(schedule_args or {}))
    schedule_overrides = _schedule_overrides(schedule, schedule_args)
    output_dir = Path(output_dir).absolute()
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"Demo output folder `{output_dir}` is not empty; choose another one or delete it.")
    started = time.perf_counter()
    datalist = make_synthetic_dataset(
        output_dir / "data",
        profile.n_train,
        profile.n_val,
        profile.n_test,
        profile.frame_size,
        seed,
        progress,
        multiframe_splits=profile.multiframe_splits,
    )
    data_done = time.perf_counter()
    workflow, val_history = _train(datalist, output_dir / "bundle", profile, seed, progress, schedule_overrides)
    train_done = time.perf_counter()
    model_path = output_dir / "bundle" / "models" / "model.pt"
    loader = LoadDicomFrame()
    augmentation = TestTimeAugmentation(flip_axes=(0, 1)) if tta else None
    validation = _predict(
        model_path, load_datalist(datalist, "validation"), output_dir / "inference_validation", loader, progress,
        augmentation,
    )  # fmt: skip
    threshold = _calibrate_confidence(model_path, validation)
    frames = _predict(
        model_path, load_datalist(datalist, "test"), output_dir / "inference", loader, progress, augmentation
    )
    infer_done = time.perf_counter()

    trained_schedule = workflow.parser.get_parsed_content("adaloss_schedule")
    names = workflow.parser.get_parsed_content("landmark_names")
    model_info = torch.load(model_path, map_location="cpu", weights_only=True)["model_info"]
    report = DemoReport(
        profile=profile,
        frames=frames,
        sigma_history=trained_schedule.sigma_history.tolist(),
        loss_history=trained_schedule.loss_history.tolist(),
        val_history=val_history,
        model_sigma=list(model_info["sigma"]),
        timings_s={
            "data": data_done - started,
            "training": train_done - data_done,
            "inference": infer_done - train_done,
        },
        confidence_threshold=threshold,
        tta=tta,
        schedule=None if schedule is None else {"name": schedule, **dict(schedule_args or {})},
    )
    report.outputs = {
        "predictions": str(_write_predictions(frames, output_dir / "predictions.csv")),
        "sigma_plot": str(
            plot_sigma_history(
                trained_schedule.sigma_history,
                names,
                output_dir / "sigma_per_epoch.png",
                trained_schedule.loss_history,
                clipped=trained_schedule.clipped_history,
            )
        ),
        "overlays": str(_overlays(frames, output_dir / "overlays.png", loader)),
        "model": str(model_path),
        "table": str(output_dir / "results.md"),
        "results": str(output_dir / "results.json"),
    }
    report.timings_s["total"] = time.perf_counter() - started
    Path(report.outputs["table"]).write_text(report.table() + "\n", encoding="utf-8")
    Path(report.outputs["results"]).write_text(json.dumps(_summary(report), indent=1) + "\n", encoding="utf-8")
    return report


def _write_predictions(frames: list[FrameResult], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for frame in frames:
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in frame.row().items()})
    return path


def _summary(report: DemoReport) -> dict[str, Any]:
    """``results.json``: the profile, statistics, sigma history, timings and output paths."""
    return {
        "profile": asdict(report.profile),
        "model": report.statistics("model"),
        "centre_guess": report.statistics("centre"),
        "test_frames": len(report.frames),
        "misses": report.misses,
        "sigma_updates": report.sigma_updates,
        "sigma_history": report.sigma_history,
        "final_sigma": report.sigma_history[-1],
        "model_sigma": report.model_sigma,
        "outlier_rate": report.outlier_rate(),
        "confidence_auroc": report.confidence_auroc(),
        "confidence_threshold": report.confidence_threshold,
        "low_confidence_test_frames": sum(f.flag == "low_confidence" for f in report.frames),
        "tta": report.tta,
        "schedule": report.schedule,
        "outlier_radius_px": OUTLIER_RADIUS_PX,
        "best_epoch": report.best_epoch,
        "validation_per_epoch": report.val_history,
        "timings_s": report.timings_s,
        "torch_threads": torch.get_num_threads(),
        "passed": report.passed,
        "smoke_test": report.profile.smoke_test,
        "succeeded": report.succeeded,
        "outputs": report.outputs,
    }
