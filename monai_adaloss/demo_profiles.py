"""The demo's sizes and names, importable without torch (the ``monai-adaloss`` argument parser needs them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "BUNDLE_NAME",
    "DATASET_SPLITS",
    "DEFAULT_DATASET_DIR",
    "LR_SCHEDULES",
    "NETWORKS",
    "PROFILES",
    "DemoProfile",
    "profile_with_overrides",
]

BUNDLE_NAME = "catheter_tip_fluoro"
DEFAULT_DATASET_DIR = "data/catheter_tip_fluoro"
LR_SCHEDULES = ("constant", "cosine")
NETWORKS = ("catheter_unet", "catheter_context_unet", "catheter_resnet_unet")
"""The factories of :mod:`monai_adaloss.networks` a demo profile may name (``DemoProfile.network``)."""
DATASET_SPLITS = ("training", "validation", "test")
"""The synthetic dataset's splits (the datalist's lists), in the order they are written."""


@dataclass(frozen=True)
class DemoProfile:
    """Sizes of a demo run.

    Attributes:
        n_train, n_val, n_test: frames per split.
        frame_size: the synthetic frames are ``frame_size`` x ``frame_size`` pixels.
        input_size: the network's input grid is ``input_size`` x ``input_size`` (sigma_0 = input_size / 4).
        channels: U-Net feature channels per level (the bundle's ``network_channels``; five levels
            give ``catheter_context_unet`` a receptive field of 173 px, wider than the input).
        epochs: training epochs (validation after each).
        batch_size: training batch size.
        network: factory in :mod:`monai_adaloss.networks` that builds the network from
            ``in_channels``, ``out_channels`` and ``channels`` (the bundle's default, the paper's
            ``catheter_unet``, or ``catheter_context_unet``).
        heatmap_output: the network's output and loss, the bundle's ``heatmap_output``: ``"heatmap"``
            (linear heatmaps, squared error: the paper's) or ``"log_probability"`` (spatial
            log-softmax, cross-entropy against the normalised target; :mod:`monai_adaloss.networks`).
        schedule: sigma schedule, a name of :func:`monai_adaloss.schedules.make_schedule` with its keyword
            arguments ``schedule_args`` (pairs); ``None`` keeps the bundle's own ``AdalossSchedule``.
        lr_schedule: ``"constant"`` (the bundle's default) or ``"cosine"`` (the learning rate decays from
            the bundle's ``learning_rate`` to 1 % of it over all training iterations).
        multiframe_splits: the splits that may hold multi-frame cine runs (up to 8 near-identical frames of one
            scene per file); the others hold single-frame files only, one scene per frame. A validation split
            of independent scenes makes the model selection and the ``low_confidence`` threshold rest on 40
            scenes rather than on a few sequences; a single-frame training split gives more scenes for the same
            number of training frames. Each split's files are drawn from ``(seed, split, index)``, so a split
            listed here is the same whatever the others do.
        device_overlay_prob: the bundle's ``device_overlay_prob``: the chance that a training sample gets a
            random layer of synthetic devices (ECG leads, clips, wires, a second tube, stents) multiplied onto
            it (:class:`monai_adaloss.synthetic.device_overlay.RandDeviceOverlayd`); 0 (the bundle's default)
            leaves the training frames' distractors as they are.
        ema_momentum: the bundle's ``ema_momentum``: with a value in (0, 1), ignite's ``EMAHandler`` keeps an
            exponential moving average of the weights (and BatchNorm statistics), updated after every iteration
            with this momentum (0.01: about the last 100 iterations, one epoch of the demo), and that average is
            what is validated and saved as ``model.pt``; 0 validates and saves the raw weights (the bundle's
            ``null``).
        smoke_test: the profile only checks that every step runs (too small to learn): its result is
            "every step ran", not a comparison with the centre guess, and the command exits 0.
    """

    n_train: int
    n_val: int
    n_test: int
    frame_size: int
    input_size: int
    channels: tuple[int, ...]
    epochs: int
    batch_size: int = 8
    network: str = "catheter_unet"
    heatmap_output: str = "heatmap"
    schedule: str | None = None
    schedule_args: tuple[tuple[str, float], ...] = ()
    lr_schedule: str = "constant"
    multiframe_splits: tuple[str, ...] = DATASET_SPLITS
    device_overlay_prob: float = 0.0
    ema_momentum: float = 0.0
    smoke_test: bool = False

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Argument `lr_schedule` must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}.")
        if self.schedule_args and self.schedule is None:
            raise ValueError("Argument `schedule_args` needs a `schedule` name.")
        if not 0.0 <= self.device_overlay_prob <= 1.0:
            raise ValueError(f"Argument `device_overlay_prob` must be in [0, 1], got {self.device_overlay_prob}.")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"Argument `ema_momentum` must be in [0, 1), got {self.ema_momentum}.")


_ADALOSS = DemoProfile(
    n_train=400, n_val=40, n_test=60, frame_size=256, input_size=128, channels=(8, 16, 32), epochs=30, batch_size=4
)
PROFILES: dict[str, DemoProfile] = {
    "cpu": replace(
        _ADALOSS,
        epochs=20,
        heatmap_output="log_probability",
        schedule="fixed",
        schedule_args=(("sigma", 3.0),),
        multiframe_splits=("training", "test"),
        device_overlay_prob=0.5,
        ema_momentum=0.01,
    ),
    "adaloss": _ADALOSS,
    "context": replace(_ADALOSS, channels=(8, 16, 32, 64, 128), network="catheter_context_unet"),
    "tiny": DemoProfile(
        n_train=8,
        n_val=4,
        n_test=4,
        frame_size=64,
        input_size=32,
        channels=(4, 8, 16),
        epochs=2,
        batch_size=4,
        smoke_test=True,
    ),
}
"""``cpu``: the default, measured to fit ten minutes on 2 CPU cores: the paper's three-level U-Net with a
spatial log-softmax and the cross-entropy against a Gaussian of fixed sigma 3 px (of the 128 grid), 20
epochs, a validation split of single-frame files (docs/accuracy.md, "Session 8"), half of the training
samples with a random layer of synthetic devices multiplied onto them (session 9: a lower median on every
seed), and a moving average of the weights (momentum 0.01) as the model that is validated and saved (session
11: a lower mean error and median on every seed; 22 epochs became 20 to stay within ten minutes on the
session-11 VM);
``adaloss``: the paper's recipe, the bundle's own squared error and Adaloss schedule (sigma 32 -> 2-5 px
over 30 epochs), the default before session 8 (692-731 s on the 2-core VM of session 7);
``context``: ``adaloss`` with the five-level ``catheter_context_unet`` (receptive field 173 px; measured
worse, docs/accuracy.md); ``tiny``: a smoke test of every step."""


def profile_with_overrides(name: str, **overrides: Any) -> DemoProfile:
    """Profile ``name`` with the given fields replaced; ``None`` keeps the profile's value, sequences become tuples.

    Raises:
        KeyError: ``name`` is not a key of :data:`PROFILES`.
    """
    given = {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
             for k, v in overrides.items() if v is not None}  # fmt: skip
    return replace(PROFILES[name], **given)
