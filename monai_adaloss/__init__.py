"""monai_adaloss: Adaloss (adaptive Gaussian heatmap sigma) landmark localisation on MONAI."""

from .heatmaps import render_gaussian_heatmaps

__version__ = "0.1.0"

__all__ = ["__version__", "render_gaussian_heatmaps"]
