"""What training's check of the layout cache costs: python scripts/bench_cache.py [--images 10000] [--repeats 3]

Writes a cache split of --images rows at SD 1.5's sizes at 512 px (a 20 x 32 x 32 layout, a 4 x 64 x 64 latent
mean and std, all float16: 104 KB an image) in shards of 1000 into a temporary folder, then times, alternated,
medians of --repeats, opening it as training does without the check (``load_cache``: file sizes only) and with it
(every shard's SHA-256, ``train.verify_cache=true``), on one process (with several, each checks its share of the
shards). The files are in the page cache after writing, as on a machine that has just encoded them; read cold from
a disk, the check also reads every byte once.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from benchmarking import alternate

from lumen.artifacts import shard_ranges
from lumen.layout.cache import ShardRows, changed_shards, finish_split, load_cache, write_shard


def write_cache(folder: Path, images: int, components: int, grid: int, latent: int, shard_size: int) -> int:
    """A complete cache split of random rows; returns its size in bytes."""
    generator = torch.Generator().manual_seed(0)
    ranges = shard_ranges(images, shard_size)
    for shard, rows in enumerate(ranges):
        batch = ShardRows.empty()
        n = len(rows)
        batch.add(list(rows), [["a caption"]] * n, torch.randn(n, components, grid, grid, generator=generator),
                  torch.randn(n, 4, latent, latent, generator=generator),
                  torch.rand(n, 4, latent, latent, generator=generator))
        write_shard(folder / "train", shard, batch, [])
    finish_split(folder / "train", len(ranges))
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_cache.py", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--components", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=512, help="image size: the layout grid is 1/16 of it, "
                                                                    "the latent 1/8")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="lumen-bench-cache-"))
    try:
        size = write_cache(folder, args.images, args.components, args.resolution // 16, args.resolution // 8,
                           args.shard_size)
        print(f"cache: {args.images} images, {size / 1e9:.2f} GB in {len(list((folder / 'train').glob('shard-*')))} "
              f"shards")

        def verified():
            load_cache(folder, "train")
            assert not changed_shards(folder, "train")

        seconds = alternate({"sizes only": lambda: load_cache(folder, "train"), "SHA-256 of every shard": verified},
                            rounds=args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base, checked = seconds["sizes only"], seconds["SHA-256 of every shard"]
    print(f"open the split, sizes only (train.verify_cache=false): {base:.3f} s")
    print(f"open and check every SHA-256 (train.verify_cache=true): {checked:.3f} s "
          f"(+{checked - base:.2f} s, {size / 1e6 / max(checked - base, 1e-9):.0f} MB/s; medians of {args.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
