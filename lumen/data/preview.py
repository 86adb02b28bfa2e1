"""A picture of a few data samples: each image beside its label map, with its first caption."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lumen.plotting import pyplot, save_figure, to_uint8_image


def label_colours(seed: int = 0) -> np.ndarray:
    """A fixed random colour per label value ``(256, 3)`` uint8; 255 (unlabeled) is black."""
    colours = np.random.default_rng(seed).integers(40, 256, size=(256, 3)).astype(np.uint8)
    colours[255] = 0
    return colours


def save_data_preview(samples: list[dict], path: str | Path, title: str = "") -> Path:
    """Save a grid of samples (dicts with ``pixel_values`` (3, R, R) in [-1, 1], ``caption`` and optionally
    ``label`` (R, R)) as a PNG: one row per sample, image then label map, caption above the row."""
    plt = pyplot()
    columns = 2 if any("label" in s for s in samples) else 1
    fig, axes = plt.subplots(len(samples), columns, figsize=(3.2 * columns, 3.0 * len(samples)), squeeze=False)
    colours = label_colours()
    for row, sample in zip(axes, samples):
        image = to_uint8_image(sample["pixel_values"])
        row[0].imshow(image)
        row[0].set_title(sample["caption"][:60] or "(empty prompt)", fontsize=7, loc="left")
        if columns == 2:
            row[1].imshow(colours[sample["label"].numpy().astype(np.uint8)] if "label" in sample else image * 0)
            row[1].set_title("label map (255 = black)", fontsize=7, loc="left")
        for axis in row:
            axis.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
