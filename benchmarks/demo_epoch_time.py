"""Where a demo training epoch's time goes: batch loading, training steps and validation.

Builds the catheter bundle's training workflow exactly as ``monai-adaloss demo`` does
(:func:`monai_adaloss.demo.make_training_workflow`, same profile and overrides), trains a few
epochs and prints, per epoch, the wall time split into

- ``data``: fetching the training batches (the random augmentation after the CacheDataset's cache,
  collation), from Ignite's ``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED`` (ignite ``Timer``s);
- ``step``: the rest of each iteration (forward, loss, backward, optimiser, iteration handlers);
- ``validation``: the evaluator run after the epoch;

then the mean per-iteration times of the last epoch (the first one warms up; the CacheDataset is
built before it, when the workflow is initialised).

    python benchmarks/demo_epoch_time.py [--profile cpu] [--epochs 2] [--n-train N] [--threads 2]
        [--network catheter_unet] [--channels 8 16 32] [--heatmap-output heatmap] [--data DIR]

``--data`` reuses a demo's ``data/`` folder (its ``datalist.json``); without it a dataset of the
profile's sizes is written to a temporary folder first (not timed).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from ignite.engine import Events
from ignite.handlers import Timer

from monai_adaloss.demo import PROFILES, make_synthetic_dataset, make_training_workflow
from monai_adaloss.demo_profiles import NETWORKS, profile_with_overrides


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int)
    parser.add_argument("--network", choices=NETWORKS)
    parser.add_argument("--channels", type=int, nargs="+")
    parser.add_argument("--heatmap-output", choices=("heatmap", "log_probability"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, help="a demo's data/ folder to reuse")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = profile_with_overrides(
        args.profile,
        epochs=args.epochs,
        n_train=args.n_train,
        network=args.network,
        channels=args.channels,
        heatmap_output=args.heatmap_output,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            datalist = make_synthetic_dataset(
                Path(tmp) / "data", profile.n_train, profile.n_val, profile.n_test, profile.frame_size,
                progress=False, multiframe_splits=profile.multiframe_splits,
            )  # fmt: skip
        else:
            datalist = args.data / "datalist.json"
        workflow = make_training_workflow(datalist, Path(tmp) / "bundle", profile)
        trainer = workflow.parser.get_parsed_content("train::trainer")
        evaluator = workflow.parser.get_parsed_content("validate::evaluator")
        # ignite Timers, each reset when an epoch starts: batch loading (GET_BATCH_STARTED -> _COMPLETED),
        # the rest of each iteration (GET_BATCH_COMPLETED -> ITERATION_COMPLETED), the evaluator's run
        data, step = Timer(), Timer()
        for timer, resume, pause in ((data, Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED),
                                     (step, Events.GET_BATCH_COMPLETED, Events.ITERATION_COMPLETED)):  # fmt: skip
            timer.attach(trainer, start=Events.EPOCH_STARTED, resume=resume, pause=pause)
            trainer.add_event_handler(Events.EPOCH_STARTED, timer.pause)  # a reset timer runs: wait for `resume`
        validation = Timer().attach(evaluator, start=Events.STARTED, pause=Events.COMPLETED)
        epoch = Timer().attach(trainer, start=Events.EPOCH_STARTED)
        last: dict[str, float] = {}

        @trainer.on(Events.EPOCH_COMPLETED)  # after the ValidationHandler: the epoch includes validation
        def epoch_done(engine: object) -> None:
            totals = {"data": data.value(), "step": step.value(), "validation": validation.value()}
            elapsed, iterations = epoch.value(), engine.state.epoch_length
            last.update(epoch_s=elapsed, iterations=iterations, **totals)
            print(
                f"epoch {engine.state.epoch}: {elapsed:.1f} s = data {totals['data']:.1f} s + step "
                f"{totals['step']:.1f} s + validation {totals['validation']:.1f} s + other "
                f"{elapsed - sum(totals.values()):.1f} s ({iterations} iterations of batch {profile.batch_size})",
                flush=True,
            )

        workflow.run()
        workflow.finalize()
    n = last["iterations"]
    summary = {
        "epoch_s": last["epoch_s"],
        "data_ms_per_iteration": 1000 * last["data"] / n,
        "step_ms_per_iteration": 1000 * last["step"] / n,
        "validation_s": last["validation"],
    }
    print(
        f"last epoch: {summary['epoch_s']:.1f} s; per iteration: data {summary['data_ms_per_iteration']:.0f} ms, "
        f"step {summary['step_ms_per_iteration']:.0f} ms; validation {summary['validation_s']:.1f} s "
        f"({profile.network} {list(profile.channels)}, {profile.heatmap_output}, input {profile.input_size}, "
        f"{torch.get_num_threads()} thread(s))"
    )
    return summary


if __name__ == "__main__":
    main()
