"""Where a split's files lie below the data root, for the official layout and the cocostuff README's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lumen.config import DataConfig, DataLayout
from lumen.errors import LumenError

# Folder templates of the two layouts in use ("{root}", "{split}" filled in).
LAYOUTS = {
    DataLayout.official: ("{root}/{split}2017", "{root}/stuffthingmaps_trainval2017/{split}2017"),
    DataLayout.cocostuff: ("{root}/images/{split}2017", "{root}/annotations/{split}2017"),
}


class DataLayoutError(LumenError, FileNotFoundError):
    """A required file or folder of the data set is missing."""


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
