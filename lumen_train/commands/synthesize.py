"""Synthetic training data from layouts: python scripts/synthesize.py CONFIG.yaml [more.yaml ...] [key=value ...]

For every image of synthesize.split (the first synthesize.limit), generates synthesize.images_per_source images
from its neural layout, with its first caption or the prompts of synthesize.prompts (in turn), and writes a new
data set in the official COCO layout under synthesize.out_root (see lumen.synthesis for the files). Work is
cut into shards of synthesize.shard_size sources, spread over the processes under `accelerate launch`, and a
killed run resumes (finished shards are kept). The result passes scripts/doctor.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lumen.artifacts import ensure_writable, shard_ranges
from lumen.build import SamplingSetup, split_dataset
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.data.paths import resolve_split_paths
from lumen.errors import run_cli
from lumen.synthesis import SyntheticSplit, synthesize_shard
from lumen_train.distributed import close_processes, make_accelerator
from lumen_train.synthesis import synthesize_on_processes


def synthesize(cfg: LumenConfig) -> Path:
    s = cfg.synthesize
    accelerator = make_accelerator()
    try:
        target = SyntheticSplit(ensure_writable(s.out_root, "the synthetic data set"), s.out_split or s.split)
        setup = SamplingSetup(cfg, cfg.sample.controlnet)
        has_labels = resolve_split_paths(cfg.data, s.split).label_maps_dir is not None
        dataset = split_dataset(cfg, s.split, labels="stuffthingmaps" if has_labels else "none")
        count = len(dataset) if s.limit is None else min(s.limit, len(dataset))
        if accelerator.is_main_process:
            save_config(cfg, target.root, "lumen_config.yaml")
        pipe = setup.pipe(cfg.sample.scheduler.value)

        def make_shard(shard, indices, bar):
            synthesize_shard(target, shard, dataset, indices, pipe, setup.extractor, setup.encoder, list(s.prompts),
                             s.images_per_source, cfg.sample, cfg.data.resolution, progress=bar,
                             tmp_suffix=str(accelerator.process_index))

        provenance = {"source": f"{cfg.data.root} ({s.split})", "controlnet": str(setup.folder),
                      "source_split": s.split, "prompts": list(s.prompts), "images_per_source": s.images_per_source,
                      "seed": cfg.sample.seed}
        summary = synthesize_on_processes(accelerator, target, shard_ranges(count, s.shard_size),
                                          s.images_per_source, make_shard, has_labels, provenance)
    finally:
        close_processes(accelerator)
    if summary is not None:
        print(f"{summary['images']} generated images in {target.root} (split '{target.split}'); "
              f"{len(summary['skipped_sources'])} unusable source images skipped")
        print(f"check it: python scripts/doctor.py CONFIG data.root={target.root} data.train_split={target.split} "
              f"data.val_split={target.split}")
    return target.root


def main(argv=None) -> int:
    synthesize(config_from_argv(argv, "synthesize.py", __doc__.splitlines()[0]))
    return 0


def cli() -> None:
    """``scripts/synthesize.py`` and ``lumen-synthesize``."""
    sys.exit(run_cli(main, "synthesize.py"))


if __name__ == "__main__":
    cli()
