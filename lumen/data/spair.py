"""Correspondence benchmarks in SPair-71k's layout, and pairs made from any images by known warps.

Layout (SPair-71k; see data/README.md):
    ROOT/JPEGImages/<category>/<name>.jpg
    ROOT/PairAnnotation/<split>/<pair>.json   {"src_imname", "trg_imname", "category", "src_kps", "trg_kps",
                                               "src_bndbox", "trg_bndbox", ...}
Keypoints are ``[x, y]`` pixels of the image as stored; boxes ``[x0, y0, x1, y1]``.
"""

from __future__ import annotations

import json
import math
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


# -- pairs by known warps ------------------------------------------------------------------------------------
WARPS = ("flip", "scale_crop", "rotation", "perspective")


def warp_matrix(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A 3x3 homography taking source pixel coordinates to target ones, for a target of the same size."""
    cx, cy = width / 2, height / 2
    to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    back = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], dtype=np.float64)
    if kind == "flip":
        return np.array([[-1, 0, width], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    if kind == "scale_crop":
        s = rng.uniform(1.2, 1.6)
        shift = rng.uniform(-0.1, 0.1, size=2) * (width, height)
        scale = np.array([[s, 0, shift[0]], [0, s, shift[1]], [0, 0, 1]], dtype=np.float64)
        return back @ scale @ to_centre
    if kind == "rotation":
        angle = math.radians(rng.uniform(15, 35) * rng.choice([-1, 1]))
        c, s = math.cos(angle), math.sin(angle)
        rotate = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)
        return back @ rotate @ to_centre
    if kind == "perspective":
        corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
        moved = corners + rng.uniform(-0.12, 0.12, size=(4, 2)) * (width, height)
        return homography(corners, moved)
    raise ValueError(f"unknown warp {kind!r}; known: {', '.join(WARPS)}")


def homography(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3x3 homography taking four ``source`` points ``(4, 2)`` to ``target`` (direct linear transform)."""
    rows = []
    for (x, y), (u, v) in zip(source, target):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vh = np.linalg.svd(np.asarray(rows))
    matrix = vh[-1].reshape(3, 3)
    return matrix / matrix[2, 2]


def apply_homography(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(K, 2)`` points mapped by ``matrix``."""
    mapped = np.c_[points, np.ones(len(points))] @ matrix.T
    return mapped[:, :2] / mapped[:, 2:3]


def write_warp_pairs(images: list[Path], out_dir: Path, warps: tuple[str, ...] = WARPS, points: int = 20,
                     seed: int = 0, max_side: int = 512, progress: bool = True) -> dict:
    """Pairs in SPair-71k's layout from ``images`` by known warps, written under a temporary name and moved to
    ``out_dir`` (which must not exist) when complete.

    Each image (its longer side brought to at most ``max_side``) is warped by each of ``warps``; ``points``
    keypoints drawn in the source are mapped exactly, and kept when they land inside the target. The category
    is the warp, so PCK per category is PCK per warp. Bounding boxes: the whole source, and the box of the
    warped source inside the target. Unreadable images are skipped and listed; with no pair at all,
    ``BenchmarkError``. Returns a summary (pairs per warp, keypoints, unreadable images)."""
    from PIL import Image
    from tqdm import tqdm

    from lumen.artifacts import move_into_place
    from lumen.data.coco_stuff import load_image
    from lumen.data.transforms import to_rgb

    rng = np.random.default_rng(seed)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    annotations = tmp / "PairAnnotation" / "test"
    annotations.mkdir(parents=True)
    summary = {warp: 0 for warp in warps}
    keypoints, unreadable = 0, []
    for path in tqdm(images, desc="warp pairs", unit="image", disable=not progress):
        try:
            image = to_rgb(load_image(path))
        except OSError as err:  # not an image, truncated, unreadable: named, not fatal
            unreadable.append(f"{path}: {err}")
            continue
        scale = min(1.0, max_side / max(image.size))
        if scale < 1.0:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        width, height = image.size
        for warp in warps:
            matrix = warp_matrix(warp, width, height, rng)
            inverse = np.linalg.inv(matrix)
            inverse = inverse / inverse[2, 2]
            warped = image.transform((width, height), Image.Transform.PERSPECTIVE, tuple(inverse.flatten()[:8]),
                                     resample=Image.Resampling.BICUBIC)
            source_points = rng.uniform((0.1 * width, 0.1 * height), (0.9 * width, 0.9 * height), size=(points, 2))
            target_points = apply_homography(matrix, source_points)
            inside = ((target_points >= 1).all(axis=1) & (target_points[:, 0] <= width - 1)
                      & (target_points[:, 1] <= height - 1))
            if inside.sum() < 3:
                continue
            corners = apply_homography(matrix, np.array([[0, 0], [width, 0], [width, height], [0, height]], float))
            box = [max(0.0, corners[:, 0].min()), max(0.0, corners[:, 1].min()),
                   min(float(width), corners[:, 0].max()), min(float(height), corners[:, 1].max())]
            folder = tmp / "JPEGImages" / warp
            folder.mkdir(parents=True, exist_ok=True)
            source_name, target_name = f"{path.stem}.jpg", f"{path.stem}_{warp}.jpg"
            image.save(folder / source_name, quality=95)
            warped.save(folder / target_name, quality=95)
            pair = {"src_imname": source_name, "trg_imname": target_name, "category": warp,
                    "src_kps": np.round(source_points[inside], 2).tolist(),
                    "trg_kps": np.round(target_points[inside], 2).tolist(),
                    "src_bndbox": [0, 0, width, height], "trg_bndbox": [round(v, 2) for v in box],
                    "warp": warp, "homography": matrix.tolist()}
            (annotations / f"{path.stem}-{warp}.json").write_text(json.dumps(pair))
            summary[warp] += 1
            keypoints += int(inside.sum())
    if not any(summary.values()):
        import shutil

        shutil.rmtree(tmp)
        raise BenchmarkError(f"no pair could be made from {len(images)} image(s)"
                             + (f" ({len(unreadable)} unreadable, e.g. {unreadable[0]})" if unreadable else ""))
    (tmp / "warp_pairs.json").write_text(json.dumps({"images": len(images), "pairs": summary,
                                                     "keypoints": keypoints, "seed": seed, "points": points,
                                                     "unreadable": unreadable}))
    move_into_place(tmp, out_dir)
    return {"pairs": summary, "keypoints": keypoints, "unreadable": unreadable}
