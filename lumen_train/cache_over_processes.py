"""The layout cache of a split over several processes (``lumen.layout.cache`` encodes and writes the shards).

Each process makes every num_processes-th shard that does not verify. Unusable images are counted as they are
met, together with those finished shards recorded and those of processes that stopped: as soon as the split
is certain to pass the limit, a process stops, leaves a stop record, and the others stop at their next batch.
Every process then reads the same counts from disk and refuses alike, so none waits on another.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm import tqdm

from lumen.artifacts import read_json, shard_name, shard_ranges, shards_of_process
from lumen.data.problems import ProblemLog
from lumen.layout.cache import (
    INDEX_FILE,
    STOP_PREFIX,
    CacheDamagedError,
    changed_shards,
    encode_samples,
    encode_shard,
    finish_split,
    remove_partial_shards,
    shard_problems,
    skipped_so_far,
    write_shard,
)


def _unfinished_shards(accelerator: Accelerator, split: str, split_dir: Path, num_shards: int) -> tuple[list[int], int]:
    """This process's shards that need (re)making, and how many of the split's shards are done already. A
    finished shard counts only if every file's checksum matches what was recorded when it was written; what a
    killed run left half-written is removed first."""
    if accelerator.is_main_process:
        split_dir.mkdir(parents=True, exist_ok=True)
        removed = remove_partial_shards(split_dir)
        if removed:
            print(f"{split}: removed {len(removed)} unfinished shard folder(s) an interrupted run left: "
                  f"{', '.join(p.name for p in removed)}", flush=True)
    accelerator.wait_for_everyone()
    todo = []
    for shard in shards_of_process(num_shards, accelerator.process_index, accelerator.num_processes):
        problems = shard_problems(split_dir, shard)
        if problems and problems != ["missing"]:
            print(f"{split}: {shard_name(shard)} is damaged ({'; '.join(problems)}): encoding it again", flush=True)
        if problems:
            todo.append(shard)
    missing = accelerator.reduce(torch.tensor([len(todo)], device=accelerator.device), reduction="sum").item()
    return todo, num_shards - int(missing)


def encode_split(accelerator: Accelerator, dataset, split: str, split_dir: Path, shard_size: int, extractor,
                 encoder, batch_size: int, num_workers: int, max_bad_fraction: float) -> tuple[dict, ProblemLog]:
    """Make or finish the cache of one split; returns its index and its unusable images (on every process).
    Raises ``TooManyBadInputs`` on every process when more than ``max_bad_fraction`` of the split is unusable."""
    ranges = shard_ranges(len(dataset), shard_size)
    todo, done = _unfinished_shards(accelerator, split, split_dir, len(ranges))
    if accelerator.is_main_process:
        print(f"{split}: {len(dataset)} images in {len(ranges)} shards ({done} already done)")

    # 2. Encode, stopping as soon as the unusable images are certain to pass the limit.
    limit = max_bad_fraction * len(dataset)
    warn_once = ProblemLog(split, max_bad_fraction)  # reports each unusable image as it is met

    def should_stop(unusable_in_shard: int) -> bool:
        if any(split_dir.glob(STOP_PREFIX + "*")):
            return True  # another process stopped already
        return unusable_in_shard > 0 and len(skipped_so_far(split_dir)) + unusable_in_shard > limit

    # The bar is closed on an error too, so that the message starts a line of its own.
    with tqdm(total=sum(len(ranges[s]) for s in todo), desc=f"encode {split}", unit="img",
              disable=not accelerator.is_main_process) as bar:
        for shard in todo:
            rows, skipped = encode_shard(extractor, encoder, dataset, ranges[shard], batch_size, num_workers,
                                         warn_once.record, should_stop, progress=bar)
            if rows is None:
                (split_dir / f"{STOP_PREFIX}{accelerator.process_index}.json").write_text(
                    json.dumps({"skipped": [list(p) for p in skipped]}))
                break
            write_shard(split_dir, shard, rows, skipped, tmp_suffix=f".{accelerator.process_index}")
    accelerator.wait_for_everyone()

    # 3. Every process checks the unusable share from what is on disk, so all stop together.
    problems = ProblemLog(split, max_bad_fraction)
    problems.problems.update(dict(map(tuple, skipped_so_far(split_dir))))
    if any(split_dir.glob(STOP_PREFIX + "*")):
        problems.check(len(dataset), stopped_early=True)
    if accelerator.is_main_process:
        finish_split(split_dir, len(ranges), extra={"split": split, "images": len(dataset)})
    accelerator.wait_for_everyone()
    problems.check(len(dataset))
    index = read_json(split_dir / INDEX_FILE, f"the cache of split '{split}'", "run lumen encode-layouts again")
    return index, problems


def encode_stream_split(accelerator: Accelerator, stream, split_dir: Path, extractor, encoder, resolution: int,
                        batch_size: int, max_bad_fraction: float) -> tuple[dict, ProblemLog]:
    """``encode_split`` for tar shards (a ``lumen.data.sources.webdataset.WebDatasetSplit``): cache shard i holds tar
    shard i, each process streams every num_processes-th tar shard, so no process reads another's shards and
    a killed run resumes at the first unfinished shard. The split's size is known only once it is read, so its
    unusable share is checked at the end (the finished shards are kept: a rerun with a higher
    data.max_bad_fraction only finishes the index)."""
    urls, split = stream.urls, stream.split
    todo, done = _unfinished_shards(accelerator, split, split_dir, len(urls))
    if accelerator.is_main_process:
        print(f"{split}: {len(urls)} tar shards ({done} already done)")
    warn_once = ProblemLog(split, max_bad_fraction)
    with tqdm(desc=f"encode {split}", unit="img", disable=not accelerator.is_main_process) as bar:
        for shard in todo:
            rows, skipped = encode_samples(extractor, encoder, stream.iter_shard(urls[shard]), resolution,
                                           batch_size, warn_once.record, lambda unusable: False, progress=bar)
            write_shard(split_dir, shard, rows, skipped, tmp_suffix=f".{accelerator.process_index}",
                        extra={"read_from": urls[shard], "process": accelerator.process_index})
    accelerator.wait_for_everyone()
    problems = ProblemLog(split, max_bad_fraction)
    problems.problems.update(dict(map(tuple, skipped_so_far(split_dir))))
    if accelerator.is_main_process:
        finish_split(split_dir, len(urls), extra={"split": split, "shards_read": urls})
    accelerator.wait_for_everyone()
    index = read_json(split_dir / INDEX_FILE, f"the cache of split '{split}'", "run lumen encode-layouts again")
    problems.check(index["images"])
    return index, problems


def verify_cache_split(accelerator: Accelerator, cache_dir: Path, split: str) -> None:
    """Check every shard's SHA-256 sums before training reads the split, each process a disjoint share of the
    shards; raises ``CacheDamagedError`` on every process alike, naming each changed shard."""
    index = read_json(cache_dir / split / INDEX_FILE, f"the cache of split '{split}'",
                      "run 'lumen encode-layouts CONFIG' again")
    mine = shards_of_process(len(index["shards"]), accelerator.process_index, accelerator.num_processes)
    with tqdm(total=len(mine), desc=f"verify cache {split}", unit="shard",
              disable=not accelerator.is_main_process) as bar:
        changed = changed_shards(cache_dir, split, mine, progress=bar)
    if accelerator.num_processes > 1:
        changed = gather_object(changed)
    if changed:
        raise CacheDamagedError(
            f"the cache of split '{split}' in {cache_dir} changed since it was written: {', '.join(sorted(changed))}. "
            f"Run 'lumen encode-layouts CONFIG' again: it re-encodes those shards (or skip this check "
            f"with train.verify_cache=false)")
