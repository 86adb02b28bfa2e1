"""Training-step variants for benchmarks: Lumen's step with each speed lever on or off, the on-the-fly data
path, and the step as diffusers' ControlNet example does it, on the same frozen parts, batch and precision.

Used by scripts/bench_train.py and scripts/gpu_check.py. Every variant runs a full optimizer step (forward,
backward, gradient clipping, AdamW); a variant owns its ControlNet and optimizer, and shares the frozen VAE,
UNet and text encoder with the others.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from benchmarking import alternate, count_flops, synchronizer

from lumen.backbones.sd import SDFeatureExtractor
from lumen.layout.encoder import LayoutEncoder
from lumen.layout.pca import PCA
from lumen.testing.tiny_sd import build_sd15_architecture, save_tiny_sd
from lumen.training.controlnet import controlnet_from_unet
from lumen.training.task import ControlNetTask, build_optimizer

DATA_PATHS = ("cached", "on-the-fly", "diffusers")


@dataclass(frozen=True)
class StepVariant:
    """One way to run the training step.

    ``data``: ``cached`` (layout and VAE posterior read from the cache: Lumen's default), ``on-the-fly`` (VAE
    encode and the frozen UNet's pass to the deepest layout layer every step), or ``diffusers`` (the step of
    diffusers' examples/controlnet/train_controlnet.py: VAE encode and text encoder every step, a 3-channel
    image condition at image resolution, torch's default AdamW, the loss read on the host every step).
    """

    name: str
    data: str = "cached"
    channels_last: bool = False
    compile: bool = False
    gradient_checkpointing: bool = False
    fused_adam: bool = True


@dataclass
class FrozenParts:
    """The frozen models every variant shares, in the compute dtype on the device."""

    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    device: str
    dtype: torch.dtype
    resolution: int
    extractor: SDFeatureExtractor
    pca: PCA
    layout_grid: tuple[int, int]


def random_pca(feature_dim: int, n_components: int = 20) -> PCA:
    """An orthonormal projection of the right shape (the step time does not depend on the PCA's values)."""
    q, _ = torch.linalg.qr(torch.randn(feature_dim, n_components))
    return PCA(torch.zeros(feature_dim), q.T.contiguous(), torch.linspace(2.0, 0.1, n_components),
               torch.full((n_components,), 0.01))


def freeze_parts(vae, unet, text_encoder, tokenizer, scheduler, device: str, dtype: torch.dtype, resolution: int,
                 n_components: int = 20, layers: tuple[int, ...] = (2, 5, 8)) -> FrozenParts:
    """Move the frozen models to ``device``/``dtype`` and set up a layout extractor with a random PCA."""
    for module in (vae, unet, text_encoder):
        module.to(device, dtype).requires_grad_(False).eval()
    extractor = SDFeatureExtractor(vae, unet, text_encoder, tokenizer, scheduler, layers=layers)
    with torch.no_grad():
        probe = extractor(torch.zeros(1, 3, resolution, resolution, device=device, dtype=dtype))
    return FrozenParts(vae, unet, text_encoder, tokenizer, scheduler, device, dtype, resolution, extractor,
                       random_pca(probe.features.shape[1], n_components), tuple(probe.features.shape[-2:]))


def frozen_models(kind: str, work: Path):
    """(vae, unet, text_encoder, tokenizer, scheduler) of SD 1.5's architecture or of the tiny model."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tiny = save_tiny_sd(work / "tiny-sd")
    tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    if kind == "sd15":
        vae, unet, text_encoder, scheduler = build_sd15_architecture()
        return vae, unet, text_encoder, tokenizer, scheduler
    return (AutoencoderKL.from_pretrained(tiny / "vae"), UNet2DConditionModel.from_pretrained(tiny / "unet"),
            CLIPTextModel.from_pretrained(tiny / "text_encoder"), tokenizer,
            DDPMScheduler.from_pretrained(tiny / "scheduler"))


def make_batch(parts: FrozenParts, data: str, batch_size: int, seed: int = 0) -> dict:
    """A random batch of the inputs ``data`` reads, on the device (as accelerate's loader delivers it)."""
    g = torch.Generator().manual_seed(seed)
    r, latent = parts.resolution, parts.resolution // 8
    captions = ["a red ball on the grass under a blue sky"] * batch_size
    if data == "cached":
        batch = {"layout": torch.randn(batch_size, parts.pca.n_components, *parts.layout_grid, generator=g),
                 "latent_mean": torch.randn(batch_size, 4, latent, latent, generator=g),
                 "latent_std": torch.rand(batch_size, 4, latent, latent, generator=g) * 0.1}
    elif data == "on-the-fly":
        batch = {"pixel_values": torch.rand(batch_size, 3, r, r, generator=g) * 2 - 1}
    else:
        ids = parts.tokenizer(captions, padding="max_length", max_length=parts.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
        batch = {"pixel_values": torch.rand(batch_size, 3, r, r, generator=g) * 2 - 1, "input_ids": ids,
                 "conditioning_pixel_values": torch.rand(batch_size, 3, r, r, generator=g)}
    batch = {k: v.to(parts.device) for k, v in batch.items()}
    batch["caption"] = captions
    return batch


class StepRunner:
    """A variant made runnable: ``runner()`` is one optimizer step on a fixed batch."""

    def __init__(self, parts: FrozenParts, variant: StepVariant, batch_size: int, max_grad_norm: float = 1.0) -> None:
        self.parts, self.variant, self.batch_size = parts, variant, batch_size
        channels = 3 if variant.data == "diffusers" else parts.pca.n_components
        # float32 master weights, as the trainer keeps them (autocast lowers the compute)
        parts.unet.to(memory_format=torch.contiguous_format)
        self.controlnet = controlnet_from_unet(parts.unet, channels).to(parts.device).train()
        if parts.dtype != torch.float32:
            self.controlnet.float()
        if variant.channels_last:
            self.controlnet.to(memory_format=torch.channels_last)
        if variant.gradient_checkpointing:
            self.controlnet.enable_gradient_checkpointing()
        if variant.data == "diffusers":
            # The example builds torch.optim.AdamW with its defaults (the foreach kernels on a GPU).
            self.optimizer = torch.optim.AdamW(self.controlnet.parameters(), lr=1e-5, weight_decay=1e-2)
        elif variant.fused_adam:
            self.optimizer = build_optimizer(self.controlnet.parameters(), 1e-5)  # what the trainer uses
        else:
            self.optimizer = torch.optim.AdamW(self.controlnet.parameters(), lr=1e-5, weight_decay=1e-2,
                                               foreach=True)
        self.unet = parts.unet
        if variant.compile:
            self.controlnet.compile()
            self.unet = torch.compile(parts.unet)
        self.task = ControlNetTask(parts.vae, self.unet, parts.text_encoder, parts.tokenizer, parts.scheduler,
                                   parts.resolution, extractor=parts.extractor, encoder=LayoutEncoder(parts.pca),
                                   weight_dtype=parts.dtype)
        self.batch = make_batch(parts, variant.data, batch_size)
        self.generator = torch.Generator().manual_seed(0)
        self.max_grad_norm = max_grad_norm
        device_type = torch.device(parts.device).type
        self.autocast = torch.autocast(device_type, dtype=parts.dtype, enabled=parts.dtype != torch.float32)

    def _set_unet_format(self) -> None:
        """The shared UNet in this variant's memory format (converted in place, before the timed step)."""
        fmt = torch.channels_last if self.variant.channels_last else torch.contiguous_format
        weight = self.parts.unet.conv_in.weight
        if not weight.is_contiguous(memory_format=fmt):
            self.parts.unet.to(memory_format=fmt)

    def loss(self) -> torch.Tensor:
        """The forward pass of this variant's step (a scalar loss with a graph into the ControlNet)."""
        with self.autocast:
            if self.variant.data == "diffusers":
                return self._diffusers_loss()
            return self.task.forward(self.controlnet, self.batch, self.generator).loss

    def _diffusers_loss(self) -> torch.Tensor:
        p, batch = self.parts, self.batch
        with torch.no_grad():
            latents = p.vae.encode(batch["pixel_values"].to(p.dtype)).latent_dist.sample()
            latents = latents * p.vae.config.scaling_factor
            text = p.text_encoder(batch["input_ids"], return_dict=False)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, p.scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=latents.device)
        noisy = p.scheduler.add_noise(latents, noise, timesteps)
        down, mid = self.controlnet(noisy, timesteps, encoder_hidden_states=text,
                                    controlnet_cond=batch["conditioning_pixel_values"].to(p.dtype), return_dict=False)
        prediction = self.unet(noisy, timesteps, encoder_hidden_states=text,
                               down_block_additional_residuals=[r.to(p.dtype) for r in down],
                               mid_block_additional_residual=mid.to(p.dtype), return_dict=False)[0]
        return F.mse_loss(prediction.float(), noise.float(), reduction="mean")

    def __call__(self) -> None:
        self._set_unet_format()
        loss = self.loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.controlnet.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.variant.data == "diffusers":
            loss.item()  # the example logs the loss to its progress bar every step (a host-device sync)


@dataclass
class StepResult:
    """One variant's median step, per image, in a comparison."""

    name: str
    seconds_per_step: float
    images_per_s: float
    flops_per_image: Optional[float]  # of the eager step (model FLOPs: recomputation not counted)
    tflops_per_s: Optional[float]
    peak_memory_gib: Optional[float]

    def percent_of(self, peak: Optional[float]) -> Optional[float]:
        return None if peak is None or self.tflops_per_s is None else 100 * self.tflops_per_s / peak


def model_flops(parts: FrozenParts, data: str, batch_size: int) -> float:
    """FLOPs per image of an eager step of ``data``'s path (counted once, on one step)."""
    runner = StepRunner(parts, StepVariant("count", data=data), batch_size)
    flops = count_flops(runner)
    del runner
    gc.collect()
    return flops / batch_size


def compare(parts: FrozenParts, variants: list[StepVariant], batch_size: int, rounds: int,
            flops: dict[str, float], warmup: int = 1) -> list[StepResult]:
    """``variants`` measured side by side (alternated, medians of ``rounds`` steps after ``warmup``).

    ``flops`` maps a data path to its FLOPs per image (``model_flops``); a compiled variant needs a few warm-up
    steps (it compiles on the first one, and again when the first backward sees new strides).
    """
    sync = synchronizer(parts.device)
    cuda = torch.device(parts.device).type == "cuda"
    shared = torch.cuda.memory_allocated() if cuda else 0  # the frozen parts
    runners: dict[str, StepRunner] = {}
    peaks: dict[str, Optional[float]] = {}
    for variant in variants:  # built and warmed up (compiled) one at a time
        sync()
        before = torch.cuda.memory_allocated() if cuda else 0
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        runners[variant.name] = runner = StepRunner(parts, variant, batch_size)
        for _ in range(warmup):
            runner()
        sync()
        # What this variant needs on its own: the frozen parts + its peak above what the others hold.
        peaks[variant.name] = (torch.cuda.max_memory_allocated() - before + shared) / 2**30 if cuda else None
    medians = alternate(runners, rounds, sync, warmup=0)
    results = []
    for variant in variants:
        seconds = medians[variant.name]
        per_image = flops.get(variant.data)
        results.append(StepResult(
            variant.name, seconds, batch_size / seconds, per_image,
            per_image * batch_size / seconds / 1e12 if per_image is not None else None, peaks[variant.name]))
    del runners
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return results


def lever_variants(compile_levers: bool) -> list[tuple[str, StepVariant, StepVariant]]:
    """Each lever as (what it shows, the step without it, the step with it)."""
    base = StepVariant("cached")
    pairs = [
        ("cached layouts and latents vs computed every step", StepVariant("on-the-fly", data="on-the-fly"), base),
        ("Lumen's step vs diffusers' example step", StepVariant("diffusers example", data="diffusers"), base),
        ("fused AdamW vs foreach AdamW", replace(base, name="foreach AdamW", fused_adam=False),
         replace(base, name="fused AdamW")),
        ("channels_last", base, replace(base, name="channels_last", channels_last=True)),
        ("gradient checkpointing (memory for time)", base,
         replace(base, name="gradient checkpointing", gradient_checkpointing=True)),
    ]
    if compile_levers:
        pairs.append(("torch.compile (ControlNet and frozen UNet)", base,
                      replace(base, name="compiled", compile=True)))
    return pairs


def cached_loader_speed(resolution: int, n_components: int, layout_grid: tuple[int, int], rows: int,
                        batch_size: int, num_workers: int, pin_memory: bool, prefetch_factor: Optional[int] = None,
                        epochs: int = 2) -> float:
    """Images/s the training DataLoader reads from a layout cache (written here: ``rows`` random rows of the
    shapes of ``resolution``), alone, with no model: the median over ``epochs`` passes (after one untimed)."""
    from lumen.layout.cache import ShardRows, finish_split, load_cache, write_shard
    from lumen.layout.cached_dataset import CachedLayoutDataset, collate_cached

    folder = Path(tempfile.mkdtemp(prefix="lumen-cache-bench-"))
    try:
        latent = resolution // 8
        shard = ShardRows.empty()
        g = torch.Generator().manual_seed(0)
        for start in range(0, rows, 64):
            n = min(64, rows - start)
            shard.add(range(start, start + n), [["a caption", "another caption"]] * n,
                      torch.randn(n, n_components, *layout_grid, generator=g),
                      torch.randn(n, 4, latent, latent, generator=g), torch.rand(n, 4, latent, latent, generator=g))
        write_shard(folder / "train", 0, shard, [])
        finish_split(folder / "train", 1)
        dataset = CachedLayoutDataset(load_cache(folder, "train"), train=True, empty_prompt_probability=0.5)
        extra = dict(prefetch_factor=prefetch_factor, persistent_workers=True) if num_workers > 0 else {}
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                             collate_fn=collate_cached, pin_memory=pin_memory, drop_last=True,
                                             **extra)
        rates = []
        for epoch in range(epochs + 1):
            start, images = time.perf_counter(), 0
            for batch in loader:
                images += len(batch["caption"])
            if epoch:  # the first pass starts the workers
                rates.append(images / (time.perf_counter() - start))
        del loader
        return sorted(rates)[len(rates) // 2]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def largest_batch(try_batch: Callable[[int], bool], start: int, limit: int = 1024) -> int:
    """The largest batch size (doubling from ``start``) for which ``try_batch`` succeeds; 0 if none."""
    best, size = 0, start
    while size <= limit and try_batch(size):
        best, size = size, size * 2
    return best
