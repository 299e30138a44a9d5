"""``monai-adaloss synth`` and ``monai-adaloss demo --tiny``: every step runs and every output is written."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from monai_adaloss.cli import main
from monai_adaloss.demo import PROFILES


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the demo command sets its own thread count


def test_synth_writes_a_datalist(tmp_path: Path) -> None:
    assert main(["synth", "-o", str(tmp_path), "--n-train", "3", "--n-val", "1", "--n-test", "1", "--size", "64",
                 "--quiet"]) == 0  # fmt: skip
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert [len(datalist[split]) for split in ("training", "validation", "test")] == [3, 1, 1]
    assert all((tmp_path / entry["image"]).is_file() for entry in datalist["training"])


def test_synth_multiframe_splits_gives_single_frame_files_elsewhere_and_keeps_listed_splits(tmp_path: Path) -> None:
    def synth(folder: str, *splits: str) -> dict:
        options = ["--multiframe-splits", *splits] if splits else []
        assert main(["synth", "-o", str(tmp_path / folder), "--n-train", "12", "--n-val", "2", "--n-test", "12",
                     "--size", "64", "--quiet", *options]) == 0  # fmt: skip
        return json.loads((tmp_path / folder / "datalist.json").read_text())

    default, single_training = synth("default"), synth("single", "validation", "test")
    images = [entry["image"] for entry in default["training"]]
    assert len(set(images)) < len(images)  # the default training split holds cine files (several frames each)
    images = [entry["image"] for entry in single_training["training"]]
    assert len(set(images)) == len(images) == 12 and all(e.get("frame", 0) == 0 for e in single_training["training"])
    assert single_training["test"] == default["test"]  # a listed split is the same whatever the others are


def test_tiny_demo_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--tiny", "-o", str(tmp_path), "--threads", "1", "--quiet"])
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == 0 and results["smoke_test"] and results["succeeded"]  # a smoke test: every step ran
    assert "| model |" in printed and "| centre guess |" in printed and "wall time" in printed
    assert "result: SMOKE TEST DONE: every step ran" in printed and "FAIL" not in printed
    assert (tmp_path / "results.md").read_text().strip() in printed
    tiny = PROFILES["tiny"]
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert len(rows) == tiny.n_test
    assert all(float(row["centre_error_px"]) >= 0 for row in rows if row["x_true"])
    for name in ("sigma_per_epoch.png", "overlays.png", "bundle/models/model.pt", "inference/records.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert len(results["sigma_history"]) == tiny.epochs + 1
    assert results["final_sigma"] == [tiny.input_size / 4]  # no update within 2 epochs
    assert set(results["model"]) == {f"{s}_{u}" for s in ("mean", "median", "p95") for u in ("px", "mm")}
    assert results["timings_s"]["total"] > 0
    assert 0.0 <= results["outlier_rate"] <= 1.0 and 1 <= results["best_epoch"] <= tiny.epochs
    assert [set(row) for row in results["validation_per_epoch"]] == [
        {"val_selection_score", "val_outlier_rate", "val_mean_dist_px", "val_median_dist_px"}
    ] * tiny.epochs
    assert "gross errors:" in printed and "low_confidence threshold" in printed
    assert {row["flag"] for row in rows} <= {"", "low_confidence"}
    assert main(["demo", "--tiny", "-o", str(tmp_path), "--quiet"]) == 2  # never overwrites a finished demo


def test_demo_refuses_an_unknown_schedule_and_schedule_args_alone(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--tiny", "-o", str(tmp_path / "a"), "--schedule", "nope"]) == 2
    assert "unknown --schedule 'nope'" in capsys.readouterr().out
    assert main(["demo", "--tiny", "-o", str(tmp_path / "b"), "--schedule-arg", "sigma=3"]) == 2
    assert "--schedule-arg needs --schedule" in capsys.readouterr().out
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_schedule_overrides_swap_the_bundle_schedule() -> None:
    from monai_adaloss.demo import _schedule_overrides

    assert _schedule_overrides(None, None) == {}
    learned = _schedule_overrides("learned", {"sigma_0": 3.0})
    assert learned["adaloss_schedule"]["_target_"] == "monai_adaloss.schedules.make_schedule"
    assert learned["adaloss_schedule"]["sigma_0"] == 3.0 and learned["loss#normalize"] == "mean"
    assert "loss#normalize" not in _schedule_overrides("fixed", {"sigma": 3.0})
    with pytest.raises(ValueError, match="must be one of"):
        _schedule_overrides("nope", None)


def test_demo_profile_checks_its_learning_rate_and_sigma_schedules() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="lr_schedule"):
        replace(PROFILES["tiny"], lr_schedule="step")
    with pytest.raises(ValueError, match="needs a `schedule`"):
        replace(PROFILES["tiny"], schedule_args=(("sigma", 3.0),))
    with pytest.raises(ValueError, match="ema_momentum"):
        replace(PROFILES["tiny"], ema_momentum=1.0)


def test_demo_options_reach_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import monai_adaloss.demo

    seen = {}

    def refuse(output_dir, profile, **kwargs):  # records what the command would run, runs nothing
        seen.update(profile=profile, **kwargs)
        raise FileExistsError("not run")

    monkeypatch.setattr(monai_adaloss.demo, "run_demo", refuse)
    code = main(["demo", "--tiny", "-o", str(tmp_path), "--network", "catheter_context_unet", "--channels", "4",
                 "8", "8", "16", "32", "--lr-schedule", "cosine", "--schedule", "fixed", "--schedule-arg",
                 "sigma=2", "--multiframe-splits", "test", "--ema-momentum", "0.02"])  # fmt: skip
    assert code == 2
    profile = seen["profile"]
    assert (profile.network, profile.channels, profile.lr_schedule) == (
        "catheter_context_unet",
        (4, 8, 8, 16, 32),
        "cosine",
    )
    assert (
        seen["schedule"] == "fixed"
        and seen["schedule_args"] == {"sigma": 2.0}
        and profile.multiframe_splits == ("test",)
    )
    assert PROFILES["tiny"].multiframe_splits == ("training", "validation", "test")
    assert profile.ema_momentum == 0.02 and PROFILES["cpu"].ema_momentum == 0.01
    assert main(["demo", "-o", str(tmp_path), "--ema-momentum", "0"]) == 2
    assert seen["profile"].ema_momentum == 0.0  # off: the raw weights are validated and saved
    # the default profile has a sigma schedule of its own: --schedule-arg alone changes its arguments
    assert main(["demo", "-o", str(tmp_path), "--schedule-arg", "sigma=2"]) == 2
    assert seen["profile"].schedule == "fixed" and seen["schedule"] is None and seen["schedule_args"] == {"sigma": 2.0}
    assert main(["demo", "-o", str(tmp_path), "--profile", "adaloss"]) == 2
    assert seen["profile"].schedule is None and seen["profile"].heatmap_output == "heatmap"  # the bundle's Adaloss


def test_profile_schedules_train_the_bundle(tmp_path: Path) -> None:
    """A profile's own sigma schedule (its arguments overridable) and cosine learning rate reach the training."""
    from dataclasses import replace

    from monai_adaloss.demo import run_demo

    profile = replace(
        PROFILES["tiny"],
        network="catheter_context_unet",
        channels=(4, 4, 8, 16, 32),
        heatmap_output="log_probability",
        schedule="fixed",
        schedule_args=(("sigma", 3.0),),
        lr_schedule="cosine",
        ema_momentum=0.01,
    )
    torch.set_num_threads(1)
    report = run_demo(tmp_path, profile, progress=False, schedule_args={"sigma": 2.0})
    assert report.sigma_history == [[2.0]] * (profile.epochs + 1)  # the profile's schedule, sigma overridden
    assert report.schedule == {"name": "fixed", "sigma": 2.0} and "sigma (fixed(sigma=2))" in report.table()
    assert "cosine learning rate" in report.table()
    assert "moving average of the weights (momentum 0.01)" in report.table()
    checkpoint = torch.load(
        next((tmp_path / "bundle" / "models").glob("checkpoint_epoch=*.pt")), map_location="cpu", weights_only=True
    )
    assert set(checkpoint["weight_average"]) == set(checkpoint["network"])  # the average, saved for resuming
    assert "lr_scheduler" in checkpoint  # the profile's cosine schedule is resumable too
    group = checkpoint["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == pytest.approx(1e-3) and group["lr"] == pytest.approx(1e-5)  # decayed to 1 %
    assert json.loads((tmp_path / "results.json").read_text())["profile"]["lr_schedule"] == "cosine"
