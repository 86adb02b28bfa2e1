"""Sources of layouts for sampling and evaluation: image files, images of a split, or cached layouts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from lumen.data.dataset import SplitDataset
from lumen.data.split_index import load_image
from lumen.data.transforms import image_to_tensor
from lumen.errors import LumenError
from lumen.layout.cache import load_cache

# split name -> its data set (evaluation mode: first caption, no dropout), opened only when needed
OpenSplit = Callable[[str], SplitDataset]


class SampleInputError(LumenError, ValueError):
    """Sources or settings of sampling that cannot be used."""


@dataclass
class SourceImage:
    name: str
    kind: str  # "file" or "split"
    caption: str
    pixel_values: torch.Tensor  # (3, R, R) in [-1, 1]
    path: Optional[str] = None
    image_id: Optional[int] = None
    split: Optional[str] = None
    from_cache: bool = False

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "caption": self.caption, "path": self.path,
                "image_id": self.image_id, "split": self.split, "from_cache": self.from_cache}


def file_source(path: str | Path, resolution: int, caption: str = "", name: Optional[str] = None,
                key: str = "sample.images") -> SourceImage:
    """An image file as a source; one that cannot be read is refused naming the config ``key`` it came from."""
    try:
        image = load_image(Path(path))
    except OSError as err:
        raise SampleInputError(f"{key}: cannot read {path} ({err})") from None
    return SourceImage(name or Path(path).stem, "file", caption, image_to_tensor(image, resolution), path=str(path))


def load_sources(images: list[str], image_ids: list[int], num_sources: int, from_cache: bool, split: str,
                 open_split: OpenSplit, resolution: int) -> list[SourceImage]:
    """Image files first, then the images ``image_ids`` of ``split`` (or, with no files and no ids, its first
    ``num_sources``); ``from_cache`` marks the split's sources to take their layouts from the cache."""
    sources = [file_source(path, resolution) for path in images]
    if image_ids or not images:
        dataset = open_split(split)
        position = {r.image_id: i for i, r in enumerate(dataset.index.records)}
        ids = list(image_ids) or [r.image_id for r in dataset.index.records[:num_sources]]
        missing = [i for i in ids if i not in position]
        if missing:
            raise SampleInputError(f"sample.image_ids {missing} are not (captioned) images of split '{split}'")
        for image_id in ids:
            item = dataset[position[image_id]]
            if not isinstance(item, dict):
                raise SampleInputError(f"image {image_id} of split '{split}' is unusable: {item.reason}")
            sources.append(SourceImage(dataset.index.records[position[image_id]].name, "split", item["caption"],
                                  item["pixel_values"],
                                  image_id=image_id, split=split, from_cache=from_cache))
    return sources


def source_from_json(record: dict, resolution: int, open_split: OpenSplit) -> SourceImage:
    """The source a samples JSON recorded (``SourceImage.to_json``), read again."""
    if record["kind"] == "file":
        return file_source(record["path"], resolution, record["caption"], record["name"])
    dataset = open_split(record["split"])
    index = next((i for i, r in enumerate(dataset.index.records) if r.image_id == record["image_id"]), None)
    if index is None:
        raise SampleInputError(f"image {record['image_id']} of split '{record['split']}' is no longer in the data set")
    item = dataset[index]
    if not isinstance(item, dict):
        raise SampleInputError(f"image {record['image_id']} of split '{record['split']}' is unusable: {item.reason}")
    return SourceImage(record["name"], "split", item["caption"], item["pixel_values"], image_id=record["image_id"],
                  split=record["split"], from_cache=record["from_cache"])


def compute_layouts(sources: list[SourceImage], extractor, encoder, cache_dir: str | Path) -> torch.Tensor:
    """``(S, N, h, w)``: from the cache in ``cache_dir`` for cached sources, else extracted from the image."""
    layouts = []
    cached_rows = {}
    for source in sources:
        if source.from_cache:
            if source.split not in cached_rows:
                rows = load_cache(cache_dir, source.split)
                cached_rows[source.split] = {int(i): k for k, i in enumerate(rows[:]["image_id"])}, rows
            position, rows = cached_rows[source.split]
            if source.image_id not in position:
                raise SampleInputError(f"image {source.image_id} of split '{source.split}' is not in the layout cache "
                                       f"{cache_dir} (it was unusable when the cache was made)")
            layouts.append(rows[position[source.image_id]]["layout"].float())
        else:
            layouts.append(encoder(extractor.features(source.pixel_values[None]))[0].cpu())
    return torch.stack(layouts)
