"""Small helpers shared by everything that draws a picture (headless matplotlib, PNG files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Save a figure as PNG (making its folder) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def to_uint8_image(pixel_values: torch.Tensor) -> np.ndarray:
    """An image tensor ``(3, H, W)`` in [-1, 1] -> ``(H, W, 3)`` uint8 array."""
    return ((pixel_values.detach().float().cpu().permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
