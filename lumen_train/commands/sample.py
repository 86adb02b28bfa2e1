"""Sample with a trained ControlNet: lumen sample CONFIG.yaml [more.yaml ...] [key=value ...]

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

import sys
from pathlib import Path

from tqdm import tqdm

from lumen.artifacts import ensure_writable
from lumen.build import SamplingSetup, split_dataset
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.sampling.pipeline import run_jobs
from lumen.sampling.sample_set import make_jobs, read_sample_set, replay_batches, replay_plan, write_sample_set
from lumen.sampling.source_images import compute_layouts, load_sources, source_from_json

PROG = "lumen sample"
# The config sections it reads (its --help lists only these and the top-level keys).
SECTIONS = ("model", "data", "layout", "sample")


def sample(cfg: LumenConfig) -> Path:
    s = cfg.sample
    resolution = s.resolution or cfg.data.resolution
    out = ensure_writable(s.out_dir, "the samples")
    sampler = SamplingSetup(cfg, s.controlnet)
    open_split = lambda split: split_dataset(  # noqa: E731
        cfg, split, head=s.num_sources, image_ids=list(s.image_ids) or None)
    sources = load_sources(list(s.images), list(s.image_ids), s.num_sources, s.from_cache,
                           s.split or cfg.data.val_split, open_split, resolution)
    layouts = compute_layouts(sources, sampler.extractor, sampler.encoder, Path(cfg.output_dir) / "cache")
    jobs = make_jobs(s, sources, resolution, sampler.pca.n_components)
    uncaptioned = [source.name for source in sources if not source.caption]
    if uncaptioned:  # image files have no caption: their first column follows the layout alone
        every = not s.prompts or bool(s.sweep_components)
        print(f"note: {len(uncaptioned)} source(s) have no caption ({', '.join(uncaptioned[:5])}"
              f"{' ...' if len(uncaptioned) > 5 else ''}): their "
              f"{'images are' if every else 'caption column is'} sampled with the empty prompt, from the layout "
              f"alone" + ("; give prompts with sample.prompts=[...]" if every else ""), file=sys.stderr)
    with tqdm(total=len(jobs), desc="sampling", unit="img") as bar:
        images = run_jobs(sampler.pipe(s.scheduler.value), layouts, jobs, s.batch_size, progress=bar,
                          batch_invariant=sampler.batch_invariant)
    settings = {"model": cfg.model.pretrained, "revision": cfg.model.revision, "controlnet": str(sampler.folder),
                "pca_dir": cfg.layout.pca_dir, "dtype": str(sampler.dtype).replace("torch.", ""),
                "device": str(sampler.device), "batch_size": s.batch_size, "lumen": sampler.metadata}
    path, grids = write_sample_set(out, sources, layouts, jobs, images, s, settings)
    save_config(cfg, out)
    print(f"{len(images)} images from {len(sources)} sources in {out}")
    for grid in grids:
        print(f"  grid: {grid}")
    print(f"  metadata (every setting and seed): {path}")
    return path


def replay(cfg: LumenConfig) -> Path:
    """Regenerate the images of a samples JSON (or one of them) and compare them with the stored files."""
    path = Path(cfg.sample.replay)
    metadata = read_sample_set(path)
    wanted, members = replay_plan(metadata, cfg.sample.replay_image)
    sampler = SamplingSetup(cfg, metadata["settings"]["controlnet"])
    order = sorted({r["source"] for r in members})
    ids = [metadata["sources"][i]["image_id"] for i in order if metadata["sources"][i].get("image_id") is not None]
    open_split = lambda split: split_dataset(cfg, split, image_ids=ids)  # noqa: E731
    sources = [source_from_json(metadata["sources"][i], members[0]["resolution"], open_split) for i in order]
    layouts = compute_layouts(sources, sampler.extractor, sampler.encoder, Path(cfg.output_dir) / "cache")
    out = ensure_writable(path.parent / "replay", "the replayed samples")
    identical = replay_batches(sampler.pipe, layouts, order, wanted, members, path.parent, out)
    save_config(cfg, out)
    print(f"replayed {len(wanted)} images into {out}: {identical} identical to the stored ones")
    return out


def main(argv=None) -> int:
    cfg = config_from_argv(argv, PROG, __doc__, SECTIONS)
    if cfg.sample.replay:
        replay(cfg)
    else:
        sample(cfg)
    return 0
