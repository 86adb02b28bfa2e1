"""accelerate helpers shared by the entry points (the library in lumen/ never imports accelerate)."""

from __future__ import annotations

import torch
from accelerate import Accelerator


def make_accelerator(**kwargs) -> Accelerator:
    """An Accelerator; on a machine without a GPU, a CPU one, so ``accelerate launch --multi_gpu`` (or
    configs/accelerate/cpu_2proc.yaml) gives real gloo ranks instead of independent single processes."""
    return Accelerator(cpu=not torch.cuda.is_available(), **kwargs)


def gather_rows(accelerator: Accelerator, ids: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather ``(ids (n,), rows (n, C))`` of unequal n from every process, sorted by id, on every process."""
    if accelerator.num_processes == 1:
        order = torch.argsort(ids)
        return ids[order], rows[order]
    device = accelerator.device
    ids = accelerator.pad_across_processes(ids.to(device), dim=0, pad_index=-1)
    rows = accelerator.pad_across_processes(rows.to(device), dim=0, pad_index=0)
    ids, rows = accelerator.gather(ids).cpu(), accelerator.gather(rows).cpu()
    keep = ids >= 0
    ids, rows = ids[keep], rows[keep]
    order = torch.argsort(ids)
    return ids[order], rows[order]
