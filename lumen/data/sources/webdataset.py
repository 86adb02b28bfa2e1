"""Tar shards of captioned images (the webdataset layout), read streaming with ``datasets``' webdataset loader.

A shard is a tar whose members are grouped into samples by their name before the first dot: ``0001.jpg`` and
``0001.txt`` are the image and the caption of sample ``0001``. Shards are local paths or any ``fsspec`` URL, given
as a glob, a brace range (``{000000..000099}.tar``) or a comma-separated list. A sample's name is
``<shard file>/<key>``; its id the stable hash of that name (``lumen.data.split_index.stable_id``).

Nothing reads a whole split up front: stages that need a few images (the PCA's sample, validation, sampling
sources) take the first images of every shard (``head_index``), and the cache is made shard by shard, each
process reading its own shards (``iter_shard``).
"""

from __future__ import annotations

import glob
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lumen.config import DataConfig
from lumen.data.sources.coco import DataLayoutError
from lumen.data.sources.registry import CaptionedImages, DataSourceSpec, fresh_folder, register
from lumen.data.sources.tables import captions_of
from lumen.data.split_index import ImageRecord, SplitIndex, stable_id
from lumen.errors import LumenError, writing

IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
CAPTION_MEMBERS = ("txt", "caption", "text", "json.caption", "json.captions")
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> ``a-000.tar, a-001.tar, a-002.tar`` (zero padding kept; several ranges multiply)."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    low, high = match.group(1), match.group(2)
    width = len(low) if low.startswith("0") else 0
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [expanded for n in range(int(low), int(high) + 1)
            for expanded in expand_braces(f"{head}{str(n).zfill(width)}{tail}")]


def shard_urls(pattern: str, root: str, split: str) -> list[str]:
    """The shards of ``split``: ``pattern`` with ``{root}`` and ``{split}`` filled in, each comma-separated part
    brace-expanded and globbed (local paths: must exist; URLs: globbed with ``fsspec``)."""
    filled = pattern.replace("{root}", root).replace("{split}", split)
    urls: list[str] = []
    for part in (p.strip() for p in filled.split(",") if p.strip()):
        for item in expand_braces(part):
            if "://" in item:
                if any(c in item for c in "*?["):
                    import fsspec

                    _, _, found = fsspec.get_fs_token_paths(item)
                    protocol = item.split("://", 1)[0]
                    urls += sorted(f"{protocol}://{p}" if "://" not in p else p for p in found)
                else:
                    urls.append(item)
            elif any(c in item for c in "*?["):
                urls += sorted(glob.glob(str(Path(item).expanduser())))
            else:
                if not Path(item).expanduser().is_file():
                    raise DataLayoutError(f"webdataset shard {item} of split '{split}' not found "
                                          f"(data.shards={pattern})")
                urls.append(str(Path(item).expanduser()))
    if not urls:
        raise DataLayoutError(f"no webdataset shards for split '{split}': data.shards={pattern} matches nothing "
                              f"(with data.root={root})")
    return urls


TAR_BLOCK = 512


def tar_end_problem(url: str) -> Optional[str]:
    """Why the tar file at ``url`` is not whole (None when it is). A tar file is a sequence of 512-byte blocks
    that ends with two zero blocks. A shard cut while it was written or copied lacks them: cut at a member's end,
    readers stop there without a word (the rest of its samples silently missing); cut inside a member, they fail
    half-way. Reads only the file's size and its last 1024 bytes."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        size = fs.size(path)
        with fs.open(path, "rb") as handle:
            handle.seek(max(size - 2 * TAR_BLOCK, 0))
            tail = handle.read(2 * TAR_BLOCK)
    except (OSError, ValueError) as err:
        return f"unreadable ({type(err).__name__}: {err})"
    if size % TAR_BLOCK:
        return f"truncated: {size} bytes is not a whole number of 512-byte tar blocks (cut inside a member)"
    if size < 2 * TAR_BLOCK or any(tail):
        return "truncated: it does not end with the two zero blocks that end a tar file (cut after a member)"
    return None


def truncated_shards(urls: list[str]) -> dict[str, str]:
    """``{url: problem}`` of the shards that are not whole tar files (their ends read in parallel: for remote
    shards each is a request)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(urls)))) as pool:
        problems = dict(zip(urls, pool.map(tar_end_problem, urls)))
    return {url: problem for url, problem in problems.items() if problem}


class TruncatedShardError(DataLayoutError):
    """Tar shards that are not whole: their samples after the cut would be missing without a word."""


@dataclass(frozen=True)
class StreamSample:
    """One sample read from a shard: its name (``<shard file>/<key>``), captions and encoded image."""

    key: str
    captions: tuple[str, ...]
    image: Optional[bytes]


def _member(example: dict, name: str) -> Any:
    """A member's value; ``json.caption`` reads field ``caption`` of the ``json`` member."""
    head, _, field = name.partition(".")
    value = example.get(head)
    if field and isinstance(value, dict):
        return value.get(field)
    return None if field else value


@dataclass
class WebDatasetSplit:
    """The shards of one split and the members that hold its images and captions."""

    split: str
    urls: list[str]
    image_member: str
    caption_members: tuple[str, ...]
    truncated: dict[str, str] = field(default_factory=dict)  # shards that are not whole tar files -> why

    @property
    def location(self) -> str:
        return f"{len(self.urls)} webdataset shard(s) from {self.urls[0]}"

    def stream(self, urls: Optional[list[str]] = None):
        """A streaming ``datasets.IterableDataset`` of ``urls`` (default: every shard), images not decoded."""
        return _open(urls or self.urls, self.split, image_member=self.image_member)

    def iter_shard(self, url: str) -> Iterator[StreamSample]:
        """The samples of one shard, in order. A shard that cannot be read to its end (cut or changed since the
        split was opened) is a ``TruncatedShardError`` naming it."""
        import tarfile

        shard = Path(url.split("://")[-1]).name
        examples = iter(self.stream([url]))
        while True:
            try:
                example = next(examples)
            except StopIteration:
                return
            except (tarfile.TarError, OSError, EOFError) as err:
                raise TruncatedShardError(f"tar shard {url} of split '{self.split}' cannot be read to its end "
                                          f"({type(err).__name__}: {err}); write or copy it again") from None
            value = example.get(self.image_member)
            image = value.get("bytes") if isinstance(value, dict) else None
            captions, _ = captions_of([_lines(_member(example, m)) for m in self.caption_members])
            yield StreamSample(f"{shard}/{example['__key__']}", tuple(captions), image)

    def head_index(self, count: int) -> SplitIndex:
        """A ``SplitIndex`` of the first images of every shard, ``count`` in all (fewer if the split has fewer),
        held in memory: for the stages that need a few images, not a full pass."""
        per_shard = -(-count // len(self.urls))
        taken: list[StreamSample] = []
        for url in self.urls:
            taken += itertools.islice(self.iter_shard(url), per_shard)
            if len(taken) >= count:
                break
        return self._index(taken[:count])

    def find_index(self, image_ids: list[int]) -> SplitIndex:
        """A ``SplitIndex`` of the samples with these ids, read until every one is found (or the shards end)."""
        wanted, found = set(image_ids), {}
        for url in self.urls:
            for sample in self.iter_shard(url):
                if stable_id(sample.key) in wanted:
                    found[stable_id(sample.key)] = sample
            if len(found) == len(wanted):
                break
        return self._index([found[i] for i in image_ids if i in found])

    def _index(self, taken: list[StreamSample]) -> SplitIndex:
        from datasets import Dataset, Features, Image, Value

        table = Dataset.from_dict({"image": [{"bytes": s.image, "path": None} for s in taken],
                                   "key": [s.key for s in taken]},
                                  features=Features({"image": Image(decode=False), "key": Value("string")}))
        records = [ImageRecord(image_id=stable_id(s.key), path=Path(s.key), captions=s.captions, height=0, width=0,
                               key=s.key, row=row) for row, s in enumerate(taken) if s.captions]
        return SplitIndex(paths=None, records=records, images_listed=len(taken),
                          num_captions=sum(len(r.captions) for r in records),
                          images_without_captions=[s.key for s in taken if not s.captions], split_name=self.split,
                          location=self.location, table=table, image_column="image",
                          caption_columns=self.caption_members)


def _lines(value: Any) -> Any:
    """A text member holds one caption per line."""
    return value.splitlines() if isinstance(value, str) else value


def _open(urls: list[str], split: str, image_member: Optional[str] = None):
    import datasets

    try:
        stream = datasets.load_dataset("webdataset", data_files={split: urls}, split=split, streaming=True)
        if image_member is not None:
            stream = stream.cast_column(image_member, datasets.Image(decode=False))
    except Exception as err:  # tar and fsspec errors come in many types
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataLayoutError(f"cannot read the webdataset shards of split '{split}' ({type(err).__name__}: "
                              f"{detail})") from None
    return stream


def open_webdataset_split(pattern: str, root: str, split: str, image_member: Optional[str],
                          caption_member: Any, check_ends: bool = True) -> WebDatasetSplit:
    """The split's shards and members (``data.image_column`` / ``data.caption_column`` name members; None: the
    usual ones), checked on the first shard's features; a missing member is refused naming those there are.
    A shard that is not a whole tar file is refused (``TruncatedShardError``) before any sample is read; without
    ``check_ends`` (the doctor, which reports them beside the rest) they are listed in ``truncated`` instead."""
    urls = shard_urls(pattern, root, split)
    truncated = truncated_shards(urls)
    whole = [url for url in urls if url not in truncated]
    if truncated and (check_ends or not whole):
        raise TruncatedShardError(
            f"{len(truncated)} of the {len(urls)} tar shard(s) of split '{split}' are not whole: "
            + "; ".join(f"{url} is {problem}" for url, problem in truncated.items())
            + ". Their samples after the cut would be missing: write or copy them again (lumen doctor lists "
              "every problem), or leave them out of data.shards")
    features = _open(whole[:1], split).features or {}
    members = [name for name in features if not name.startswith("__")]
    nested = [f"{name}.{field}" for name in members if isinstance(features[name], dict) for field in features[name]]
    where = f"the shards of split '{split}' ({urls[0]}{' ...' if len(urls) > 1 else ''})"
    if image_member is None:
        image_member = next((m for m in IMAGE_MEMBERS if m in members), None)
        if image_member is None:
            raise DataLayoutError(f"{where} have no image member (looked for {', '.join(IMAGE_MEMBERS)}); their "
                                  f"members: {', '.join(members)}. Set data.image_column")
    elif image_member not in members:
        raise DataLayoutError(f"data.image_column: no member '{image_member}' in {where}; their members: "
                              f"{', '.join(members)}")
    if caption_member is None:
        found = next((m for m in CAPTION_MEMBERS if m in members or m in nested), None)
        if found is None:
            raise DataLayoutError(f"{where} have no caption member (looked for {', '.join(CAPTION_MEMBERS)}); their "
                                  f"members: {', '.join(members + nested)}. Set data.caption_column")
        captions: tuple[str, ...] = (found,)
    else:
        captions = (caption_member,) if isinstance(caption_member, str) else tuple(caption_member)
        missing = [c for c in captions if c not in members and c not in nested]
        if missing:
            raise DataLayoutError(f"data.caption_column: no member {', '.join(repr(c) for c in missing)} in {where}; "
                                  f"their members: {', '.join(members + nested)}")
    return WebDatasetSplit(split, urls, image_member, captions, truncated)


class StreamingSourceError(LumenError, ValueError):
    """A stage asked a streaming source for a whole split as a list."""


def open_stream(data: DataConfig, split: str, check_ends: bool = True) -> WebDatasetSplit:
    return open_webdataset_split(data.shards, data.root, split, data.image_column, data.caption_column,
                                 check_ends=check_ends)


def read(data: DataConfig, split: str, head: Optional[int], image_ids: Optional[list[int]],
         load_stuff: bool) -> SplitIndex:
    """Tar shards are never listed whole: the images ``image_ids``, or the first ``head`` (spread over the shards),
    or the first ``data.limit``."""
    stream = open_stream(data, split)
    if image_ids is not None:
        return stream.find_index(list(image_ids))
    counts = [x for x in (head, data.limit) if x is not None]
    if not counts:
        raise StreamingSourceError(
            f"data.source=webdataset streams split '{split}'; this stage reads a whole split as a list: train "
            f"from the layout cache (lumen encode-layouts, train.use_cache=true), or set data.limit to read "
            f"the first N images as a list")
    return stream.head_index(min(counts))


def write_webdataset(out: str | Path, splits: Mapping[str, CaptionedImages], shard_size: int = 1000) -> Path:
    """``out/<split>/<000000>.tar`` ...: each sample an image member (the file, its own extension) and a ``txt``
    member with one caption per line, ``shard_size`` samples per shard; keys are the images' stems."""
    import io
    import tarfile

    out = Path(out)
    tmp = fresh_folder(out)
    with writing(tmp, "the shards"):
        for split, items in splits.items():
            folder = tmp / split
            folder.mkdir(parents=True)
            for start in range(0, len(items), shard_size):
                with tarfile.open(folder / f"{start // shard_size:06d}.tar", "w") as tar:
                    for path, captions in items[start:start + shard_size]:
                        path = Path(path)
                        members = ((path.suffix.lstrip(".").lower(), path.read_bytes()),
                                   ("txt", "\n".join(captions).encode("utf-8")))
                        for extension, data in members:
                            info = tarfile.TarInfo(f"{path.stem}.{extension}")
                            info.size = len(data)
                            tar.addfile(info, io.BytesIO(data))
        tmp.rename(out)
    return out


SPEC: DataSourceSpec = register(DataSourceSpec(
    name="webdataset", summary="tar shards of image + caption members, read streaming (local or fsspec URLs)",
    read_split=read, write=write_webdataset, streams=True, open_stream=open_stream, named_columns=True))
