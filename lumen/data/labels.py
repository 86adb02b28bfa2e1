"""COCO-Stuff label maps, decoded to one convention: the official stuffthingmaps PNG encoding.

Convention used everywhere in Lumen: a pixel holds the COCO-Stuff id minus one (things 0-90, stuff 91-181)
and 255 means unlabeled / ignore. Sources:
  - ``stuffthingmaps_trainval2017/{split}2017/<stem>.png``: already in this encoding (things and stuff);
  - ``stuff_{split}2017.json``: compressed RLE per (image, stuff class); stuff ids 92-182 become 91-181, while
    the merged thing class 'other' (183) and unannotated pixels become 255, since the stuff annotations
    do not say which thing a pixel belongs to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from lumen.errors import LumenError

IGNORE = 255
NUM_IDS = 182  # COCO-Stuff ids 1-182 -> values 0-181
# Thing ids COCO defines but never annotates; their values (id - 1) never occur in real label maps.
UNUSED_THING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
STUFF_OTHER_ID = 183
FIRST_STUFF_VALUE = 91  # values 0-90 are things, 91-181 stuff


def valid_label_values() -> np.ndarray:
    """Boolean lookup of length 256: True for values a stuffthingmaps PNG may hold (171 classes + 255)."""
    valid = np.zeros(256, dtype=bool)
    valid[:NUM_IDS] = True
    valid[[i - 1 for i in UNUSED_THING_IDS]] = False
    valid[IGNORE] = True
    return valid


class LabelMapError(LumenError, ValueError):
    """A label map file that is not a 2-D uint8 image in the expected encoding."""


def read_stuffthingmap(path: str | Path) -> np.ndarray:
    """Read a stuffthingmaps PNG as a ``(H, W)`` uint8 array (never through RGB: palettes would become colours)."""
    with Image.open(path) as image:
        array = np.array(image)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise LabelMapError(
            f"{path}: expected a single-channel 8-bit label map (value = COCO-Stuff id - 1, 255 unlabeled), "
            f"found an array of shape {array.shape} and dtype {array.dtype}"
        )
    return array


def stuff_annotations(label_map: np.ndarray, image_id: int, stuff_values: Optional[list[int]] = None,
                      thing_values: Optional[list[int]] = None) -> list[dict]:
    """COCO-Stuff annotations of a label map (this module's convention): one compressed RLE per stuff class, in
    the order of ``stuff_values`` (default: the stuff values present, ascending), then all things together
    as 'other' (183). Each has ``image_id``, ``category_id``, ``segmentation``, ``area``, ``bbox``, ``iscrowd``;
    the annotation ``id`` is the caller's."""
    from pycocotools import mask as mask_utils

    present = [int(v) for v in np.unique(label_map) if v != IGNORE]
    stuff_values = [v for v in present if v >= FIRST_STUFF_VALUE] if stuff_values is None else stuff_values
    thing_values = [v for v in present if v < FIRST_STUFF_VALUE] if thing_values is None else thing_values
    groups = [(v + 1, label_map == v) for v in stuff_values]
    groups.append((STUFF_OTHER_ID, np.isin(label_map, thing_values)))
    annotations = []
    for category, mask in groups:
        if not mask.any():
            continue
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append({"image_id": image_id, "category_id": category,
                            "segmentation": {"size": [int(x) for x in rle["size"]],
                                             "counts": rle["counts"].decode("ascii")},
                            "area": float(mask_utils.area(rle)), "bbox": [float(x) for x in mask_utils.toBbox(rle)],
                            "iscrowd": 0})
    return annotations


def stuff_annotations_to_label_map(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """Decode one image's stuff annotations (compressed RLE) to a ``(H, W)`` uint8 map in the convention above."""
    from pycocotools import mask as mask_utils

    label_map = np.full((height, width), IGNORE, dtype=np.uint8)
    for ann in annotations:
        category = int(ann["category_id"])
        if category == STUFF_OTHER_ID:
            continue
        segmentation = ann["segmentation"]
        if isinstance(segmentation.get("counts"), str):
            segmentation = dict(segmentation, counts=segmentation["counts"].encode("ascii"))
        mask = mask_utils.decode(segmentation).astype(bool)
        if mask.shape != (height, width):
            raise LabelMapError(
                f"stuff annotation {ann.get('id')} of image {ann.get('image_id')} has size {mask.shape}, "
                f"but the image record says {(height, width)}"
            )
        label_map[mask] = category - 1
    return label_map
