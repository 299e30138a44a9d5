"""Figures: sigma per epoch (the Adaloss paper's Figure 6) and landmark predictions over frames.

Matplotlib is used through ``matplotlib.figure.Figure`` only (no ``pyplot``, no GUI backend): the
PNGs are rendered with Agg whatever backend is configured.

Coordinates (DESIGN.md section 2): a 2D image is given in MONAI's reader layout, shape ``(X, Y)``
= (columns, rows), indexed ``[x, y]``; it is drawn as the file raster ``image.T`` so that a point
``(x, y)`` = (column, row) lands on its pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["plot_prediction_overlays", "plot_sigma_history"]


def plot_sigma_history(
    sigma_history: torch.Tensor | np.ndarray,
    landmark_names: Sequence[str],
    out_png: str | Path,
    loss_history: torch.Tensor | np.ndarray | None = None,
    unit: str = "px",
    clipped: torch.Tensor | np.ndarray | None = None,
) -> Path:
    """Plot each landmark's sigma per epoch, optionally with its mean training loss on a second axis.

    Args:
        sigma_history: ``(T + 1, L)``: row t is the sigma used during epoch t (row 0 is sigma_0;
            :attr:`~monai_adaloss.adaloss.AdalossSchedule.sigma_history`).
        landmark_names: L names, for the legend.
        out_png: the PNG to write (folders are created).
        loss_history: optional ``(T, L)`` mean training loss of epoch t (``AdalossSchedule.loss_history``),
            drawn dashed on a logarithmic right axis.
        unit: sigma's unit, for the axis label (voxels of the network's input grid: ``"px"``).
        clipped: optional ``(T, L)`` bool, True where the update after epoch t was limited by the step
            bound, the floor or the cap (``SigmaSchedule.clipped_history``); those sigmas (row t + 1) get a
            black ``x``.

    Returns:
        ``out_png`` as a ``Path``.
    """
    sigma = np.asarray(sigma_history, dtype=np.float64)
    if sigma.ndim != 2 or sigma.shape[1] != len(landmark_names):
        raise ValueError(
            f"Argument `sigma_history` must have shape (T + 1, L) with L={len(landmark_names)}, got {sigma.shape}."
        )
    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    epochs = np.arange(sigma.shape[0])
    for channel, name in enumerate(landmark_names):
        ax.plot(epochs, sigma[:, channel], marker="o", markersize=3, label=f"sigma {name}")
    if clipped is not None:
        mask = np.asarray(clipped, dtype=bool)
        if mask.shape != (sigma.shape[0] - 1, sigma.shape[1]):
            raise ValueError(f"Argument `clipped` must have shape (T, L)={(sigma.shape[0] - 1, sigma.shape[1])}, "
                             f"got {mask.shape}.")  # fmt: skip
        rows, columns = np.nonzero(mask)
        if rows.size:
            ax.plot(rows + 1, sigma[rows + 1, columns], linestyle="none", marker="x", color="black", markersize=6,
                    label=f"clipped update ({rows.size} of {mask.size})")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"sigma ({unit})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if loss_history is not None:
        loss = np.asarray(loss_history, dtype=np.float64)
        right = ax.twinx()
        for channel, name in enumerate(landmark_names):
            right.plot(np.arange(1, loss.shape[0] + 1), loss[:, channel], linestyle="--", color=f"C{channel + 1}",
                       label=f"training loss {name}")  # fmt: skip
        right.set_yscale("log")
        right.set_ylabel("mean training loss")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_title("Adaloss: heatmap sigma per epoch")
    fig.tight_layout()
    return _save(fig, out_png)


def plot_prediction_overlays(
    images: Sequence[np.ndarray | torch.Tensor],
    predictions: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    out_png: str | Path,
    titles: Sequence[str] | None = None,
    columns: int = 4,
) -> Path:
    """Draw predicted (red cross) and ground-truth (green circle) points over 2D frames, in a grid.

    Args:
        images: N frames, each ``(X, Y)`` in MONAI's reader layout, display intensities (any range).
        predictions: ``(N, 2)`` predicted ``(x, y)`` = (column, row) per frame; NaN = not found.
        targets: ``(N, 2)`` ground truth, same convention; NaN = absent.
        out_png: the PNG to write (folders are created).
        titles: optional N panel titles.
        columns: panels per row.

    Returns:
        ``out_png`` as a ``Path``.
    """
    pred = np.asarray(predictions, dtype=np.float64).reshape(-1, 2)
    true = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    if not (len(images) == len(pred) == len(true)) or len(images) == 0:
        raise ValueError(
            f"Arguments `images`, `predictions` and `targets` must hold the same number (> 0) of frames, "
            f"got {len(images)}, {len(pred)} and {len(true)}."
        )
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"Argument `titles` must hold {len(images)} titles, got {len(titles)}.")
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    fig = Figure(figsize=(2.8 * columns, 2.9 * rows), dpi=110)
    for index, image in enumerate(images):
        ax = fig.add_subplot(rows, columns, index + 1)
        ax.imshow(np.asarray(image, dtype=np.float32).T, cmap="gray", interpolation="nearest")
        if np.isfinite(true[index]).all():
            ax.plot(*true[index], marker="o", markersize=10, markerfacecolor="none", color="#30d030", mew=1.3)
        if np.isfinite(pred[index]).all():
            ax.plot(*pred[index], marker="x", markersize=8, color="#ff3030", mew=1.5)
        if titles is not None:
            ax.set_title(titles[index], fontsize=8)
        ax.set_axis_off()
    fig.suptitle("green o: ground truth, red x: prediction", fontsize=9)
    fig.tight_layout()
    return _save(fig, out_png)


def _save(fig: Figure, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
