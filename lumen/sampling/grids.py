"""The picture every sampling stage draws: rows of source | layout | generated images, one column per prompt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lumen.layout.pictures import layout_to_image
from lumen.plotting import pyplot, save_figure


@dataclass
class GridRow:
    """One row: the source image ``(R, R, 3)`` uint8, its layout ``(N, h, w)``, the generated images (uint8) and
    a title for each of them ("" for none)."""

    source: np.ndarray
    source_title: str
    layout: torch.Tensor
    samples: list[np.ndarray]
    sample_titles: list[str]


def save_sample_grid(rows: list[GridRow], path: str | Path, title: str, layout_title: str = "layout") -> Path:
    """Source | layout (components 1-3 as RGB) | one column per generated image, a row per ``GridRow``."""
    columns = 2 + max(len(row.samples) for row in rows)
    fig, axes = pyplot().subplots(len(rows), columns, figsize=(2.4 * columns, 2.5 * len(rows)), squeeze=False)
    for axis_row, row in zip(axes, rows):
        axis_row[0].imshow(row.source)
        axis_row[1].imshow(layout_to_image(row.layout, size=row.source.shape[0]))
        for column, (image, label) in enumerate(zip(row.samples, row.sample_titles)):
            axis_row[2 + column].imshow(image)
            if label:
                axis_row[2 + column].set_title(label[:38], fontsize=6, loc="left")
        if row.source_title:
            axis_row[0].set_title(row.source_title, fontsize=6, loc="left")
        if layout_title:
            axis_row[1].set_title(layout_title, fontsize=6, loc="left")
        for axis in axis_row:
            axis.axis("off")
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path, dpi=90)


def save_backbone_comparison(sources: list[np.ndarray], titles: list[str], layouts: dict[str, torch.Tensor],
                             samples: dict[str, list[np.ndarray]], path: str | Path, title: str) -> Path:
    """One row per source image: the image, then for every backbone its layout (components 1-3 as RGB) and,
    where given, the image generated from it. ``layouts[backbone]`` is ``(S, N, h, w)``; ``samples[backbone]``
    one ``(R, R, 3)`` uint8 image per source (or missing)."""
    backbones = list(layouts)
    columns = 1 + sum(2 if samples.get(b) else 1 for b in backbones)
    fig, axes = pyplot().subplots(len(sources), columns, figsize=(2.1 * columns, 2.2 * len(sources)), squeeze=False)
    for row, (image, label) in enumerate(zip(sources, titles)):
        cells = [(image, label)]
        for backbone in backbones:
            cells.append((layout_to_image(layouts[backbone][row], size=image.shape[0]), f"{backbone}: layout"))
            if samples.get(backbone):
                cells.append((samples[backbone][row], f"{backbone}: sample"))
        for axis, (picture, name) in zip(axes[row], cells):
            axis.imshow(picture)
            if row == 0 or axis is axes[row][0]:
                axis.set_title(name[:30], fontsize=7, loc="left")
            axis.axis("off")
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path, dpi=90)
