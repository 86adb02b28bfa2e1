"""The on-disk cache of neural layouts and VAE latent distributions, one Hugging Face ``datasets`` table per shard.

Layout of ``<cache_dir>``::

    cache.json                      settings every shard was made under (layout settings, PCA fingerprint)
    <split>/shard-00000/            a ``datasets`` folder (Arrow, memory-mapped on load) + shard.json
    <split>/shard-00001/ ...
    <split>/index.json              written last, when every shard of the split exists: the split is complete

Rows: ``image_id`` (int64), ``captions`` (list of str), ``layout`` ``(N, h, w)`` float16 at the feature grid,
``latent_mean`` and ``latent_std`` ``(4, H/8, W/8)`` float16 (the VAE posterior, so training can still draw a
fresh latent every step, exactly as on the fly). A shard is written under a temporary name and renamed, so
after a kill the finished shards are kept and only the others are redone. Its ``shard.json`` records the row
count and the size and SHA-256 of each of its files: the encoding re-checks every sum before it counts a shard
as done (a damaged shard is named and made again), and loading checks the sizes (a truncated or lost file is
named with the command that repairs it). Arrow was chosen for being
memory-mapped (no loading time, shared between DataLoader workers) and columnar with fixed-shape arrays.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from lumen.artifacts import (
    DamagedArtifactError,
    file_manifest,
    manifest_problems,
    read_json,
    setting_differences,
    shard_name,
)
from lumen.errors import LumenError, writing

SETTINGS_FILE = "cache.json"
INDEX_FILE = "index.json"
SHARD_META = "shard.json"


class CacheMismatchError(LumenError, ValueError):
    """A cache made under other settings (another PCA, model, resolution, ...) than the config's."""


class CacheDamagedError(DamagedArtifactError):
    """A cache split that is incomplete, or whose shards lost or changed files since they were written."""


def check_cache_settings(cache_dir: str | Path, expected: dict[str, Any]) -> None:
    """Refuse a cache whose ``cache.json`` differs from ``expected``, saying what differs and what to do."""
    path = Path(cache_dir) / SETTINGS_FILE
    if not path.is_file():
        return
    found = read_json(path, f"the layout cache in {cache_dir}", f"delete {cache_dir} and run lumen encode-layouts")
    differences = setting_differences(found, expected, "cache", "config")
    if differences:
        raise CacheMismatchError(
            f"the cache in {cache_dir} was made with other settings than the config's:\n  " + "\n  ".join(differences)
            + f"\nDelete {cache_dir} to rebuild it, or point the config at the PCA and settings it was made with."
        )


def write_cache_settings(cache_dir: str | Path, settings: dict[str, Any]) -> None:
    cache_dir = Path(cache_dir)
    check_cache_settings(cache_dir, settings)
    with writing(cache_dir, "the layout cache"):
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))


def shard_problems(split_dir: Path, shard: int, checksums: bool = True) -> list[str]:
    """What is wrong with a finished shard (empty: it verifies). A missing folder is ``["missing"]``."""
    folder = split_dir / shard_name(shard)
    if not folder.is_dir():
        return ["missing"]
    try:
        meta = json.loads((folder / SHARD_META).read_text())
    except FileNotFoundError:
        return [f"{SHARD_META} is missing"]
    except (json.JSONDecodeError, UnicodeDecodeError):
        return [f"{SHARD_META} is damaged"]
    if "files" not in meta:
        return [f"{SHARD_META} records no file sizes (written by an older version of Lumen)"]
    return manifest_problems(folder, meta["files"], checksums=checksums)


def shard_done(split_dir: Path, shard: int) -> bool:
    return not shard_problems(split_dir, shard)


def remove_partial_shards(split_dir: Path) -> list[Path]:
    """Remove what a killed or stopped run left half-written (temporary shard folders, stop records); returns the
    shard folders removed."""
    partial = sorted(split_dir.glob("shard-*.tmp*"))
    for folder in partial:
        shutil.rmtree(folder, ignore_errors=True)
    for record in split_dir.glob(STOP_PREFIX + "*"):
        record.unlink()
    return partial


STOP_PREFIX = "stopped-"  # stopped-<process>.json: the unusable images a process met before the limit stopped it


def skipped_so_far(split_dir: Path) -> list[list[str]]:
    """``[path, reason]`` of every unusable image recorded by finished shards and by stopped processes."""
    found = []
    for meta in sorted(split_dir.glob(f"shard-?????/{SHARD_META}")) + sorted(split_dir.glob(STOP_PREFIX + "*")):
        try:
            found += json.loads(meta.read_text())["skipped"]
        except (OSError, ValueError, KeyError):
            continue  # being written by another process, or damaged: counted once it is complete
    return found


@dataclass
class ShardRows:
    """Columns of one shard, filled batch by batch."""

    image_id: list
    captions: list
    layout: list
    latent_mean: list
    latent_std: list

    @classmethod
    def empty(cls) -> ShardRows:
        return cls([], [], [], [], [])

    def add(self, image_ids, captions, layouts, latent_means, latent_stds) -> None:
        """Append a batch: ids (B,), captions (B lists), layouts (B, N, h, w), latents (B, 4, H/8, W/8)."""
        self.image_id += [int(i) for i in image_ids]
        self.captions += [list(c) for c in captions]
        for column, batch in ((self.layout, layouts), (self.latent_mean, latent_means),
                              (self.latent_std, latent_stds)):
            column += list(batch.detach().cpu().to(torch.float16).numpy())


def write_shard(split_dir: Path, shard: int, rows: ShardRows, skipped: list[tuple[str, str]],
                tmp_suffix: str = "", extra: Optional[dict] = None) -> Path:
    """Write one shard as a ``datasets`` folder, under a temporary name first; ``shard.json`` marks it done
    (``extra``: more to record there, e.g. the tar shard it was read from)."""
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
    try:
        with writing(tmp, f"cache shard {final.name}"):
            table.save_to_disk(str(tmp))
            meta = dict(extra or {}, rows=len(rows.image_id), skipped=skipped,
                        files=file_manifest(tmp, checksums=True))
            (tmp / SHARD_META).write_text(json.dumps(meta, indent=2))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # gives a full disk its space back
        raise
    return final


def finish_split(split_dir: Path, num_shards: int, extra: Optional[dict] = None) -> dict:
    """Write ``index.json`` once every shard exists; returns it (rows, skipped images, shards)."""
    missing = [shard_name(s) for s in range(num_shards) if shard_problems(split_dir, s, checksums=False)]
    if missing:
        raise CacheDamagedError(f"{split_dir}: {', '.join(missing)} missing or incomplete; run "
                                f"lumen encode-layouts again to finish them")
    metas = [json.loads((split_dir / shard_name(s) / SHARD_META).read_text()) for s in range(num_shards)]
    index = dict(extra or {}, shards=[shard_name(s) for s in range(num_shards)],
                 rows=sum(m["rows"] for m in metas), skipped=[p for m in metas for p in m["skipped"]])
    index.setdefault("images", index["rows"] + len(index["skipped"]))  # a stream's size: what was read
    with writing(split_dir, "the cache index"):
        (split_dir / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return index


def load_cache(cache_dir: str | Path, split: str, expected_settings: Optional[dict[str, Any]] = None):
    """The cached rows of a split as one memory-mapped ``datasets.Dataset`` (torch format).

    With ``expected_settings`` the cache must have been made under exactly those settings. Every shard's files
    must have the sizes recorded when it was written; a damaged or missing shard is named, with the command
    that makes it again.
    """
    from datasets import concatenate_datasets, load_from_disk

    cache_dir = Path(cache_dir)
    if expected_settings is not None:
        check_cache_settings(cache_dir, expected_settings)
    split_dir = cache_dir / split
    if not (split_dir / INDEX_FILE).is_file():
        raise CacheDamagedError(f"no complete cache for split '{split}' in {cache_dir} (no {INDEX_FILE}); "
                                f"run 'lumen encode-layouts CONFIG' to make or finish it")
    repair = "run 'lumen encode-layouts CONFIG' again: it re-encodes"
    index = read_json(split_dir / INDEX_FILE, f"the cache of split '{split}'", f"{repair} the split")
    tables = []
    for name in index["shards"]:
        problems = shard_problems(split_dir, int(name.split("-")[1]), checksums=False)
        if problems:
            raise CacheDamagedError(f"cache shard {split_dir / name} is damaged ({'; '.join(problems)}); "
                                    f"{repair} {name}")
        try:
            tables.append(load_from_disk(str(split_dir / name)))
        except Exception as err:  # pyarrow and datasets report damage with many exception types
            raise CacheDamagedError(f"cache shard {split_dir / name} cannot be read ({type(err).__name__}: "
                                    f"{str(err).splitlines()[0] if str(err) else ''}); {repair} {name}") from None
    tables = [t for t in tables if len(t)]
    return concatenate_datasets(tables).with_format("torch", columns=["image_id", "layout", "latent_mean",
                                                                       "latent_std"], output_all_columns=True)


def changed_shards(cache_dir: str | Path, split: str, shards: Optional[Sequence[int]] = None,
                   progress=None) -> list[str]:
    """The shards of a complete split (or those at positions ``shards`` of its index) whose files no longer match
    the SHA-256 sums recorded when they were written, one line each; empty when every one verifies. Reads every
    byte: what ``load_cache`` skips (it compares sizes only)."""
    split_dir = Path(cache_dir) / split
    names = read_json(split_dir / INDEX_FILE, f"the cache of split '{split}'",
                      "run 'lumen encode-layouts CONFIG' again")["shards"]
    changed = []
    for position in range(len(names)) if shards is None else shards:
        problems = shard_problems(split_dir, int(names[position].split("-")[1]), checksums=True)
        if problems:
            changed.append(f"{names[position]} ({'; '.join(problems)})")
        if progress is not None:
            progress.update(1)
    return changed


def encode_shard(extractor, encoder, dataset, indices: Sequence[int], batch_size: int, num_workers: int,
                 on_bad: Callable[[str, str], None], stop: Callable[[int], bool],
                 progress=None) -> tuple[Optional[ShardRows], list[tuple[str, str]]]:
    """Layouts and latent distributions of the items ``indices`` of ``dataset`` (a ``SplitDataset``).

    Unusable images are passed to ``on_bad(path, reason)`` as they are met; after every batch,
    ``stop(unusable so far in this shard)`` may end the work. Returns ``(rows, unusable)``, rows None when
    stopped.
    """
    from lumen.data.dataset import collate_skipping_bad

    captions_of = {record.image_id: record.captions for record in dataset.index.records}
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, list(indices)), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=collate_skipping_bad)
    rows, skipped = ShardRows.empty(), []
    for batch in loader:
        skipped += batch["bad"]
        for path, reason in batch["bad"]:
            on_bad(path, reason)
        if stop(len(skipped)):
            return None, skipped
        if batch["pixel_values"] is not None:
            output = extractor(batch["pixel_values"])
            rows.add(batch["image_id"], [captions_of[int(i)] for i in batch["image_id"]], encoder(output.features),
                     output.latent_mean, output.latent_std)
        if progress is not None:
            progress.update(len(batch["image_id"]) + len(batch["bad"]))
    return rows, skipped


def encode_samples(extractor, encoder, samples, resolution: int, batch_size: int,
                   on_bad: Callable[[str, str], None], stop: Callable[[int], bool],
                   progress=None) -> tuple[Optional[ShardRows], list[tuple[str, str]]]:
    """``encode_shard`` for a stream of ``lumen.data.sources.webdataset.StreamSample`` s (one tar shard): each image is
    decoded and resized as the map-style data sets do; an unusable one goes to ``on_bad(name, reason)``."""
    from PIL import Image

    from lumen.data.split_index import decode_image_bytes, stable_id
    from lumen.data.transforms import image_to_tensor

    rows, skipped = ShardRows.empty(), []
    batch: list = []

    def flush() -> None:
        if batch:
            output = extractor(torch.stack([pixels for _, _, pixels in batch]))
            rows.add([i for i, _, _ in batch], [c for _, c, _ in batch], encoder(output.features),
                     output.latent_mean, output.latent_std)
            if progress is not None:
                progress.update(len(batch))
            batch.clear()

    for sample in samples:
        reason = None
        if not sample.captions:
            reason = "no caption"
        elif sample.image is None:
            reason = "no image member"
        else:
            try:
                pixels = image_to_tensor(decode_image_bytes(sample.image), resolution)
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                reason = f"unreadable image ({err})"
        if reason is not None:
            skipped.append((sample.key, reason))
            on_bad(sample.key, reason)
            if progress is not None:
                progress.update(1)
            if stop(len(skipped)):
                return None, skipped
            continue
        batch.append((stable_id(sample.key), list(sample.captions), pixels))
        if len(batch) == batch_size:
            flush()
    flush()
    return rows, skipped


def write_layout_pictures(dataset, rows, folder: Path, count: int) -> list[Path]:
    """Pictures of the first ``count`` cached rows (image beside its layout), from the ``dataset`` they were
    made from."""
    from lumen.layout.pictures import save_layout_picture

    position = {r.image_id: i for i, r in enumerate(dataset.index.records)}
    paths = []
    for row in range(min(count, len(rows))):
        item = rows[row]
        i = position[int(item["image_id"])]
        sample = dataset[i]
        paths.append(save_layout_picture(sample["pixel_values"], item["layout"].float(),
                                         folder / f"{dataset.index.records[i].name}.png", caption=sample["caption"]))
    return paths
