"""Sources of layouts for sampling and evaluation: image files, images of a split, or cached layouts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from lumen.build import split_dataset
from lumen.cache import load_cache
from lumen.config import LumenConfig
from lumen.data.coco_stuff import load_image
from lumen.data.transforms import image_to_tensor
from lumen.errors import LumenError


class SampleInputError(LumenError, ValueError):
    """Sources or settings of sampling that cannot be used."""


@dataclass
class Source:
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


def load_sources(cfg: LumenConfig, resolution: int, split: str) -> list[Source]:
    s = cfg.sample
    sources: list[Source] = []
    for path in s.images:
        try:
            image = load_image(Path(path))
        except OSError as err:
            raise SampleInputError(f"sample.images: cannot read {path} ({err})") from None
        sources.append(Source(Path(path).stem, "file", "", image_to_tensor(image, resolution), path=str(path)))
    if s.image_ids or not s.images:
        dataset = split_dataset(cfg, split)
        position = {r.image_id: i for i, r in enumerate(dataset.index.records)}
        ids = list(s.image_ids) or [r.image_id for r in dataset.index.records[:s.num_sources]]
        missing = [i for i in ids if i not in position]
        if missing:
            raise SampleInputError(f"sample.image_ids {missing} are not (captioned) images of split '{split}'")
        for image_id in ids:
            item = dataset[position[image_id]]
            if not isinstance(item, dict):
                raise SampleInputError(f"image {image_id} of split '{split}' is unusable: {item.reason}")
            sources.append(Source(f"{image_id:012d}", "split", item["caption"], item["pixel_values"],
                                  image_id=image_id, split=split, from_cache=s.from_cache))
    return sources


def source_from_json(cfg: LumenConfig, record: dict, resolution: int) -> Source:
    if record["kind"] == "file":
        image = image_to_tensor(load_image(Path(record["path"])), resolution)
        return Source(record["name"], "file", record["caption"], image, path=record["path"])
    dataset = split_dataset(cfg, record["split"])
    index = next(i for i, r in enumerate(dataset.index.records) if r.image_id == record["image_id"])
    item = dataset[index]
    return Source(record["name"], "split", item["caption"], item["pixel_values"], image_id=record["image_id"],
                  split=record["split"], from_cache=record["from_cache"])


def compute_layouts(cfg: LumenConfig, sources: list[Source], extractor, encoder) -> torch.Tensor:
    """(S, N, h, w): from the cache for cached sources, else extracted from the source image."""
    layouts = []
    cached_rows = None
    for source in sources:
        if source.from_cache:
            if cached_rows is None:
                rows = load_cache(Path(cfg.output_dir) / "cache", source.split)
                cached_rows = {int(i): k for k, i in enumerate(rows[:]["image_id"])}, rows
            position, rows = cached_rows
            layouts.append(rows[position[source.image_id]]["layout"].float())
        else:
            layouts.append(encoder(extractor(source.pixel_values[None]).features)[0].cpu())
    return torch.stack(layouts)
