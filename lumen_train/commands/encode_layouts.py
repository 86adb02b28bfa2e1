"""Cache layouts and VAE latents: python scripts/encode_layouts.py CONFIG.yaml [more.yaml ...] [key=value ...]

For every image of each split in encode.splits: the neural layout (all PCA components, float16, at the
feature grid), the VAE posterior mean and std, the image id and its captions, written to output_dir/cache/
in shards of encode.shard_size images. Under `accelerate launch` the shards are spread over the processes.
A killed run is resumed by running the same command: finished shards whose files still match their
recorded checksums are kept, damaged ones are named and encoded again. A cache made under other settings or
another PCA is refused. A split is refused as soon as more of its images are unusable than
data.max_bad_fraction allows. encode.visualize=K writes pictures of the first K layouts of each split.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lumen.artifacts import read_json
from lumen.build import build_extractor, cache_settings, layout_dtype, layout_settings, load_components, split_dataset
from lumen.cache import (INDEX_FILE, STOP_PREFIX, ShardRows, check_cache_settings, finish_split, load_cache,
                         remove_partial_shards, shard_name, shard_problems, shard_ranges, skipped_so_far,
                         write_cache_settings, write_shard)
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.errors import run_cli
from lumen.data.coco_stuff import collate_skipping_bad
from lumen.data.problems import ProblemLog
from lumen.layout import LayoutEncoder, check_pca_matches, save_layout_picture
from lumen.pca import load_pca
from lumen_train.distributed import close_processes, lock_folder_on_main, make_accelerator


def cache_dir(cfg: LumenConfig) -> Path:
    return Path(cfg.output_dir) / "cache"


def encode_split(cfg, split, extractor, encoder, accelerator, out: Path) -> None:
    dataset = split_dataset(cfg, split)
    split_dir = out / split
    ranges = shard_ranges(len(dataset), cfg.encode.shard_size)
    if accelerator.is_main_process:
        split_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_shards(split_dir)
    accelerator.wait_for_everyone()

    # 1. Which of this process's shards need (re)making: a finished shard counts only if every file's
    # checksum matches what was recorded when it was written.
    mine = [s for s in range(len(ranges)) if s % accelerator.num_processes == accelerator.process_index]
    todo = []
    for shard in mine:
        problems = shard_problems(split_dir, shard)
        if problems and problems != ["missing"]:
            print(f"{split}: {shard_name(shard)} is damaged ({'; '.join(problems)}): encoding it again", flush=True)
        if problems:
            todo.append(shard)
    done_before = int(accelerator.reduce(torch.tensor([len(mine) - len(todo)], device=accelerator.device),
                                         reduction="sum").item())
    if accelerator.is_main_process:
        print(f"{split}: {len(dataset)} images in {len(ranges)} shards ({done_before} already done)")

    # 2. Encode. Unusable images are counted as they are met (with those of finished shards and of other
    # processes): as soon as the split is certain to pass data.max_bad_fraction, every process stops.
    limit = cfg.data.max_bad_fraction * len(dataset)
    bar = tqdm(total=sum(len(ranges[s]) for s in todo), desc=f"encode {split}", unit="img",
               disable=not accelerator.is_main_process)
    start, seen, stopped = time.perf_counter(), 0, False
    warn_once = ProblemLog(split, cfg.data.max_bad_fraction)  # reports each unusable image as it is met
    captions_of = {record.image_id: record.captions for record in dataset.index.records}
    for shard in todo:
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, list(ranges[shard])),
                                             batch_size=cfg.layout.batch_size, num_workers=cfg.data.num_workers,
                                             collate_fn=collate_skipping_bad)
        rows, skipped = ShardRows.empty(), []
        for batch in loader:
            skipped += batch["bad"]
            for path, reason in batch["bad"]:
                warn_once.record(path, reason)
            # Past the limit with what this process met and what finished shards recorded, or another
            # process stopped already (its stop record is on disk).
            stopped = (batch["bad"] and len(skipped_so_far(split_dir)) + len(skipped) > limit) or any(
                split_dir.glob(STOP_PREFIX + "*"))
            if stopped:
                break
            if batch["pixel_values"] is not None:
                output = extractor(batch["pixel_values"])
                rows.add(batch["image_id"], [captions_of[int(i)] for i in batch["image_id"]], encoder(output.features),
                         output.latent_mean, output.latent_std)
            seen += len(batch["image_id"]) + len(batch["bad"])
            bar.update(len(batch["image_id"]) + len(batch["bad"]))
            bar.set_postfix(img_per_s=f"{seen / (time.perf_counter() - start):.2f}")
        if stopped:
            record = split_dir / f"{STOP_PREFIX}{accelerator.process_index}.json"
            record.write_text(json.dumps({"skipped": [list(p) for p in skipped]}))
            break
        write_shard(split_dir, shard, rows, skipped, tmp_suffix=f".{accelerator.process_index}")
    bar.close()
    accelerator.wait_for_everyone()

    # 3. Every process checks the bad-image share from what is on disk, so all stop together.
    problems = ProblemLog(split, cfg.data.max_bad_fraction)
    problems.problems.update(dict(map(tuple, skipped_so_far(split_dir))))
    if any(split_dir.glob(STOP_PREFIX + "*")):
        problems.check(len(dataset), stopped_early=True)
    if accelerator.is_main_process:
        finish_split(split_dir, len(ranges), extra={"split": split, "images": len(dataset)})
    accelerator.wait_for_everyone()
    index = read_json(split_dir / INDEX_FILE, f"the cache of split '{split}'", "run scripts/encode_layouts.py again")
    if accelerator.is_main_process:
        print(f"{split}: {index['rows']} rows cached in {split_dir}; {problems.summary(len(dataset))}")
    problems.check(len(dataset))
    if accelerator.is_main_process and cfg.encode.visualize > 0:
        write_pictures(dataset, load_cache(out, split), split_dir / "pictures", cfg.encode.visualize)
    accelerator.wait_for_everyone()


def write_pictures(dataset, rows, folder: Path, count: int) -> None:
    position = {r.image_id: i for i, r in enumerate(dataset.index.records)}
    for row in range(min(count, len(rows))):
        item = rows[row]
        image_id = int(item["image_id"])
        sample = dataset[position[image_id]]
        path = save_layout_picture(sample["pixel_values"], item["layout"].float(), folder / f"{image_id:012d}.png",
                                   caption=sample["caption"])
        print(f"  layout picture: {path}")


def encode_layouts(cfg: LumenConfig) -> Path:
    accelerator = make_accelerator()
    out = cache_dir(cfg)
    pca = load_pca(cfg.layout.pca_dir)
    dtype = layout_dtype(cfg, accelerator.device, pca)
    check_pca_matches(pca, layout_settings(cfg, dtype), cfg.layout.pca_dir)
    settings = cache_settings(cfg, pca)
    check_cache_settings(out, settings)  # on every process: a refusal stops all of them alike
    lock = lock_folder_on_main(accelerator, out, "encode_layouts.py")
    try:
        if accelerator.is_main_process:
            write_cache_settings(out, settings)
            save_config(cfg, out)
        accelerator.wait_for_everyone()
        parts = load_components(cfg, accelerator.device, dtype)
        extractor = build_extractor(cfg, parts)
        encoder = LayoutEncoder(pca)  # the cache keeps every component; truncation happens where layouts are used
        for split in cfg.encode.splits:
            encode_split(cfg, split, extractor, encoder, accelerator, out)
    finally:
        if lock is not None:
            lock.release()
        close_processes(accelerator)
    return out


def main(argv=None) -> int:
    cfg = config_from_argv(argv, "encode_layouts.py", __doc__.splitlines()[0])
    encode_layouts(cfg)
    return 0


def cli() -> None:
    """``scripts/encode_layouts.py`` and ``lumen-encode-layouts``."""
    sys.exit(run_cli(main, "encode_layouts.py"))


if __name__ == "__main__":
    cli()
