"""Image folders and Hugging Face datasets as splits of captioned images, read with ``datasets``.

- ``imagefolder``: ``datasets``' own imagefolder loader, on a folder of images with ``metadata.jsonl`` or
  ``metadata.csv`` (``file_name`` and caption columns), optionally in split subfolders (``train/``, ``val/``...);
- ``hf_dataset``: a ``save_to_disk`` folder, or a dataset id from the Hugging Face cache (or the hub, when it
  can be reached).

Both become a ``SplitIndex`` of ``ImageRecord`` s, so every stage reads them as it reads COCO. The image column
is read undecoded (a path, or the encoded bytes), so listing a split never decodes an image, and an image that
cannot be decoded is found, named and skipped where it is read, as for COCO.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from lumen.data.sources.coco import DataLayoutError
from lumen.data.split_index import ImageRecord, SplitIndex, stable_id

DEFAULT_CAPTION_COLUMNS = ("text", "caption", "captions", "txt")
SPLIT_ALIASES = {"val": ("validation", "valid", "dev"), "validation": ("val", "valid", "dev"),
                 "valid": ("validation", "val", "dev")}


def pick_split(available: Sequence[str], wanted: str, where: str) -> str:
    """``wanted``, or the name ``datasets`` gives the same split (``val`` is also found as ``validation``)."""
    for name in (wanted, *SPLIT_ALIASES.get(wanted, ())):
        if name in available:
            return name
    raise DataLayoutError(f"no split '{wanted}' in {where}; its splits: {', '.join(available) or '(none)'} "
                          f"(set data.train_split / data.val_split)")


def caption_columns(wanted: Any, columns: Sequence[str], where: str) -> tuple[str, ...]:
    """The caption columns to read: ``wanted`` (a name or a list), or the first of the usual names."""
    if wanted is None:
        found = next((c for c in DEFAULT_CAPTION_COLUMNS if c in columns), None)
        if found is None:
            raise DataLayoutError(f"{where} has no caption column (looked for {', '.join(DEFAULT_CAPTION_COLUMNS)}); "
                                  f"its columns: {', '.join(columns)}. Set data.caption_column")
        return (found,)
    names = (wanted,) if isinstance(wanted, str) else tuple(wanted)
    missing = [c for c in names if c not in columns]
    if missing:
        raise DataLayoutError(f"data.caption_column: no column {', '.join(repr(c) for c in missing)} in {where}; "
                              f"its columns: {', '.join(columns)}")
    return names


def captions_of(values: Sequence[Any]) -> tuple[list[str], int]:
    """The non-blank captions in a row's caption cells (each a string, a list of strings or None), whitespace
    folded, and how many blank ones were dropped."""
    captions, blank = [], 0
    for value in values:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item is None:
                continue
            text = " ".join(str(item).split())
            if text:
                captions.append(text)
            else:
                blank += 1
    return captions, blank


def _image_column(table, wanted: Optional[str], where: str) -> str:
    from datasets import Image

    columns = list(table.column_names)
    if wanted is not None:
        if wanted not in columns:
            raise DataLayoutError(f"data.image_column: no column '{wanted}' in {where}; its columns: "
                                  f"{', '.join(columns)}")
        column = wanted
    else:
        column = next((c for c in columns if isinstance(table.features[c], Image)), None)
        if column is None:
            raise DataLayoutError(f"{where} has no image column; its columns: {', '.join(columns)}. "
                                  f"Set data.image_column")
    if not isinstance(table.features[column], Image):
        raise DataLayoutError(f"column '{column}' of {where} does not hold images (its type: "
                              f"{table.features[column]}); set data.image_column to an image column")
    return column


def _image_paths(table, column: str) -> list[Optional[str]]:
    """Each row's image path as stored (None where only bytes are), without reading the bytes into Python."""
    data = table.data.column(column)
    paths: list[Optional[str]] = []
    for chunk in data.chunks:
        paths += chunk.field("path").to_pylist()
    return paths


def table_index(table, split: str, location: str, image_column: Optional[str], caption_column: Any,
                limit: Optional[int] = None, root: Optional[Path] = None) -> SplitIndex:
    """A ``SplitIndex`` of a ``datasets.Dataset`` of images and captions.

    Rows of an image folder are read from their files (keyed by the path below ``root``); rows of a table are
    read from the table (keyed ``<split>[<row>]``). Rows without any caption are excluded and listed.
    """
    from datasets import Image

    where = f"{location} (split '{split}')"
    column = _image_column(table, image_column, where)
    texts = caption_columns(caption_column, list(table.column_names), where)
    if limit is not None:
        table = table.select(range(min(limit, len(table))))
    table = table.cast_column(column, Image(decode=False))
    paths = _image_paths(table, column)
    cells = [table[c] for c in texts]  # column-wise: fast, and the images are not touched
    records, without, blank = [], [], 0
    for row, path in enumerate(paths):
        captions, dropped = captions_of([cell[row] for cell in cells])
        blank += dropped
        if root is not None and path is not None:
            try:
                key = Path(path).resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                key = Path(path).as_posix()
        else:
            key = f"{split}[{row}]"
        if not captions:
            without.append(key)
            continue
        file_source = root is not None and path is not None
        records.append(ImageRecord(
            image_id=stable_id(key), path=Path(path) if file_source else Path(f"{location}/{key}"),
            captions=tuple(captions), height=0, width=0, key=key, row=None if file_source else row))
    return SplitIndex(paths=None, records=records, images_listed=len(paths),
                      num_captions=sum(len(r.captions) for r in records), images_without_captions=without,
                      empty_captions=blank, split_name=split, location=location,
                      table=table.select_columns([column]), image_column=column, caption_columns=texts)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


