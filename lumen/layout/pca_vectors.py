"""Draw feature vectors for the PCA: uniformly over (image, pixel) positions, without holding feature maps.

``plan_samples`` decides, from a seed alone, which images and which pixel positions are sampled, so the
samples are the same however the images are split across processes. ``extract_samples`` runs the
extractor over a share of the planned images and keeps only the planned pixels of each batch: memory is
one batch of feature maps plus the sampled vectors, whatever the number of images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from lumen.data.dataset import SplitDataset, collate_skipping_bad
from lumen.data.problems import ProblemLog
from lumen.errors import LumenError

PIXELS_PER_IMAGE = 32  # default spread: a few dozen pixels from each image


class SamplingError(LumenError, ValueError):
    """pca.num_samples / pca.num_images that the split cannot provide."""


@dataclass(frozen=True)
class SamplePlan:
    """Which images and pixels are sampled.

    image_indices: ``(M,)`` dataset indices of the sampled images (sorted); image slot j is image_indices[j].
    positions: ``(S,)`` sorted flat positions in ``[0, M * h * w)``: slot ``p // (h * w)``, pixel ``p % (h * w)``.
    The sample id of a vector is its index in ``positions``.
    """

    image_indices: np.ndarray
    positions: np.ndarray
    grid: tuple[int, int]

    @property
    def num_samples(self) -> int:
        return len(self.positions)

    def pixels_of_slot(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """(sample ids, flat pixel indices) of the samples drawn from image slot ``slot``."""
        per_image = self.grid[0] * self.grid[1]
        lo, hi = np.searchsorted(self.positions, [slot * per_image, (slot + 1) * per_image])
        ids = np.arange(lo, hi)
        return ids, self.positions[lo:hi] - slot * per_image


def images_wanted(grid: tuple[int, int], num_samples: int, num_images: Optional[int]) -> int:
    """How many images the plan draws: ``num_images``, or enough for ~32 pixels each (more where the grid is
    small)."""
    if num_images is not None:
        return num_images
    return max(math.ceil(num_samples / PIXELS_PER_IMAGE), math.ceil(num_samples / (grid[0] * grid[1])))


def plan_samples(num_dataset_images: int, grid: tuple[int, int], num_samples: int,
                 num_images: Optional[int], seed: int) -> SamplePlan:
    """Draw ``num_images`` images (default: enough for ~32 pixels each) and ``num_samples`` of their
    ``num_images * h * w`` pixel positions uniformly without replacement, from ``seed`` alone."""
    per_image = grid[0] * grid[1]
    if num_images is None:
        num_images = min(num_dataset_images, images_wanted(grid, num_samples, None))
    if not 1 <= num_images <= num_dataset_images:
        raise SamplingError(f"pca.num_images={num_images}, but the split has {num_dataset_images} usable images")
    if num_samples > num_images * per_image:
        raise SamplingError(
            f"pca.num_samples={num_samples} is more than the {num_images} x {per_image} = "
            f"{num_images * per_image} pixel positions of {num_images} images at a {grid[0]}x{grid[1]} feature "
            f"grid; lower pca.num_samples or raise pca.num_images (the split has {num_dataset_images} images)"
        )
    rng = np.random.default_rng(seed)
    images = np.sort(rng.choice(num_dataset_images, size=num_images, replace=False))
    positions = np.sort(rng.choice(num_images * per_image, size=num_samples, replace=False))
    return SamplePlan(images, positions, grid)


def extract_samples(extractor, dataset: SplitDataset, plan: SamplePlan, slots: Sequence[int],
                    feature_dim: int, batch_size: int, problems: ProblemLog, num_workers: int = 0,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Extract the planned vectors of the image slots ``slots``.

    Returns ``(sample_ids (s,) int64, vectors (s, C) float32)``. Unreadable images are recorded in
    ``problems`` and their samples are missing from the result.
    """
    slot_of_image_id = {dataset.index.records[plan.image_indices[j]].image_id: j for j in slots}
    subset = torch.utils.data.Subset(dataset, [int(plan.image_indices[j]) for j in slots])
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=collate_skipping_bad)
    ids_out, vectors_out = [], []
    start, seen = time.perf_counter(), 0
    bar = tqdm(total=len(subset), desc="PCA samples", unit="img", disable=not progress)
    for batch in loader:
        for path, reason in batch["bad"]:
            problems.record(path, reason)
        bar.update(len(batch["bad"]))
        if batch["pixel_values"] is None:
            continue
        features = extractor.features(batch["pixel_values"])  # (B, C, h, w)
        if tuple(features.shape[-2:]) != plan.grid:
            raise RuntimeError(f"feature grid {tuple(features.shape[-2:])} differs from the planned {plan.grid}")
        flat = features.flatten(2)  # (B, C, h*w)
        for b, image_id in enumerate(batch["image_id"].tolist()):
            ids, pixels = plan.pixels_of_slot(slot_of_image_id[image_id])
            ids_out.append(torch.from_numpy(ids))
            vectors_out.append(flat[b, :, torch.from_numpy(pixels)].T.cpu())
        seen += len(batch["image_id"])
        bar.update(len(batch["image_id"]))
        bar.set_postfix(img_per_s=f"{seen / (time.perf_counter() - start):.2f}")
    bar.close()
    if not ids_out:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, feature_dim)
    return torch.cat(ids_out), torch.cat(vectors_out)
