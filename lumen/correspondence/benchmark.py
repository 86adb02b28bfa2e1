"""Correspondence benchmarks in SPair-71k's layout: ``PairAnnotation/<split>/*.json`` (source and target
image, category, keypoints, bounding boxes) and ``JPEGImages/<category>/*.jpg``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lumen.errors import LumenError

REQUIRED = ("src_imname", "trg_imname", "category", "src_kps", "trg_kps")


class BenchmarkError(LumenError):
    """A benchmark folder that is missing or has no usable pair."""


@dataclass
class KeypointPair:
    """One annotated pair: images, matching keypoints ``(K, 2)`` (x, y), the boxes ``[x0, y0, x1, y1]``."""

    name: str
    category: str
    source_image: Path
    target_image: Path
    source_points: np.ndarray
    target_points: np.ndarray
    source_bbox: Optional[list[float]]
    target_bbox: Optional[list[float]]


def read_pairs(root: str | Path, split: str, limit: Optional[int] = None,
               needs_target_box: bool = False) -> tuple[list[KeypointPair], list[str]]:
    """The usable pairs of ``split`` (sorted by file name) and one line per annotation file that is not
    usable (unreadable JSON, a missing field, keypoint lists of different lengths, a missing image, and with
    ``needs_target_box`` (PCK relative to the target's bounding box) no target bounding box)."""
    root = Path(root)
    folder = root / "PairAnnotation" / split
    if not folder.is_dir():
        raise BenchmarkError(f"no {folder}: a benchmark in SPair-71k's layout has PairAnnotation/<split>/*.json "
                             f"and JPEGImages/<category>/*.jpg (see data/README.md)")
    pairs, problems = [], []
    for path in sorted(folder.glob("*.json")):
        if limit is not None and len(pairs) >= limit:
            break
        try:
            pair = _read_pair(root, path)
            if needs_target_box and pair.target_bbox is None:
                raise ValueError("missing trg_bndbox (PCK is measured against the target's bounding box: "
                                 "corr.pck_reference=bbox)")
        except (ValueError, KeyError, TypeError, OSError) as err:
            problems.append(f"{path.name}: {err}")
            continue
        pairs.append(pair)
    if not pairs:
        detail = f" ({len(problems)} unusable: {problems[0]})" if problems else ""
        raise BenchmarkError(f"no usable pair in {folder}{detail}")
    return pairs, problems


def _read_pair(root: Path, path: Path) -> KeypointPair:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    src, trg = np.asarray(data["src_kps"], dtype=np.float64), np.asarray(data["trg_kps"], dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != trg.shape or len(src) == 0:
        raise ValueError(f"src_kps and trg_kps must be equally long, non-empty lists of [x, y] (found shapes "
                         f"{src.shape} and {trg.shape})")
    category = str(data["category"])
    images = [root / "JPEGImages" / category / str(data[key]) for key in ("src_imname", "trg_imname")]
    for image in images:
        if not image.is_file():
            raise ValueError(f"image {image} not found")
    boxes = [_box(data.get(key)) for key in ("src_bndbox", "trg_bndbox")]
    return KeypointPair(path.stem, category, images[0], images[1], src, trg, boxes[0], boxes[1])


def _box(value) -> Optional[list[float]]:
    if value is None:
        return None
    box = [float(v) for v in value]
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"a bounding box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, found {value}")
    return box
