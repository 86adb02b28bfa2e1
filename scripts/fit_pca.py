"""Fit the layout PCA: python scripts/fit_pca.py CONFIG.yaml [more.yaml ...] [key=value ...]

Draws pca.num_samples feature vectors uniformly over (image, pixel) positions of the training split, fits
pca.n_components components and writes layout.pca_dir/ (pca.safetensors, pca.json, explained_variance.png,
and samples.safetensors with pca.save_samples=true). Under `accelerate launch` each process extracts a
disjoint share of the images and the main process gathers them: the samples do not depend on the number
of processes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from accelerate.utils import gather_object

from lumen.build import build_extractor, layout_settings, load_components, split_dataset
from lumen.errors import run_cli
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.data.problems import ProblemLog
from lumen.features.sampling import extract_samples, plan_samples
from lumen.pca import PLOT_FILE, fit_pca, save_pca
from train.distributed import gather_rows, make_accelerator


def fit_layout_pca(cfg: LumenConfig) -> Path | None:
    """Run the whole stage; returns the PCA folder on the main process (None on the others)."""
    accelerator = make_accelerator()
    is_main = accelerator.is_main_process
    if is_main:
        save_config(cfg, cfg.output_dir)
    parts = load_components(cfg, accelerator.device)
    extractor = build_extractor(cfg, parts)
    dataset = split_dataset(cfg, cfg.data.train_split)

    # 1. The feature grid and width, from one probe image (they depend on the model and the resolution).
    probe = extractor(torch.zeros(1, 3, cfg.data.resolution, cfg.data.resolution)).features
    feature_dim, grid = probe.shape[1], tuple(probe.shape[-2:])

    # 2. The plan depends on the seed alone: every process computes the same one.
    plan = plan_samples(len(dataset), grid, cfg.pca.num_samples, cfg.pca.num_images, cfg.pca.seed)
    slots = range(accelerator.process_index, len(plan.image_indices), accelerator.num_processes)
    if is_main:
        print(f"sampling {plan.num_samples} vectors of {feature_dim} channels ({grid[0]}x{grid[1]} grid) from "
              f"{len(plan.image_indices)} of {len(dataset)} {cfg.data.train_split} images, "
              f"{accelerator.num_processes} process(es)")

    # 3. Each process extracts its share; the main process gathers them in sample order.
    problems = ProblemLog(cfg.data.train_split, cfg.data.max_bad_fraction)
    start = time.perf_counter()
    ids, vectors = extract_samples(extractor, dataset, plan, slots, feature_dim, cfg.layout.batch_size, problems,
                                   num_workers=cfg.data.num_workers, progress=is_main)
    ids, vectors = gather_rows(accelerator, ids, vectors)
    merged = ProblemLog(cfg.data.train_split, cfg.data.max_bad_fraction)
    merged.problems.update(dict(gather_object(list(problems.problems.items()))))
    merged.check(len(plan.image_indices))  # every process raises alike, so none waits for the others
    seconds = time.perf_counter() - start
    if not is_main:
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return None

    # 4. Fit, then save with the settings the features were made under.
    fit_start = time.perf_counter()
    pca = fit_pca(vectors, cfg.pca.n_components, solver=cfg.pca.solver.value, seed=cfg.pca.seed,
                  device=accelerator.device)
    fit_seconds = time.perf_counter() - fit_start
    pca.settings = dict(layout_settings(cfg).to_json(), num_samples=int(len(ids)),
                        num_images=int(len(plan.image_indices)), skipped_images=len(merged), pca_seed=cfg.pca.seed,
                        solver=cfg.pca.solver.value, feature_grid=list(grid))
    folder = save_pca(pca, cfg.layout.pca_dir, samples=vectors if cfg.pca.save_samples else None)
    ratio = pca.explained_variance_ratio
    print(f"extracted {len(ids)} vectors in {seconds:.1f} s "
          f"({len(plan.image_indices) / seconds:.2f} images/s); PCA fit in {fit_seconds:.2f} s")
    print(f"explained variance: first component {ratio[0]:.1%}, all {pca.n_components} {ratio.sum():.1%}")
    print(f"PCA written to {folder} (plot: {folder / PLOT_FILE})")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return folder


def main(argv=None) -> int:
    cfg = config_from_argv(argv, "fit_pca.py", __doc__.splitlines()[0])
    fit_layout_pca(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, "fit_pca.py"))
