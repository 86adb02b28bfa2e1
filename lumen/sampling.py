"""Sampling with a trained ControlNet: the diffusers pipeline over loaded parts, and batched jobs.

Every image has its own seeded generator, so an image does not depend on which batch it was drawn in, and
the seed stored in the metadata regenerates it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

from lumen.layout import resize_layout, truncate_components

SCHEDULERS = {"unipc": "UniPCMultistepScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}


def build_controlnet_pipeline(parts, controlnet, scheduler: str = "unipc"):
    """``StableDiffusionControlNetPipeline`` over already loaded SD parts (no second copy of any weights)."""
    import diffusers

    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{scheduler}' (expected one of {sorted(SCHEDULERS)})")
    scheduler_cls = getattr(diffusers, SCHEDULERS[scheduler])
    pipe = diffusers.StableDiffusionControlNetPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        controlnet=controlnet, scheduler=scheduler_cls.from_config(parts.noise_scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class SampleJob:
    """One image to generate: its source's layout (by index), the prompt and everything that fixes it."""

    source: int
    prompt: str
    prompt_index: int
    repeat: int
    seed: int
    n_components: Optional[int]
    num_inference_steps: int
    guidance_scale: float
    conditioning_scale: float
    scheduler: str
    resolution: int

    def to_json(self) -> dict:
        return asdict(self)


def run_jobs(pipe, layouts: torch.Tensor, jobs: list[SampleJob], batch_size: int, progress=None) -> list[np.ndarray]:
    """Generate ``jobs`` in batches of ``batch_size``; ``layouts`` is ``(S, N, h, w)`` (one per source).

    Jobs in one batch must share steps, guidance, conditioning scale and resolution (true within one run).
    Returns one ``(R, R, 3)`` uint8 array per job, in order.
    """
    images: list[np.ndarray] = []
    device = pipe.unet.device
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        first = batch[0]
        condition = torch.cat([truncate_components(layouts[j.source:j.source + 1], j.n_components) for j in batch])
        condition = resize_layout(condition, first.resolution).to(device, pipe.controlnet.dtype)
        output = pipe(
            [j.prompt for j in batch], image=condition, height=first.resolution, width=first.resolution,
            num_inference_steps=first.num_inference_steps, guidance_scale=first.guidance_scale,
            controlnet_conditioning_scale=first.conditioning_scale, output_type="np",
            generator=[torch.Generator().manual_seed(j.seed) for j in batch],
        ).images
        images += [(image * 255).round().clip(0, 255).astype(np.uint8) for image in output]
        if progress is not None:
            progress.update(len(batch))
    return images
