"""What every data source gives for a split: its records (``ImageRecord``: an image, its captions, a
stable id) as a ``SplitIndex``, and how an image is decoded."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from PIL import Image

from lumen.errors import LumenError

if TYPE_CHECKING:
    from lumen.data.sources.coco import SplitPaths


class DataLayoutError(LumenError, FileNotFoundError):
    """A required file or folder of the data set is missing, or not laid out as its source expects."""


def stable_id(key: str) -> int:
    """A sample's 63-bit id, the same on every machine and in every run (its caches and samples refer to it)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") >> 1


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split with its captions (stripped; for COCO in annotation-id order: ``captions[0]`` is the
    first).

    ``image_id`` is COCO's id, or for other sources a stable 63-bit number made from ``key``, the sample's name
    in its source (a file's path below the root, ``<split>[<row>]`` of a table, ``<shard>/<key>`` of a tar
    shard): caches and samples refer to images by it. ``row`` is the row of a table source; ``height`` and
    ``width`` are 0 when the source does not list them.
    """

    image_id: int
    path: Path
    captions: tuple[str, ...]
    height: int
    width: int
    label_path: Optional[Path] = None
    key: str = ""
    row: Optional[int] = None

    @property
    def name(self) -> str:
        """A file-name-safe name: COCO's zero-padded id, else the key without its extension, every character
        but letters, digits, - and _ replaced by _."""
        if not self.key:
            return f"{self.image_id:012d}"
        # No dots: tar shards group a sample's members by the name before the first dot.
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(self.key).with_suffix("").as_posix())


@dataclass
class SplitIndex:
    """The usable records of a split, plus what was left out while reading the caption file (or table).

    ``paths`` locates a COCO split; other sources give ``split_name`` and ``location`` (what was read) instead,
    and a table source its ``table`` (a ``datasets.Dataset`` whose ``image_column`` is not decoded).
    """

    paths: Optional[SplitPaths]
    records: list[ImageRecord]
    images_listed: int
    num_captions: int
    images_without_captions: list = field(default_factory=list)  # COCO ids, or keys of other sources
    empty_captions: int = 0  # captions that were blank after stripping (dropped)
    stuff_annotations: Optional[dict[int, list[dict]]] = None  # image id -> its stuff annotations
    split_name: str = ""
    location: str = ""
    table: Any = None
    image_column: Optional[str] = None
    caption_columns: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def split(self) -> str:
        return self.paths.split if self.paths is not None else self.split_name

    def read_image(self, record: ImageRecord) -> Image.Image:
        """The record's image, fully decoded. Raises ``OSError`` (or ``ValueError``) when it cannot be read."""
        if record.row is None:
            return load_image(record.path)
        value = self.table[record.row][self.image_column]
        data = value.get("bytes") if isinstance(value, dict) else None
        if data is None:
            if not isinstance(value, dict) or not value.get("path"):
                raise OSError(f"no image in column '{self.image_column}'")
            return load_image(Path(value["path"]))
        return decode_image_bytes(data)


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image (so truncation is found here, not later). Raises ``OSError``."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


def decode_image_bytes(data: bytes) -> Image.Image:
    """``load_image`` for an encoded image held in memory (a table cell, a tar member)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()
