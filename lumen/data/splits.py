"""A split of the configured data source (``data.source``) as a ``SplitIndex``."""

from __future__ import annotations

from lumen.config import DataConfig, DataSource
from lumen.data.coco_stuff import SplitIndex, read_split
from lumen.data.paths import resolve_split_paths


def read_data_split(data: DataConfig, split: str, load_stuff: bool = False) -> SplitIndex:
    """The records of ``split``: COCO's caption file, or the rows of an image folder or a Hugging Face dataset
    (first ``data.limit`` images). Raises ``DataLayoutError`` naming what is missing."""
    if data.source == DataSource.imagefolder:
        from lumen.data.tables import read_imagefolder_split

        return read_imagefolder_split(data.root, split, data.image_column, data.caption_column, data.limit)
    if data.source == DataSource.hf_dataset:
        from lumen.data.tables import read_hf_split

        return read_hf_split(data.root, split, data.image_column, data.caption_column, data.limit)
    return read_split(resolve_split_paths(data, split), limit=data.limit, load_stuff=load_stuff)
