"""The on-disk cache of neural layouts and VAE latent distributions, one Hugging Face ``datasets`` table per shard.

Layout of ``<cache_dir>``::

    cache.json                      settings every shard was made under (layout settings, PCA fingerprint)
    <split>/shard-00000/            a ``datasets`` folder (Arrow, memory-mapped on load) + shard.json
    <split>/shard-00001/ ...
    <split>/index.json              written last, when every shard of the split exists: the split is complete

Rows: ``image_id`` (int64), ``captions`` (list of str), ``layout`` ``(N, h, w)`` float16 at the feature grid,
``latent_mean`` and ``latent_std`` ``(4, H/8, W/8)`` float16 (the VAE posterior, so training can still draw a
fresh latent every step, exactly as on the fly). A shard is written under a temporary name and renamed, so
after a kill the finished shards are kept and only the others are redone. Arrow was chosen for being
memory-mapped (no loading time, shared between DataLoader workers) and columnar with fixed-shape arrays.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from lumen.errors import LumenError

SETTINGS_FILE = "cache.json"
INDEX_FILE = "index.json"
SHARD_META = "shard.json"


class CacheMismatchError(LumenError, ValueError):
    """A cache made under other settings (another PCA, model, resolution, ...) than the config's."""


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def shard_ranges(num_items: int, shard_size: int) -> list[range]:
    """Item ranges of the shards: shard s holds items ``[s * shard_size, (s + 1) * shard_size)``."""
    return [range(start, min(start + shard_size, num_items)) for start in range(0, num_items, shard_size)]


def check_cache_settings(cache_dir: str | Path, expected: dict[str, Any]) -> None:
    """Refuse a cache whose ``cache.json`` differs from ``expected``, saying what differs and what to do."""
    path = Path(cache_dir) / SETTINGS_FILE
    if not path.is_file():
        return
    found = json.loads(path.read_text())
    keys = sorted(set(found) | set(expected))
    differences = [f"  {k}: {found.get(k)!r} (cache) vs {expected.get(k)!r} (config)"
                   for k in keys if found.get(k) != expected.get(k)]
    if differences:
        raise CacheMismatchError(
            f"the cache in {cache_dir} was made with other settings than the config's:\n" + "\n".join(differences)
            + f"\nDelete {cache_dir} to rebuild it, or point the config at the PCA and settings it was made with."
        )


def write_cache_settings(cache_dir: str | Path, settings: dict[str, Any]) -> None:
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    check_cache_settings(cache_dir, settings)
    (cache_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))


def shard_done(split_dir: Path, shard: int) -> bool:
    return (split_dir / shard_name(shard) / SHARD_META).is_file()


def remove_partial_shards(split_dir: Path) -> None:
    """Remove what a killed run left half-written (temporary shard folders)."""
    for partial in split_dir.glob("shard-*.tmp*"):
        shutil.rmtree(partial, ignore_errors=True)


@dataclass
class ShardRows:
    """Columns of one shard, filled batch by batch."""

    image_id: list
    captions: list
    layout: list
    latent_mean: list
    latent_std: list

    @classmethod
    def empty(cls) -> "ShardRows":
        return cls([], [], [], [], [])

    def add(self, image_ids, captions, layouts, latent_means, latent_stds) -> None:
        """Append a batch: ids (B,), captions (B lists), layouts (B, N, h, w), latents (B, 4, H/8, W/8)."""
        self.image_id += [int(i) for i in image_ids]
        self.captions += [list(c) for c in captions]
        for column, batch in ((self.layout, layouts), (self.latent_mean, latent_means),
                              (self.latent_std, latent_stds)):
            column += list(batch.detach().cpu().to(torch.float16).numpy())


def write_shard(split_dir: Path, shard: int, rows: ShardRows, skipped: list[tuple[str, str]],
                tmp_suffix: str = "") -> Path:
    """Write one shard as a ``datasets`` folder, under a temporary name first; ``shard.json`` marks it done."""
    from datasets import Array3D, Dataset, Features, Sequence, Value
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # one bar per shard would drown the encoding's own progress bar

    final = split_dir / shard_name(shard)
    tmp = split_dir / (shard_name(shard) + ".tmp" + tmp_suffix)
    shutil.rmtree(tmp, ignore_errors=True)
    features = Features({"image_id": Value("int64"), "captions": Sequence(Value("string"))})
    for name in ("layout", "latent_mean", "latent_std"):
        column = getattr(rows, name)
        shape = tuple(column[0].shape) if column else (1, 1, 1)
        features[name] = Array3D(shape=shape, dtype="float16")
    table = Dataset.from_dict({name: getattr(rows, name) for name in features}, features=features)
    table.save_to_disk(str(tmp))
    (tmp / SHARD_META).write_text(json.dumps({"rows": len(rows.image_id), "skipped": skipped}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def finish_split(split_dir: Path, num_shards: int, extra: Optional[dict] = None) -> dict:
    """Write ``index.json`` once every shard exists; returns it (rows, skipped images, shards)."""
    missing = [s for s in range(num_shards) if not shard_done(split_dir, s)]
    if missing:
        raise RuntimeError(f"{split_dir}: shards {missing} are missing; run the encoding again to finish them")
    metas = [json.loads((split_dir / shard_name(s) / SHARD_META).read_text()) for s in range(num_shards)]
    index = dict(extra or {}, shards=[shard_name(s) for s in range(num_shards)],
                 rows=sum(m["rows"] for m in metas), skipped=[p for m in metas for p in m["skipped"]])
    (split_dir / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return index


def load_cache(cache_dir: str | Path, split: str, expected_settings: Optional[dict[str, Any]] = None):
    """The cached rows of a split as one memory-mapped ``datasets.Dataset`` (torch format).

    With ``expected_settings`` the cache must have been made under exactly those settings.
    """
    from datasets import concatenate_datasets, load_from_disk

    cache_dir = Path(cache_dir)
    if expected_settings is not None:
        check_cache_settings(cache_dir, expected_settings)
    split_dir = cache_dir / split
    if not (split_dir / INDEX_FILE).is_file():
        raise FileNotFoundError(f"no complete cache for split '{split}' in {cache_dir} (no {INDEX_FILE}); "
                                f"run 'python scripts/encode_layouts.py CONFIG' to make or finish it")
    index = json.loads((split_dir / INDEX_FILE).read_text())
    tables = [load_from_disk(str(split_dir / name)) for name in index["shards"]]
    tables = [t for t in tables if len(t)]
    return concatenate_datasets(tables).with_format("torch", columns=["image_id", "layout", "latent_mean",
                                                                       "latent_std"], output_all_columns=True)

