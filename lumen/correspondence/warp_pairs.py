"""A correspondence benchmark from any images, by known warps: each image and its flipped, scaled and
cropped, rotated or perspective-warped copy, with keypoints mapped exactly (written in SPair-71k's layout)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lumen.correspondence.benchmark import BenchmarkError

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
    from lumen.data.split_index import load_image
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
