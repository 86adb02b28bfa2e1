"""Neural layouts: backbone features projected on a PCA and whitened.

A layout is ``(B, N, h, w)`` at the backbone's feature grid: component i of the PCA, divided by the square
root of its explained variance (so every channel has unit variance over the data the PCA was fitted on).
Fewer components = the trailing ones set to zero. For the ControlNet it is resized (bilinear) to the image
size, since ControlNet's condition encoder downsamples by 8 itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from lumen.layout.pca import PCA


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
