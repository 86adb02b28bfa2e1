"""Evaluation of a set of samples (``lumen.sampling.sample_set``), per number of layout components.

- Layout fidelity: the neural layout of each generated image (same backbone and PCA) against its source's:
  mean per-pixel cosine similarity, and the adjusted Rand index of the two layouts' k-means segmentations.
  The same cosine against the *other* sources' layouts is the baseline it must beat: what any image of the
  data's kind shares with any layout (a sky above, a ground below). Their difference is the margin.
- Diversity: mean pairwise distance between the images generated from one source layout, in the backbone's
  feature space: 1 - the mean per-pixel cosine similarity of their features (0 = the same features
  everywhere; larger = more varied).
- mIoU (optional): a transformers semantic-segmentation model's prediction on each generated image against
  the source's label map.
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
from lumen.evaluation.metrics import feature_distance, layout_cosine, layout_kmeans_ari, mean_iou, pairwise_distance
from lumen.pretrained import load_part

DIVERSITY_METRIC = "1 - mean per-pixel cosine of decoder features"


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
                 kmeans_clusters: int) -> tuple[list[dict], list[torch.Tensor]]:
    """Per image record: its layout's fidelity to its source's (``source_layouts[record["source"]]``,
    ``(N, h, w)``) and its mean cosine to the other sources' (None with one source); and its feature map
    ``(C, h, w)``, for diversity."""
    per_image, features = [], []
    for record in tqdm(records, desc="evaluate", unit="img"):
        feature_map = extractor.features(read_image(root / record["file"])[None])
        features.append(feature_map[0].cpu())
        generated = encoder(feature_map)[0].cpu()
        source = source_layouts[record["source"]]
        others = [layout_cosine(generated, layout) for i, layout in source_layouts.items() if i != record["source"]]
        per_image.append({"file": record["file"], "n_components": record["n_components"],
                          "cosine": layout_cosine(generated, source),
                          "cosine_others": float(np.mean(others)) if others else None,
                          "ari": layout_kmeans_ari(generated, source, kmeans_clusters)})
    return per_image, features


def segmentation_scores(segmenter: str, label_offset: int, records: list[dict], root: Path,
                        label_of: Callable[[int], Optional[np.ndarray]]) -> dict[int, float]:
    """Per image (by index in ``records``): mIoU of the segmenter (a transformers
    ``AutoModelForSemanticSegmentation`` folder; ``label_offset`` is added to its class ids) against the label
    map ``label_of(source index)`` (None for sources without one, which are left out)."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    model = load_part("segmenter (evaluate.segmenter)", segmenter,
                      lambda: AutoModelForSemanticSegmentation.from_pretrained(segmenter)).eval()
    processor = load_part("segmenter's image processor", segmenter,
                          lambda: AutoImageProcessor.from_pretrained(segmenter))
    scores = {}
    for i, record in enumerate(records):
        label = label_of(record["source"])
        if label is None:
            continue
        image = Image.open(root / record["file"]).convert("RGB")
        with torch.no_grad():
            logits = model(**processor(images=image, return_tensors="pt")).logits
        logits = torch.nn.functional.interpolate(logits, size=image.size[::-1], mode="bilinear", align_corners=False)
        scores[i] = mean_iou(logits.argmax(dim=1)[0].numpy() + label_offset, label)
    return scores


def summarise(records: list[dict], per_image: list[dict], features: list[torch.Tensor], miou: dict[int, float],
              all_components: int) -> list[dict]:
    """One row per number of components (None in a record: all of them, ``all_components``)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[record["n_components"] or all_components].append(i)
    rows = []
    for k in sorted(groups):
        members = groups[k]
        by_source = defaultdict(list)
        for i in members:
            by_source[records[i]["source"]].append(features[i])
        spreads = [d for d in (pairwise_distance(group, feature_distance) for group in by_source.values())
                   if d is not None]
        own = float(np.mean([per_image[i]["cosine"] for i in members]))
        others = [per_image[i]["cosine_others"] for i in members if per_image[i].get("cosine_others") is not None]
        rows.append({
            "n_components": k, "images": len(members),
            "layout_cosine": own,
            "layout_cosine_others": float(np.mean(others)) if others else None,
            "layout_margin": own - float(np.mean(others)) if others else None,
            "layout_kmeans_ari": float(np.mean([per_image[i]["ari"] for i in members])),
            "diversity": float(np.mean(spreads)) if spreads else None,
            "miou": float(np.nanmean([miou[i] for i in members if i in miou])) if miou else None,
        })
    return rows


def markdown_table(result: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| components | images | layout cosine | to other sources | margin | k-means ARI | diversity | mIoU |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['n_components']} | {row['images']} | {fmt(row['layout_cosine'])} | "
                     f"{fmt(row.get('layout_cosine_others'))} | {fmt(row.get('layout_margin'))} | "
                     f"{fmt(row['layout_kmeans_ari'])} | {fmt(row['diversity'])} | {fmt(row['miou'])} |")
    judge = result.get("judge", {})
    lines += ["", f"Layout cosine and ARI: fidelity to the source layout (higher = closer); the cosine to the other "
                  f"sources' layouts is what the images share with any layout, and the margin is the difference. "
                  f"Diversity: "
                  f"{result['diversity_metric']} between images of one source. mIoU: {result['segmentation']}. "
                  f"Measured with the {judge.get('backbone', '?')} layouts of the PCA {judge.get('pca_dir', '?')}."]
    return "\n".join(lines) + "\n"
