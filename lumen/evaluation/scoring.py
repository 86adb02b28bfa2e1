"""Evaluation of a set of samples (``lumen.sampling.sample_set``), per number of layout components: every metric
of ``lumen.evaluation.metrics.METRICS`` (layout fidelity to the source and to the other sources, k-means ARI,
diversity, and with a segmentation model mIoU), measured with one judge's layouts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lumen.data.transforms import uint8_to_pixels
from lumen.errors import LumenError
from lumen.evaluation.metrics import METRICS, ImageContext
from lumen.pretrained import load_part

# The backbone whose layouts measure every backbone's samples (LUMEN compares its backbones with one ruler: SD's
# decoder features).
JUDGE_BACKBONE = "sd"


class UnreadableSampleError(LumenError, ValueError):
    """A generated image file that cannot be decoded."""


def read_image(path: Path) -> torch.Tensor:
    """A generated image file -> ``(3, R, R)`` in [-1, 1]."""
    try:
        return uint8_to_pixels(np.asarray(Image.open(path).convert("RGB")))
    except (OSError, ValueError) as err:
        raise UnreadableSampleError(f"cannot read the generated image {path} ({type(err).__name__}: {err}); make it "
                                    f"again with sample.replay=<its samples.json>") from None


def score_images(records: list[dict], root: Path, source_layouts: dict[int, torch.Tensor], extractor, encoder,
                 kmeans_clusters: int, segmentations: Optional[dict[int, tuple[np.ndarray, np.ndarray]]] = None,
                 ) -> tuple[list[dict], list[torch.Tensor]]:
    """Per image record: every per-image metric of ``METRICS`` (its layout against its source's,
    ``source_layouts[record["source"]]`` ``(N, h, w)``, and the other sources'; with ``segmentations``, record
    index -> (predicted label map, the source's), the segmentation metrics); and its feature map ``(C, h, w)``,
    for the per-source metrics."""
    per_image, features = [], []
    for i, record in enumerate(tqdm(records, desc="evaluate", unit="img")):
        feature_map = extractor.features(read_image(root / record["file"])[None])
        features.append(feature_map[0].cpu())
        segmentation, label_map = (segmentations or {}).get(i, (None, None))
        context = ImageContext(
            generated=encoder(feature_map)[0].cpu(), source=source_layouts[record["source"]],
            others=[layout for j, layout in source_layouts.items() if j != record["source"]],
            kmeans_clusters=kmeans_clusters, segmentation=segmentation, label_map=label_map)
        scores = {m.name: m.per_image(context) for m in METRICS.values() if m.per_image is not None}
        per_image.append({"file": record["file"], "n_components": record["n_components"], **scores})
    return per_image, features


def segment_images(segmenter: str, label_offset: int, records: list[dict], root: Path,
                   label_of: Callable[[int], Optional[np.ndarray]]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per image (by index in ``records``): the segmenter's label map of it (a transformers
    ``AutoModelForSemanticSegmentation`` folder; ``label_offset`` is added to its class ids) and its source's label
    map ``label_of(source index)``; sources without one are left out."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    model = load_part("segmenter (evaluate.segmenter)", segmenter,
                      lambda: AutoModelForSemanticSegmentation.from_pretrained(segmenter)).eval()
    processor = load_part("segmenter's image processor", segmenter,
                          lambda: AutoImageProcessor.from_pretrained(segmenter))
    maps = {}
    for i, record in enumerate(records):
        label = label_of(record["source"])
        if label is None:
            continue
        image = Image.open(root / record["file"]).convert("RGB")
        with torch.no_grad():
            logits = model(**processor(images=image, return_tensors="pt")).logits
        logits = torch.nn.functional.interpolate(logits, size=image.size[::-1], mode="bilinear", align_corners=False)
        maps[i] = (logits.argmax(dim=1)[0].numpy() + label_offset, label)
    return maps


def _mean(values: list) -> Optional[float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return float(np.mean(values)) if values else None


def summarise(records: list[dict], per_image: list[dict], features: list[torch.Tensor],
              all_components: int) -> list[dict]:
    """One row per number of components (None in a record: all of them, ``all_components``): each metric of
    ``METRICS``, per image metrics averaged over the images, per source ones over the sources (None where it
    could not be measured)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[record["n_components"] or all_components].append(i)
    rows = []
    for k in sorted(groups):
        members = groups[k]
        by_source = defaultdict(list)
        for i in members:
            by_source[records[i]["source"]].append(features[i])
        row = {"n_components": k, "images": len(members)}
        for metric in METRICS.values():
            if metric.per_image is not None:
                row[metric.name] = _mean([per_image[i][metric.name] for i in members])
            else:
                row[metric.name] = _mean([metric.per_source(maps) for maps in by_source.values()])
        rows.append(row)
    return rows


def metric_notes() -> list[str]:
    """One line per metric: its title, what it measures, its unit and which way is better."""
    better = {True: "higher is better", False: "lower is better", None: "a baseline"}
    return [f"- {m.title}: {m.summary} ({m.unit}; {better[m.higher_is_better]})." for m in METRICS.values()]


def markdown_table(result: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| components | images | " + " | ".join(m.title for m in METRICS.values()) + " |",
             "|---:|---:|" + "---:|" * len(METRICS)]
    for row in result["rows"]:
        lines.append(f"| {row['n_components']} | {row['images']} | "
                     + " | ".join(fmt(row.get(m.name)) for m in METRICS.values()) + " |")
    judge = result.get("judge", {})
    lines += ["", *metric_notes(), "",
              f"Segmentation: {result['segmentation']}. Measured with the {judge.get('backbone', '?')} layouts of the "
              f"PCA {judge.get('pca_dir', '?')}."]
    return "\n".join(lines) + "\n"
