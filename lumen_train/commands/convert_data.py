"""Write captioned images as an image folder, a Hugging Face dataset or tar shards: lumen convert-data ...

  --images DIR: every image below DIR with a caption file beside it (photo.jpg + photo.txt, one caption per
                line); the last --val images (by path) become the val split.
  --coco ROOT:  the train and val splits of a COCO 2017 folder (data/README.md), with their captions.
The image files are copied unchanged. Read the result with configs/data/imagefolder.yaml or
configs/data/hf_dataset.yaml or configs/data/webdataset.yaml and data.root=OUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from lumen.config import DataConfig
from lumen.data.sources import DATA_SOURCES
from lumen.data.sources.coco import DataLayoutError, coco_captioned_images, resolve_split_paths
from lumen.data.split_index import load_image
from lumen.errors import LumenError

PROG = "lumen convert-data"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Every registered source with a writer (lumen.data.sources): the layouts --to takes.
WRITERS = {name: spec.write for name, spec in DATA_SOURCES.items() if spec.write is not None}


def captioned_folder(folder: Path) -> tuple[list[tuple[Path, list[str]]], list[Path]]:
    """``(image, captions)`` of every image below ``folder`` that has a non-empty ``.txt`` beside it, and the
    images without one."""
    items, without = [], []
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        text = image.with_suffix(".txt")
        captions = [line.strip() for line in text.read_text(encoding="utf-8").splitlines()] if text.is_file() else []
        captions = [c for c in captions if c]
        (items if captions else without).append((image, captions) if captions else image)
    return items, without


def coco_splits(root: Path, limit) -> dict[str, list[tuple[Path, list[str]]]]:
    """``--coco ROOT``: the train and val splits of a COCO 2017 folder, refused in terms of this command's
    options when its image folders or caption files are missing."""
    splits = {}
    for split in ("train", "val"):
        try:
            paths = resolve_split_paths(DataConfig(root=str(root)), split)
        except DataLayoutError:
            expected = [root / f"{split}2017", root / "annotations" / f"captions_{split}2017.json"]
            missing = ", ".join(str(p) for p in expected if not p.exists())
            raise LumenError(f"--coco {root}: missing {missing}. --coco takes a COCO 2017 folder holding "
                             f"train2017/, val2017/ and annotations/captions_{{train,val}}2017.json (data/README.md); "
                             f"for images with caption files beside them, use --images") from None
        splits[split] = coco_captioned_images(paths.images_dir, paths.captions_file, limit)
    return splits


def readable(items: list[tuple[Path, list[str]]]) -> list[tuple[Path, list[str]]]:
    """The items whose image decodes in full (as the doctor checks them); the others are named on stderr."""
    kept = []
    for path, captions in items:
        try:
            load_image(path)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            print(f"skipped {path}: not a readable image ({type(err).__name__}: {err})", file=sys.stderr)
            continue
        kept.append((path, captions))
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--images", type=Path, help="a folder of images with a .txt caption file beside each")
    given.add_argument("--coco", type=Path, help="a COCO 2017 folder (train2017/, val2017/, annotations/)")
    parser.add_argument("--to", choices=list(WRITERS), required=True, help="the layout to write")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (must not exist)")
    parser.add_argument("--val", type=int, default=0, help="--images: this many images form the val split")
    parser.add_argument("--limit", type=int, default=None, help="the first N images of each split")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise LumenError(f"{args.out} exists: choose a new folder (nothing there is replaced)")
    if args.val < 0 or (args.limit is not None and args.limit < 1):
        raise LumenError("--val must be at least 0 and --limit at least 1")
    if args.images is not None:
        if not args.images.is_dir():
            raise LumenError(f"no folder {args.images}")
        items, without = captioned_folder(args.images)
        for image in without:
            print(f"skipped {image}: no caption file {image.with_suffix('.txt').name} (or it is empty)",
                  file=sys.stderr)
        if len(items) <= args.val:
            raise LumenError(f"{args.images}: {len(items)} captioned image(s), not enough for --val {args.val} and "
                             f"a train split")
        cut = len(items) - args.val
        splits = {"train": items[:cut][:args.limit]}
        if args.val:
            splits["val"] = items[cut:][:args.limit]
    else:
        splits = coco_splits(args.coco, args.limit)
    splits = {split: readable(items) for split, items in splits.items()}
    if not splits["train"]:
        raise LumenError("no readable, captioned image for the train split: nothing was written")
    WRITERS[args.to](args.out, splits)
    print(f"{args.to} written to {args.out}: " + ", ".join(f"{s} {len(i)} images" for s, i in splits.items()))
    return 0
