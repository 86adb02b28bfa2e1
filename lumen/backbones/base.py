"""What every layout backbone is: an image batch in [-1, 1] -> a dense feature map, plus SD's VAE posterior.

The layout pipeline (PCA, cache, training, sampling, evaluation) only sees this interface:

- ``extractor.features(pixel_values)``: ``(B, 3, H, W)`` in [-1, 1] -> features ``(B, C, h, w)`` float32;
- ``extractor(pixel_values)``: the same features and the VAE posterior of the images (``ExtractorOutput``),
  which the cache stores and training draws latents from whatever backbone made the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ExtractorOutput:
    """Features and the VAE posterior of a batch.

    features: ``(B, C, h, w)`` float32.
    latent_mean, latent_std: ``(B, 4, H/8, W/8)`` float32, the VAE posterior (unscaled, as the VAE gives it).
    """

    features: torch.Tensor
    latent_mean: torch.Tensor
    latent_std: torch.Tensor


class FeatureExtractor:
    """Base of the backbones. Subclasses implement ``features``; ``__call__`` adds the VAE posterior.

    Args:
        vae: SD's VAE (``AutoencoderKL``), on the device and in the dtype to compute in.
    """

    def __init__(self, vae) -> None:
        self.vae = vae

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def posterior(self, pixel_values: torch.Tensor):
        """The VAE's latent distribution of ``(B, 3, H, W)`` pixels in [-1, 1]."""
        return self.vae.encode(pixel_values.to(self.vae.device, self.vae.dtype)).latent_dist

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> ExtractorOutput:
        posterior = self.posterior(pixel_values)
        return ExtractorOutput(self.features(pixel_values), posterior.mean.float(), posterior.std.float())


def l2_normalise(features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Each pixel's feature vector of ``(B, C, h, w)`` scaled to unit length."""
    return features / features.norm(dim=1, keepdim=True).clamp_min(eps)


def resize_features(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h, w)`` to ``grid`` (unchanged when it is already that size)."""
    if tuple(features.shape[-2:]) == tuple(grid):
        return features
    return F.interpolate(features, size=grid, mode="bilinear", align_corners=False)
