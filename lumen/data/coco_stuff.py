"""Reader for COCO 2017 images + captions, with optional COCO-Stuff label maps.

``read_split`` parses a split's caption file into ``ImageRecord`` s (captions stripped and ordered by
annotation id); ``CocoStuffDataset`` turns records into training or evaluation samples. An image that cannot
be read never stops an epoch: the dataset returns a ``BadSample`` and ``collate_skipping_bad`` drops it from the
batch while keeping its path and reason in ``batch["bad"]``, so the training process can count and report it
(``ProblemLog``) no matter which DataLoader worker met it.
"""

from __future__ import annotations

import io
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from lumen.data.labels import read_stuffthingmap, stuff_annotations_to_label_map
from lumen.data.paths import DataLayoutError, SplitPaths
from lumen.data.transforms import image_to_tensor, label_map_to_tensor

logger = logging.getLogger(__name__)


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


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataLayoutError(f"{path} is not valid JSON ({err}); re-extract it from the official archive") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataLayoutError(f"{path}: expected a COCO annotation file with 'images' and 'annotations' lists")
    return data


def read_split(paths: SplitPaths, limit: Optional[int] = None, load_stuff: bool = False) -> SplitIndex:
    """Read a split's caption file (and, with ``load_stuff``, its stuff annotations) into a ``SplitIndex``.

    Images without any non-blank caption are excluded and listed in ``images_without_captions``; ``limit``
    keeps the first ``limit`` images by id. Files are not opened here (``CocoStuffDataset`` does that, and
    ``lumen.data.doctor`` checks them all up front).
    """
    data = _read_json(paths.captions_file)
    captions: dict[int, list[tuple[int, str]]] = defaultdict(list)
    empty = 0
    for ann in data["annotations"]:
        text = " ".join(str(ann["caption"]).split())  # strip, and fold stray newlines / runs of spaces
        if not text:
            empty += 1
            continue
        captions[int(ann["image_id"])].append((int(ann["id"]), text))
    images = sorted(data["images"], key=lambda im: int(im["id"]))
    if limit is not None:
        images = images[:limit]
    records, without = [], []
    for image in images:
        image_id = int(image["id"])
        texts = tuple(text for _, text in sorted(captions.get(image_id, [])))
        if not texts:
            without.append(image_id)
            continue
        file_name = image.get("file_name") or f"{image_id:012d}.jpg"
        label_path = None
        if paths.label_maps_dir is not None:
            label_path = paths.label_maps_dir / (Path(file_name).stem + ".png")
        records.append(
            ImageRecord(
                image_id=image_id,
                path=paths.images_dir / file_name,
                captions=texts,
                height=int(image["height"]),
                width=int(image["width"]),
                label_path=label_path,
            )
        )
    stuff = None
    if load_stuff:
        if paths.stuff_file is None:
            raise DataLayoutError(
                f"data.labels=stuff_json but no stuff annotations for split '{paths.split}' were found "
                f"(annotations/stuff_{paths.split}2017.json from stuff_trainval2017.zip); set data.stuff_file"
            )
        stuff = defaultdict(list)
        for ann in _read_json(paths.stuff_file)["annotations"]:
            stuff[int(ann["image_id"])].append(ann)
    if without:
        logger.info("%s: %d listed images have no caption and are excluded", paths.split, len(without))
    return SplitIndex(
        paths=paths,
        records=records,
        images_listed=len(data["images"]),
        num_captions=sum(len(r.captions) for r in records),
        images_without_captions=without,
        empty_captions=empty,
        stuff_annotations=stuff,
    )


def draw_caption(captions, train: bool, seed: int, epoch: int, index: int, empty_prompt_probability: float) -> str:
    """The caption of sample ``index``: in training one drawn at random, replaced by "" with probability
    ``empty_prompt_probability``, from a generator seeded by (seed, epoch, index), so the draw is the same
    in any DataLoader worker, process or resumed run; in evaluation the first caption."""
    if not train:
        return captions[0]
    rng = np.random.default_rng([seed, epoch, index])
    caption = captions[int(rng.integers(len(captions)))]
    return "" if rng.random() < empty_prompt_probability else caption


@dataclass(frozen=True)
class BadSample:
    """Stands in for a sample whose files could not be read; ``collate_skipping_bad`` removes it."""

    path: str
    reason: str


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


class CocoStuffDataset(torch.utils.data.Dataset):
    """Samples of a ``SplitIndex``: ``{"pixel_values", "caption", "image_id"[, "label"]}``.

    Args:
        index: the split's records.
        resolution: images (and label maps) are resized on the shorter side and centre-cropped to this.
        train: draw a random caption per sample (seeded by ``seed``, the epoch and the index, so a draw is
            the same in any DataLoader worker and after a resume) and drop it to "" with probability
            ``empty_prompt_probability``. Otherwise the first caption, never dropped.
        labels: ``"none"``, ``"stuffthingmaps"`` or ``"stuff_json"`` (see ``lumen.data.labels``).

    ``pixel_values`` is a float tensor ``(3, R, R)`` in [-1, 1]; ``label`` a long tensor ``(R, R)`` (255 ignore).
    """

    def __init__(
        self,
        index: SplitIndex,
        resolution: int,
        train: bool,
        seed: int = 0,
        empty_prompt_probability: float = 0.0,
        labels: str = "none",
    ) -> None:
        if labels != "none" and index.paths is None:
            raise DataLayoutError(f"data.labels={labels}: label maps come with COCO-Stuff only (data.source=coco); "
                                  f"split '{index.split}' is read from {index.location}")
        if labels == "stuffthingmaps" and index.paths.label_maps_dir is None:
            raise DataLayoutError(
                f"data.labels=stuffthingmaps but no label-map folder was found for split '{index.paths.split}' "
                f"(stuffthingmaps_trainval2017/{index.paths.split}2017 or annotations/{index.paths.split}2017); "
                f"set data.label_maps_dir"
            )
        if labels == "stuff_json" and index.stuff_annotations is None:
            raise ValueError("labels='stuff_json' needs read_split(..., load_stuff=True)")
        self.index = index
        self.resolution = resolution
        self.train = train
        self.seed = seed
        self.empty_prompt_probability = empty_prompt_probability if train else 0.0
        self.labels = labels
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index.records)

    def caption_for(self, i: int) -> str:
        return draw_caption(self.index.records[i].captions, self.train, self.seed, self.epoch, i,
                            self.empty_prompt_probability)

    def _label(self, record: ImageRecord) -> np.ndarray:
        if self.labels == "stuffthingmaps":
            return read_stuffthingmap(record.label_path)
        return stuff_annotations_to_label_map(
            self.index.stuff_annotations.get(record.image_id, []), record.height, record.width
        )

    def __getitem__(self, i: int) -> dict[str, Any] | BadSample:
        record = self.index.records[i]
        try:
            image = self.index.read_image(record)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            reason = "file not found" if isinstance(err, FileNotFoundError) else f"unreadable image ({err})"
            return BadSample(str(record.path), reason)
        sample = {
            "pixel_values": image_to_tensor(image, self.resolution),
            "caption": self.caption_for(i),
            "image_id": record.image_id,
        }
        if self.labels != "none":
            try:
                label = self._label(record)
            except (OSError, ValueError) as err:
                return BadSample(str(record.label_path or record.path), f"unreadable label map ({err})")
            if label.shape != (image.height, image.width):
                return BadSample(
                    str(record.label_path or record.path),
                    f"label map is {label.shape[1]}x{label.shape[0]} but the image is {image.width}x{image.height}",
                )
            sample["label"] = label_map_to_tensor(label, self.resolution)
        return sample


def collate_skipping_bad(items: list[dict[str, Any] | BadSample]) -> dict[str, Any]:
    """Stack the good samples of a batch; ``batch["bad"]`` lists ``(path, reason)`` of the others.

    A batch may come out smaller than asked for, or empty (``batch["pixel_values"]`` is then None).
    """
    good = [item for item in items if not isinstance(item, BadSample)]
    batch: dict[str, Any] = {"bad": [(item.path, item.reason) for item in items if isinstance(item, BadSample)]}
    if not good:
        batch.update(pixel_values=None, caption=[], image_id=torch.zeros(0, dtype=torch.long))
        return batch
    batch["pixel_values"] = torch.stack([item["pixel_values"] for item in good])
    batch["caption"] = [item["caption"] for item in good]
    batch["image_id"] = torch.tensor([item["image_id"] for item in good], dtype=torch.long)
    if "label" in good[0]:
        batch["label"] = torch.stack([item["label"] for item in good])
    return batch
