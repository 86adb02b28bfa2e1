"""Sampling with a trained ControlNet: the diffusers pipeline over loaded parts, and batched jobs.

Every image has its own seeded generator, so an image does not depend on which batch it was drawn in, and
the seed stored in the metadata regenerates it.
"""

from __future__ import annotations

import types
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from lumen.layout.encoder import resize_layout, truncate_components

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


def _linear_per_sample(self, x: torch.Tensor, max_rows_per_sample: int = 77) -> torch.Tensor:
    """``nn.Linear.forward`` that takes a batch of inputs with few rows each (a timestep embedding, a prompt's
    77 tokens, the 1-64 pixels of a middle block) one sample at a time: every sample then gives BLAS the
    same shape whatever the batch size."""
    if x.dim() >= 2 and x.shape[0] > 1 and x[0].numel() // x.shape[-1] <= max_rows_per_sample:
        return torch.cat([F.linear(sample[None], self.weight, self.bias) for sample in x])
    return F.linear(x, self.weight, self.bias)


def _pointwise_conv_per_sample(self, x: torch.Tensor) -> torch.Tensor:
    """``nn.Conv2d.forward`` of a 1x1 convolution, one sample at a time (see ``batch_size_invariant``)."""
    if x.dim() == 4 and x.shape[0] > 1:
        return torch.cat([self._conv_forward(sample[None], self.weight, self.bias) for sample in x])
    return self._conv_forward(x, self.weight, self.bias)


@contextmanager
def batch_size_invariant(pipe):
    """Within the block, ``pipe`` gives an image the same numbers whatever batch it is drawn in.

    Some kernels choose their algorithm by the size of the whole batch, so an image came out a grey level
    apart in a batch of 8 and alone: BLAS for a linear layer over a few rows (the timestep embedding has 2
    rows for one image with classifier-free guidance and 16 for eight) and oneDNN for a convolution over a
    batch of one (the VAE decode); with one thread, oneDNN also for a 1x1 convolution (a matrix product whose
    size is the whole batch's). Here linears over few rows per sample and 1x1 convolutions run one sample at a
    time and the VAE decodes one image at a time (diffusers' VAE slicing), so every image takes the same path
    for any batch size. Larger convolutions over two or more samples, norms, attention and linears over many
    tokens give the same rows for any batch size on the CPU; tests/test_sampling.py compares the images bit
    for bit.
    """
    modules = [m for module in (pipe.unet, pipe.controlnet, pipe.text_encoder) for m in module.modules()]
    patched = [(m, _linear_per_sample) for m in modules if type(m) is torch.nn.Linear]
    patched += [(m, _pointwise_conv_per_sample) for m in modules
                if type(m) is torch.nn.Conv2d and m.kernel_size == (1, 1)]
    slicing = pipe.vae.use_slicing
    try:
        for module, forward in patched:
            module.forward = types.MethodType(forward, module)
        pipe.vae.enable_slicing()
        yield
    finally:
        for module, _ in patched:
            del module.forward
        if not slicing:
            pipe.vae.disable_slicing()


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


def run_jobs(pipe, layouts: torch.Tensor, jobs: list[SampleJob], batch_size: int, progress=None,
             batch_invariant: Optional[bool] = None) -> list[np.ndarray]:
    """Generate ``jobs`` in batches of ``batch_size``; ``layouts`` is ``(S, N, h, w)`` (one per source).

    Jobs in one batch must share steps, guidance, conditioning scale and resolution (true within one run).
    ``batch_invariant`` (None: on the CPU only) samples under ``batch_size_invariant``: on the CPU it makes an
    image the same bits in any batch; on a GPU it guarantees nothing (cuDNN picks algorithms by batch size)
    and costs speed. Returns one ``(R, R, 3)`` uint8 array per job, in order.
    """
    images: list[np.ndarray] = []
    device = pipe.unet.device
    invariant = device.type == "cpu" if batch_invariant is None else batch_invariant
    with batch_size_invariant(pipe) if invariant else nullcontext():
        for start in range(0, len(jobs), batch_size):
            images += _run_batch(pipe, layouts, jobs[start:start + batch_size], device)
            if progress is not None:
                progress.update(min(batch_size, len(jobs) - start))
    return images


def _run_batch(pipe, layouts: torch.Tensor, batch: list[SampleJob], device) -> list[np.ndarray]:
    """One pipeline call for jobs sharing steps, guidance, conditioning scale and resolution."""
    first = batch[0]
    condition = torch.cat([truncate_components(layouts[j.source:j.source + 1], j.n_components) for j in batch])
    condition = resize_layout(condition, first.resolution).to(device, pipe.controlnet.dtype)
    output = pipe(
        [j.prompt for j in batch], image=condition, height=first.resolution, width=first.resolution,
        num_inference_steps=first.num_inference_steps, guidance_scale=first.guidance_scale,
        controlnet_conditioning_scale=first.conditioning_scale, output_type="np",
        generator=[torch.Generator().manual_seed(j.seed) for j in batch],
    ).images
    return [(image * 255).round().clip(0, 255).astype(np.uint8) for image in output]
