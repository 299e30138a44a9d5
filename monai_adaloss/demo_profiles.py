"""The demo's sizes and names, importable without torch (the ``monai-adaloss`` argument parser needs them)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUNDLE_NAME", "DEFAULT_DATASET_DIR", "PROFILES", "DemoProfile"]

BUNDLE_NAME = "catheter_tip_fluoro"
DEFAULT_DATASET_DIR = "data/catheter_tip_fluoro"


@dataclass(frozen=True)
class DemoProfile:
    """Sizes of a demo run.

    Attributes:
        n_train, n_val, n_test: frames per split.
        frame_size: the synthetic frames are ``frame_size`` x ``frame_size`` pixels.
        input_size: the network's input grid is ``input_size`` x ``input_size`` (sigma_0 = input_size / 4).
        channels: U-Net feature channels per level (the bundle's ``network_channels``).
        epochs: training epochs (validation after each).
        batch_size: training batch size.
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
    smoke_test: bool = False


PROFILES: dict[str, DemoProfile] = {
    "cpu": DemoProfile(
        n_train=400, n_val=40, n_test=60, frame_size=256, input_size=128, channels=(8, 16, 32), epochs=30, batch_size=4
    ),
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
"""``cpu``: the measured ten-minute profile (docs/catheter_bundle.md); ``tiny``: a smoke test of every step."""
