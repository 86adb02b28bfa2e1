"""Semantic correspondence from dense features: nearest-neighbour matching of points between two images, PCK,
and the joint PCA of several images' features (parts that correspond get the same colour).

Coordinates are pixels ``(x, y)`` of the image as given (continuous: the centre of the top-left pixel is
(0.5, 0.5)); a feature map of ``(h, w)`` cells covers the image evenly, cell ``(i, j)`` centred at
``((j + 0.5) W / w, (i + 0.5) H / h)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class Matches:
    """Matched points: ``target`` ``(P, 2)`` pixel coordinates in the target image, ``similarity`` ``(P,)``
    cosine similarity of the best match, ``mutual`` ``(P,)`` whether the source cell is also the target cell's
    nearest neighbour in the source."""

    source: torch.Tensor
    target: torch.Tensor
    similarity: torch.Tensor
    mutual: torch.Tensor


def point_cells(points: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Flat cell index ``(P,)`` of pixel ``points`` ``(P, 2)`` (x, y) in an image of ``image_size`` (H, W)
    covered by a ``grid`` (h, w) of cells; points outside are clamped to the border cells."""
    (height, width), (h, w) = image_size, grid
    col = (points[:, 0] * w / width).floor().long().clamp(0, w - 1)
    row = (points[:, 1] * h / height).floor().long().clamp(0, h - 1)
    return row * w + col


def cell_centres(grid: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """``(h * w, 2)`` pixel centres (x, y) of every cell of ``grid`` over an image of ``image_size``."""
    (h, w), (height, width) = grid, image_size
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * height / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * width / w
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)


def _best(queries: torch.Tensor, keys: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For unit ``queries`` ``(P, C)``, the best cosine similarity and its index among unit ``keys`` ``(N, C)``,
    computed ``chunk`` keys at a time (memory ``P x chunk``, whatever N)."""
    best = torch.full((queries.shape[0],), -2.0, device=queries.device)
    index = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)
    for start in range(0, keys.shape[0], chunk):
        sims = queries @ keys[start:start + chunk].T
        value, where = sims.max(dim=1)
        better = value > best  # ties keep the earlier key, as one argmax over all would
        best = torch.where(better, value, best)
        index = torch.where(better, where + start, index)
    return best, index


def match_points(source_features: torch.Tensor, target_features: torch.Tensor, points: torch.Tensor,
                 source_size: tuple[int, int], target_size: tuple[int, int], soft_window: int = 0,
                 soft_temperature: float = 0.02, chunk: int = 4096) -> Matches:
    """Match pixel ``points`` ``(P, 2)`` of the source image to the target image.

    ``source_features`` ``(C, h, w)`` and ``target_features`` ``(C, h', w')`` cover the whole images of
    ``source_size`` and ``target_size`` (H, W). Each point takes its cell's feature and goes to the target cell of
    highest cosine similarity; with ``soft_window`` r > 0, to the softmax-weighted mean (temperature
    ``soft_temperature``) of the cell centres in the (2r+1)^2 window around it, for sub-cell precision.
    """
    c, h, w = source_features.shape
    _, th, tw = target_features.shape
    source = F.normalize(source_features.float().reshape(c, -1).T, dim=1)  # (h*w, C)
    target = F.normalize(target_features.float().reshape(c, -1).T, dim=1)  # (h'*w', C)
    cells = point_cells(points.float().cpu(), source_size, (h, w)).to(source.device)
    similarity, best = _best(source[cells], target, chunk)
    _, back = _best(target[best], source, chunk)
    centres = cell_centres((th, tw), target_size).to(source.device)
    matched = centres[best]
    if soft_window > 0:
        matched = _soft_argmax(source[cells], target, best, (th, tw), centres, soft_window, soft_temperature)
    return Matches(points.float().cpu(), matched.cpu(), similarity.cpu(), (back == cells).cpu())


def _soft_argmax(queries, target, best, grid, centres, radius: int, temperature: float) -> torch.Tensor:
    """Softmax-weighted mean of the cell centres in the window of ``radius`` cells around each best cell."""
    h, w = grid
    offsets = torch.arange(-radius, radius + 1, device=best.device)
    rows = (best // w)[:, None, None] + offsets[None, :, None]
    cols = (best % w)[:, None, None] + offsets[None, None, :]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    window = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(len(best), -1)  # (P, (2r+1)^2)
    sims = torch.einsum("pc,pkc->pk", queries, target[window])
    sims = sims.masked_fill(~inside.reshape(len(best), -1), float("-inf"))
    weights = torch.softmax(sims / temperature, dim=1)
    return torch.einsum("pk,pkd->pd", weights, centres[window])


def grid_points(image_size: tuple[int, int], per_side: int) -> torch.Tensor:
    """``(per_side^2, 2)`` points evenly spread over an image of ``image_size`` (H, W), away from the border."""
    height, width = image_size
    xs = (torch.arange(per_side, dtype=torch.float32) + 0.5) * width / per_side
    ys = (torch.arange(per_side, dtype=torch.float32) + 0.5) * height / per_side
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)


def pck_threshold(reference: str, bbox: Optional[list[float]], image_size: tuple[int, int], alpha: float) -> float:
    """The PCK radius: ``alpha`` times the larger side of the target's bounding box ``[x0, y0, x1, y1]``
    (SPair-71k) or of the target image (``reference="image"``, PF-PASCAL)."""
    if reference == "bbox":
        if bbox is None:
            raise ValueError("PCK relative to the bounding box needs the target's bounding box")
        return alpha * max(bbox[2] - bbox[0], bbox[3] - bbox[1])
    return alpha * max(image_size)


def correct_keypoints(predicted: torch.Tensor, truth: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(P,)`` whether each predicted point ``(P, 2)`` lies within ``threshold`` pixels of the true one."""
    return (predicted.float() - truth.float()).norm(dim=1) <= threshold


def joint_pca_colours(features: list[torch.Tensor], n: int = 3) -> list[torch.Tensor]:
    """One PCA fitted on the cells of every map in ``features`` (each ``(C, h_i, w_i)``) together; returns for
    each map its first ``n`` components ``(n, h_i, w_i)`` scaled to [0, 1] jointly (the same colour means the
    same place in the shared feature space, whichever image it is in)."""
    flat = [F.normalize(f.float().reshape(f.shape[0], -1).T, dim=1) for f in features]
    stacked = torch.cat(flat)
    mean = stacked.mean(dim=0, keepdim=True)
    centred = stacked - mean
    # The leading right singular vectors are the principal axes; fixed signs so a picture is repeatable.
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:n]
    signs = torch.sign(axes[torch.arange(n), axes.abs().argmax(dim=1)])
    axes = axes * signs[:, None]
    projected = centred @ axes.T
    low, high = projected.min(dim=0).values, projected.max(dim=0).values
    scaled = (projected - low) / (high - low).clamp_min(1e-12)
    out, start = [], 0
    for f, cells in zip(features, flat):
        out.append(scaled[start:start + len(cells)].T.reshape(n, *f.shape[1:]))
        start += len(cells)
    return out
