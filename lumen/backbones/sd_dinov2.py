"""SD-DINO's fusion of Stable Diffusion's decoder features with DINOv2's tokens.

Each part is L2-normalised per pixel (so neither dominates by its scale), resized to SD's feature grid,
weighted, and the two are concatenated: ``(B, C_sd + C_dino, h, w)``. Equal weights are SD-DINO's choice.
"""

from __future__ import annotations

import torch

from lumen.backbones.base import ExtractorOutput, FeatureExtractor, l2_normalise, resize_features
from lumen.backbones.dinov2 import DINOV2
from lumen.backbones.registry import BackboneSpec, ExtractorRequest, register
from lumen.backbones.sd import SDFeatureExtractor, build_sd
from lumen.backbones.transformer import TransformerFeatureExtractor
from lumen.backbones.transformer_loading import load_transformer_extractor


class FusedFeatureExtractor(FeatureExtractor):
    """Args:
        sd: the SD decoder extractor (its VAE pass also gives the posterior).
        vit: the DINOv2 extractor.
        weights: ``(w_sd, w_dino)``, multiplying each L2-normalised part.
    """

    def __init__(self, sd: SDFeatureExtractor, vit: TransformerFeatureExtractor,
                 weights: tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__(sd.vae)
        self.sd, self.vit, self.weights = sd, vit, tuple(weights)

    @property
    def device(self) -> torch.device:
        return self.sd.device

    @property
    def dtype(self) -> torch.dtype:
        return self.sd.dtype

    def fuse(self, sd_features: torch.Tensor, vit_features: torch.Tensor) -> torch.Tensor:
        grid = tuple(sd_features.shape[-2:])
        parts = [l2_normalise(sd_features) * self.weights[0],
                 l2_normalise(resize_features(vit_features.to(sd_features.device), grid)) * self.weights[1]]
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> ExtractorOutput:
        output = self.sd(pixel_values)
        output.features = self.fuse(output.features, self.vit.features(pixel_values))
        return output

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self(pixel_values).features


def build_sd_dinov2(request: ExtractorRequest) -> FusedFeatureExtractor:
    vit = load_transformer_extractor(DINOV2, request.transformer, request.parts.vae, request.parts.unet.device,
                                     request.dtype, early_exit=request.early_exit)
    return FusedFeatureExtractor(build_sd(request), vit, tuple(request.fusion_weights))


SPEC: BackboneSpec = register(BackboneSpec(
    name="sd+dinov2", summary="SD-DINO's fusion: SD's decoder features and DINOv2's tokens, each L2-normalised per "
                              "pixel, on SD's grid, concatenated with weights", build=build_sd_dinov2,
    uses_sd=True, transformer=DINOV2, fused=True))
