"""A split of the configured data source (``data.source``) as a ``SplitIndex``."""

from __future__ import annotations

from typing import Optional

from lumen.config import DataConfig, DataSource
from lumen.data.sources.coco import read_split, resolve_split_paths
from lumen.data.split_index import SplitIndex
from lumen.errors import LumenError


class StreamingSourceError(LumenError, ValueError):
    """A stage asked a streaming source for a whole split as a list."""


def read_data_split(data: DataConfig, split: str, load_stuff: bool = False, head: Optional[int] = None,
                    image_ids: Optional[list[int]] = None) -> SplitIndex:
    """The records of ``split``: COCO's caption file, or the rows of an image folder or a Hugging Face dataset
    (first ``data.limit`` images). Raises ``DataLayoutError`` naming what is missing.

    Tar shards are streamed and never listed whole: they give the images ``image_ids``, or the first ``head``
    images (spread over the shards), or the first ``data.limit``."""
    if data.source == DataSource.webdataset:
        from lumen.data.sources.webdataset import open_webdataset_split

        stream = open_webdataset_split(data.shards, data.root, split, data.image_column, data.caption_column)
        if image_ids is not None:
            return stream.find_index(list(image_ids))
        counts = [x for x in (head, data.limit) if x is not None]
        if not counts:
            raise StreamingSourceError(
                f"data.source=webdataset streams split '{split}'; this stage reads a whole split as a list: train "
                f"from the layout cache (scripts/encode_layouts.py, train.use_cache=true), or set data.limit to read "
                f"the first N images as a list")
        return stream.head_index(min(counts))
    if data.source == DataSource.imagefolder:
        from lumen.data.sources.tables import read_imagefolder_split

        return read_imagefolder_split(data.root, split, data.image_column, data.caption_column, data.limit)
    if data.source == DataSource.hf_dataset:
        from lumen.data.sources.tables import read_hf_split

        return read_hf_split(data.root, split, data.image_column, data.caption_column, data.limit)
    return read_split(resolve_split_paths(data, split), limit=data.limit, load_stuff=load_stuff)
