"""Evaluate generated images: python scripts/evaluate.py CONFIG.yaml [more.yaml ...] [key=value ...]

Reads a samples JSON of scripts/sample.py (evaluate.samples) and measures, per number of layout components:
layout fidelity, diversity and, with evaluate.segmenter (a transformers AutoModelForSemanticSegmentation
folder), mIoU against the source's label map (see lumen.evaluation).
Writes evaluate.out/metrics.json and metrics.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from lumen.artifacts import ensure_writable
from lumen.build import build_extractor, layout_dtype, load_components, split_dataset
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.errors import LumenError, run_cli
from lumen.evaluation import DIVERSITY_METRIC, markdown_table, score_images, segmentation_scores, summarise
from lumen.layout import LayoutEncoder
from lumen.pca import load_pca
from lumen.sample_set import read_sample_set
from lumen.sources import compute_layouts, source_from_json


class EvaluationInputError(LumenError, ValueError):
    """Samples that cannot be evaluated with this config."""


def evaluate(cfg: LumenConfig) -> dict:
    e = cfg.evaluate
    path = Path(e.samples)
    metadata = read_sample_set(path)
    pca = load_pca(cfg.layout.pca_dir)
    recorded = metadata["settings"]["lumen"]["pca_fingerprint"]
    if recorded != pca.fingerprint():
        raise EvaluationInputError(f"the samples in {path} were made with the PCA {recorded}, the config's "
                                   f"({cfg.layout.pca_dir}) is {pca.fingerprint()}: evaluate with the same PCA")
    out = ensure_writable(e.out, "the evaluation")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = load_components(cfg, device, layout_dtype(cfg, device, pca))
    extractor, encoder = build_extractor(cfg, parts), LayoutEncoder(pca)
    records = metadata["images"]
    used = sorted({r["source"] for r in records})
    open_split = lambda split: split_dataset(cfg, split)  # noqa: E731
    sources = [source_from_json(metadata["sources"][i], records[0]["resolution"], open_split) for i in used]
    source_layouts = dict(zip(used, compute_layouts(sources, extractor, encoder, Path(cfg.output_dir) / "cache")))
    per_image, features = score_images(records, path.parent, source_layouts, extractor, encoder, e.kmeans_clusters)
    miou, note = {}, "skipped: no segmenter given (evaluate.segmenter=PATH of a transformers segmentation model)"
    if e.segmenter:
        miou = segmentation_scores(e.segmenter, e.segmenter_label_offset, records, path.parent,
                                   lambda i: label_map(cfg, metadata["sources"][i]))
        note = f"segmenter {e.segmenter}"
    result = {"samples": str(path), "diversity_metric": DIVERSITY_METRIC, "segmentation": note,
              "rows": summarise(records, per_image, features, miou, pca.n_components), "per_image": per_image}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    table = markdown_table(result)
    (out / "metrics.md").write_text(table)
    save_config(cfg, out)
    print(table)
    print(f"written to {out / 'metrics.json'} and {out / 'metrics.md'}")
    return result


def label_map(cfg: LumenConfig, source: dict):
    """The label map of a split source (None for image files)."""
    if source["kind"] != "split":
        return None
    dataset = split_dataset(cfg, source["split"], labels="stuffthingmaps")
    index = next(k for k, r in enumerate(dataset.index.records) if r.image_id == source["image_id"])
    return dataset[index]["label"].numpy()


def main(argv=None) -> int:
    evaluate(config_from_argv(argv, "evaluate.py", __doc__.splitlines()[0]))
    return 0


def cli() -> None:
    """``scripts/evaluate.py`` and ``lumen-evaluate``."""
    sys.exit(run_cli(main, "evaluate.py"))


if __name__ == "__main__":
    cli()
