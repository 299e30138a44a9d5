"""A tiny version of benchmarks/adaloss_adaptivity.py: the noise is applied per channel, the matched decays end
at the reference schedule's final sigma, and the last printed line is the JSON the issue asks for."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "adaloss_adaptivity.py"


def _load():
    spec = importlib.util.spec_from_file_location("adaloss_adaptivity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_annotation_noise_is_per_channel() -> None:
    bench = _load()
    bed = bench.Testbed(noise=(0.0, 3.0, 9.0), n_train=200, n_val=4)
    train, images, exact = bench.make_data(bed, seed=0)
    labels = np.stack([s["label"][:, 0, 0].numpy() for s in train])  # (n, 3)
    offsets = labels - labels[:, :1]  # channel 0 is exact
    assert images.shape == (4, 1, 256) and exact.shape == (4,)
    assert np.std(offsets[:, 1]) == pytest.approx(3.0, rel=0.2)
    assert np.std(offsets[:, 2]) == pytest.approx(9.0, rel=0.2)


def test_quick_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], single_thread: None) -> None:
    bench = _load()
    out = tmp_path / "r.jsonl"
    args = ["--quick", "--epochs", "4", "--seeds", "0", "1", "--out", str(out), "--schedules"]
    bench.main([*args, "fixed_2", "fixed_4", "spread", "geometric", "bounded"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["default"] == "bounded"
    for name in ("spread", "geometric", "bounded"):
        assert set(summary[name]) >= {"spearman_sigma_noise", "clipped_fraction", "error_vs_best_fixed"}
        assert 0.0 <= summary[name]["clipped_fraction"] <= 1.0
        assert summary[name]["error_vs_best_fixed"] > 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 10
    for seed in (0, 1):
        spread = next(r for r in records if r["schedule"] == "spread" and r["seed"] == seed)
        geometric = next(r for r in records if r["schedule"] == "geometric" and r["seed"] == seed)
        target = math.exp(statistics.fmean(math.log(s) for s in spread["final_sigma"]))
        assert geometric["final_sigma"] == pytest.approx([max(target, 1.0)] * 5, rel=1e-6)
    # resumable: a second call trains nothing and gives the same summary
    bench.main([*args, "fixed_2", "fixed_4", "spread", "geometric", "bounded"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
