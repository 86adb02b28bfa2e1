"""Evaluate generated images: python scripts/evaluate.py CONFIG.yaml [more.yaml ...] [key=value ...]

Reads a samples JSON of scripts/sample.py (evaluate.samples) and measures, per number of layout components:
  - layout fidelity: the neural layout of each generated image (same backbone and PCA) against its source's:
    mean per-pixel cosine similarity, and the adjusted Rand index of the two layouts' k-means segmentations;
  - diversity: mean pairwise distance between the images generated from one source layout, in the
    backbone's feature space: 1 - the mean per-pixel cosine similarity of their decoder features
    (0 = the same features everywhere; larger = more varied);
  - with evaluate.segmenter (a transformers AutoModelForSemanticSegmentation folder): mIoU of its prediction
    on each generated image against the source's label map (skipped, with a note, when none is given).
Writes evaluate.out/metrics.json and metrics.md.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lumen.artifacts import ensure_writable, read_json
from lumen.build import build_extractor, layout_dtype, load_components, split_dataset
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.errors import LumenError, run_cli
from lumen.layout import LayoutEncoder
from lumen.models import load_part
from lumen.metrics import feature_distance, layout_cosine, layout_kmeans_ari, mean_iou, pairwise_distance
from lumen.pca import load_pca
from lumen.sources import compute_layouts, source_from_json


class EvaluationInputError(LumenError, ValueError):
    """Samples that cannot be evaluated with this config."""


def image_tensor(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def segmentation_scores(cfg: LumenConfig, metadata: dict, root: Path, records: list[dict]) -> dict[int, float]:
    """Per image (by index in ``records``): mIoU of the segmenter against the source's label map."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    folder = cfg.evaluate.segmenter
    model = load_part("segmenter (evaluate.segmenter)", folder,
                      lambda: AutoModelForSemanticSegmentation.from_pretrained(folder)).eval()
    processor = load_part("segmenter's image processor", folder, lambda: AutoImageProcessor.from_pretrained(folder))
    labels: dict[int, np.ndarray] = {}
    scores = {}
    for i, record in enumerate(records):
        source = metadata["sources"][record["source"]]
        if source["kind"] != "split":
            continue
        if record["source"] not in labels:
            dataset = split_dataset(cfg, source["split"], labels="stuffthingmaps")
            index = next(k for k, r in enumerate(dataset.index.records) if r.image_id == source["image_id"])
            labels[record["source"]] = dataset[index]["label"].numpy()
        image = Image.open(root / record["file"]).convert("RGB")
        with torch.no_grad():
            logits = model(**processor(images=image, return_tensors="pt")).logits
        logits = torch.nn.functional.interpolate(logits, size=image.size[::-1], mode="bilinear", align_corners=False)
        prediction = logits.argmax(dim=1)[0].numpy() + cfg.evaluate.segmenter_label_offset
        scores[i] = mean_iou(prediction, labels[record["source"]])
    return scores


def evaluate(cfg: LumenConfig) -> dict:
    path = Path(cfg.evaluate.samples)
    if not path.is_file():
        raise EvaluationInputError(f"evaluate.samples={path}: no samples JSON; run scripts/sample.py first")
    metadata = read_json(path, "evaluate.samples", "give a samples.json written by scripts/sample.py")
    root = path.parent
    pca = load_pca(cfg.layout.pca_dir)
    recorded = metadata["settings"]["lumen"]["pca_fingerprint"]
    if recorded != pca.fingerprint():
        raise EvaluationInputError(f"the samples in {path} were made with the PCA {recorded}, the config's "
                                   f"({cfg.layout.pca_dir}) is {pca.fingerprint()}: evaluate with the same PCA")
    out = ensure_writable(cfg.evaluate.out, "the evaluation")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = load_components(cfg, device, layout_dtype(cfg, device, pca))
    extractor, encoder = build_extractor(cfg, parts), LayoutEncoder(pca)
    records = metadata["images"]
    resolution = records[0]["resolution"]
    used = sorted({r["source"] for r in records})
    sources = [source_from_json(cfg, metadata["sources"][i], resolution) for i in used]
    source_layouts = dict(zip(used, compute_layouts(cfg, sources, extractor, encoder)))

    per_image, features = [], []
    for record in tqdm(records, desc="evaluate", unit="img"):
        feature_map = extractor(image_tensor(root / record["file"])[None]).features
        features.append(feature_map[0].cpu())
        generated = encoder(feature_map)[0].cpu()
        source = source_layouts[record["source"]]
        per_image.append({"file": record["file"], "n_components": record["n_components"],
                          "cosine": layout_cosine(generated, source),
                          "ari": layout_kmeans_ari(generated, source, cfg.evaluate.kmeans_clusters)})
    segmenter_note = "skipped: no segmenter given (evaluate.segmenter=PATH of a transformers segmentation model)"
    miou = {}
    if cfg.evaluate.segmenter:
        miou = segmentation_scores(cfg, metadata, root, records)
        segmenter_note = f"segmenter {cfg.evaluate.segmenter}"

    groups: dict = defaultdict(list)
    for i, (record, scores) in enumerate(zip(records, per_image)):
        groups[record["n_components"] or pca.n_components].append(i)
    rows = []
    for k in sorted(groups):
        members = groups[k]
        by_source = defaultdict(list)
        for i in members:
            by_source[records[i]["source"]].append(features[i])
        spreads = [d for d in (pairwise_distance(group, feature_distance) for group in by_source.values())
                   if d is not None]
        rows.append({
            "n_components": k, "images": len(members),
            "layout_cosine": float(np.mean([per_image[i]["cosine"] for i in members])),
            "layout_kmeans_ari": float(np.mean([per_image[i]["ari"] for i in members])),
            "diversity": float(np.mean(spreads)) if spreads else None,
            "miou": float(np.nanmean([miou[i] for i in members if i in miou])) if miou else None,
        })
    result = {"samples": str(path), "diversity_metric": "1 - mean per-pixel cosine of decoder features",
              "segmentation": segmenter_note, "rows": rows, "per_image": per_image}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    table = markdown_table(result)
    (out / "metrics.md").write_text(table)
    save_config(cfg, out)
    print(table)
    print(f"written to {out / 'metrics.json'} and {out / 'metrics.md'}")
    return result


def markdown_table(result: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| components | images | layout cosine | k-means ARI | diversity | mIoU |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['n_components']} | {row['images']} | {fmt(row['layout_cosine'])} | "
                     f"{fmt(row['layout_kmeans_ari'])} | {fmt(row['diversity'])} | {fmt(row['miou'])} |")
    lines += ["", f"Layout cosine and ARI: fidelity to the source layout (higher = closer). Diversity: "
                  f"{result['diversity_metric']} between images of one source. mIoU: {result['segmentation']}."]
    return "\n".join(lines) + "\n"


def evaluate_from_argv(argv) -> dict:
    return evaluate(config_from_argv(argv, "evaluate.py", __doc__.splitlines()[0]))


def main(argv=None) -> int:
    evaluate_from_argv(argv)
    return 0


def cli() -> None:
    """``scripts/evaluate.py`` and ``lumen-evaluate``."""
    sys.exit(run_cli(main, "evaluate.py"))


if __name__ == "__main__":
    cli()
