"""Pictures of correspondences: matched points on two images side by side, and joint-PCA colour maps."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

DISPLAY_HEIGHT = 384  # both images are shown at this height


def point_colours(count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct, saturated colours (hues spread around the circle)."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(count, 1), 0.9, 1.0)) for i in range(count)]


def side_by_side_layout(source: Image.Image, target: Image.Image, gap: int = 8) -> tuple[float, float, int]:
    """(source scale, target scale, x offset of the target) of the two images shown at ``DISPLAY_HEIGHT``."""
    s, t = DISPLAY_HEIGHT / source.height, DISPLAY_HEIGHT / target.height
    return s, t, round(source.width * s) + gap


def draw_matches(source: Image.Image, target: Image.Image, source_points: np.ndarray, target_points: np.ndarray,
                 path: Path, radius: int = 4) -> Path:
    """The two images side by side at one height; point k of ``source_points`` ``(P, 2)`` and of
    ``target_points`` drawn in the same colour, joined by a line. Written as PNG to ``path``."""
    s, t, offset = side_by_side_layout(source, target)
    width = offset + round(target.width * t)
    canvas = Image.new("RGB", (width, DISPLAY_HEIGHT), (255, 255, 255))
    canvas.paste(source.resize((round(source.width * s), DISPLAY_HEIGHT), Image.Resampling.BICUBIC), (0, 0))
    canvas.paste(target.resize((round(target.width * t), DISPLAY_HEIGHT), Image.Resampling.BICUBIC), (offset, 0))
    draw = ImageDraw.Draw(canvas)
    colours = point_colours(len(source_points))
    ends = [((x * s, y * s), (offset + u * t, v * t)) for (x, y), (u, v) in zip(source_points, target_points)]
    for (a, b), colour in zip(ends, colours):
        draw.line([a, b], fill=colour, width=1)
    for (a, b), colour in zip(ends, colours):
        for x, y in (a, b):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def draw_joint_pca(images: list[Image.Image], colours: list[torch.Tensor], path: Path, gap: int = 8) -> Path:
    """Each image above its joint-PCA colour map (``(3, h, w)`` in [0, 1], stretched to the image), in a row."""
    tiles = []
    for image, colour in zip(images, colours):
        scale = DISPLAY_HEIGHT / image.height
        size = (round(image.width * scale), DISPLAY_HEIGHT)
        rgb = (colour.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        tiles.append((image.resize(size, Image.Resampling.BICUBIC),
                      Image.fromarray(rgb).resize(size, Image.Resampling.NEAREST)))
    width = sum(top.width for top, _ in tiles) + gap * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, 2 * DISPLAY_HEIGHT + gap), (255, 255, 255))
    x = 0
    for top, bottom in tiles:
        canvas.paste(top, (x, 0))
        canvas.paste(bottom, (x, DISPLAY_HEIGHT + gap))
        x += top.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
