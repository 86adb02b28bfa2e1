"""An image folder: images with ``metadata.jsonl`` (or ``metadata.csv``) holding ``file_name`` and a caption
column, optionally in split subfolders, read by ``datasets``' imagefolder loader."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from lumen.config import DataConfig
from lumen.data.sources.registry import CaptionedImages, DataSourceSpec, fresh_folder, register
from lumen.data.sources.tables import first_line, pick_split, table_index
from lumen.data.split_index import DataLayoutError, SplitIndex
from lumen.errors import writing


def check_json_lines(path: Path) -> None:
    """Refuse a JSON-lines file with a line that is not a JSON object, naming the file and the line (the loader
    would report a parser's error without either)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                what = err.msg.removesuffix(" at")  # some of json's messages end with "at"
                raise DataLayoutError(f"{path}, line {number}: not valid JSON ({what} at column {err.colno}); "
                                      f"each line holds one image's row, e.g. "
                                      f'{{"file_name": "a.jpg", "text": "a caption"}}') from None
            if not isinstance(row, dict):
                raise DataLayoutError(f"{path}, line {number}: a JSON {type(row).__name__}, not an object with "
                                      f"file_name and a caption column")


def read_imagefolder_split(root: str | Path, split: str, image_column: Optional[str], caption_column: Any,
                           limit: Optional[int] = None) -> SplitIndex:
    """A split of an image folder, read by ``datasets``' imagefolder loader."""
    import datasets

    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataLayoutError(f"data.root={root}: no such folder (data.source=imagefolder expects a folder of "
                              f"images with metadata.jsonl or metadata.csv; see data/README.md)")
    if not any(folder.rglob("metadata.jsonl")) and not any(folder.rglob("metadata.csv")):
        raise DataLayoutError(f"{folder} has no metadata.jsonl or metadata.csv: the captions go there, one row per "
                              f"image (file_name and a caption column; see data/README.md)")
    for metadata in sorted(folder.rglob("metadata.jsonl")):
        check_json_lines(metadata)
    try:
        tables = datasets.load_dataset("imagefolder", data_dir=str(folder))
    except Exception as err:  # metadata parse errors come as pyarrow, datasets and value errors
        raise DataLayoutError(f"cannot read the image folder {folder} ({type(err).__name__}: {first_line(err)}). "
                              f"Each metadata row needs file_name, and a caption column holds strings in "
                              f"every row or lists in every row") from None
    name = pick_split(list(tables), split, str(folder))
    return table_index(tables[name], name, str(folder), image_column, caption_column, limit, root=folder)


def read(data: DataConfig, split: str, head: Optional[int], image_ids: Optional[list[int]],
         load_stuff: bool) -> SplitIndex:
    return read_imagefolder_split(data.root, split, data.image_column, data.caption_column, data.limit)


def write_imagefolder(out: str | Path, splits: Mapping[str, CaptionedImages]) -> Path:
    """``out/<split>/<image>`` with ``out/<split>/metadata.jsonl`` (``file_name`` and ``text``, a list)."""
    out = Path(out)
    tmp = fresh_folder(out)
    with writing(tmp, "the image folder"):
        for split, items in splits.items():
            folder = tmp / split
            folder.mkdir(parents=True)
            rows = []
            for path, captions in items:
                shutil.copyfile(path, folder / Path(path).name)
                rows.append({"file_name": Path(path).name, "text": list(captions)})
            (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.rename(out)
    return out


SPEC: DataSourceSpec = register(DataSourceSpec(
    name="imagefolder", summary="a folder of images with metadata.jsonl or metadata.csv (split subfolders optional)",
    read_split=read, write=write_imagefolder, named_columns=True))
