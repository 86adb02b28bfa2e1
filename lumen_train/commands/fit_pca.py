"""Fit the layout PCA: lumen fit-pca CONFIG.yaml [more.yaml ...] [key=value ...]

Draws pca.num_samples feature vectors uniformly over (image, pixel) positions of the training split, fits
pca.n_components components and writes layout.pca_dir/ (pca.safetensors, pca.json, explained_variance.png,
config.yaml, and samples.safetensors with pca.save_samples=true), as a whole: a PCA appears only complete.
A PCA already there is reused when it was fitted with the same settings, and replaced only with
pca.overwrite=true. Under lumen launch each process extracts a
disjoint share of the images and the main process gathers them: the samples do not depend on the number
of processes.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from lumen.artifacts import ensure_writable
from lumen.build import build_extractor, layout_dtype, layout_settings, load_components, split_dataset
from lumen.config import LumenConfig, config_from_argv, to_yaml
from lumen.data.problems import ProblemLog
from lumen.layout.pca import PLOT_FILE, PCASettingsError, fit_pca, reuse_existing_pca, save_pca
from lumen.layout.pca_vectors import SamplePlan, extract_samples, images_wanted, plan_samples
from lumen.pretrained import dtype_name
from lumen_train.distributed import close_processes, gather_rows, make_accelerator

PROG = "lumen fit-pca"
# The config sections it reads (its --help lists only these and the top-level keys).
SECTIONS = ("model", "data", "layout", "pca")


def extract_on_processes(accelerator: Accelerator, extractor, dataset, plan: SamplePlan, feature_dim: int,
                         batch_size: int, num_workers: int, split: str,
                         max_bad_fraction: float) -> tuple[torch.Tensor, torch.Tensor, ProblemLog]:
    """``(sample ids (S,), vectors (S, C), unusable images)``, gathered in sample order on every process.
    Raises ``TooManyBadInputs`` on every process alike when too many of the planned images are unusable."""
    slots = range(accelerator.process_index, len(plan.image_indices), accelerator.num_processes)
    problems = ProblemLog(split, max_bad_fraction)
    ids, vectors = extract_samples(extractor, dataset, plan, slots, feature_dim, batch_size, problems,
                                   num_workers=num_workers, progress=accelerator.is_main_process)
    ids, vectors = gather_rows(accelerator, ids, vectors)
    merged = ProblemLog(split, max_bad_fraction)
    merged.problems.update(dict(gather_object(list(problems.problems.items()))))
    merged.check(len(plan.image_indices))  # every process raises alike, so none waits for the others
    return ids, vectors, merged


def fit_request(cfg: LumenConfig, dtype: torch.dtype) -> dict:
    """Everything the fit depends on: a PCA fitted under the same request is the same PCA."""
    return dict(layout_settings(cfg, dtype).to_json(), data_root=str(cfg.data.root), split=cfg.data.train_split,
                limit=cfg.data.limit, num_samples=cfg.pca.num_samples, num_images=cfg.pca.num_images,
                n_components=cfg.pca.n_components, seed=cfg.pca.seed, solver=cfg.pca.solver.value)


def fit_layout_pca(cfg: LumenConfig) -> Path | None:
    """Run the whole stage; returns the PCA folder on the main process (None on the others)."""
    accelerator = make_accelerator()
    try:
        return _fit(cfg, accelerator)
    finally:
        close_processes(accelerator)


def _fit(cfg: LumenConfig, accelerator) -> Path | None:
    is_main = accelerator.is_main_process
    folder = Path(cfg.layout.pca_dir)
    dtype = layout_dtype(cfg, accelerator.device)
    request = fit_request(cfg, dtype)

    # 1. A PCA already there is reused when fitted for the same request, and replaced only when asked.
    if reuse_existing_pca(folder, request, cfg.pca.overwrite):
        if is_main:
            print(f"{folder} already holds a PCA fitted with these settings: reusing it (pca.overwrite=true fits it "
                  f"again)")
        return folder if is_main else None
    ensure_writable(folder.parent, "the PCA")  # refused now, not after the extraction
    parts = load_components(cfg, accelerator.device, dtype)
    extractor = build_extractor(cfg, parts)

    # 2. The feature grid and width, from one probe image (they depend on the model and the resolution);
    # a PCA wider than the features is refused before any image is read.
    probe = extractor.features(torch.zeros(1, 3, cfg.data.resolution, cfg.data.resolution))
    feature_dim, grid = probe.shape[1], tuple(probe.shape[-2:])
    if cfg.pca.n_components > feature_dim:
        raise PCASettingsError(f"pca.n_components={cfg.pca.n_components}, but the features of decoder layers "
                               f"{list(cfg.layout.layers)} have {feature_dim} channels: use at most {feature_dim}")

    # 3. The plan depends on the seed alone: every process computes the same one and extracts its share. Tar
    # shards are not listed: the plan draws from the first images of every shard, as many as it needs.
    dataset = split_dataset(cfg, cfg.data.train_split,
                            head=images_wanted(grid, cfg.pca.num_samples, cfg.pca.num_images))
    plan = plan_samples(len(dataset), grid, cfg.pca.num_samples, cfg.pca.num_images, cfg.pca.seed)
    if is_main:
        print(f"sampling {plan.num_samples} vectors of {feature_dim} channels ({grid[0]}x{grid[1]} grid) from "
              f"{len(plan.image_indices)} of {len(dataset)} {cfg.data.train_split} images, "
              f"{accelerator.num_processes} process(es), {dtype_name(dtype)}")
    start = time.perf_counter()
    ids, vectors, problems = extract_on_processes(accelerator, extractor, dataset, plan, feature_dim,
                                                  cfg.layout.batch_size, cfg.data.num_workers, cfg.data.train_split,
                                                  cfg.data.max_bad_fraction)
    seconds = time.perf_counter() - start
    if not is_main:
        accelerator.wait_for_everyone()
        return None

    # 4. Fit, then save with the settings the features were made under (the folder appears only complete).
    fit_start = time.perf_counter()
    pca = fit_pca(vectors, cfg.pca.n_components, solver=cfg.pca.solver.value, seed=cfg.pca.seed,
                  device=accelerator.device)
    fit_seconds = time.perf_counter() - fit_start
    pca.settings = dict(layout_settings(cfg, dtype).to_json(), num_samples=len(ids),
                        num_images=len(plan.image_indices), skipped_images=len(problems), pca_seed=cfg.pca.seed,
                        solver=cfg.pca.solver.value, feature_grid=list(grid), request=request)
    folder = save_pca(pca, folder, samples=vectors if cfg.pca.save_samples else None,
                      extra_files={"config.yaml": to_yaml(cfg)})
    ratio = pca.explained_variance_ratio
    print(f"extracted {len(ids)} vectors in {seconds:.1f} s "
          f"({len(plan.image_indices) / seconds:.2f} images/s); PCA fit in {fit_seconds:.2f} s")
    print(f"explained variance: first component {ratio[0]:.1%}, all {pca.n_components} {ratio.sum():.1%}")
    print(f"PCA written to {folder} (plot: {folder / PLOT_FILE})")
    accelerator.wait_for_everyone()
    return folder


def main(argv=None) -> int:
    cfg = config_from_argv(argv, PROG, __doc__, SECTIONS)
    fit_layout_pca(cfg)
    return 0
