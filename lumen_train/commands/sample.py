"""Sample with a trained ControlNet: python scripts/sample.py CONFIG.yaml [more.yaml ...] [key=value ...]

Sources: image files (sample.images), image ids of a split (sample.image_ids), their cached layouts
(sample.from_cache=true), or the first sample.num_sources images of the split. For each source, one column
per prompt: its own caption first (files have none: the empty prompt), then every prompt of sample.prompts;
sample.num_images_per_prompt rows. sample.sweep_components=[1,3,5,10,20] instead draws one grid over the
number of layout components. Layouts are computed with the PCA and settings recorded in the ControlNet's
lumen.json; a ControlNet trained on other layouts is refused.

Writes to sample.out_dir: one grid PNG per source (source | layout | one column per prompt), every image as
its own PNG, and samples.json with every setting and seed. sample.replay=samples.json regenerates its images
(sample.replay_image=FILE for one) and reports whether they are identical.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lumen.artifacts import ensure_writable, read_json
from lumen.build import SamplingSetup
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.errors import run_cli
from lumen.layout import layout_to_image
from lumen.plotting import pyplot, save_figure, to_uint8_image
from lumen.sampling import SampleJob, run_jobs
from lumen.sources import SampleInputError, Source, compute_layouts, load_sources, source_from_json

SAMPLES_JSON = "samples.json"


def save_grid(source: Source, layout: torch.Tensor, columns: list[str], cells: dict, rows: int, path: Path,
              title: str) -> Path:
    """Source | layout | one column per entry of ``columns``; ``cells[(column, row)]`` are uint8 images."""
    width = 2 + len(columns)
    fig, axes = pyplot().subplots(rows, width, figsize=(2.4 * width, 2.5 * rows), squeeze=False)
    image = to_uint8_image(source.pixel_values)
    for r in range(rows):
        axes[r][0].imshow(image)
        axes[r][1].imshow(layout_to_image(layout, size=image.shape[0]))
        for c, label in enumerate(columns):
            axes[r][2 + c].imshow(cells[(c, r)])
            if r == 0:
                axes[r][2 + c].set_title(label[:38], fontsize=6, loc="left")
        for axis in axes[r]:
            axis.axis("off")
    axes[0][0].set_title(f"source {source.name}", fontsize=6, loc="left")
    axes[0][1].set_title("layout (components 1-3)", fontsize=6, loc="left")
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path, dpi=90)


def make_jobs(cfg: LumenConfig, sources: list[Source], resolution: int, n_components: int) -> list[SampleJob]:
    s = cfg.sample
    jobs, counter = [], 0
    for index, source in enumerate(sources):
        if s.sweep_components:
            variants = [(source.caption, 0, k) for k in s.sweep_components]
        else:
            prompts = [source.caption, *s.prompts]
            variants = [(prompt, p, s.n_components) for p, prompt in enumerate(prompts)]
        for prompt, prompt_index, k in variants:
            if k is not None and not 1 <= k <= n_components:
                raise SampleInputError(f"{k} components asked for, the ControlNet's layouts have 1..{n_components}")
            for repeat in range(s.num_images_per_prompt):
                jobs.append(SampleJob(index, prompt, prompt_index, repeat, s.seed + counter, k,
                                      s.num_inference_steps, s.guidance_scale, s.conditioning_scale,
                                      s.scheduler.value, resolution))
                counter += 1
    return jobs


def image_name(source: Source, job: SampleJob) -> str:
    k = "all" if job.n_components is None else job.n_components
    return f"{source.name}/p{job.prompt_index}-k{k}-r{job.repeat}.png"


def sample(cfg: LumenConfig) -> Path:
    s = cfg.sample
    if s.replay:
        return replay(cfg)
    resolution = s.resolution or cfg.data.resolution
    split = s.split or cfg.data.val_split
    out = ensure_writable(s.out_dir, "the samples")
    sampler = SamplingSetup(cfg, s.controlnet)
    sources = load_sources(cfg, resolution, split)
    layouts = compute_layouts(cfg, sources, sampler.extractor, sampler.encoder)
    jobs = make_jobs(cfg, sources, resolution, sampler.pca.n_components)
    with tqdm(total=len(jobs), desc="sampling", unit="img") as bar:
        images = run_jobs(sampler.pipe(s.scheduler.value), layouts, jobs, s.batch_size, progress=bar)

    records = []
    for position, (job, image) in enumerate(zip(jobs, images)):
        name = image_name(sources[job.source], job)
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out / name)
        # The batch is recorded too: batched kernels may round differently from one image alone, so an
        # exact replay regenerates the image within its batch.
        records.append(dict(job.to_json(), file=name, batch=position // s.batch_size))
    grids = []
    for index, source in enumerate(sources):
        mine = [(job, image) for job, image in zip(jobs, images) if job.source == index]
        if s.sweep_components:
            columns = [f"k = {k} components" for k in s.sweep_components]
            cells = {(s.sweep_components.index(j.n_components), j.repeat): im for j, im in mine}
        else:
            columns = ["caption: " + (source.caption or "(none)")] + [f"edit: {p}" for p in s.prompts]
            cells = {(j.prompt_index, j.repeat): im for j, im in mine}
        title = ("fewer components, more diversity" if s.sweep_components else "prompt edits") + \
            f" ({s.num_inference_steps} steps, guidance {s.guidance_scale}, seed {s.seed})"
        grids.append(save_grid(source, layouts[index], columns, cells, s.num_images_per_prompt,
                               out / f"{source.name}_{'sweep' if s.sweep_components else 'grid'}.png", title))
    metadata = {
        "settings": {"model": cfg.model.pretrained, "revision": cfg.model.revision, "controlnet": str(sampler.folder),
                     "pca_dir": cfg.layout.pca_dir, "dtype": str(sampler.dtype).replace("torch.", ""),
                     "device": str(sampler.device), "batch_size": s.batch_size, "lumen": sampler.metadata},
        "sources": [source.to_json() for source in sources],
        "images": records,
    }
    (out / SAMPLES_JSON).write_text(json.dumps(metadata, indent=2))
    save_config(cfg, out)
    print(f"{len(images)} images from {len(sources)} sources in {out}")
    for grid in grids:
        print(f"  grid: {grid}")
    print(f"  metadata (every setting and seed): {out / SAMPLES_JSON}")
    return out / SAMPLES_JSON


def replay(cfg: LumenConfig) -> Path:
    """Regenerate the images of a samples JSON (or one of them), each within its recorded batch, and compare
    them with the stored files."""
    path = Path(cfg.sample.replay)
    if not path.is_file():
        raise SampleInputError(f"sample.replay={path}: no such samples JSON")
    metadata = read_json(path, "sample.replay", "give a samples.json written by scripts/sample.py")
    records = metadata["images"]
    wanted = records
    if cfg.sample.replay_image:
        wanted = [r for r in records if r["file"] == cfg.sample.replay_image]
        if not wanted:
            raise SampleInputError(f"sample.replay_image={cfg.sample.replay_image} is not in {path}")
    batches = sorted({r["batch"] for r in wanted})
    members = [r for r in records if r["batch"] in batches]
    sampler = SamplingSetup(cfg, metadata["settings"]["controlnet"])
    resolution = members[0]["resolution"]
    order = sorted({r["source"] for r in members})
    sources = [source_from_json(cfg, metadata["sources"][i], resolution) for i in order]
    layouts = compute_layouts(cfg, sources, sampler.extractor, sampler.encoder)
    out = path.parent / "replay"
    identical = 0
    for batch in batches:
        batch_records = [r for r in members if r["batch"] == batch]
        jobs = [SampleJob(**{k: v for k, v in dict(r, source=order.index(r["source"])).items()
                             if k not in ("file", "batch")}) for r in batch_records]
        images = run_jobs(sampler.pipe(jobs[0].scheduler), layouts, jobs, len(jobs))
        for record, image in zip(batch_records, images):
            if record not in wanted:
                continue
            (out / record["file"]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(out / record["file"])
            stored = np.asarray(Image.open(path.parent / record["file"]).convert("RGB"))
            same = np.array_equal(stored, image)
            identical += same
            diff = 0 if same else int(np.abs(stored.astype(int) - image.astype(int)).max())
            print(f"  {record['file']}: {'identical' if same else f'differs (max {diff})'}")
    save_config(cfg, out)
    print(f"replayed {len(wanted)} images into {out}: {identical} identical to the stored ones")
    return out


def main(argv=None) -> int:
    cfg = config_from_argv(argv, "sample.py", __doc__.splitlines()[0])
    sample(cfg)
    return 0


def cli() -> None:
    """``scripts/sample.py`` and ``lumen-sample``."""
    sys.exit(run_cli(main, "sample.py"))


if __name__ == "__main__":
    cli()
