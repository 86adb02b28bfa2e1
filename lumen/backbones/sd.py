"""Dense features from Stable Diffusion's UNet decoder ("decoder layer k", SD-DINO's numbering).

Layer k is the hidden state entering the original LDM ``output_blocks[k]``, i.e. the output of
``output_blocks[k - 1]``. LDM ``output_blocks[i]`` is diffusers' ``unet.up_blocks[i // n]`` sub-layer ``i % n``
with ``n = layers_per_block + 1``: a resnet, followed by its attention in cross-attention blocks, and by the
block's upsampler for the last sub-layer. ``decoder_tap`` derives the module from the UNet's own config, so
a tiny UNet maps "layer k" by the same rule as SD 1.5 (where 2, 5, 8 are ``up_blocks[0].resnets[1]``,
``up_blocks[1].attentions[1]``, ``up_blocks[2].attentions[1]``: 1280 x 8 x 8, 1280 x 16 x 16, 640 x 32 x 32
at 512 px).

Extraction (SD-DINO's conventions, all configurable): VAE posterior mean x scaling factor, plus one fixed
seeded noise tensor at timestep t (``scheduler.add_noise``), UNet with the embedding of a fixed prompt
(computed once), forward hooks on the taps, and an early exit right after the deepest tap: the rest of the
decoder, the most expensive part of the UNet, is never run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lumen.backbones.base import ExtractorOutput, FeatureExtractor
from lumen.backbones.registry import BackboneSpec, ExtractorRequest, register
from lumen.errors import LumenError


class FeatureSettingsError(LumenError, ValueError):
    """Layer or timestep settings the loaded model does not have."""


class _StopForward(Exception):
    """Raised from the deepest tap's hook to end the UNet forward early."""


def num_decoder_layers(unet) -> int:
    return len(unet.up_blocks) * (unet.config.layers_per_block + 1)


def decoder_tap(unet, layer: int) -> tuple[str, torch.nn.Module]:
    """The module whose output is decoder layer ``layer``, and its dotted name inside ``unet``.

    Raises ``FeatureSettingsError`` naming the valid range when the UNet has no such layer.
    """
    per_block = unet.config.layers_per_block + 1
    total = num_decoder_layers(unet)
    if not 1 <= layer <= total:
        raise FeatureSettingsError(
            f"layout.layers: decoder layer {layer} does not exist in this UNet: it has {len(unet.up_blocks)} up "
            f"blocks of "
            f"{per_block} sub-layers, so layers 1..{total} are valid (SD 1.5: 1..12)"
        )
    block_index, sub = divmod(layer - 1, per_block)
    block = unet.up_blocks[block_index]
    if sub == per_block - 1 and getattr(block, "upsamplers", None):
        return f"up_blocks.{block_index}.upsamplers.0", block.upsamplers[0]
    if getattr(block, "attentions", None):
        return f"up_blocks.{block_index}.attentions.{sub}", block.attentions[sub]
    return f"up_blocks.{block_index}.resnets.{sub}", block.resnets[sub]


def _hidden_states(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    return output.sample  # Transformer2DModelOutput


class SDFeatureExtractor(FeatureExtractor):
    """Image batch -> decoder features of a frozen Stable Diffusion.

    Args:
        vae, unet, text_encoder, tokenizer, noise_scheduler: the SD parts (``lumen.pretrained.SDComponents``),
            already on the device and in the dtype to compute in.
        layers: decoder layers to tap (SD-DINO's numbering, e.g. ``(2, 5, 8)``).
        timestep: diffusion timestep the latent is noised to.
        noise_seed: seed of the fixed noise tensor (the same noise for every image).
        prompt: text condition of the UNet.
        early_exit: stop the UNet after the deepest tap (False runs the whole UNet, for benchmarks).
    """

    def __init__(self, vae, unet, text_encoder, tokenizer, noise_scheduler, layers: Sequence[int] = (2, 5, 8),
                 timestep: int = 100, noise_seed: int = 42, prompt: str = "", early_exit: bool = True) -> None:
        if not layers:
            raise FeatureSettingsError("layout.layers is empty: give at least one decoder layer, e.g. [2, 5, 8]")
        super().__init__(vae)
        self.unet, self.noise_scheduler = unet, noise_scheduler
        self.layers = tuple(int(k) for k in layers)
        self.taps = [decoder_tap(unet, k) for k in self.layers]
        self.deepest = max(range(len(self.layers)), key=lambda i: self.layers[i])
        num_steps = noise_scheduler.config.num_train_timesteps
        if not 0 <= timestep < num_steps:
            raise FeatureSettingsError(f"layout.timestep={timestep} is outside the scheduler's 0..{num_steps - 1}")
        self.timestep = timestep
        self.noise_seed = noise_seed
        self.early_exit = early_exit
        self._noise: dict[tuple, torch.Tensor] = {}
        with torch.no_grad():
            ids = tokenizer([prompt], padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids.to(text_encoder.device)
            self.prompt_embedding = text_encoder(ids)[0]  # (1, 77, D), computed once

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def fixed_noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The one noise tensor ``(4, h, w)`` for latents of this shape, drawn on the CPU so every device agrees."""
        if shape not in self._noise:
            generator = torch.Generator().manual_seed(self.noise_seed)
            self._noise[shape] = torch.randn(shape, generator=generator).to(self.device, self.dtype)
        return self._noise[shape]

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> ExtractorOutput:
        """pixel_values: ``(B, 3, H, W)`` in [-1, 1], H and W multiples of 8 -> ``ExtractorOutput`` (one VAE pass
        gives both the posterior and the latents the features are computed from)."""
        posterior = self.posterior(pixel_values)  # the VAE may stay float32 in fp16 runs
        features = self.features_from_latents(posterior.mean * self.vae.config.scaling_factor)
        return ExtractorOutput(features=features, latent_mean=posterior.mean.float(),
                               latent_std=posterior.std.float())

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self(pixel_values).features

    @torch.no_grad()
    def features_from_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled clean latents ``(B, 4, h, w)`` -> features ``(B, C, h', w')`` (noise, UNet, taps, concat)."""
        latents = latents.to(self.device, self.dtype)
        timesteps = torch.full((latents.shape[0],), self.timestep, device=self.device, dtype=torch.long)
        noise = self.fixed_noise(tuple(latents.shape[1:])).expand_as(latents)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)

        captured: dict[int, torch.Tensor] = {}
        handles = []
        for i, (_, module) in enumerate(self.taps):
            def hook(_module, _inputs, output, i=i):
                captured[i] = _hidden_states(output)
                if self.early_exit and i == self.deepest:
                    raise _StopForward
            handles.append(module.register_forward_hook(hook))
        try:
            text = self.prompt_embedding.expand(latents.shape[0], -1, -1)
            self.unet(noisy, timesteps, encoder_hidden_states=text)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()

        grid = captured[self.deepest].shape[-2:]
        maps = [captured[i].float() if captured[i].shape[-2:] == grid else
                F.interpolate(captured[i].float(), size=grid, mode="bilinear", align_corners=False)
                for i in range(len(self.layers))]
        return torch.cat(maps, dim=1)


def build_sd(request: ExtractorRequest) -> SDFeatureExtractor:
    parts = request.parts
    return SDFeatureExtractor(parts.vae, parts.unet, parts.text_encoder, parts.tokenizer, parts.noise_scheduler,
                              layers=request.layers, timestep=request.timestep, noise_seed=request.noise_seed,
                              prompt=request.prompt, early_exit=request.early_exit)


SPEC: BackboneSpec = register(BackboneSpec(
    name="sd", summary="Stable Diffusion's decoder layers (2, 5, 8 by default), upsampled to the deepest and "
                       "concatenated (LUMEN)", build=build_sd, uses_sd=True))
