"""Checkpoints: ``checkpoint-<step>/`` = accelerate state + ``controlnet/`` (diffusers) + our own state.

A checkpoint is written under ``checkpoint-<step>.tmp`` and renamed only when complete (``trainer_state.json``
is its last file): a crash or a kill in the middle of a write never leaves a folder that looks like a
checkpoint, so ``latest`` always resolves to one that loads. Our state (step, each process's generator) is
safetensors + JSON; the accelerate state (optimizer, LR scheduler, RNGs, sampler) is accelerate's own format.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from lumen.errors import LumenError

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class CheckpointNotFoundError(LumenError, FileNotFoundError):
    """resume_from_checkpoint names nothing that can be resumed."""


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished checkpoints in ``output_dir``, oldest first."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = _CHECKPOINT.match(path.name)
        if match and (path / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(output_dir: str | Path, spec: str) -> Optional[Path]:
    """``"latest"`` -> the newest complete checkpoint (None when there is none yet); a path -> that folder."""
    if spec == "latest":
        checkpoints = complete_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(spec)
    if not (path / TRAINER_STATE).is_file():
        raise CheckpointNotFoundError(
            f"train.resume_from_checkpoint={spec} is not a complete checkpoint (no {TRAINER_STATE}); "
            f"complete ones in {output_dir}: {[p.name for p in complete_checkpoints(output_dir)] or 'none'}"
        )
    return path


def save_checkpoint(accelerator, output_dir: Path, step: int, generator: torch.Generator,
                    total_limit: Optional[int]) -> Path:
    """Write ``checkpoint-<step>`` atomically (every process takes part) and prune old ones."""
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    # save_state runs on every process (DeepSpeed shards live on each); the ControlNet goes to controlnet/
    # through the pre-hook registered by the trainer.
    accelerator.save_state(str(tmp))
    save_file({"state": generator.get_state()}, tmp / f"generator_{accelerator.process_index}.safetensors")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps({"global_step": step,
                                                     "num_processes": accelerator.num_processes}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if total_limit is not None:
            for old in complete_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path, generator: torch.Generator) -> int:
    """Restore a checkpoint written by ``save_checkpoint``; returns its global step."""
    state = json.loads((path / TRAINER_STATE).read_text())
    if state["num_processes"] != accelerator.num_processes:
        raise CheckpointNotFoundError(
            f"{path} was written by {state['num_processes']} processes and this run has "
            f"{accelerator.num_processes}; resume with the same number of processes (the data order and the "
            f"random states are per process)"
        )
    accelerator.load_state(str(path))
    generator.set_state(load_file(path / f"generator_{accelerator.process_index}.safetensors")["state"])
    return int(state["global_step"])
