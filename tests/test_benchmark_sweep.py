"""Smoke test of benchmarks/catheter_sigma_sweep.py (the paper's Table 1 on synthetic frames) at a tiny size."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "catheter_sigma_sweep.py"


def _load_sweep():
    spec = importlib.util.spec_from_file_location("catheter_sigma_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_sweep_tiny(tmp_path):
    sweep = _load_sweep()
    epochs = 5
    results = sweep.main([
        "--size", "32", "--n-train", "8", "--n-test", "4", "--epochs", str(epochs), "--channels", "4", "8", "16",
        "--runs", "fixed_25", "adaloss_lr1e-3", "--threads", "1", "--quiet", "--output-dir", str(tmp_path),
    ])  # fmt: skip
    assert [r.spec.name for r in results] == ["fixed_25", "adaloss_lr1e-3"]
    for r in results:
        for value in (r.mean_px, r.median_px, r.mean_px_256, r.median_px_256):
            assert math.isfinite(value)
        assert math.isclose(r.mean_px_256, r.mean_px * 256 / 32)
        assert len(r.sigma_history) == epochs + 1 and len(r.val_mean_px) == epochs

    fixed, ada = results
    assert fixed.sigma_history == [25 * 32 / 256] * (epochs + 1)
    sigma_0 = 32 / 4
    assert ada.sigma_history[0] == sigma_0
    # no update before w + 1 = 4 epochs; afterwards sigma changed or stayed in [sigma_min, sigma_0]
    assert ada.sigma_history[:4] == [sigma_0] * 4
    late = ada.sigma_history[4:]
    assert any(s != sigma_0 for s in late) or all(2.0 <= s <= sigma_0 for s in late)
    assert all(2.0 <= s <= sigma_0 for s in ada.sigma_history)

    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["run"] for row in rows] == ["fixed_25", "adaloss_lr1e-3"]
    assert all(math.isfinite(float(row["mean_px"])) and math.isfinite(float(row["median_px_256"])) for row in rows)
    with open(tmp_path / "per_epoch.csv") as f:
        per_epoch = list(csv.DictReader(f))
    assert len(per_epoch) == 2 * epochs
    assert "| adaloss_lr1e-3 |" in (tmp_path / "results.md").read_text()


def _load_plot():
    path = SCRIPT.with_name("plot_lr_study.py")
    spec = importlib.util.spec_from_file_location("plot_lr_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_per_epoch(path: Path, rows: list[tuple[str, float, int, float]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "lr", "epoch", "val_mean_px_256", "val_median_px_256"])
        for run, lr, epoch, value in rows:
            writer.writerow([run, lr, epoch, value, value])
    return path


def test_lr_figure_merges_split_sweeps_and_refuses_conflicts(tmp_path):
    plot = _load_plot()
    a = _write_per_epoch(tmp_path / "a.csv", [("fixed_5", 1e-3, e, 100.0 - e) for e in (2, 1)])
    b = _write_per_epoch(
        tmp_path / "b.csv",
        [("adaloss_lr1e-3", 1e-3, 1, 80.0), ("adaloss_lr1e-3", 1e-3, 2, 40.0), ("adaloss_lr1e-4", 1e-4, 1, 90.0)],
    )
    runs = plot.read_runs([a, b])
    assert sorted(runs) == ["adaloss_lr1e-3", "adaloss_lr1e-4", "fixed_5"]
    assert [r["epoch"] for r in runs["fixed_5"]] == ["1", "2"]  # ordered by epoch
    out = plot.main([str(a), str(b), "--output", str(tmp_path / "fig.png")])
    assert out.stat().st_size > 1000

    conflict = _write_per_epoch(tmp_path / "c.csv", [("fixed_5", 1e-3, 1, 1.0), ("fixed_5", 1e-3, 2, 2.0)])
    with pytest.raises(ValueError, match="fixed_5"):
        plot.read_runs([a, conflict])
    with pytest.raises(ValueError, match="adaloss_lr"):
        plot.plot_lr_study(plot.read_runs([a]), tmp_path / "x.png")
