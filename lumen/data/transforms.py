"""Image and label-map transforms: any image mode to RGB, resize the shorter side, centre crop.

Images and label maps go through the same geometry (so a label map stays pixel-aligned with its image);
label maps are resized with NEAREST only, since interpolating class ids invents classes.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, ...) to RGB. Alpha is dropped (no compositing)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grey: scale to 8 bits by the bit depth (a plain convert would clip almost everything to
        # white). Never by the image's own maximum, which would brighten a dim image. PNG and TIFF decode
        # 16-bit grey to "I;16" or "I"; "F" is taken as intensities in [0, 1].
        array = np.asarray(image, dtype=np.float32)
        full_scale = 1.0 if image.mode == "F" else 65535.0
        image = Image.fromarray(np.clip(np.round(array / full_scale * 255.0), 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns when a palette image with transparency goes straight to RGB
    return image.convert("RGB")


def resize_and_center_crop(image: Image.Image, resolution: int, resample: int) -> Image.Image:
    """Resize so the shorter side is ``resolution``, then crop the central ``resolution x resolution`` square."""
    width, height = image.size
    scale = resolution / min(width, height)
    new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), resample=resample)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def uint8_to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` or ``(B, H, W, 3)`` -> float32 ``(3, H, W)`` or ``(B, 3, H, W)`` in [-1, 1] (what SD's
    VAE expects; ``lumen.plotting.to_uint8_image`` is the way back)."""
    pixels = torch.from_numpy(np.asarray(images, dtype=np.float32)) / 127.5 - 1.0
    return pixels.movedim(-1, -3).contiguous()


def image_to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """RGB image -> float tensor of shape ``(3, resolution, resolution)`` in [-1, 1] (what SD's VAE expects)."""
    image = resize_and_center_crop(to_rgb(image), resolution, Image.Resampling.BICUBIC)
    return uint8_to_pixels(np.asarray(image))


def label_map_to_tensor(label_map: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 label map ``(H, W)`` -> long tensor ``(resolution, resolution)``, resized with NEAREST."""
    image = resize_and_center_crop(Image.fromarray(label_map, mode="L"), resolution, Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(image, dtype=np.int64).copy())
