"""Semantic correspondence: lumen correspond CONFIG.yaml corr.source=IMG corr.target=IMG [key=value ...]

With the configured backbone (layout.backbone: sd, dinov2, dino, clip, sd_dinov2, vit):
  - two images: each source point (corr.points in source pixels, or a corr.grid x corr.grid grid) goes to the
    target cell of highest cosine similarity (corr.soft_window for sub-cell precision, corr.mutual to keep only
    mutual nearest neighbours); writes corr.out/matches.png (matched points in the same colour, joined by
    lines) and matches.json (target pixels and similarity of each);
  - corr.joint_pca=true: one PCA of the images' features together (corr.images, or the two), the first three
    components as RGB under each image: corr.out/joint_pca.png;
  - corr.benchmark=DIR: PCK@alpha (corr.alphas) on the pairs of a benchmark in SPair-71k's layout
    (corr.split), relative to the target's bounding box or image (corr.pck_reference), per category and
    overall: corr.out/pck.md and pck.json.
Features are the backbone's own (corr.features=raw) or projected by the layout PCA (corr.features=pca).
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lumen.artifacts import ensure_writable, write_text_atomically
from lumen.build import build_extractor, layout_dtype, layout_settings, load_components
from lumen.config import CorrFeatures, LumenConfig, config_from_argv, save_config
from lumen.correspondence.benchmark import read_pairs
from lumen.correspondence.matching import correct_keypoints, grid_points, joint_pca_colours, match_points, pck_threshold
from lumen.correspondence.pictures import draw_joint_pca, draw_matches
from lumen.data.split_index import load_image
from lumen.data.transforms import to_rgb, uint8_to_pixels
from lumen.errors import LumenError
from lumen.layout.encoder import LayoutEncoder
from lumen.layout.pca import load_pca
from lumen.layout.settings import check_pca_matches
from lumen.pretrained import TORCH_DTYPES

PROG = "lumen correspond"
# The config sections it reads (its --help lists only these and the top-level keys).
SECTIONS = ("model", "data", "layout", "corr")


def open_image(path: str | Path) -> Image.Image:
    """An RGB image, or one line saying why it cannot be read."""
    try:
        return to_rgb(load_image(Path(path)))
    except FileNotFoundError:
        raise LumenError(f"image not found: {path}") from None
    except OSError as err:  # unreadable, truncated, not an image
        raise LumenError(f"cannot read image {path}: {err}") from None


class DenseFeatures:
    """The configured backbone as ``features(images) -> list of (C, h, w)``, each image resized to a
    ``resolution`` square (its features cover the whole image)."""

    def __init__(self, cfg: LumenConfig) -> None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        parts = load_components(cfg, device, TORCH_DTYPES[cfg.model.dtype.value])
        self.pca = load_pca(cfg.layout.pca_dir) if cfg.corr.features == CorrFeatures.pca else None
        if self.pca is None:
            # Raw features at corr.resolution: a transformer's input size follows it as it follows
            # data.resolution for layouts (unless layout.image_size is set).
            cfg = replace(cfg, data=replace(cfg.data, resolution=cfg.corr.resolution))
        dtype = layout_dtype(cfg, device, self.pca)
        if self.pca is not None:  # projected by the PCA: computed exactly as its layouts, at data.resolution
            check_pca_matches(self.pca, layout_settings(cfg, dtype), cfg.layout.pca_dir)
        self.extractor = build_extractor(cfg, parts, dtype=dtype)
        self.encoder = LayoutEncoder(self.pca) if self.pca is not None else None
        self.resolution = cfg.data.resolution
        self.device = device

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[torch.Tensor]:
        r = self.resolution
        pixels = uint8_to_pixels(np.stack([np.asarray(i.resize((r, r), Image.Resampling.BICUBIC)) for i in images]))
        features = self.extractor.features(pixels.to(self.device))
        if self.encoder is not None:
            features = self.encoder(features)
        return list(features.float())


def match_two(cfg: LumenConfig, dense: DenseFeatures, out: Path) -> Path:
    c = cfg.corr
    source, target = open_image(c.source), open_image(c.target)
    source_size, target_size = (source.height, source.width), (target.height, target.width)
    points = torch.tensor(c.points, dtype=torch.float32) if c.points else grid_points(source_size, c.grid)
    outside = [p for p in points.tolist() if not (0 <= p[0] <= source.width and 0 <= p[1] <= source.height)]
    if outside:
        raise LumenError(f"corr.points {outside} lie outside the source image ({source.width} x {source.height} "
                         f"pixels, [x, y])")
    source_features, target_features = dense([source, target])
    matches = match_points(source_features, target_features, points, source_size, target_size,
                           soft_window=c.soft_window, soft_temperature=c.soft_temperature, chunk=c.chunk)
    keep = matches.mutual if c.mutual else torch.ones(len(points), dtype=torch.bool)
    rows = [{"source": [round(float(v), 2) for v in s], "target": [round(float(v), 2) for v in t],
             "similarity": round(float(sim), 4), "mutual": bool(m)}
            for s, t, sim, m, k in zip(matches.source, matches.target, matches.similarity, matches.mutual, keep) if k]
    picture = draw_matches(source, target, matches.source[keep].numpy(), matches.target[keep].numpy(),
                           out / "matches.png")
    write_text_atomically(out / "matches.json", json.dumps({
        "source": str(c.source), "target": str(c.target), "backbone": cfg.layout.backbone,
        "features": c.features.value, "source_size": [source.width, source.height],
        "target_size": [target.width, target.height], "mutual_only": c.mutual, "matches": rows}, indent=2))
    print(f"{len(rows)} matches ({int(matches.mutual.sum())} of {len(points)} mutual), mean similarity "
          f"{float(matches.similarity[keep].mean()) if rows else float('nan'):.3f}: {picture} and matches.json")
    return picture


def joint_pca(cfg: LumenConfig, dense: DenseFeatures, out: Path) -> Path:
    paths = cfg.corr.images or [p for p in (cfg.corr.source, cfg.corr.target) if p]
    if len(paths) < 2:
        raise LumenError("corr.joint_pca=true needs at least two images: corr.images=[a.jpg,b.jpg,...] or "
                         "corr.source and corr.target")
    images = [open_image(p) for p in paths]
    features = []
    for start in range(0, len(images), cfg.layout.batch_size):
        features += dense(images[start:start + cfg.layout.batch_size])
    picture = draw_joint_pca(images, [c.cpu() for c in joint_pca_colours(features)], out / "joint_pca.png")
    print(f"joint PCA of {len(images)} images: {picture}")
    return picture


class FeatureCache:
    """The features of the last ``size`` images used (a benchmark reuses each image in many pairs)."""

    def __init__(self, dense: DenseFeatures, size: int = 64) -> None:
        self.dense, self.size = dense, size
        self.items: OrderedDict[Path, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()

    def fill(self, paths: list[Path]) -> None:
        """Extract the features of the ``paths`` not cached yet, in one batch."""
        missing = list(dict.fromkeys(p for p in paths if p not in self.items))
        if missing:
            images = [open_image(p) for p in missing]
            for path, image, features in zip(missing, images, self.dense(images)):
                self.items[path] = (features, (image.height, image.width))
        for path in paths:
            self.items.move_to_end(path)
        while len(self.items) > max(self.size, len(paths)):
            self.items.popitem(last=False)

    def __getitem__(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.items[path]


def pck_benchmark(cfg: LumenConfig, dense: DenseFeatures, out: Path) -> dict:
    c = cfg.corr
    pairs, problems = read_pairs(c.benchmark, c.split, c.limit, needs_target_box=c.pck_reference.value == "bbox")
    for line in problems:
        print(f"skipped {line}", file=sys.stderr)
    cache = FeatureCache(dense)
    correct = {alpha: defaultdict(int) for alpha in c.alphas}
    counted: dict[str, int] = defaultdict(int)
    batch = max(1, cfg.layout.batch_size // 2)
    with tqdm(total=len(pairs), desc="pairs", unit="pair") as bar:
        for start in range(0, len(pairs), batch):
            chunk = pairs[start:start + batch]
            cache.fill([p for pair in chunk for p in (pair.source_image, pair.target_image)])
            for pair in chunk:
                (source_features, source_size), (target_features, target_size) = (cache[pair.source_image],
                                                                                    cache[pair.target_image])
                predicted = match_points(source_features, target_features, torch.from_numpy(pair.source_points),
                                         source_size, target_size, soft_window=c.soft_window,
                                         soft_temperature=c.soft_temperature, chunk=c.chunk).target
                truth = torch.from_numpy(pair.target_points)
                for alpha in c.alphas:
                    threshold = pck_threshold(c.pck_reference.value, pair.target_bbox, target_size, alpha)
                    hits = int(correct_keypoints(predicted, truth, threshold).sum())
                    correct[alpha][pair.category] += hits
                    correct[alpha]["all"] += hits
                counted[pair.category] += len(truth)
                counted["all"] += len(truth)
            bar.update(len(chunk))
    categories = [*sorted(k for k in counted if k != "all"), "all"]
    table = {cat: {f"PCK@{alpha}": correct[alpha][cat] / counted[cat] for alpha in c.alphas} for cat in categories}
    result = {"benchmark": str(c.benchmark), "split": c.split, "backbone": cfg.layout.backbone,
              "features": c.features.value, "reference": c.pck_reference.value, "pairs": len(pairs),
              "keypoints": counted["all"], "skipped": problems, "pck": table}
    header = "| category | keypoints | " + " | ".join(f"PCK@{a}" for a in c.alphas) + " |"
    lines = [f"PCK on {c.benchmark} ({c.split}, {len(pairs)} pairs), backbone {cfg.layout.backbone}, "
             f"alpha x the target's {'bounding box' if c.pck_reference.value == 'bbox' else 'image'} (larger side)",
             "", header, "|" + "---|" * (2 + len(c.alphas))]
    for cat in categories:
        lines.append(f"| {cat} | {counted[cat]} | " + " | ".join(f"{100 * table[cat][f'PCK@{a}']:.1f}"
                                                                for a in c.alphas) + " |")
    write_text_atomically(out / "pck.json", json.dumps(result, indent=2))
    write_text_atomically(out / "pck.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    if problems:
        print(f"{len(problems)} annotation file(s) skipped (listed above)")
    return result


def correspond(cfg: LumenConfig) -> Optional[dict]:
    c = cfg.corr
    if c.benchmark is None and not (c.source and c.target) and not (c.joint_pca and len(c.images) >= 2):
        raise LumenError("nothing to do: give corr.source=IMG and corr.target=IMG, corr.joint_pca=true with "
                         "corr.images=[...], or corr.benchmark=DIR")
    for path in [c.source, c.target, *c.images]:  # before any model is loaded
        if path and not Path(path).is_file():
            raise LumenError(f"image not found: {path}")
    out = ensure_writable(c.out, "the correspondence results")
    save_config(cfg, out, "config.yaml")
    dense = DenseFeatures(cfg)
    result = None
    if c.benchmark is not None:
        result = pck_benchmark(cfg, dense, out)
    if c.source and c.target:
        match_two(cfg, dense, out)
    if c.joint_pca:
        joint_pca(cfg, dense, out)
    return result


def main(argv=None) -> int:
    cfg = config_from_argv(argv, PROG, __doc__, SECTIONS)
    correspond(cfg)
    return 0
