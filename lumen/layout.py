"""Neural layouts: backbone features projected on a PCA and whitened, and pictures of them.

A layout is ``(B, N, h, w)`` at the backbone's feature grid: component i of the PCA, divided by the square
root of its explained variance (so every channel has unit variance over the data the PCA was fitted on).
Fewer components = the trailing ones set to zero. For the ControlNet it is resized (bilinear) to the image
size, since ControlNet's condition encoder downsamples by 8 itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lumen.errors import LumenError
from lumen.pca import PCA
from lumen.plotting import pyplot, save_figure, to_uint8_image


@dataclass(frozen=True)
class LayoutSettings:
    """Everything that decides what a layout means. Layouts, caches and models made under other settings
    than a PCA was fitted under are refused (``describe_differences``)."""

    backbone: str
    # Stable Diffusion's part (sd, sd+dinov2; None for the others)
    model: Optional[str]
    revision: Optional[str]
    layers: Optional[tuple[int, ...]]
    timestep: Optional[int]
    noise_seed: Optional[int]
    prompt: Optional[str]
    # the transformer's part (dinov2, dino, clip, vit, sd+dinov2; None for sd): lumen.backbones.TransformerSpec
    backbone_model: Optional[str]
    backbone_revision: Optional[str]
    backbone_layer: Optional[int]
    facet: Optional[str]
    image_size: Optional[int]
    fusion_weights: Optional[tuple[float, ...]]  # sd+dinov2 only
    resolution: int
    dtype: str  # the dtype the features were computed in ("float32", "bfloat16", ...)

    def to_json(self) -> dict[str, Any]:
        return dict(asdict(self), layers=None if self.layers is None else list(self.layers),
                    fusion_weights=None if self.fusion_weights is None else list(self.fusion_weights))

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "the artifact") -> LayoutSettings:
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise SettingsMismatchError(f"the layout settings recorded in {where} lack {sorted(missing)}: it was "
                                        f"written by an older version of Lumen; make it again with this one")
        values = {k: data[k] for k in names}
        tuples = {k: tuple(values[k]) for k in ("layers", "fusion_weights") if values[k] is not None}
        return cls(**dict(values, **tuples))


def describe_differences(expected: LayoutSettings, found: LayoutSettings, expected_from: str,
                         found_from: str) -> list[str]:
    """One line per setting that differs, e.g. ``timestep: 100 (config) vs 261 (outputs/x/pca/pca.json)``."""
    lines = []
    for f in fields(LayoutSettings):
        a, b = getattr(expected, f.name), getattr(found, f.name)
        if a != b:
            lines.append(f"{f.name}: {a!r} ({expected_from}) vs {b!r} ({found_from})")
    return lines


def check_pca_matches(pca: PCA, settings: LayoutSettings, pca_dir: str | Path) -> None:
    """Refuse a PCA fitted on features made under other settings than ``settings``."""
    found = LayoutSettings.from_json(pca.settings, f"{pca_dir}/pca.json")
    differences = describe_differences(settings, found, "config", f"{pca_dir}/pca.json")
    if differences:
        raise SettingsMismatchError(
            f"the PCA in {pca_dir} was fitted on features made with other settings than the config's:\n  "
            + "\n  ".join(differences)
            + "\nRefit it (python scripts/fit_pca.py CONFIG) or point layout.pca_dir at a matching PCA."
        )


class SettingsMismatchError(LumenError, ValueError):
    """An artifact (PCA, cache, ControlNet) made under other layout settings than the config's."""


class LayoutEncoder:
    """Features ``(B, C, h, w)`` -> whitened layout ``(B, N, h, w)`` (or ``(B, k, h, w)`` zero-padded, see below).

    Args:
        pca: the fitted PCA (``C == pca.feature_dim``).
        n_components: keep the first k whitened components and set the others to zero (None: all N).
    """

    def __init__(self, pca: PCA, n_components: Optional[int] = None) -> None:
        if n_components is not None and not 1 <= n_components <= pca.n_components:
            raise ValueError(f"n_components={n_components} must be between 1 and the PCA's {pca.n_components}")
        self.pca = pca
        self.n_components = n_components
        self._scale = pca.explained_variance.clamp_min(1e-12).rsqrt()

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.pca.feature_dim:
            raise ValueError(f"features have {features.shape[1]} channels, the PCA expects {self.pca.feature_dim}")
        device = features.device
        mean = self.pca.mean.to(device)[None, :, None, None]
        components = self.pca.components.to(device)
        layout = torch.einsum("bchw,nc->bnhw", features.float() - mean, components)
        layout = layout * self._scale.to(device)[None, :, None, None]
        return truncate_components(layout, self.n_components)


def truncate_components(layout: torch.Tensor, k: Optional[int]) -> torch.Tensor:
    """Zero the components after the first ``k`` of a layout ``(B, N, h, w)`` (None or k >= N: unchanged)."""
    if k is None or k >= layout.shape[1]:
        return layout
    out = layout.clone()
    out[:, k:] = 0
    return out


def resize_layout(layout: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``(B, N, h, w)`` to the image size, as the ControlNet condition."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(layout.float(), size=size, mode="bilinear", align_corners=False)


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
