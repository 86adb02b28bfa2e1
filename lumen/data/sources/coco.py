"""COCO 2017 / COCO-Stuff: images in ``{split}2017/``, captions in ``annotations/captions_{split}2017.json``,
optional COCO-Stuff label maps and stuff annotations (``reference``: coco_stuff_format)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lumen.config import DataConfig, DataLayout
from lumen.data.sources.registry import DataSourceSpec, register
from lumen.data.split_index import DataLayoutError, ImageRecord, SplitIndex

logger = logging.getLogger(__name__)

# Folder templates of the two layouts in use ("{root}", "{split}" filled in).
LAYOUTS = {
    DataLayout.official: ("{root}/{split}2017", "{root}/stuffthingmaps_trainval2017/{split}2017"),
    DataLayout.cocostuff: ("{root}/images/{split}2017", "{root}/annotations/{split}2017"),
}


@dataclass(frozen=True)
class SplitPaths:
    """Resolved locations of one split. ``stuff_file`` / ``label_maps_dir`` are None when absent."""

    split: str
    images_dir: Path
    captions_file: Path
    stuff_file: Optional[Path]
    label_maps_dir: Optional[Path]


def _fill(template: str, root: str, split: str) -> Path:
    return Path(template.format(root=root, split=split))


def resolve_split_paths(data: DataConfig, split: str) -> SplitPaths:
    """Locate images, captions and (optional) stuff annotations and label maps of ``split``.

    With ``data.layout=auto`` the official layout is used when its image folder exists, else the cocostuff
    layout. Explicit ``data.images_dir`` / ``data.label_maps_dir`` win over the layout. Raises
    ``DataLayoutError`` listing what was looked for when the images or the captions are missing.
    """
    layouts = [data.layout] if data.layout != DataLayout.auto else [DataLayout.official, DataLayout.cocostuff]
    if data.images_dir is not None:
        candidates = [(None, _fill(data.images_dir, data.root, split))]
    else:
        candidates = [(layout, _fill(LAYOUTS[layout][0], data.root, split)) for layout in layouts]
    found = next(((layout, c) for layout, c in candidates if c.is_dir()), None)
    if found is None:
        tried = "\n".join(f"  - {c}" for _, c in candidates)
        raise DataLayoutError(
            f"no image folder for split '{split}'; looked for:\n{tried}\n"
            f"Set data.root to the folder that holds {split}2017/ and annotations/ (see data/README.md), "
            f"or give data.images_dir."
        )
    matched_layout, images_dir = found
    captions_file = _fill(data.captions_file, data.root, split)
    if not captions_file.is_file():
        raise DataLayoutError(
            f"captions file for split '{split}' not found: {captions_file}\n"
            f"It comes in annotations_trainval2017.zip (annotations/captions_{split}2017.json); "
            f"set data.root or data.captions_file."
        )
    stuff_file = _fill(data.stuff_file, data.root, split)
    if data.label_maps_dir is not None:
        label_candidates = [_fill(data.label_maps_dir, data.root, split)]
    else:  # the layout the images were found in first, then the others
        ordered = sorted(layouts, key=lambda layout: layout != matched_layout)
        label_candidates = [_fill(LAYOUTS[layout][1], data.root, split) for layout in ordered]
    label_maps_dir = next((c for c in label_candidates if c.is_dir()), None)
    return SplitPaths(
        split=split,
        images_dir=images_dir,
        captions_file=captions_file,
        stuff_file=stuff_file if stuff_file.is_file() else None,
        label_maps_dir=label_maps_dir,
    )



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
    keeps the first ``limit`` images by id. Files are not opened here (``SplitDataset`` does that, and
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


def coco_captioned_images(images_dir: str | Path, captions_file: str | Path, limit: int | None = None
                          ) -> list[tuple[Path, list[str]]]:
    """``(image file, captions)`` of a COCO captions file, by image id (the first ``limit``)."""
    data = json.loads(Path(captions_file).read_text(encoding="utf-8"))
    captions: dict[int, list[tuple[int, str]]] = {}
    for ann in data["annotations"]:
        captions.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), str(ann["caption"]).strip()))
    images = sorted(data["images"], key=lambda im: int(im["id"]))[:limit]
    return [(Path(images_dir) / im["file_name"], [c for _, c in sorted(captions.get(int(im["id"]), []))])
            for im in images]


def read(data: DataConfig, split: str, head: Optional[int], image_ids: Optional[list[int]],
         load_stuff: bool) -> SplitIndex:
    return read_split(resolve_split_paths(data, split), limit=data.limit, load_stuff=load_stuff)


def label_maps(data: DataConfig, split: str) -> Optional[Path]:
    return resolve_split_paths(data, split).label_maps_dir


SPEC: DataSourceSpec = register(DataSourceSpec(
    name="coco", summary="COCO 2017 / COCO-Stuff: {split}2017/ folders and annotations/captions_{split}2017.json",
    read_split=read, label_maps=label_maps))
