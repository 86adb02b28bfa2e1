"""Benchmarks of the layout stage: python scripts/bench_layouts.py [--repeats 3] [--resolution 512] [--device cpu]

Prints, measured side by side in one run (medians of --repeats, A and B alternated):
  1. UNet pass of the extraction with early exit vs the full UNet forward, SD 1.5 architecture with random
     weights, batch 1 (the ratio is the figure; absolute CPU seconds mean little);
  2. extraction images/s (VAE encode + UNet taps) at batch 1 vs batch 4;
  3. the PCA fit of 40,000 x 3,200 float32 vectors to 20 components (scikit-learn; and the torch path);
  4. peak memory of PCA sampling on the tiny model over 1x and 4x the images (it must not grow with them);
  5. with --backbone NAME (repeatable: dinov2, dino, clip): feature extraction images/s of the real
     architectures (random weights: DINOv2-B/14, DINO ViT-B/8, CLIP ViT-L/14) on the same images, the ratio to
     SD's extraction with early exit, and the gain of stopping after the layer read (DINO: 9 of 12, CLIP: 23 of
     24; DINOv2 reads the last layer).
With --device cuda --dtype bfloat16 parts 1, 2 and 5 run on the GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from benchmarking import timed

from lumen.backbones.sd import SDFeatureExtractor
from lumen.pretrained import TORCH_DTYPES
from lumen.testing.tiny_sd import build_sd15_architecture


def sd15_random(device: str, dtype: torch.dtype, tokenizer_dir: Path):
    """SD 1.5's architectures with random weights (nothing is downloaded), in ``dtype`` on ``device``."""
    from transformers import CLIPTokenizer

    vae, unet, text, scheduler = build_sd15_architecture()
    for module in (unet, vae, text):
        module.to(device, dtype)
    return vae, unet, text, CLIPTokenizer.from_pretrained(tokenizer_dir), scheduler


# Real architectures (no download): class, config, (mean, std), the layer and facet read, as lumen.backbones.
VIT_ARCHITECTURES = {
    "dinov2": ("Dinov2Model", "Dinov2Config", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                   intermediate_size=3072, patch_size=14, image_size=518),
               "imagenet", 12, "token"),
    "dino": ("ViTModel", "ViTConfig", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=3072, patch_size=8, image_size=224),
             "imagenet", 9, "key"),
    "clip": ("CLIPVisionModel", "CLIPVisionConfig", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                                         intermediate_size=4096, patch_size=14, image_size=224),
             "clip", 23, "token"),
}


def bench_extraction(args, work: Path) -> float:
    tiny = work / "tiny-sd"
    dtype = TORCH_DTYPES[args.dtype]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"building SD 1.5 architecture (random weights) on {args.device} in {args.dtype} ...", flush=True)
    vae, unet, text, tokenizer, scheduler = sd15_random(args.device, dtype, tiny / "tokenizer")
    make = lambda early: SDFeatureExtractor(vae, unet, text, tokenizer, scheduler, layers=(2, 5, 8),  # noqa: E731
                                            early_exit=early)
    early, full = make(True), make(False)
    latent = args.resolution // 8
    latents = torch.randn(1, 4, latent, latent, device=args.device, dtype=dtype)
    early.features_from_latents(latents), full.features_from_latents(latents)  # warm-up
    times = {"early": [], "full": []}
    for _ in range(args.repeats):
        times["early"].append(timed(lambda: early.features_from_latents(latents), sync))
        times["full"].append(timed(lambda: full.features_from_latents(latents), sync))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n[1] UNet pass at {args.resolution} px, batch 1, median of {args.repeats}:")
    print(f"    full forward {med['full']:.3f} s | early exit after layer 8 {med['early']:.3f} s | "
          f"speed-up {med['full'] / med['early']:.2f}x (target >= 1.3x at 512 px)")

    rates = {}
    for batch in (1, 4):
        pixels = torch.rand(batch, 3, args.resolution, args.resolution, device=args.device) * 2 - 1
        early(pixels)  # warm-up
        seconds = [timed(lambda pixels=pixels: early(pixels), sync) for _ in range(args.repeats)]
        rates[batch] = batch / statistics.median(seconds)
    print(f"\n[2] extraction (VAE encode + UNet to layer 8) at {args.resolution} px, median of {args.repeats}:")
    print(f"    batch 1: {rates[1]:.3f} images/s | batch 4: {rates[4]:.3f} images/s | "
          f"ratio {rates[4] / rates[1]:.2f}x")
    return rates[1]


def vit_extractors(name: str, args, dtype: torch.dtype):
    """(early-exit extractor, full-pass extractor, depth) of the real architecture ``name`` with random weights."""
    import transformers

    from lumen.backbones.clip import CLIP_NORM
    from lumen.backbones.transformer import TransformerFeatureExtractor
    from lumen.backbones.transformer_loading import IMAGENET_NORM as IMAGENET

    model_cls, config_cls, size, norm, layer, facet = VIT_ARCHITECTURES[name]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**size)
    model = getattr(transformers, model_cls)(config).eval().to(args.device, dtype)
    mean, std = IMAGENET if norm == "imagenet" else CLIP_NORM
    image_size = size["patch_size"] * (args.resolution // 16)
    made = [TransformerFeatureExtractor(model, None, layer, facet, image_size, size["patch_size"], 1, mean, std,
                                        early_exit=early) for early in (True, False)]
    return made[0], made[1], config.num_hidden_layers


def bench_backbones(args, names: list[str], sd_rate: float) -> None:
    dtype = TORCH_DTYPES[args.dtype]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    pixels = torch.rand(1, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    print(f"\n[5] feature extraction per backbone (random weights, the same {args.resolution} px image, batch 1, "
          f"median of {args.repeats}); SD 1.5 with early exit (VAE + UNet to layer 8): {sd_rate:.3f} images/s")
    for name in names:
        early, full, depth = vit_extractors(name, args, dtype)
        early.features(pixels), full.features(pixels)  # warm-up
        seconds = {"early": [], "full": []}
        for _ in range(args.repeats):
            for kind, extractor in (("early", early), ("full", full)):
                seconds[kind].append(timed(lambda e=extractor: e.features(pixels), sync))
        med = {k: statistics.median(v) for k, v in seconds.items()}
        rate = 1 / med["early"]
        gain = (f"stopping after layer {early.layer} of {depth}: {med['full'] / med['early']:.2f}x"
                if early.layer < depth else "reads the last layer (no early exit)")
        print(f"    {name:7s} {early.image_size} px, {early.facet} facet of layer {early.layer}: {rate:.3f} images/s "
              f"({rate / sd_rate:.2f}x SD's rate) | {gain}", flush=True)


def bench_pca(args) -> None:
    from lumen.layout.pca import fit_pca

    rng = np.random.default_rng(0)
    # Features with a decaying spectrum, like decoder features: 60 strong directions plus isotropic noise.
    basis = rng.standard_normal((60, 3200)).astype(np.float32)
    scales = np.geomspace(8, 0.3, 60).astype(np.float32)
    x = (rng.standard_normal((40_000, 60)).astype(np.float32) * scales) @ basis
    x += 0.5 * rng.standard_normal(x.shape).astype(np.float32)
    fit_pca(x[:2000], 20)  # warm-up of the BLAS thread pool
    seconds = {"sklearn": [], "torch": []}
    for _ in range(args.repeats):
        for solver in seconds:
            seconds[solver].append(timed(lambda solver=solver: fit_pca(x, 20, solver=solver)))
    a, b = fit_pca(x, 20, "sklearn"), fit_pca(x, 20, "torch")
    cos = (a.components * b.components).sum(dim=1).abs().min().item()
    print(f"\n[3] PCA of 40,000 x 3,200 float32 to 20 components, median of {args.repeats}:")
    print(f"    scikit-learn {statistics.median(seconds['sklearn']):.2f} s (target <= 5 s) | "
          f"torch covariance + eigh on the CPU {statistics.median(seconds['torch']):.2f} s | "
          f"agreement min |cos| {cos:.5f}")


_MEMORY_CHILD = """
import json, resource, sys, torch
from lumen.backbones.sd import SDFeatureExtractor
from lumen.config import DataConfig
from lumen.data.dataset import SplitDataset
from lumen.data.problems import ProblemLog
from lumen.data.sources.coco import read_split, resolve_split_paths
from lumen.layout.pca_vectors import extract_samples, plan_samples
from lumen.pretrained import load_sd_components
model, root, num_images = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = load_sd_components(model)
ex = SDFeatureExtractor(p.vae, p.unet, p.text_encoder, p.tokenizer, p.noise_scheduler)
ds = SplitDataset(read_split(resolve_split_paths(DataConfig(root=root), "train")), 128, train=False)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plan = plan_samples(len(ds), (8, 8), 2000, num_images, 0)
ids, vectors = extract_samples(ex, ds, plan, range(num_images), 160, 8, ProblemLog("train", 1.0), progress=False)
print(json.dumps({"images": num_images, "samples": len(ids), "before_kb": before,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def bench_memory(args, work: Path) -> None:
    from lumen.testing.synthetic_coco import write_synthetic_coco_stuff

    root = write_synthetic_coco_stuff(work / "data", num_train=256, num_val=1, width=160, height=128, progress=False)
    results = []
    for images in (64, 256):
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(work / "tiny-sd"), str(root), str(images)],
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print("\n[4] peak memory of PCA sampling (tiny model, 2,000 samples), one process each:")
    for r in results:
        print(f"    {r['images']:4d} images: peak RSS {r['peak_kb'] / 1024:.0f} MB "
              f"(+{(r['peak_kb'] - r['before_kb']) / 1024:.0f} MB during sampling)")
    growth = (results[1]["peak_kb"] - results[1]["before_kb"]) / max(results[0]["peak_kb"] - results[0]["before_kb"], 1)
    print(f"    4x the images -> {growth:.2f}x the memory added by sampling (bounded: ~1x, not 4x)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_layouts.py", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=list(TORCH_DTYPES))
    parser.add_argument("--only", choices=["extraction", "pca", "memory"], default=None)
    parser.add_argument("--backbone", action="append", choices=sorted(VIT_ARCHITECTURES), default=[],
                        help="also measure this backbone's extraction (repeatable)")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "extraction", "memory"):
            from lumen.testing.tiny_sd import save_tiny_sd

            save_tiny_sd(work / "tiny-sd")
        if args.only in (None, "extraction") or args.backbone:
            sd_rate = bench_extraction(args, work)
            if args.backbone:
                bench_backbones(args, args.backbone, sd_rate)
        if args.only in (None, "pca"):
            bench_pca(args)
        if args.only in (None, "memory"):
            bench_memory(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
