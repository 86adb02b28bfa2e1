"""Metrics of generated images: layout fidelity, diversity, segmentation mIoU.

- Layout fidelity: the generated image's neural layout (same backbone and PCA) against its source's:
  ``layout_cosine`` (mean over pixels of the cosine between the two N-d layout vectors, 1 = same directions)
  and ``layout_kmeans_ari`` (each layout segmented by k-means over its pixels; the adjusted Rand index of
  the two segmentations: 1 = the same regions, ~0 = unrelated).
- Diversity (``pairwise_distance``): the mean distance over all pairs of images generated from one layout,
  by default ``feature_distance``: 1 - the mean per-pixel cosine similarity of the two images' backbone
  features (0 = the same features everywhere; higher = more varied). ``rms_distance`` is the pixel-space one.
- ``mean_iou`` between a predicted and a reference label map, ignoring 255.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F


def layout_cosine(generated: torch.Tensor, source: torch.Tensor) -> float:
    """Mean per-pixel cosine similarity of two layouts ``(N, h, w)``."""
    return float(F.cosine_similarity(generated.float(), source.float(), dim=0, eps=1e-8).mean())


def kmeans_labels(layout: torch.Tensor, clusters: int, seed: int = 0) -> np.ndarray:
    """k-means segmentation of a layout ``(N, h, w)`` -> ``(h * w,)`` cluster ids."""
    from sklearn.cluster import KMeans

    pixels = layout.float().flatten(1).T.numpy()
    clusters = min(clusters, len(np.unique(pixels, axis=0)))
    return KMeans(n_clusters=max(clusters, 1), n_init=4, random_state=seed).fit_predict(pixels)


def layout_kmeans_ari(generated: torch.Tensor, source: torch.Tensor, clusters: int = 6, seed: int = 0) -> float:
    """Adjusted Rand index between the k-means segmentations of two layouts ``(N, h, w)``."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(kmeans_labels(source, clusters, seed), kmeans_labels(generated, clusters, seed)))


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 - mean per-pixel cosine similarity of two feature maps ``(C, h, w)``."""
    return 1.0 - layout_cosine(a, b)


def rms_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of two uint8 images, in [0, 1] units."""
    return float(np.sqrt(np.mean((a.astype(np.float32) / 255.0 - b.astype(np.float32) / 255.0) ** 2)))


def pairwise_distance(items: Sequence, distance: Optional[Callable] = None) -> Optional[float]:
    """Mean ``distance`` over all pairs of ``items`` (default ``rms_distance``; None for fewer than two)."""
    distance = distance or rms_distance
    pairs = list(itertools.combinations(items, 2))
    if not pairs:
        return None
    return float(np.mean([distance(a, b) for a, b in pairs]))


def mean_iou(prediction: np.ndarray, reference: np.ndarray, ignore: int = 255) -> float:
    """Mean intersection over union over the classes present in either map (``ignore`` pixels left out)."""
    valid = reference != ignore
    classes = np.union1d(np.unique(prediction[valid]), np.unique(reference[valid]))
    ious = []
    for c in classes:
        p, r = (prediction == c) & valid, (reference == c) & valid
        union = (p | r).sum()
        if union:
            ious.append((p & r).sum() / union)
    return float(np.mean(ious)) if ious else float("nan")
