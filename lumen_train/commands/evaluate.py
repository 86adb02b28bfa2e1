"""Evaluate generated images: lumen evaluate CONFIG.yaml [more.yaml ...] [key=value ...]

Reads a samples JSON of lumen sample (evaluate.samples) and measures, per number of layout components:
layout fidelity, diversity and, with evaluate.segmenter (a transformers AutoModelForSemanticSegmentation
folder), mIoU against the source's label map (see lumen.evaluation).
Writes evaluate.out/metrics.json and metrics.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lumen.artifacts import ensure_writable
from lumen.build import build_extractor, config_for_layout, layout_dtype, load_components, split_dataset
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.errors import LumenError
from lumen.evaluation.metrics import METRICS
from lumen.evaluation.scoring import (
    JUDGE_BACKBONE,
    markdown_table,
    score_images,
    segment_images,
    summarise,
)
from lumen.layout.encoder import LayoutEncoder
from lumen.layout.pca import load_pca
from lumen.layout.settings import LayoutSettings
from lumen.sampling.sample_set import read_sample_set
from lumen.sampling.source_images import compute_layouts, source_from_json

PROG = "lumen evaluate"
# The config sections it reads (its --help lists only these and the top-level keys).
SECTIONS = ("model", "data", "layout", "evaluate")


class EvaluationInputError(LumenError, ValueError):
    """Samples that cannot be evaluated with this config."""


def judge_pca_dir(cfg: LumenConfig, metadata: dict, path: Path) -> str:
    """The PCA whose backbone measures the samples: evaluate.judge_pca, or the samples' own when they come from
    the judge's backbone (``JUDGE_BACKBONE``)."""
    if cfg.evaluate.judge_pca:
        return cfg.evaluate.judge_pca
    made_with = metadata["settings"]["lumen"]["layout"]["backbone"]
    if made_with != JUDGE_BACKBONE:
        raise EvaluationInputError(
            f"the samples in {path} come from {made_with} layouts: measured with their own backbone, they cannot be "
            f"compared with another backbone's. Give the judge: evaluate.judge_pca=<a PCA fitted with "
            f"layout.backbone={JUDGE_BACKBONE}> (one ruler for every backbone), or evaluate.judge_pca="
            f"{cfg.layout.pca_dir} to measure with this run's own backbone")
    return cfg.layout.pca_dir


def evaluate(cfg: LumenConfig) -> dict:
    e = cfg.evaluate
    path = Path(e.samples)
    metadata = read_sample_set(path)
    missing = [r["file"] for r in metadata["images"] if not (path.parent / r["file"]).is_file()]
    if missing:
        raise EvaluationInputError(
            f"{len(missing)} of the {len(metadata['images'])} images {path} lists are missing from {path.parent} "
            f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}). Make them again with "
            f"'lumen sample CONFIG sample.replay={path}' (bit for bit), or evaluate another sample set")
    judge_dir = judge_pca_dir(cfg, metadata, path)
    pca = load_pca(judge_dir)
    own = metadata["settings"]["lumen"]["pca_fingerprint"] == pca.fingerprint()
    if not e.judge_pca and not own:
        raise EvaluationInputError(f"the samples in {path} were made with the PCA "
                                   f"{metadata['settings']['lumen']['pca_fingerprint']}, the config's "
                                   f"({cfg.layout.pca_dir}) is {pca.fingerprint()}: evaluate with the same PCA")
    # The judge makes layouts exactly as its PCA's features were made (its backbone, layers, dtype).
    judge = config_for_layout(cfg, LayoutSettings.from_json(pca.settings, f"{judge_dir}/pca.json"))
    out = ensure_writable(e.out, "the evaluation")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = load_components(judge, device, layout_dtype(judge, device, pca))
    extractor, encoder = build_extractor(judge, parts), LayoutEncoder(pca)
    records = metadata["images"]
    used = sorted({r["source"] for r in records})
    ids = [metadata["sources"][i]["image_id"] for i in used if metadata["sources"][i].get("image_id") is not None]
    open_split = lambda split: split_dataset(cfg, split, image_ids=ids)  # noqa: E731
    sources = [source_from_json(metadata["sources"][i], records[0]["resolution"], open_split) for i in used]
    for source in sources:
        source.from_cache = source.from_cache and own  # the cache holds the samples' own layouts only
    source_layouts = dict(zip(used, compute_layouts(sources, extractor, encoder, Path(cfg.output_dir) / "cache")))
    segmentations = None
    note = "skipped: no segmenter given (evaluate.segmenter=PATH of a transformers segmentation model)"
    if e.segmenter:
        segmentations = segment_images(e.segmenter, e.segmenter_label_offset, records, path.parent,
                                       lambda i: label_map(cfg, metadata["sources"][i]))
        note = f"segmenter {e.segmenter}"
    per_image, features = score_images(records, path.parent, source_layouts, extractor, encoder, e.kmeans_clusters,
                                       segmentations)
    all_components = metadata["settings"]["lumen"]["n_components"]
    result = {"samples": str(path), "judge": {"pca_dir": str(judge_dir), "backbone": judge.layout.backbone,
                                              "pca_fingerprint": pca.fingerprint(), "own": own},
              "metrics": {m.name: {"title": m.title, "unit": m.unit, "higher_is_better": m.higher_is_better}
                          for m in METRICS.values()},
              "segmentation": note, "rows": summarise(records, per_image, features, all_components),
              "per_image": per_image}
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
    evaluate(config_from_argv(argv, PROG, __doc__, SECTIONS))
    return 0
