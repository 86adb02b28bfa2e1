"""Metrics of generated images: layout fidelity, diversity, segmentation mIoU.

- Layout fidelity: the generated image's neural layout (same backbone and PCA) against its source's:
  ``layout_cosine`` (mean over pixels of the cosine between the two N-d layout vectors, 1 = same directions)
  and ``layout_kmeans_ari`` (each layout segmented by k-means over its pixels; the adjusted Rand index of
  the two segmentations: 1 = the same regions, ~0 = unrelated).
- Diversity (``pairwise_distance``): the mean distance over all pairs of images generated from one layout,
  by default ``feature_distance``: 1 - the mean per-pixel cosine similarity of the two images' backbone
  features (0 = the same features everywhere; higher = more varied). ``rms_distance`` is the pixel-space one.
- ``mean_iou`` between a predicted and a reference label map, ignoring 255.

``METRICS`` holds each as one ``MetricSpec`` (name, title, unit, which way is better, how it is computed):
evaluation, the backbone comparison and validation all loop over it, so a new metric is one ``register`` call
here (docs/extending.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from lumen.registry import add_entry


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


# -- the registry: evaluation, the backbone comparison and validation loop over it -----------------------------
@dataclass(frozen=True)
class ImageContext:
    """What a per-image metric may use.

    generated: the generated image's layout ``(N, h, w)``; source: its source's layout; others: the other sources'
    layouts (what any image of the kind shares with any layout); kmeans_clusters: for the segmentations compared;
    segmentation / label_map: the segmenter's label map of the generated image and the source's label map
    (``(H, W)`` ints; None without a segmenter, or for a source without label maps).
    """

    generated: torch.Tensor
    source: torch.Tensor
    others: Sequence[torch.Tensor] = ()
    kmeans_clusters: int = 6
    segmentation: Optional[np.ndarray] = None
    label_map: Optional[np.ndarray] = None


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name (the key of metrics.json's rows, the trackers' logs and the comparison), its column
    title and unit, which way is better (None: neither, a baseline), and how it is computed: ``per_image`` from an
    ``ImageContext`` (averaged over the images), or ``per_source`` from the feature maps ``(C, h, w)`` of the
    images of one source (averaged over the sources). None from either: not measurable here (it is left out).
    ``in_validation``: also logged during training (cheap: needs only the layouts)."""

    name: str
    title: str
    unit: str
    higher_is_better: Optional[bool]
    summary: str
    per_image: Optional[Callable[[ImageContext], Optional[float]]] = None
    per_source: Optional[Callable[[Sequence[torch.Tensor]], Optional[float]]] = None
    in_validation: bool = False


METRICS: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    return add_entry(METRICS, spec, "metric")


def _cosine_to_others(c: ImageContext) -> Optional[float]:
    return float(np.mean([layout_cosine(c.generated, other) for other in c.others])) if c.others else None


def _margin(c: ImageContext) -> Optional[float]:
    others = _cosine_to_others(c)
    return None if others is None else layout_cosine(c.generated, c.source) - others


def _miou(c: ImageContext) -> Optional[float]:
    if c.segmentation is None or c.label_map is None:
        return None
    return mean_iou(c.segmentation, c.label_map)


register(MetricSpec(
    "layout_cosine", "layout cosine", "cosine in [-1, 1]", True,
    "fidelity: the mean per-pixel cosine of the generated image's layout and its source's",
    per_image=lambda c: layout_cosine(c.generated, c.source), in_validation=True))
register(MetricSpec(
    "layout_cosine_others", "to other sources", "cosine in [-1, 1]", None,
    "the same cosine to the other sources' layouts: what any image of the kind shares with any layout",
    per_image=_cosine_to_others))
register(MetricSpec(
    "layout_margin", "margin", "cosine difference", True,
    "the layout cosine minus the cosine to the other sources: the fidelity a layout buys", per_image=_margin))
register(MetricSpec(
    "layout_kmeans_ari", "k-means ARI", "adjusted Rand index in [-0.5, 1]", True,
    "fidelity of regions: the adjusted Rand index of the two layouts' k-means segmentations",
    per_image=lambda c: layout_kmeans_ari(c.generated, c.source, c.kmeans_clusters)))
register(MetricSpec(
    "diversity", "diversity", "1 - mean per-pixel cosine of decoder features", True,
    "the mean pairwise distance between the images generated from one layout, in the judge's feature space",
    per_source=lambda maps: pairwise_distance(list(maps), feature_distance)))
register(MetricSpec(
    "miou", "mIoU", "IoU in [0, 1]", True,
    "a segmentation model's prediction on the generated image against the source's label map", per_image=_miou))
