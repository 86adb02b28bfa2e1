"""Feature samples for the PCA from several processes: each extracts a disjoint share of the planned images,
and the samples come out the same whatever the number of processes (``lumen.features.pca_samples``)."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from lumen.data.problems import ProblemLog
from lumen.features.pca_samples import SamplePlan, extract_samples
from lumen_train.distributed import gather_rows


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
