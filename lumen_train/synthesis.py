"""Synthetic data over several processes: the shards of sources are shared out, finished ones are kept, and
the main process writes the annotation files once every shard is done (``lumen.synthesis`` does the work)."""

from __future__ import annotations

from collections.abc import Callable

from accelerate import Accelerator
from tqdm import tqdm

from lumen.artifacts import shards_of_process
from lumen.synthesis import SyntheticSplit, merge_shards


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
