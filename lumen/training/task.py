"""One ControlNet training forward: batch -> epsilon-prediction loss. Single-device; the loop, the processes and the
checkpoints are lumen_train's (``lumen_train/trainer.py``).

``ControlNetTask`` owns the frozen parts (VAE, UNet, text encoder, tokenizer, noise scheduler) and, for the
path without cache, the layout extractor and encoder. It takes either batch kind:

- cached (``layout`` (B, N, h, w), ``latent_mean`` / ``latent_std`` (B, 4, H/8, W/8), ``caption``): a latent is
  drawn from the cached posterior every step;
- images (``pixel_values`` (B, 3, H, W), ``caption``): the VAE posterior and the layout are computed here.

Both draw every random number (latent sample, noise, timesteps) from the ``generator`` passed in, in the
same order, so with the same generator state the two paths agree up to the cache's float16 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from lumen.errors import MissingDependencyError
from lumen.layout.encoder import resize_layout, truncate_components


def build_optimizer(parameters, learning_rate: float, betas: tuple[float, float] = (0.9, 0.999),
                    weight_decay: float = 1e-2, eps: float = 1e-8, use_8bit: bool = False) -> torch.optim.Optimizer:
    """AdamW as diffusers' ControlNet example sets it up; torch's fused kernel where available (one kernel for
    all parameters: on two CPU cores it updates the 361 M ControlNet parameters ~5x faster), or bitsandbytes'
    8-bit AdamW on request."""
    parameters = list(parameters)
    kwargs = dict(lr=learning_rate, betas=betas, weight_decay=weight_decay, eps=eps)
    if use_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise MissingDependencyError("train.use_8bit_adam=true needs bitsandbytes: pip install bitsandbytes"
                                         ) from None
        return bnb.optim.AdamW8bit(parameters, **kwargs)
    try:
        return torch.optim.AdamW(parameters, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(parameters, **kwargs)


@dataclass
class ForwardResult:
    loss: torch.Tensor  # scalar, float32
    batch_size: int


class ControlNetTask:
    """Args:
        vae, unet, text_encoder, tokenizer, noise_scheduler: frozen SD parts on the training device.
        resolution: image size the layout is resized to (the ControlNet's condition input).
        extractor, encoder: ``SDFeatureExtractor`` and ``LayoutEncoder`` for batches of images (None when
            training from the cache only).
        weight_dtype: dtype the frozen UNet and text encoder compute in.
    """

    def __init__(self, vae, unet, text_encoder, tokenizer, noise_scheduler, resolution: int,
                 extractor=None, encoder=None, weight_dtype: torch.dtype = torch.float32) -> None:
        self.vae, self.unet, self.text_encoder = vae, unet, text_encoder
        self.tokenizer, self.noise_scheduler = tokenizer, noise_scheduler
        self.resolution = resolution
        self.extractor, self.encoder = extractor, encoder
        self.weight_dtype = weight_dtype
        self.scaling_factor = vae.config.scaling_factor
        # The empty prompt is half the draws with prompt dropout: encode it once.
        self.empty_embedding = self._encode_text([""])

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @torch.no_grad()
    def _encode_text(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids)[0].to(self.weight_dtype)

    def text_embeddings(self, captions: list[str]) -> torch.Tensor:
        """(B, 77, D): the text encoder runs on the non-empty captions only."""
        embeddings = self.empty_embedding.expand(len(captions), -1, -1).clone()
        filled = [i for i, caption in enumerate(captions) if caption]
        if filled:
            embeddings[filled] = self._encode_text([captions[i] for i in filled])
        return embeddings

    @torch.no_grad()
    def latents_and_layout(self, batch: dict[str, Any], generator: torch.Generator,
                           n_components: Optional[list[Optional[int]]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents ``(B, 4, H/8, W/8)`` (one posterior sample each) and the ControlNet condition
        ``(B, N, H, W)``. ``n_components[b]`` keeps only the first k components of sample b."""
        if "layout" in batch:
            mean, std, layout = batch["latent_mean"], batch["latent_std"], batch["layout"]
        else:
            if self.extractor is None:
                raise ValueError("a batch of images needs the extractor and the encoder (train.use_cache=false)")
            output = self.extractor(batch["pixel_values"])
            mean, std, layout = output.latent_mean, output.latent_std, self.encoder(output.features)
        # Drawn on the CPU from the step's generator, so every device and both data paths draw alike; the draw
        # goes to the device (copying the posterior to the host instead would wait for all queued GPU work).
        eps = torch.randn(mean.shape, generator=generator).to(mean.device)
        latents = (mean.float() + std.float() * eps) * self.scaling_factor
        if n_components is not None:
            layout = torch.stack([truncate_components(layout[b:b + 1], k)[0] for b, k in enumerate(n_components)])
        condition = resize_layout(layout.float(), self.resolution)
        return latents.to(self.device), condition.to(self.device)

    def forward(self, controlnet, batch: dict[str, Any], generator: torch.Generator,
                n_components: Optional[list[Optional[int]]] = None) -> ForwardResult:
        """The training loss of ``controlnet`` on ``batch`` (gradients flow into the ControlNet only)."""
        # 1. Targets and conditions (no gradients needed).
        latents, condition = self.latents_and_layout(batch, generator, n_components)
        batch_size = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(self.device)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (batch_size,),
                                  generator=generator).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        text = self.text_embeddings(list(batch["caption"]))

        # 2. ControlNet residuals, then the frozen UNet with them. The ControlNet (float32 master weights) gets
        # float32 inputs: autocast, where active, lowers its matmuls and convolutions to the compute dtype.
        down, mid = controlnet(noisy.float(), timesteps, encoder_hidden_states=text.float(),
                               controlnet_cond=condition.float(), return_dict=False)
        prediction = self.unet(
            noisy.to(self.weight_dtype), timesteps, encoder_hidden_states=text,
            down_block_additional_residuals=[r.to(self.weight_dtype) for r in down],
            mid_block_additional_residual=mid.to(self.weight_dtype), return_dict=False,
        )[0]

        # 3. Epsilon (or v) prediction loss, in float32.
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
        return ForwardResult(loss=loss, batch_size=batch_size)
