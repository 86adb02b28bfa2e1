"""One prepared GPU check: bash scripts/gpu_check.sh [--out DIR] [--budget SECONDS]

Needs no network and no pretrained weights (SD 1.5's architecture with random weights, synthetic data). On a
GPU it measures, in this order, and writes scripts/benchmarks/<gpu-name>.json and .md after every section (so
a run cut short keeps what it measured):
  1. the cached training step at 512 px in bf16, batch 8, 16 and 32, eager and with gradient checkpointing:
     images/s, TFLOP/s (FLOPs counted by torch.utils.flop_counter), % of the bf16 dense peak, peak memory;
     then the largest batch that fits (gradient checkpointing on);
  2. Lumen's cached step against the step of diffusers' ControlNet example at batch 8 (the ratio);
  3. the cached DataLoader's read speed alone, and a torch.profiler table of the eager step's top kernels;
  4. a 20-step end-to-end `lumen train` run in bf16 and one in fp16, with validation;
  5. layout extraction images/s (scripts/bench_layouts.py: SD early exit and the ViT backbones);
  6. the torch.compile'd training step at the same batch sizes (compilation takes minutes);
  7. sampling s/image at 20 steps, batch 16, eager and compiled (scripts/bench_sample.py).
Sections that would run past --budget are skipped and listed as skipped.
Without a GPU it runs a scaled-down version on the tiny model (64 px, small batches, 2-step runs, no compile)
and says so in its output and its files: it checks that the check works, not the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file from anywhere in the checkout

from benchmarking import device_name, peak_tflops  # noqa: E402 (after the path above)
from train_step_variants import (  # noqa: E402
    StepVariant,
    cached_loader_speed,
    compare,
    freeze_parts,
    frozen_models,
    largest_batch,
    model_flops,
)


@dataclass(frozen=True)
class Scale:
    """How big the check is: the real sizes on a GPU, tiny ones on the CPU."""

    model: str
    resolution: int
    precision: str
    batches: tuple[int, ...]
    rounds: int
    diffusers_batch: int
    loader_rows: int
    train_steps: int
    train_images: int
    sample_steps: int
    largest_from: int


GPU_SCALE = Scale("sd15", 512, "bf16", (8, 16, 32), 5, 8, 512, 20, 32, 20, 64)
CPU_SCALE = Scale("tiny", 64, "no", (2,), 2, 2, 16, 2, 8, 2, 0)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class Report:
    """The results so far, written as JSON and markdown after every section."""

    def __init__(self, out_dir: Path, name: str, scaled_down: bool) -> None:
        self.json_path = out_dir / f"{slug(name)}{'-scaled-down' if scaled_down else ''}.json"
        self.md_path = self.json_path.with_suffix(".md")
        self.data: dict = {"device": name, "scaled_down": scaled_down, "torch": torch.__version__,
                           "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "sections": {}, "skipped": []}
        self.lines: list[str] = []

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def write(self) -> None:
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        for path, text in ((self.json_path, json.dumps(self.data, indent=2)), (self.md_path, "\n".join(self.lines))):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text + "\n")
            tmp.replace(path)


def step_row(r, peak) -> str:
    percent = r.percent_of(peak)
    return (f"| {r.name} | {r.images_per_s:.2f} | {r.tflops_per_s:.3g} | "
            f"{'-' if percent is None else f'{percent:.1f} %'} | "
            f"{'-' if r.peak_memory_gib is None else f'{r.peak_memory_gib:.1f} GiB'} |")


def train_sweep(report: Report, parts, scale: Scale, peak, compiled: bool, deadline: float = float("inf")) -> None:
    """Section 1 (eager) or 6 (compiled): the cached step at each batch size, with and without checkpointing;
    batch sizes not started by ``deadline`` (a ``time.perf_counter()`` value) are listed as skipped (each
    compiled batch size compiles anew, which takes minutes)."""
    key = "train_step_compiled" if compiled else "train_step"
    report.say(f"\n## Cached training step, {scale.resolution} px, {scale.precision}"
               f"{', torch.compile' if compiled else ', eager'}\n")
    report.say("| variant | images/s | TFLOP/s | of bf16 peak | peak memory |")
    report.say("|---|---|---|---|---|")
    results = report.data["sections"].setdefault(key, [])
    base = StepVariant("eager", compile=compiled)
    for batch in scale.batches:
        if time.perf_counter() > deadline:
            report.say(f"| batch {batch} | skipped: past the time budget | | | |")
            report.data["skipped"].append(f"{key} batch {batch}")
            continue
        flops = {"cached": model_flops(parts, "cached", batch)}
        report.data["sections"]["flops_per_image"] = flops["cached"]
        variants = [replace(base, name=f"batch {batch}{' compiled' if compiled else ''}"),
                    replace(base, name=f"batch {batch}{' compiled' if compiled else ''} + checkpointing",
                            gradient_checkpointing=True)]
        try:
            rows = compare(parts, variants, batch, scale.rounds, flops, warmup=3 if compiled else 1)
        except torch.OutOfMemoryError:
            report.say(f"| batch {batch} | out of memory | | | |")
            torch.cuda.empty_cache()
            continue
        for r in rows:
            report.say(step_row(r, peak))
            results.append(asdict(r))
        report.write()
    if not compiled and scale.largest_from:
        def fits(batch: int) -> bool:
            try:
                compare(parts, [StepVariant("probe", gradient_checkpointing=True)], batch, 1, {}, warmup=1)
                return True
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                return False

        largest = largest_batch(fits, scale.largest_from)
        if largest:
            flops = {"cached": model_flops(parts, "cached", min(largest, 8))}
            r = compare(parts, [StepVariant(f"batch {largest} + checkpointing (largest)",
                                            gradient_checkpointing=True)], largest, scale.rounds, flops)[0]
            report.say(step_row(r, peak))
            results.append(asdict(r))
        report.data["sections"]["largest_batch_with_checkpointing"] = largest
    report.write()


def diffusers_ratio(report: Report, parts, scale: Scale, peak) -> None:
    batch = scale.diffusers_batch
    flops = {d: model_flops(parts, d, batch) for d in ("cached", "diffusers")}
    rows = compare(parts, [StepVariant("diffusers example", data="diffusers"), StepVariant("Lumen cached")],
                   batch, scale.rounds, flops)
    ratio = rows[0].seconds_per_step / rows[1].seconds_per_step
    report.say(f"\n## Against diffusers' ControlNet example step (batch {batch}, {scale.precision})\n")
    report.say("| variant | images/s | TFLOP/s | of bf16 peak | peak memory |")
    report.say("|---|---|---|---|---|")
    for r in rows:
        report.say(step_row(r, peak))
    report.say(f"\nLumen's cached step: **{ratio:.2f}x** the example's images/s (target >= 2x on a GPU).")
    report.data["sections"]["diffusers"] = {"rows": [asdict(r) for r in rows], "ratio": ratio}
    report.write()


def profile(report: Report, parts, scale: Scale, cuda: bool) -> None:
    """The top kernels of a few eager cached steps (torch.profiler): where the time goes, to compare with the
    share of peak."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler
    from train_step_variants import StepRunner

    batch = scale.batches[min(1, len(scale.batches) - 1)]
    runner = StepRunner(parts, StepVariant("profiled"), batch)
    runner()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profiler(activities=activities) as prof:
        for _ in range(3):
            runner()
        if cuda:
            torch.cuda.synchronize()
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60)
    report.say(f"\n## Profile: 3 eager cached steps at batch {batch}, top operators by {sort}\n\n```")
    for line in table.splitlines():
        report.say(line)
    report.say("```")
    report.data["sections"]["profile"] = {"batch": batch, "sort": sort, "table": table}
    del runner
    report.write()


def loader(report: Report, parts, scale: Scale, cuda: bool) -> None:
    rates = {w: cached_loader_speed(scale.resolution, parts.pca.n_components, parts.layout_grid, scale.loader_rows,
                                    scale.batches[0], w, pin_memory=cuda) for w in (0, 4 if cuda else 2)}
    report.say("\n## Cached DataLoader alone\n")
    for workers, rate in rates.items():
        report.say(f"- {workers} worker(s){', pinned memory' if cuda else ''}: {rate:.0f} images/s")
    report.data["sections"]["loader_images_per_s"] = {str(w): r for w, r in rates.items()}
    report.write()


def run_logged(command: list[str], timeout: float) -> tuple[int, str]:
    """Run a command of the checkout; returns its exit code and the tail of its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        return done.returncode, output
    except subprocess.TimeoutExpired as err:
        return 124, f"timed out after {timeout:.0f} s: {err}"


def end_to_end(report: Report, scale: Scale, work: Path, cuda: bool, timeout: float) -> None:
    """A model folder, synthetic data, the PCA and the cache, then train_controlnet.py in bf16 and in fp16."""
    from lumen.testing.synthetic_coco import write_synthetic_coco_stuff
    from lumen.testing.tiny_sd import build_sd15_architecture, save_tiny_sd

    model = save_tiny_sd(work / "tiny-sd")
    if scale.model == "sd15":  # SD 1.5's architecture with random weights, beside the tiny tokenizer
        model = work / "sd15-random"
        vae, unet, text_encoder, scheduler = build_sd15_architecture()
        for name, part in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder), ("scheduler", scheduler)):
            part.save_pretrained(model / name)
        (model / "tokenizer").mkdir(parents=True, exist_ok=True)
        for file in (work / "tiny-sd" / "tokenizer").iterdir():
            (model / "tokenizer" / file.name).write_bytes(file.read_bytes())
        (model / "model_index.json").write_bytes((work / "tiny-sd" / "model_index.json").read_bytes())
        del vae, unet, text_encoder
    data = write_synthetic_coco_stuff(work / "data", scale.train_images, 4, scale.resolution + 32, scale.resolution,
                                      progress=False)
    common = ["configs/tiny.yaml", f"output_dir={work / 'run'}", f"model.pretrained={model}", f"data.root={data}",
              f"data.resolution={scale.resolution}", "pca.num_samples=100", "pca.n_components=8",
              "pca.save_samples=false", "encode.visualize=0", f"model.dtype={'bfloat16' if cuda else 'float32'}"]
    report.say("\n## End-to-end train_controlnet.py runs\n")
    results = report.data["sections"].setdefault("end_to_end", {})
    from lumen_train.commands import encode_layouts, fit_pca

    for name, stage in (("fit_pca.py", fit_pca), ("encode_layouts.py", encode_layouts)):
        code = stage.main(common)  # the entry points' own main, in this process
        if code != 0:
            report.say(f"- scripts/{name} failed (exit {code}); its messages are above")
            results["prepare"] = f"failed: exit {code}"
            report.write()
            return
    for precision in ("bf16", "fp16"):
        if precision == "fp16" and not cuda:
            report.say("- fp16: needs a GPU (refused on the CPU, as the trainer refuses it): not run")
            results[precision] = "not run: needs a GPU"
            continue
        out = work / f"run-{precision}"
        args = [*common, f"output_dir={out}", f"train.mixed_precision={precision}",
                f"train.max_train_steps={scale.train_steps}", "train.batch_size=4",
                f"train.checkpointing_steps={scale.train_steps}", f"validation.steps={scale.train_steps}",
                "validation.num_images=2", f"validation.num_inference_steps={scale.sample_steps}",
                "train.report_to=none"]
        out.mkdir(parents=True, exist_ok=True)
        for folder in ("pca", "cache"):  # the prepared PCA and cache, shared by both runs
            if not (out / folder).exists():
                (out / folder).symlink_to(work / "run" / folder)
        start = time.perf_counter()
        code, output = run_logged([sys.executable, "-m", "lumen_train", "train", *args], timeout)
        seconds = time.perf_counter() - start
        grids = sorted(p.name for p in (out / "validation").glob("*.png")) if (out / "validation").is_dir() else []
        finished = code == 0 and (out / "controlnet" / "lumen.json").is_file() and bool(grids)
        results[precision] = {"exit_code": code, "seconds": round(seconds, 1), "finished": finished,
                              "validation_grids": grids}
        report.say(f"- {precision}: {'finished' if finished else 'FAILED'} (exit {code}) in {seconds:.0f} s, "
                   f"{scale.train_steps} steps, validation grids {grids}")
        if not finished:
            report.say(f"```\n{output[-3000:]}\n```")
        report.write()


def script_section(report: Report, key: str, title: str, command: list[str], timeout: float) -> None:
    code, output = run_logged([sys.executable, *command], timeout)
    lines = [line for line in output.splitlines() if line.startswith(("[", "    ")) and "Warning" not in line]
    report.say(f"\n## {title}\n\n`python {' '.join(command)}` (exit {code})\n\n```")
    for line in lines or output.splitlines()[-20:]:
        report.say(line)
    report.say("```")
    report.data["sections"][key] = {"exit_code": code, "output": lines}
    report.write()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "benchmarks",
                        help="where <gpu-name>.json and .md go")
    parser.add_argument("--budget", type=float, default=450, help="seconds; later sections are skipped past it")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 dense peak")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    scale = GPU_SCALE if cuda else CPU_SCALE
    name = device_name("cuda" if cuda else "cpu")
    peak = peak_tflops(name, args.peak_tflops)
    report = Report(args.out, name, scaled_down=not cuda)
    report.say(f"# GPU check: {name}\n")
    if cuda:
        report.say(f"torch {torch.__version__}, CUDA {torch.version.cuda}; bf16 dense peak "
                   f"{'unknown (--peak-tflops)' if peak is None else f'{peak:.0f} TFLOP/s'}")
    else:
        report.say("**No GPU: scaled down** (the tiny model at 64 px, small batches, 2-step runs, no compile). "
                   "This checks that the check runs; its figures say nothing about GPU speed.")
    report.data.update(peak_tflops=peak, scale=asdict(scale))
    report.write()

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    def section(key: str, needs: float, fn, *fn_args) -> None:
        if left() < needs:
            report.data["skipped"].append(key)
            report.say(f"\n(skipped {key}: {left():.0f} s of the budget left, it needs about {needs:.0f} s)")
            report.write()
            return
        fn(*fn_args)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from lumen.pretrained import MIXED_PRECISION_DTYPES

        parts = freeze_parts(*frozen_models(scale.model, work), device="cuda" if cuda else "cpu",
                             dtype=MIXED_PRECISION_DTYPES[scale.precision], resolution=scale.resolution,
                             n_components=20 if cuda else 8)
        deadline = started + args.budget
        section("train_step", 60, train_sweep, report, parts, scale, peak, False, deadline)
        section("diffusers", 30, diffusers_ratio, report, parts, scale, peak)
        section("loader", 10, loader, report, parts, scale, cuda)
        section("profile", 30, profile, report, parts, scale, cuda)
        if not cuda:
            del parts
        section("end_to_end", 120 if cuda else 20, end_to_end, report, scale, work, cuda,
                max(left() - 60, 60) if cuda else 300)
        if cuda:
            section("layout_extraction", 90, script_section, report, "layout_extraction", "Layout extraction",
                    ["scripts/bench_layouts.py", "--only", "extraction", "--dtype", "bfloat16", "--backbone",
                     "dinov2", "--backbone", "dino", "--backbone", "clip"], max(left() - 30, 60))
            section("train_step_compiled", 120, train_sweep, report, parts, scale, peak, True, deadline)
            del parts
            torch.cuda.empty_cache()
            section("sampling", 90, script_section, report, "sampling", "Sampling (20 steps, batch 16)",
                    ["scripts/bench_sample.py", "--skip-tiny", "--sd15", "--sd15-batch", "16", "--sd15-steps", "20",
                     "--repeats", "2"], max(left(), 60))
        else:
            for key in ("layout_extraction", "train_step_compiled", "sampling"):
                report.data["skipped"].append(key)
            report.say("\n(scaled down: layout extraction, the compiled step and sampling run only on a GPU)")
    report.data["seconds"] = round(time.perf_counter() - started, 1)
    report.say(f"\nTotal {report.data['seconds']:.0f} s{'; scaled down (no GPU)' if not cuda else ''}. "
               f"Written: {report.json_path} and {report.md_path.name}")
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
