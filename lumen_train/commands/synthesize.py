"""Synthetic training data from layouts: lumen synthesize CONFIG.yaml [more.yaml ...] [key=value ...]

For every image of synthesize.split (the first synthesize.limit), generates synthesize.images_per_source images
from its neural layout, with its first caption or the prompts of synthesize.prompts (in turn), and writes a new
data set under synthesize.out_root in the layout the source has (data.source: COCO's official layout, with label
maps where the source had them; an image folder, a save_to_disk dataset or tar shards, the prompts as captions;
see lumen.synthesis for the files). Work is
cut into shards of synthesize.shard_size sources, spread over the processes under lumen launch, and a
killed run resumes (finished shards are kept). The result passes lumen doctor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from tqdm import tqdm

from lumen.artifacts import ensure_writable, shard_ranges, shards_of_process
from lumen.build import SamplingSetup, split_dataset
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.data.sources import get_data_source
from lumen.errors import LumenError
from lumen.sampling.generated_dataset import SyntheticSplit, merge_shards, synthesize_shard, write_in_format
from lumen_train.distributed import close_processes, make_accelerator

PROG = "lumen synthesize"
# The config sections it reads (its --help lists only these and the top-level keys).
SECTIONS = ("model", "data", "layout", "sample", "synthesize")


def synthesize_on_processes(accelerator: Accelerator, target: SyntheticSplit, shards: list[range],
                            images_per_source: int, make_shard: Callable[[int, range, object], None],
                            has_labels: bool, provenance: dict,
                            merge: Callable[[], dict] | None = None) -> dict | None:
    """Run ``make_shard(shard, source indices, progress bar)`` for this process's unfinished shards, then
    merge (``merge()`` where given, else COCO's annotation files); returns the summary on the main process
    (None elsewhere)."""
    if accelerator.is_main_process:
        target.make_folders()
    accelerator.wait_for_everyone()
    mine = shards_of_process(len(shards), accelerator.process_index, accelerator.num_processes)
    todo = [shard for shard in mine if not target.shard_file(shard).is_file()]
    bar = tqdm(total=sum(len(shards[s]) for s in todo) * images_per_source, desc="synthesize", unit="img",
               disable=not accelerator.is_main_process)
    for shard in todo:
        make_shard(shard, shards[shard], bar)
    bar.close()
    accelerator.wait_for_everyone()
    summary = None
    if accelerator.is_main_process:
        summary = merge() if merge is not None else merge_shards(target, len(shards), has_labels, provenance)
    accelerator.wait_for_everyone()
    return summary


def synthesize(cfg: LumenConfig) -> Path:
    s = cfg.synthesize
    accelerator = make_accelerator()
    try:
        source = get_data_source(cfg.data.source)
        native = source.write is None  # the generator's own layout (COCO's) is the source's
        out = ensure_writable(s.out_root, "the synthetic data set")
        if not native and any(out.iterdir()):
            raise LumenError(f"synthesize.out_root={out} is not empty; the {cfg.data.source} data set is "
                             f"written there as a new folder: choose an empty or new one")
        # Other sources are generated in a working folder beside out_root, then written in their own layout.
        work = out if native else out.with_name(out.name + ".work")
        target = SyntheticSplit(work, s.out_split or s.split)
        setup = SamplingSetup(cfg, cfg.sample.controlnet)
        has_labels = native and source.label_maps is not None and source.label_maps(cfg.data, s.split) is not None
        dataset = split_dataset(cfg, s.split, labels="stuffthingmaps" if has_labels else "none", head=s.limit)
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
        merge = None
        if not native:
            def merge():
                return write_in_format(target, len(ranges), source.write, out, provenance)
        ranges = shard_ranges(count, s.shard_size)
        summary = synthesize_on_processes(accelerator, target, ranges, s.images_per_source, make_shard, has_labels,
                                          provenance, merge=merge)
    finally:
        close_processes(accelerator)
    if summary is not None:
        print(f"{summary['images']} generated images in {out} (split '{target.split}', "
              f"{cfg.data.source} layout); {len(summary['skipped_sources'])} unusable source images skipped")
        print(f"check it: lumen doctor CONFIG data.source={cfg.data.source} data.root={out} "
              f"data.train_split={target.split} data.val_split={target.split}")
    return out


def main(argv=None) -> int:
    synthesize(config_from_argv(argv, PROG, __doc__, SECTIONS))
    return 0
