"""Sampling speed: python scripts/bench_sample.py [--images 8] [--repeats 3] [--steps 20] [--no-neighbour]

Seconds per image at batch 1 vs batch 8 on the tiny model (the same jobs and seeds; the images are compared),
with torch's default thread count and with Lumen's choice (``cpu_threads=0``), on idle cores and beside one
busy process; medians of --repeats, every cell measured in each repeat of one run. With a GPU (or --sd15 on
any device): SD 1.5's architecture with random weights at 512 px, 20 steps, fp16, batch 16, eager vs channels_last vs
torch.compile of the UNet and the ControlNet.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmarking import timed

from lumen.cpu.threads import choose_cpu_threads
from lumen.pretrained import SDComponents, load_sd_components
from lumen.sampling.pipeline import SampleJob, build_controlnet_pipeline, run_jobs
from lumen.testing.tiny_sd import build_sd15_architecture, save_tiny_sd
from lumen.training.controlnet import controlnet_from_unet

REPO = Path(__file__).resolve().parents[1]


def jobs_for(count: int, steps: int, resolution: int) -> list[SampleJob]:
    return [SampleJob(i % 4, f"a red ball on the grass, picture {i}", 0, i, 1000 + i, None, steps, 7.5, 1.0,
                      "unipc", resolution) for i in range(count)]


class BusyNeighbour:
    """Another program sharing the cores: one process spinning a CPU-bound loop while the block runs."""

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)  # let the scheduler see it
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def bench_tiny(args, work: Path) -> None:
    shipped = REPO / "models" / "tiny-sd"
    parts = load_sd_components(str(shipped if shipped.is_dir() else save_tiny_sd(work / "tiny-sd")))
    torch.manual_seed(0)
    pipe = build_controlnet_pipeline(parts, controlnet_from_unet(parts.unet, conditioning_channels=20))
    layouts = torch.randn(4, 20, 8, 8)
    jobs = jobs_for(args.images, args.steps, 128)
    default = torch.get_num_threads()
    chosen = choose_cpu_threads(0, sum(p.numel() for p in parts.unet.parameters()), default,
                                "OMP_NUM_THREADS" in os.environ)
    settings = [(default, f"{default} (torch's default)")] + ([(chosen, f"{chosen} (Lumen's choice)")]
                                                              if chosen != default else [])
    loads = ["idle", "busy"] if args.neighbour else ["idle"]
    results, times = {}, {(t, load, b): [] for t, _ in settings for load in loads for b in (1, 8)}
    run_jobs(pipe, layouts, jobs[:2], 2)  # warm-up
    for _ in range(args.repeats):
        for threads, _ in settings:  # alternated within each repeat, so slow drifts touch every cell alike
            torch.set_num_threads(threads)
            for load in loads:
                with BusyNeighbour() if load == "busy" else contextlib.nullcontext():
                    for batch in (1, 8):
                        key = (threads, load, batch)
                        times[key].append(timed(lambda b=batch, k=key: results.__setitem__(
                            k, run_jobs(pipe, layouts, jobs, b))))
    torch.set_num_threads(default)
    per_image = {key: statistics.median(t) / len(jobs) for key, t in times.items()}
    print(f"\n[tiny model] 128 px, {args.steps} steps, {len(jobs)} images, s/image, median of {args.repeats}"
          + (", idle and beside one busy process (a CPU-bound loop)" if args.neighbour else "") + ":")
    print(f"    {'threads':24s} {'load':5s} {'batch 1':>8s} {'batch 8':>8s}")
    for threads, name in settings:
        for load in loads:
            print(f"    {name:24s} {load:5s} {per_image[(threads, load, 1)]:8.3f} {per_image[(threads, load, 8)]:8.3f}")
    for threads, name in settings:
        if args.neighbour:
            slower = [per_image[(threads, "busy", b)] / per_image[(threads, "idle", b)] for b in (1, 8)]
            print(f"    {name}: the busy neighbour slows batch 1 {slower[0]:.2f}x, batch 8 {slower[1]:.2f}x")
    if len(settings) == 2:
        for load in loads:
            print(f"    {load}: Lumen's choice vs torch's default: batch 1 "
                  f"{per_image[(default, load, 1)] / per_image[(chosen, load, 1)]:.2f}x, batch 8 "
                  f"{per_image[(default, load, 8)] / per_image[(chosen, load, 8)]:.2f}x faster")
    a, b = results[(default, "idle", 1)], results[(default, "idle", 8)]
    diffs = [np.abs(x.astype(int) - y.astype(int)) for x, y in zip(a, b)]
    same = sum(int(d.max() == 0) for d in diffs)
    print(f"    same seeds: {same}/{len(jobs)} images bit-identical across batch sizes; largest difference "
          f"{max(int(d.max()) for d in diffs)} grey level(s), mean {np.mean([d.mean() for d in diffs]):.4f}")


def bench_sd15(args, work: Path) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    from transformers import CLIPTokenizer

    vae, unet, text_encoder, scheduler = build_sd15_architecture(device)
    tokenizer = CLIPTokenizer.from_pretrained(save_tiny_sd(work / "tok-sd") / "tokenizer")
    controlnet = controlnet_from_unet(unet, conditioning_channels=20)
    for module in (vae, unet, text_encoder, controlnet):
        module.to(device, dtype)
    parts = SDComponents(vae, unet, text_encoder, tokenizer, scheduler, source="random SD 1.5 architecture")
    pipe = build_controlnet_pipeline(parts, controlnet)
    layouts = torch.randn(4, 20, args.sd15_resolution // 16, args.sd15_resolution // 16)
    jobs = jobs_for(args.sd15_batch, args.sd15_steps, args.sd15_resolution)
    print(f"\n[SD 1.5 architecture] {args.sd15_resolution} px, {args.sd15_steps} steps, {str(dtype)[6:]}, "
          f"batch {len(jobs)}, {device}, median of {args.repeats}:", flush=True)
    eager = None
    for variant in ("eager", "channels_last", "channels_last + compile"):
        if variant == "channels_last":
            unet.to(memory_format=torch.channels_last)
            controlnet.to(memory_format=torch.channels_last)
        if variant.endswith("compile"):  # in place, on top of channels_last
            unet.compile()
            controlnet.compile()
        warm_up = timed(lambda: run_jobs(pipe, layouts, jobs, len(jobs)), sync)  # includes compilation
        seconds = [timed(lambda: run_jobs(pipe, layouts, jobs, len(jobs)), sync) for _ in range(args.repeats)]
        per_image = statistics.median(seconds) / len(jobs)
        eager = eager or per_image
        print(f"    {variant:26s} {per_image:.4f} s/image  {1 / per_image:6.2f} images/s  {eager / per_image:.2f}x "
              f"eager  (first batch {warm_up:.1f} s)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_sample.py", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sd15", action="store_true", help="also SD 1.5 (default: only with a GPU)")
    parser.add_argument("--sd15-batch", type=int, default=16)
    parser.add_argument("--sd15-steps", type=int, default=20)
    parser.add_argument("--sd15-resolution", type=int, default=512)
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--no-neighbour", dest="neighbour", action="store_false",
                        help="measure the tiny model on idle cores only (default: also beside a busy process)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_tiny:
            bench_tiny(args, Path(tmp))
        if args.sd15 or torch.cuda.is_available():
            bench_sd15(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
