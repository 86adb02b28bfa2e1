"""A set of samples on disk: every image as a PNG, a grid per source, and ``samples.json`` with every setting
and seed, from which ``replay_batches`` makes the same images again.

``samples.json``: ``settings`` (model, ControlNet, PCA, dtype, device, batch size, the ControlNet's lumen.json),
``sources`` (``SourceImage.to_json``) and ``images``: one ``SampleJob`` each, with its ``file`` and its ``batch``
(batched kernels may round differently from one image alone, so an exact replay regenerates an image within
its recorded batch).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from lumen.artifacts import read_json
from lumen.config import SampleConfig
from lumen.plotting import to_uint8_image
from lumen.sampling.grids import GridRow, save_sample_grid
from lumen.sampling.pipeline import SampleJob, run_jobs
from lumen.sampling.source_images import SampleInputError, SourceImage

SAMPLES_JSON = "samples.json"


def make_jobs(sample: SampleConfig, sources: list[SourceImage], resolution: int, n_components: int) -> list[SampleJob]:
    """Per source: its caption then every prompt edit (or one job per k of ``sample.sweep_components``), each
    ``sample.num_images_per_prompt`` times. Repeat r of source i gets seed ``sample.seed + i * repeats + r``
    for every prompt and every k, so that the columns of a grid differ only by their prompt (or k)."""
    jobs = []
    repeats = sample.num_images_per_prompt
    for index, source in enumerate(sources):
        if sample.sweep_components:
            variants = [(source.caption, 0, k) for k in sample.sweep_components]
        else:
            prompts = [source.caption, *sample.prompts]
            variants = [(prompt, p, sample.n_components) for p, prompt in enumerate(prompts)]
        for prompt, prompt_index, k in variants:
            if k is not None and not 1 <= k <= n_components:
                raise SampleInputError(f"{k} components asked for, the ControlNet's layouts have 1..{n_components}")
            for repeat in range(repeats):
                jobs.append(SampleJob(index, prompt, prompt_index, repeat, sample.seed + index * repeats + repeat, k,
                                      sample.num_inference_steps, sample.guidance_scale, sample.conditioning_scale,
                                      sample.scheduler.value, resolution))
    return jobs


def image_name(source: SourceImage, job: SampleJob) -> str:
    k = "all" if job.n_components is None else job.n_components
    return f"{source.name}/p{job.prompt_index}-k{k}-r{job.repeat}.png"


def write_sample_set(out: Path, sources: list[SourceImage], layouts: torch.Tensor, jobs: list[SampleJob],
                     images: list[np.ndarray], sample: SampleConfig, settings: dict) -> tuple[Path, list[Path]]:
    """Write the images, a grid per source and ``samples.json`` (with ``settings``); returns the JSON's path and
    the grids'. ``layouts`` is ``(S, N, h, w)``, ``images`` one ``(R, R, 3)`` uint8 array per job."""
    records = []
    for position, (job, image) in enumerate(zip(jobs, images)):
        name = image_name(sources[job.source], job)
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out / name)
        records.append(dict(job.to_json(), file=name, batch=position // sample.batch_size))
    sweep = bool(sample.sweep_components)
    title = (("fewer components, more diversity" if sweep else "prompt edits")
             + f" ({sample.num_inference_steps} steps, guidance {sample.guidance_scale}, seed {sample.seed})")
    grids = []
    for index, source in enumerate(sources):
        mine = [(job, image) for job, image in zip(jobs, images) if job.source == index]
        if sweep:
            labels = [f"k = {k} components" for k in sample.sweep_components]
            column_of = {k: c for c, k in enumerate(sample.sweep_components)}
            cells = {(column_of[j.n_components], j.repeat): im for j, im in mine}
        else:
            labels = ["caption: " + (source.caption or "(none)")] + [f"edit: {p}" for p in sample.prompts]
            cells = {(j.prompt_index, j.repeat): im for j, im in mine}
        picture = to_uint8_image(source.pixel_values)
        rows = [GridRow(picture, f"source {source.name}" if r == 0 else "", layouts[index],
                        [cells[(c, r)] for c in range(len(labels))], labels if r == 0 else [""] * len(labels))
                for r in range(sample.num_images_per_prompt)]
        grids.append(save_sample_grid(rows, out / f"{source.name}_{'sweep' if sweep else 'grid'}.png", title,
                                      layout_title="layout (components 1-3)"))
    metadata = {"settings": settings, "sources": [source.to_json() for source in sources], "images": records}
    (out / SAMPLES_JSON).write_text(json.dumps(metadata, indent=2))
    return out / SAMPLES_JSON, grids


def read_sample_set(path: str | Path) -> dict:
    """A ``samples.json`` written by ``write_sample_set``; a missing or damaged one is refused."""
    path = Path(path)
    if not path.is_file():
        raise SampleInputError(f"{path}: no such samples JSON; make one with lumen sample")
    metadata = read_json(path, "the samples JSON", "give a samples.json written by lumen sample")
    if not isinstance(metadata, dict) or not {"settings", "sources", "images"} <= set(metadata):
        raise SampleInputError(f"{path} is not a samples JSON of lumen sample (no settings, sources, images)")
    return metadata


def replay_plan(metadata: dict, only: Optional[str]) -> tuple[list[dict], list[dict]]:
    """(the image records to regenerate, every record of their batches, which are regenerated with them)."""
    records = metadata["images"]
    wanted = records if only is None else [r for r in records if r["file"] == only]
    if not wanted:
        raise SampleInputError(f"sample.replay_image={only} is not one of the images of the samples JSON")
    batches = {r["batch"] for r in wanted}
    return wanted, [r for r in records if r["batch"] in batches]


def replay_batches(pipe_for: Callable[[str], object], layouts: torch.Tensor, source_order: list[int],
                   wanted: list[dict], members: list[dict], root: Path, out: Path) -> int:
    """Regenerate ``wanted`` images, each within its recorded batch, into ``out``; compare each with the stored
    file below ``root`` and print the outcome. ``layouts[i]`` belongs to source ``source_order[i]``.
    Returns how many came out identical."""
    identical = 0
    for batch in sorted({r["batch"] for r in members}):
        batch_records = [r for r in members if r["batch"] == batch]
        jobs = [SampleJob(**{k: v for k, v in dict(r, source=source_order.index(r["source"])).items()
                             if k not in ("file", "batch")}) for r in batch_records]
        images = run_jobs(pipe_for(jobs[0].scheduler), layouts, jobs, len(jobs))
        for record, image in zip(batch_records, images):
            if record not in wanted:
                continue
            (out / record["file"]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(out / record["file"])
            stored = np.asarray(Image.open(root / record["file"]).convert("RGB"))
            same = np.array_equal(stored, image)
            identical += same
            diff = 0 if same else int(np.abs(stored.astype(int) - image.astype(int)).max())
            print(f"  {record['file']}: {'identical' if same else f'differs (max {diff})'}")
    return identical
