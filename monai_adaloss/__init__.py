"""monai_adaloss: Adaloss (adaptive Gaussian heatmap sigma) landmark localisation on MONAI."""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "render_gaussian_heatmaps"]


def __getattr__(name: str) -> Any:
    """Import torch-dependent names on first use, so that ``monai-adaloss --help`` stays fast."""
    if name == "render_gaussian_heatmaps":
        from .heatmaps import render_gaussian_heatmaps

        return render_gaussian_heatmaps
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
