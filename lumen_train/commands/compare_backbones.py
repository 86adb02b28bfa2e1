"""Compare layout backbones: lumen compare-backbones CONFIG.yaml [more.yaml ...] [key=value ...]

For each backbone of compare.backbones, on the same data: the PCA (explained variance at pca.n_components),
extraction images/s, and, with compare.train_steps > 0, a ControlNet trained that many steps on its layouts,
samples of the same compare.num_sources validation images, and their layout fidelity, diversity (and mIoU
with evaluate.segmenter) measured by one judge (with compare.benchmark, also PCK on a correspondence
benchmark): the SD backbone's PCA (the first SD run's, or one fitted for
the purpose), as LUMEN compares its backbones with one ruler. Each backbone's run lies in
compare.out/<backbone>/; the comparison is compare.out/comparison.md, comparison.json and comparison.png (the
same sources' layouts for every backbone side by side, with their samples).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lumen.artifacts import ensure_writable
from lumen.backbones import get_backbone
from lumen.backbones.transformer_loading import check_transformer_files
from lumen.build import build_extractor, layout_dtype, load_components, split_dataset
from lumen.config import CorrFeatures, LumenConfig, config_from_argv, save_config
from lumen.errors import LumenError
from lumen.evaluation.metrics import METRICS
from lumen.evaluation.scoring import JUDGE_BACKBONE, metric_notes
from lumen.layout.encoder import LayoutEncoder
from lumen.layout.pca import load_pca
from lumen.plotting import to_uint8_image
from lumen.pretrained import check_weights, resolve_model_location
from lumen.sampling.grids import save_backbone_comparison
from lumen_train.commands.correspond import correspond
from lumen_train.commands.encode_layouts import encode_layouts
from lumen_train.commands.evaluate import evaluate
from lumen_train.commands.fit_pca import fit_layout_pca
from lumen_train.commands.sample import sample
from lumen_train.trainer import Trainer

PROG = "lumen compare-backbones"
# The config sections it reads (its --help lists only these and the top-level keys).
SECTIONS = ("model", "data", "layout", "pca", "encode", "train", "validation", "sample", "evaluate", "compare",
            "corr")


def backbone_config(cfg: LumenConfig, backbone: str, run: Path, judge_pca: Path) -> LumenConfig:
    """The run of one backbone in ``run``: its own PCA, cache and ControlNet; the same data, sources and judge."""
    c = cfg.compare
    return replace(
        cfg, output_dir=str(run),
        layout=replace(cfg.layout, backbone=backbone, backbone_model=c.backbone_models.get(backbone),
                       pca_dir=str(run / "pca")),
        train=replace(cfg.train, max_train_steps=max(c.train_steps, 1), resume_from_checkpoint="latest",
                      checkpointing_steps=max(c.train_steps, 1)),
        validation=replace(cfg.validation, steps=0),
        sample=replace(cfg.sample, controlnet=str(run / "controlnet"), out_dir=str(run / "samples"), images=[],
                       image_ids=[], from_cache=False, num_sources=c.num_sources, prompts=[], sweep_components=[],
                       num_images_per_prompt=2, replay=None),  # two per source: their spread is the diversity
        evaluate=replace(cfg.evaluate, samples=str(run / "samples" / "samples.json"), out=str(run / "evaluation"),
                         judge_pca=str(judge_pca)),
    )


def layouts_and_rate(cfg: LumenConfig, images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The backbone's layouts of ``images`` ``(S, N, h, w)`` and its feature extraction's images/s on them
    (median of three passes after a warm-up)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pca = load_pca(cfg.layout.pca_dir)
    extractor = build_extractor(cfg, load_components(cfg, device, layout_dtype(cfg, device, pca)))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    layouts = LayoutEncoder(pca)(extractor.features(images)).cpu()  # also the warm-up

    def seconds() -> float:
        sync()  # queued device work is counted where it belongs
        start = time.perf_counter()
        extractor.features(images)
        sync()
        return time.perf_counter() - start

    return layouts, len(images) / statistics.median(seconds() for _ in range(3))


def check_every_backbone(cfg: LumenConfig) -> None:
    """Every compared backbone is found, with whole weight files and (transformers) its image processor, before
    the first one is computed: a missing one would otherwise stop the comparison hours in."""
    problems = []
    try:  # SD: every backbone's cache holds its VAE latents, and it judges them all
        location, _ = resolve_model_location(cfg.model.pretrained, cfg.model.revision)
        check_weights("Stable Diffusion model", location, cfg.model.revision)
    except LumenError as err:
        problems.append(f"sd (model.pretrained): {err}")
    for backbone in cfg.compare.backbones:
        kind = get_backbone(backbone).transformer
        if kind is None:
            continue
        try:
            check_transformer_files(kind, cfg.compare.backbone_models.get(backbone), cfg.layout.backbone_revision)
        except LumenError as err:
            problems.append(f"{backbone}: {err}")
    if problems:
        raise LumenError("not every backbone of compare.backbones can be loaded; nothing was computed:\n  "
                         + "\n  ".join(problems))


def compare(cfg: LumenConfig) -> dict:
    c = cfg.compare
    check_every_backbone(cfg)
    out = ensure_writable(c.out, "the comparison")
    save_config(cfg, out)
    judge_first = sorted(c.backbones, key=lambda b: b != JUDGE_BACKBONE)
    run_of = {b: out / b.replace("+", "_") for b in c.backbones}
    judge_pca = (run_of[JUDGE_BACKBONE] if JUDGE_BACKBONE in run_of else out / "judge") / "pca"
    if JUDGE_BACKBONE not in run_of:  # the judge is not among the compared: fit its PCA alone
        fit_layout_pca(backbone_config(cfg, JUDGE_BACKBONE, out / "judge", judge_pca))
    val = split_dataset(cfg, cfg.data.val_split)
    sources = [val[i] for i in range(min(c.num_sources, len(val)))]
    source_pixels = torch.stack([s["pixel_values"] for s in sources])
    rows, layouts, samples = [], {}, {}
    for backbone in judge_first:
        bcfg = backbone_config(cfg, backbone, run_of[backbone], judge_pca)
        print(f"\n== {backbone} ({bcfg.output_dir})", flush=True)
        start = time.perf_counter()
        fit_layout_pca(bcfg)
        pca = load_pca(bcfg.layout.pca_dir)
        default = "default" if get_backbone(backbone).transformer else "model.pretrained"
        row = {"backbone": backbone, "model": bcfg.layout.backbone_model or default,
               "feature_channels": pca.feature_dim, "n_components": pca.n_components,
               "explained_variance": float(pca.explained_variance_ratio.sum())}
        layouts[backbone], row["extraction_images_per_s"] = layouts_and_rate(bcfg, source_pixels)
        if c.benchmark is not None:  # correspondence on the backbone's raw features
            pcfg = replace(bcfg, corr=replace(cfg.corr, benchmark=c.benchmark, features=CorrFeatures.raw,
                                              source=None, target=None, joint_pca=False,
                                              out=str(run_of[backbone] / "correspondence")))
            row["pck"] = correspond(pcfg)["pck"]["all"]
        if c.train_steps > 0:
            encode_layouts(replace(bcfg, encode=replace(bcfg.encode, splits=[cfg.data.train_split], visualize=0)))
            with Trainer(bcfg) as trainer:
                trainer.train()
            samples_json = sample(bcfg)
            records = json.loads(samples_json.read_text())["images"]
            samples[backbone] = [np.asarray(Image.open(samples_json.parent / r["file"]).convert("RGB"))
                                 for r in records if r["repeat"] == 0]
            judged = evaluate(bcfg)["rows"][0]
            row.update({name: judged[name] for name in METRICS})
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    result = {"judge_pca": str(judge_pca), "train_steps": c.train_steps, "sources": [s["image_id"] for s in sources],
              "benchmark": c.benchmark, "rows": rows}
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    table = comparison_table(result)
    (out / "comparison.md").write_text(table)
    picture = save_backbone_comparison(
        [to_uint8_image(s["pixel_values"]) for s in sources], [f"image {s['image_id']}" for s in sources], layouts,
        samples, out / "comparison.png",
        f"the same {cfg.data.val_split} images' layouts" + (f" and samples ({c.train_steps} training steps each)"
                                                            if samples else "") + " per backbone")
    print("\n" + table)
    print(f"written to {out / 'comparison.md'}, {out / 'comparison.json'}; picture: {picture}")
    return result


def comparison_table(result: dict) -> str:
    fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    pck_keys = list(next((row["pck"] for row in result["rows"] if row.get("pck")), {}))
    lines = ["| backbone | feature channels | explained variance | extraction img/s | "
             + " | ".join(m.title for m in METRICS.values()) + " |" + "".join(f" {k} |" for k in pck_keys),
             "|---|---:|---:|---:|" + "---:|" * (len(METRICS) + len(pck_keys))]
    for row in result["rows"]:
        lines.append(f"| {row['backbone']} | {row['feature_channels']} | {fmt(row['explained_variance'])} "
                     f"(N = {row['n_components']}) | {fmt(row['extraction_images_per_s'], 1)} | "
                     + " | ".join(fmt(row.get(name)) for name in METRICS) + " |"
                     + "".join(f" {fmt(100 * row['pck'][k], 1) if row.get('pck') else '-'} |" for k in pck_keys))
    lines += ["", f"The metrics are measured with one judge, the {JUDGE_BACKBONE} layouts of {result['judge_pca']}, "
                  f"for every backbone ({result['train_steps']} training steps each):", *metric_notes()]
    if pck_keys:
        lines.append(f"PCK (%) on {result['benchmark']}, each backbone's raw features.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    compare(config_from_argv(argv, PROG, __doc__, SECTIONS))
    return 0
