"""Training step time, cached vs on-the-fly data: python scripts/bench_train.py [--steps 5] [--resolution 512]

Runs, side by side in one process on the same model and batch (A and B alternated, medians of --steps after
a warm-up step), the full training step (forward, backward, AdamW step) of
  - the cached path: layout and VAE posterior read from the cache;
  - the on-the-fly path: VAE encode + the frozen UNet pass to decoder layer 8 for the layout, every step;
on SD 1.5's architecture with random weights (batch --batch-size, default 1), and prints the ratio.
Then the same on the tiny model at the tiny config's 128 px and batch 4, as steps/s.
With a GPU: --device cuda --mixed-precision bf16 --batch-size 8 --gradient-checkpointing both for images/s and
peak memory with and without gradient checkpointing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lumen.controlnet import controlnet_from_unet
from lumen.cpu_memory import keep_freed_cpu_memory
from lumen.features.sd import SDFeatureExtractor
from lumen.layout import LayoutEncoder
from lumen.models import MIXED_PRECISION_DTYPES
from lumen.pca import PCA
from lumen.tiny_sd import build_sd15_architecture, save_tiny_sd
from lumen.training import ControlNetTask, build_optimizer


def random_pca(feature_dim: int, n_components: int = 20) -> PCA:
    """An orthonormal projection of the right shape (the step time does not depend on the PCA's values)."""
    q, _ = torch.linalg.qr(torch.randn(feature_dim, n_components))
    return PCA(torch.zeros(feature_dim), q.T.contiguous(), torch.linspace(2.0, 0.1, n_components),
               torch.full((n_components,), 0.01))


def bench(name, vae, unet, text_encoder, tokenizer, scheduler, resolution, batch_size, steps, device, dtype,
          gradient_checkpointing=False) -> None:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for module in (vae, unet, text_encoder):
        module.to(device, dtype)
    extractor = SDFeatureExtractor(vae, unet, text_encoder, tokenizer, scheduler, layers=(2, 5, 8))
    probe = extractor(torch.zeros(1, 3, resolution, resolution))
    pca = random_pca(probe.features.shape[1])
    grid = probe.features.shape[-2:]
    task = ControlNetTask(vae, unet, text_encoder, tokenizer, scheduler, resolution, extractor=extractor,
                          encoder=LayoutEncoder(pca), weight_dtype=dtype)
    controlnet = controlnet_from_unet(unet.float(), conditioning_channels=pca.n_components).to(device).train()
    unet.to(dtype)
    if gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
    optimizer = build_optimizer(controlnet.parameters(), 1e-5)  # what the trainer uses
    captions = ["a red ball on the grass under a blue sky"] * batch_size
    latent = resolution // 8
    batches = {
        "cached": {"layout": torch.randn(batch_size, pca.n_components, *grid),
                   "latent_mean": torch.randn(batch_size, 4, latent, latent),
                   "latent_std": torch.rand(batch_size, 4, latent, latent) * 0.1, "caption": captions},
        "on-the-fly": {"pixel_values": torch.rand(batch_size, 3, resolution, resolution) * 2 - 1,
                       "caption": captions},
    }
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    generator = torch.Generator().manual_seed(0)

    def step(batch):
        with autocast:
            loss = task.forward(controlnet, batch, generator).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = {key: [] for key in batches}
    peak = {key: 0 for key in batches}
    for key in batches:  # warm-up
        step(batches[key])
    for _ in range(steps):
        for key, batch in batches.items():
            sync()
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            step(batch)
            sync()
            times[key].append(time.perf_counter() - start)
            if device.startswith("cuda"):
                peak[key] = max(peak[key], torch.cuda.max_memory_allocated())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{name}: {resolution} px, batch {batch_size}, {device}, {str(dtype).replace('torch.', '')}"
          f"{', gradient checkpointing' if gradient_checkpointing else ''}; median of {steps} steps")
    for key in batches:
        memory = f"  peak {peak[key] / 2**30:5.1f} GiB" if device.startswith("cuda") else ""
        print(f"    {key:10s} {med[key]:8.3f} s/step  {1 / med[key]:7.3f} steps/s  "
              f"{batch_size / med[key]:7.3f} images/s{memory}")
    print(f"    cached path is {med['on-the-fly'] / med['cached']:.2f}x faster")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--gradient-checkpointing", choices=["off", "on", "both"], default="off",
                        help="of the ControlNet; 'both' measures each in turn")
    parser.add_argument("--skip-sd15", action="store_true", help="only the tiny model")
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="leave glibc's defaults (freed memory goes back to the OS; page faults every step)")
    args = parser.parse_args(argv)
    dtype = MIXED_PRECISION_DTYPES[args.mixed_precision]
    kept = args.device == "cpu" and not args.return_freed_memory and keep_freed_cpu_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (", freed memory kept in the process (as the trainer does on the CPU)" if kept else ""))
    with tempfile.TemporaryDirectory() as tmp:
        tiny = save_tiny_sd(Path(tmp) / "tiny-sd")
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
        if not args.skip_sd15:
            print("building SD 1.5 architecture (random weights) ...", flush=True)
            vae, unet, text_encoder, scheduler = build_sd15_architecture(args.device)
            variants = {"off": [False], "on": [True], "both": [False, True]}[args.gradient_checkpointing]
            for checkpointing in variants:
                bench("SD 1.5 architecture", vae, unet, text_encoder, tokenizer, scheduler, args.resolution,
                      args.batch_size, args.steps, args.device, dtype, checkpointing)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()  # the last variant's ControlNet and optimizer are gone
            del vae, unet, text_encoder
        parts = [AutoencoderKL.from_pretrained(tiny / "vae"), UNet2DConditionModel.from_pretrained(tiny / "unet"),
                 CLIPTextModel.from_pretrained(tiny / "text_encoder")]
        for module in parts:
            module.requires_grad_(False).eval()
        bench("tiny model (configs/tiny.yaml sizes)", *parts, tokenizer,
              DDPMScheduler.from_pretrained(tiny / "scheduler"), 128, 4, max(args.steps, 10), args.device, dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
