"""The registry of data sources: one ``DataSourceSpec`` per way a data set is stored, registered by the module
that owns it (``lumen/data/sources/<name>.py``), so the doctor, encoding, training and synthesis ask the spec
instead of branching on ``data.source``. ``docs/extending.md`` gives the recipe for a new one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lumen.config import DataConfig
from lumen.data.split_index import SplitIndex
from lumen.registry import add_entry, find_entry

# What a writer takes: split name -> its (image file, captions) pairs.
CaptionedImages = Sequence[tuple[Path, Sequence[str]]]


@dataclass(frozen=True)
class DataSourceSpec:
    """One data source: the value of ``data.source`` and how a split is read and written.

    read_split: ``(data, split, head, image_ids, load_stuff) -> SplitIndex``: the split's records (for a streaming
        source: the images ``image_ids``, or the first ``head``, as a list).
    write: ``(out, {split: captioned images}) -> out``: a new data set in this layout (``convert_data``, the data
        ``synthesize`` generates, the tests). None: the generator writes it in this layout itself (COCO's).
    streams: the split is a stream of shards, never listed whole: the doctor reads it shard by shard, the cache
        is encoded shard by shard, and training without the cache streams it (``open_stream``).
    open_stream: a streaming source's split: ``(data, split, check_ends) -> stream`` (see
        ``lumen.data.sources.webdataset.WebDatasetSplit``).
    label_maps: where a split's label maps lie (None: the source has none, or this split has none).
    named_columns: images and captions are named columns (or members): ``data.image_column`` and
        ``data.caption_column`` choose them, and a missing one is refused naming those there are.
    """

    name: str
    summary: str
    read_split: Callable[[DataConfig, str, Optional[int], Optional[list[int]], bool], SplitIndex]
    write: Optional[Callable[[Path, Mapping[str, CaptionedImages]], Path]] = None
    streams: bool = False
    open_stream: Optional[Callable[[DataConfig, str, bool], Any]] = None
    label_maps: Optional[Callable[[DataConfig, str], Optional[Path]]] = None
    named_columns: bool = False


DATA_SOURCES: dict[str, DataSourceSpec] = {}


def register(spec: DataSourceSpec) -> DataSourceSpec:
    """Add ``spec`` to ``DATA_SOURCES`` (by the module that defines the source, when it is imported)."""
    return add_entry(DATA_SOURCES, spec, "data source")


def get_data_source(name: str) -> DataSourceSpec:
    """The spec of ``data.source=name``; an unknown name is refused with the registered ones."""
    return find_entry(DATA_SOURCES, name, "data.source")


def read_data_split(data: DataConfig, split: str, load_stuff: bool = False, head: Optional[int] = None,
                    image_ids: Optional[list[int]] = None) -> SplitIndex:
    """The records of ``split`` of the configured source (``data.source``); raises ``DataLayoutError`` naming
    what is missing. ``head`` (the first N images) and ``image_ids`` matter to streaming sources, which are never
    listed whole; every source keeps only the first ``data.limit``."""
    return get_data_source(data.source).read_split(data, split, head, image_ids, load_stuff)


def fresh_folder(out: Path) -> Path:
    """The temporary folder a writer fills before renaming it to ``out``, which must not exist: nothing a user
    has is replaced."""
    import shutil

    if out.exists():
        raise FileExistsError(f"{out} exists; choose another folder (nothing was written)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp
