"""A split's records as training or evaluation samples (``SplitDataset``). An image that cannot be read never
stops an epoch: the dataset returns a ``BadSample`` and ``collate_skipping_bad`` drops it from the batch while
keeping its path and reason in ``batch["bad"]``, so the training process can count and report it
(``ProblemLog``) no matter which DataLoader worker met it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from lumen.data.labels import read_stuffthingmap, stuff_annotations_to_label_map
from lumen.data.split_index import DataLayoutError, ImageRecord, SplitIndex
from lumen.data.transforms import image_to_tensor, label_map_to_tensor


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


class SplitDataset(torch.utils.data.Dataset):
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
