"""accelerate helpers shared by the entry points (the library in lumen/ never imports accelerate)."""

from __future__ import annotations

import gc
import importlib.util
import os
from typing import Optional

import torch

# Imported before any process group exists: its functions take the WORLD group as a default argument, so an
# import after init_process_group (DDP does one) keeps the group, and its gloo threads, alive past
# destroy_process_group. Those threads then die with the interpreter and can abort a finished run.
import torch.distributed.nn.functional
from accelerate import Accelerator

# DeepSpeed, when installed, does the same (measured: the gloo threads outlive destroy_process_group when it is
# first imported while a group exists), and accelerate imports it lazily, after the group exists (unwrap_model
# does). Imported here, before any group, it keeps none alive.
if importlib.util.find_spec("deepspeed") is not None:
    import deepspeed  # noqa: F401
from accelerate.utils import broadcast_object_list

from lumen.errors import LumenError
from lumen.folder_lock import FolderInUseError, FolderLock


def make_accelerator(**kwargs) -> Accelerator:
    """An Accelerator; on a machine without a GPU, a CPU one, so ``accelerate launch --multi_gpu`` (or
    configs/accelerate/cpu_2proc.yaml) gives real gloo ranks instead of independent single processes. A launch
    with DeepSpeed keeps it (DeepSpeed has its own CPU accelerator; ``cpu=True`` would silently drop it)."""
    launched_with = {name: os.environ.get(f"ACCELERATE_USE_{name}", "false").lower() in ("1", "true", "yes")
                     for name in ("DEEPSPEED", "FSDP")}
    if launched_with["FSDP"] and not torch.cuda.is_available():
        raise LumenError("FSDP needs a GPU (accelerate builds it only on an accelerator: CUDA, XPU, ...), and none "
                         "is visible. Without a GPU use DDP (configs/accelerate/cpu_2proc.yaml) or DeepSpeed "
                         "(configs/accelerate/deepspeed_zero2.yaml)")
    return Accelerator(cpu=not torch.cuda.is_available() and not launched_with["DEEPSPEED"], **kwargs)


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


def lock_folder_on_main(accelerator: Accelerator, folder, command: str) -> Optional[FolderLock]:
    """The main process takes ``folder``'s lock for every process (they may be on other machines sharing it);
    when it is held by another run, every process raises the same ``FolderInUseError``."""
    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            lock = FolderLock(folder, command).acquire()
        except LumenError as err:
            refusal = err
    if accelerator.num_processes > 1:
        message = [str(refusal) if refusal else None]
        broadcast_object_list(message)
        if message[0] is not None and refusal is None:
            refusal = FolderInUseError(message[0])
    if refusal is not None:
        raise refusal
    return lock


def close_processes(accelerator: Accelerator) -> None:
    """End trackers and the process group, in that order, on every process. The caller first drops its own
    references to prepared objects (a DDP model holds the group). A process group that outlives this is torn
    down with the interpreter, while gloo's threads may still be releasing a finished collective's tensors,
    which need the (then gone) interpreter: the process aborts ("terminate called without an active
    exception") after a finished run."""
    accelerator.free_memory()  # accelerate's own references to the prepared model, optimizer, loaders
    gc.collect()  # free_memory collects before it clears its lists
    try:
        accelerator.end_training()  # trackers, then destroy_process_group (which joins gloo's threads)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
