"""Training step speed, lever by lever: python scripts/bench_train.py [--resolution 512] [--batch-size 1]

On SD 1.5's architecture with random weights (or the tiny model with --model tiny), each lever is measured
side by side in one run: the step without it and with it, alternated, medians of --steps steps after a warm-up,
as a ratio. Every step is a full optimizer step (forward, backward, clipping, AdamW). The pairs:
  - the cached data path vs layouts and latents computed every step (the target: >= 1.5x at 512 px);
  - Lumen's cached step vs the step of diffusers' examples/controlnet/train_controlnet.py (VAE encode and
    text encoder every step, a 3-channel image condition at image resolution, no cache);
  - fused vs foreach AdamW, channels_last, gradient checkpointing, and (--compile, or on a GPU)
    torch.compile of the ControlNet and the frozen UNet.
FLOPs are counted with torch.utils.flop_counter on one eager step of each data path; TFLOP/s and % of the
device's bf16 dense peak are printed where the peak is known (--peak-tflops to give it). Then the cached
DataLoader's read speed alone, with workers and pinned memory. On a GPU use e.g. --mixed-precision bf16
--batch-size 8; scripts/gpu_check.sh runs the full GPU sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from benchmarking import device_name, peak_tflops
from train_step_variants import (
    DATA_PATHS,
    cached_loader_speed,
    compare,
    freeze_parts,
    frozen_models,
    lever_variants,
    model_flops,
)

from lumen.cpu.memory import keep_freed_cpu_memory
from lumen.pretrained import MIXED_PRECISION_DTYPES


def fmt(value, pattern: str, missing: str = "-") -> str:
    return missing if value is None else format(value, pattern)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (medians)")
    parser.add_argument("--resolution", type=int, default=None, help="default: 512 (sd15), 128 (tiny)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 1 on the CPU, 8 on a GPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                        help="default: bf16 on a GPU, no on the CPU")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="include the torch.compile lever (default: on a GPU or with --model tiny; compiling "
                             "SD 1.5 on two CPU cores takes many minutes)")
    parser.add_argument("--only", action="append", default=[],
                        help="run only the levers whose description contains this text (repeatable)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 dense peak")
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    resolution = args.resolution or (512 if args.model == "sd15" else 128)
    batch_size = args.batch_size or (8 if cuda else (1 if args.model == "sd15" else 4))
    precision = args.mixed_precision or ("bf16" if cuda else "no")
    dtype = MIXED_PRECISION_DTYPES[precision]
    compile_levers = args.compile if args.compile is not None else (cuda or args.model == "tiny")
    name = device_name(args.device)
    peak = peak_tflops(name, args.peak_tflops)
    kept = not cuda and keep_freed_cpu_memory()
    print(f"torch {torch.__version__} on {name} ({torch.get_num_threads()} threads); {args.model}, {resolution} px, "
          f"batch {batch_size}, mixed precision {precision}; medians of {args.steps} steps after a warm-up"
          + ("; freed memory kept in the process, as the trainer does on the CPU" if kept else ""), flush=True)
    if peak is None:
        print("    (no known peak for this device: no % of peak; give one with --peak-tflops)")

    report: dict = {"device": name, "model": args.model, "resolution": resolution, "batch_size": batch_size,
                    "mixed_precision": precision, "peak_tflops": peak, "levers": [], "flops_per_image": {}}
    with tempfile.TemporaryDirectory() as tmp:
        parts = freeze_parts(*frozen_models(args.model, Path(tmp)), device=args.device, dtype=dtype,
                             resolution=resolution)
        pairs = [p for p in lever_variants(compile_levers) if not args.only or any(o in p[0] for o in args.only)]
        needed = {v.data for _, a, b in pairs for v in (a, b)}
        flops = {data: model_flops(parts, data, batch_size) for data in DATA_PATHS if data in needed}
        report["flops_per_image"] = flops
        print("FLOPs per image (counted, eager): " + ", ".join(f"{d} {f / 1e12:.3f} TFLOP" if f > 1e11 else
                                                               f"{d} {f / 1e9:.2f} GFLOP" for d, f in flops.items()))
        warmup = 3 if compile_levers else 1  # compiled graphs settle after the first backward
        for what, without, with_ in pairs:
            results = compare(parts, [without, with_], batch_size, args.steps, flops,
                              warmup=warmup if with_.compile else 1)
            print(f"\n{what}:")
            for r in results:
                percent = r.percent_of(peak)
                print(f"    {r.name:24s} {r.seconds_per_step:8.3f} s/step {r.images_per_s:8.2f} images/s "
                      f"{fmt(r.tflops_per_s, '7.2f')} TFLOP/s"
                      + (f" {percent:5.1f} % of peak" if percent is not None else "")
                      + (f"  peak {r.peak_memory_gib:.1f} GiB" if r.peak_memory_gib is not None else ""))
            ratio = results[0].seconds_per_step / results[1].seconds_per_step
            print(f"    -> {with_.name} is {ratio:.2f}x the speed of {without.name}")
            report["levers"].append({"lever": what, "without": vars(results[0]), "with": vars(results[1]),
                                     "speedup": ratio})
        layout_grid, n_components = parts.layout_grid, parts.pca.n_components
        del parts
    rows = 256 if cuda else 64
    print(f"\ncached DataLoader alone ({rows} rows at {resolution} px, batch {batch_size}):")
    report["loader"] = {}
    for workers in sorted({0, args.loader_workers}):
        rate = cached_loader_speed(resolution, n_components, layout_grid, rows, batch_size, workers, pin_memory=cuda)
        report["loader"][f"workers_{workers}"] = rate
        print(f"    {workers} worker(s){', pinned memory' if cuda else ''}: {rate:9.1f} images/s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
