"""A Hugging Face dataset: a ``save_to_disk`` folder, or a dataset id read from the Hugging Face cache (fetched
from the hub only where it can be reached), with an image column and a caption column."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from lumen.config import DataConfig
from lumen.data.sources.registry import CaptionedImages, DataSourceSpec, fresh_folder, register
from lumen.data.sources.tables import first_line, pick_split, table_index
from lumen.data.split_index import DataLayoutError, SplitIndex
from lumen.errors import writing


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _where_to_put_dataset(name: str) -> str:
    short = name.split("/")[-1]
    return (f"To use '{name}' without network access, save it once on a machine that has access\n"
            f"  (python -c \"import datasets; datasets.load_dataset('{name}').save_to_disk('data/{short}')\")\n"
            f"and point the config at that folder (data.root=data/{short}), or copy a Hugging Face cache that "
            f"holds it to this machine (HF_HOME).")


def open_hf_dataset(root: str):
    """``root`` as a ``datasets.DatasetDict`` (a single saved ``Dataset`` is its ``train`` split): a
    ``save_to_disk`` folder, or a dataset id from the Hugging Face cache or the hub. A dataset that can be
    neither found nor fetched is refused at once, with the way to bring it here."""
    import datasets

    path = Path(root).expanduser()
    if path.exists():
        if not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            raise DataLayoutError(f"data.root={root} is not a save_to_disk folder (no dataset_dict.json or "
                                  f"state.json); for a folder of images use data.source=imagefolder")
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:
            raise DataLayoutError(f"cannot read the dataset in {path} ({type(err).__name__}: {first_line(err)}); "
                                  f"save it again with save_to_disk") from None
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    from huggingface_hub import constants, dataset_info

    cached = (Path(constants.HF_HUB_CACHE) / f"datasets--{root.replace('/', '--')}").is_dir()
    if not cached:
        if _offline():
            raise DataLayoutError(f"'{root}' is neither a folder nor a dataset in the Hugging Face cache, and "
                                  f"HF_HUB_OFFLINE is set.\n" + _where_to_put_dataset(root))
        try:
            dataset_info(root, timeout=10)
        except Exception as err:  # network errors, unknown or gated repositories: all mean "cannot fetch"
            reason = f"{type(err).__name__}: {first_line(err)}"
            raise DataLayoutError(f"cannot fetch the dataset '{root}' from the Hugging Face Hub ({reason}).\n"
                                  + _where_to_put_dataset(root)) from None
    try:
        return datasets.load_dataset(root)
    except Exception as err:
        raise DataLayoutError(f"cannot load the dataset '{root}' ({type(err).__name__}: {first_line(err)}).\n"
                              + _where_to_put_dataset(root)) from None


def read_hf_split(root: str, split: str, image_column: Optional[str], caption_column: Any,
                  limit: Optional[int] = None) -> SplitIndex:
    """A split of a Hugging Face dataset (``open_hf_dataset``)."""
    tables = open_hf_dataset(root)
    name = pick_split(list(tables), split, root)
    return table_index(tables[name], name, root, image_column, caption_column, limit)


def read(data: DataConfig, split: str, head: Optional[int], image_ids: Optional[list[int]],
         load_stuff: bool) -> SplitIndex:
    return read_hf_split(data.root, split, data.image_column, data.caption_column, data.limit)


def write_hf_dataset(out: str | Path, splits: Mapping[str, CaptionedImages]) -> Path:
    """A ``DatasetDict`` saved with ``save_to_disk``: columns ``image`` (the encoded file, embedded) and ``text``
    (a list of captions)."""
    from datasets import Dataset, DatasetDict, Features, Image, List, Value

    out = Path(out)
    tmp = fresh_folder(out)
    features = Features({"image": Image(), "text": List(Value("string"))})
    tables = {}
    for split, items in splits.items():
        tables[split] = Dataset.from_dict(
            {"image": [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p, _ in items],
             "text": [list(c) for _, c in items]}, features=features)
    with writing(tmp, "the dataset"):
        DatasetDict(tables).save_to_disk(str(tmp))
        tmp.rename(out)
    return out


SPEC: DataSourceSpec = register(DataSourceSpec(
    name="hf_dataset", summary="a Hugging Face dataset: a save_to_disk folder or a dataset id",
    read_split=read, write=write_hf_dataset, named_columns=True))
