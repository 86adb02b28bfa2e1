"""Checkpoints: ``checkpoint-<step>/`` = accelerate state + ``controlnet/`` (diffusers) + our own state.

A checkpoint is written under ``checkpoint-<step>.tmp`` and renamed only when complete. ``trainer_state.json``
is its last file and records the size of every other file: a checkpoint counts as complete only if it is
there and every file still has its recorded size, so a crash in the middle of a write, or a file lost or
truncated since, never passes for a checkpoint (``latest`` skips such a one, with a warning naming what is
wrong). Our state (step, each process's generator) is safetensors + JSON; the accelerate state (optimizer, LR
scheduler, RNGs, sampler) is accelerate's own format. A write that fails (a full disk) removes its partial
folder and keeps every older checkpoint.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from lumen.artifacts import file_manifest, manifest_problems
from lumen.errors import LumenError, StorageError, writing

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What a checkpoint of an older Lumen (no file sizes recorded) must hold at least.
_REQUIRED = ("controlnet/config.json", "controlnet/diffusion_pytorch_model.safetensors")


class CheckpointNotFoundError(LumenError, FileNotFoundError):
    """resume_from_checkpoint names nothing that can be resumed."""


def checkpoint_step(path: Path) -> Optional[int]:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-<step>`` folder in ``output_dir`` (complete or not), oldest first."""
    found = [(checkpoint_step(p), p) for p in Path(output_dir).glob("checkpoint-*") if p.is_dir()]
    return [path for step, path in sorted(f for f in found if f[0] is not None)]


def checkpoint_problems(path: Path) -> list[str]:
    """What keeps ``path`` from being a complete checkpoint (empty: it verifies)."""
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except FileNotFoundError:
        return [f"{TRAINER_STATE} is missing (its write never finished)"]
    except (OSError, ValueError):
        return [f"{TRAINER_STATE} is damaged"]
    if "files" not in state:
        return [f"{name} is missing" for name in _REQUIRED if not (path / name).is_file()]
    return manifest_problems(path, state["files"])


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints in ``output_dir`` whose files all verify, oldest first."""
    return [path for path in checkpoint_folders(output_dir) if not checkpoint_problems(path)]


def resolve_checkpoint(output_dir: str | Path, spec: str) -> Optional[Path]:
    """``"latest"`` -> the newest complete checkpoint (None when there is none yet; damaged newer ones are
    skipped with a warning); a path -> that folder, which must verify."""
    if spec == "latest":
        for path in reversed(checkpoint_folders(output_dir)):
            problems = checkpoint_problems(path)
            if not problems:
                return path
            logger.warning("skipping damaged checkpoint %s: %s", path, "; ".join(problems))
        return None
    path = Path(spec)
    problems = checkpoint_problems(path) if path.is_dir() else ["no such folder"]
    if problems:
        complete = [p.name for p in complete_checkpoints(output_dir)] or "none"
        raise CheckpointNotFoundError(
            f"train.resume_from_checkpoint={spec} is not a complete checkpoint ({'; '.join(problems)}); "
            f"complete ones in {output_dir}: {complete} (train.resume_from_checkpoint=latest takes the newest)"
        )
    return path


def _everyone_succeeded(accelerator, succeeded: bool) -> bool:
    """True when ``succeeded`` on every process (a collective: every process calls it)."""
    if accelerator.num_processes == 1:
        return succeeded
    flag = torch.tensor([1.0 if succeeded else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() == accelerator.num_processes)


FORMAT_NAMES = {"plain": "single-process / DDP", "deepspeed": "DeepSpeed", "fsdp": "FSDP"}


class CheckpointFormatError(LumenError):
    """A checkpoint written under another distributed mode, whose state accelerate cannot load in this one."""


def state_format(accelerator) -> str:
    """How accelerate stores the model and optimizer state in this run: DeepSpeed and FSDP use their own files;
    one process, DDP and multi-node DDP share one format (they resume one another, any number of processes)."""
    from accelerate.utils import DistributedType

    return {DistributedType.DEEPSPEED: "deepspeed", DistributedType.FSDP: "fsdp"}.get(accelerator.distributed_type,
                                                                                      "plain")


def save_checkpoint(accelerator, output_dir: Path, step: int, generator: torch.Generator,
                    total_limit: Optional[int]) -> Path:
    """Write ``checkpoint-<step>`` atomically (every process takes part) and prune old ones.

    A write that fails on any process (a full disk, a read-only folder) stops every process with a
    ``StorageError``; the partial folder is removed and every older checkpoint kept."""
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    error: Optional[StorageError] = None
    try:
        with writing(tmp, f"checkpoint-{step}"):
            # save_state runs on every process (DeepSpeed shards live on each); the ControlNet goes to
            # controlnet/ through the pre-hook registered by the trainer.
            accelerator.save_state(str(tmp))
            save_file({"state": generator.get_state()}, tmp / f"generator_{accelerator.process_index}.safetensors")
    except StorageError as err:
        error = err
    _raise_if_any_failed(accelerator, error, tmp, output_dir)
    if accelerator.is_main_process:
        try:
            with writing(tmp, f"checkpoint-{step}"):
                state = {"global_step": step, "num_processes": accelerator.num_processes,
                         "state_format": state_format(accelerator),
                         "files": file_manifest(tmp, exclude=[TRAINER_STATE])}
                (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2))
                if final.exists():  # the same step saved again (a stop right after a periodic checkpoint)
                    shutil.rmtree(final)
                tmp.rename(final)
        except StorageError as err:
            error = err
    _raise_if_any_failed(accelerator, error, tmp, output_dir)
    if accelerator.is_main_process and total_limit is not None:
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


PRUNED_SUFFIX = ".pruned"  # checkpoint-<step>.pruned: a checkpoint being deleted (a kill may leave it half gone)


def _remove(path: Path) -> None:
    """Delete a checkpoint folder: renamed first (one atomic step), then deleted, so a kill in the middle leaves a
    ``.pruned`` folder that ``remove_leftovers`` finishes, never a ``checkpoint-<step>`` with half its files."""
    doomed = path.with_name(path.name + PRUNED_SUFFIX)
    path.rename(doomed)
    shutil.rmtree(doomed)


def prune_checkpoints(output_dir: Path, keep: int) -> list[Path]:
    """Keep the newest ``keep`` complete checkpoints; remove the older ones, and damaged ones older than every
    kept one (resume would never take them). Damaged ones newer than the newest complete one stay (a resumed run
    writes over them when it reaches their step). Returns what was removed."""
    complete = complete_checkpoints(output_dir)
    if len(complete) <= keep:
        return []
    oldest_kept = checkpoint_step(complete[-keep])
    removed = [path for path in checkpoint_folders(output_dir) if checkpoint_step(path) < oldest_kept]
    for path in removed:
        if path not in complete:
            logger.warning("removing %s: damaged (%s) and older than the checkpoints kept", path,
                           "; ".join(checkpoint_problems(path)))
        _remove(path)
    return removed


def remove_leftovers(output_dir: str | Path) -> list[Path]:
    """Remove what a killed run left in ``output_dir``: checkpoints it was writing (``checkpoint-<step>.tmp``) or
    deleting (``.pruned``). Only the run holding the folder's lock may call it. Returns what was removed."""
    leftovers = sorted(p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir()
                       and (p.name.endswith(".tmp") or p.name.endswith(PRUNED_SUFFIX)))
    for path in leftovers:
        shutil.rmtree(path)
    if leftovers:
        logger.warning("removed what an interrupted run left unfinished: %s",
                       ", ".join(f"{p.name} ({'half deleted' if p.name.endswith(PRUNED_SUFFIX) else 'half written'})"
                                 for p in leftovers))
    return leftovers


def _raise_if_any_failed(accelerator, error: Optional[StorageError], tmp: Path, output_dir: Path) -> None:
    if _everyone_succeeded(accelerator, error is None):
        return
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # gives the space back
    kept = complete_checkpoints(output_dir)
    note = f"The last good checkpoint, {kept[-1]}, is kept." if kept else "There is no earlier checkpoint."
    raise StorageError(f"{error or 'another process could not write the checkpoint (see its message)'}. {note}")


def load_checkpoint(accelerator, path: Path, generator: torch.Generator) -> tuple[int, int]:
    """Restore a checkpoint written by ``save_checkpoint``; returns ``(global step, number of processes that
    wrote it)``. Written by another number of processes, the weights, optimizer and schedule are restored;
    a process without a generator state of its own gets a fresh one (the caller warns that the data order
    and random draws now differ from the original run's)."""
    state = json.loads((path / TRAINER_STATE).read_text())
    step, written_by = int(state["global_step"]), int(state["num_processes"])
    written_as, running_as = state.get("state_format", "plain"), state_format(accelerator)
    if written_as != running_as:
        raise CheckpointFormatError(
            f"{path} holds its model and optimizer state in {FORMAT_NAMES[written_as]}'s format, and this run uses "
            f"{FORMAT_NAMES[running_as]}: accelerate cannot load one into the other. Resume it with the accelerate "
            f"config it was written with, or start a new run from its weights with "
            f"train.controlnet={path / 'controlnet'} (a fresh optimizer)")
    accelerator.load_state(str(path))
    own = path / f"generator_{accelerator.process_index}.safetensors"
    if written_by == accelerator.num_processes and own.is_file():
        generator.set_state(load_file(own)["state"])
    else:
        generator.manual_seed(int(torch.initial_seed() % 2**31) + 7919 * step + accelerator.process_index)
    return step, written_by
