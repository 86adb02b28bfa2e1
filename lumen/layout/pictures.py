"""Pictures of layouts: the first three components as RGB, beside their image."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from lumen.plotting import pyplot, save_figure, to_uint8_image


def layout_to_image(layout: torch.Tensor, size: Optional[int] = None) -> Image.Image:
    """A picture of one layout ``(N, h, w)``: its first three components as R, G, B.

    Each component is mapped from [-2.5, 2.5] (whitened units) to [0, 255], so pictures of different images
    are comparable; a layout with fewer than three components repeats the last one.
    """
    channels = [layout[min(i, layout.shape[0] - 1)] for i in range(3)]
    rgb = torch.stack(channels).float()
    rgb = ((rgb / 2.5 + 1) * 127.5).clamp(0, 255).round().byte().permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    if size is not None:
        image = image.resize((size, size), Image.Resampling.NEAREST)
    return image


def save_layout_picture(pixel_values: torch.Tensor, layout: torch.Tensor, path: str | Path,
                        caption: str = "") -> Path:
    """Save an image ``(3, R, R)`` in [-1, 1] beside its layout picture (upscaled to R, nearest), as a PNG."""
    resolution = pixel_values.shape[-1]
    image = to_uint8_image(pixel_values)
    fig, axes = pyplot().subplots(1, 2, figsize=(6.4, 3.4))
    axes[0].imshow(image)
    axes[0].set_title(caption[:50] or "image", fontsize=8, loc="left")
    axes[1].imshow(layout_to_image(layout, resolution))
    axes[1].set_title(f"layout {tuple(layout.shape)}: components 1-3 as RGB", fontsize=8, loc="left")
    for axis in axes:
        axis.axis("off")
    return save_figure(fig, path)
