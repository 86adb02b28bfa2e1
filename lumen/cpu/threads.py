"""How many threads a process computes with on the CPU.

torch's default is one thread per core. For a tiny model (the demo's 2.5 M-parameter UNet at 128 px) every
kernel is so short that threads spend much of their time meeting at barriers; when another program shares the
cores, a barrier waits for whichever thread the scheduler has put aside, and each of those waits costs a time
slice. One thread never waits: on two cores beside one busy process it samples the tiny model several times
faster than two threads, at a small cost when the cores are idle (figures in the README's "Speed" section).
Large models keep torch's default, where parallel kernels pay for their barriers many times over.

The choice depends only on the setting and on the model, never on the machine's current load, so a run and its
resumption compute with the same number of threads (and give the same bits).
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)

# Below this many UNet parameters a model counts as tiny (SD 1.5's UNet has 860 M; the demo's has 2.5 M).
TINY_MODEL_PARAMETERS = 20_000_000


def choose_cpu_threads(setting: int, model_parameters: int, default_threads: int,
                       threads_from_environment: bool) -> int:
    """The thread count for one process.

    Args:
        setting: ``cpu_threads`` of the config; > 0 is used as given, 0 means choose.
        model_parameters: parameters of the largest model the process runs (the UNet).
        default_threads: torch's current count (one per core, or what ``OMP_NUM_THREADS`` says).
        threads_from_environment: ``OMP_NUM_THREADS`` was set (by the user or a launcher): it is kept.
    """
    if setting > 0:
        return setting
    if threads_from_environment:
        return default_threads
    return 1 if model_parameters < TINY_MODEL_PARAMETERS else default_threads


def apply_cpu_threads(setting: int, model: torch.nn.Module, device: torch.device) -> int:
    """Set torch's thread count for work with ``model`` on ``device`` (only the CPU's count matters) and
    return it."""
    if device.type != "cpu":
        return torch.get_num_threads()
    parameters = sum(p.numel() for p in model.parameters())
    threads = choose_cpu_threads(setting, parameters, torch.get_num_threads(), "OMP_NUM_THREADS" in os.environ)
    if threads != torch.get_num_threads():
        logger.info("computing with %d CPU thread(s) (cpu_threads=%d, %.1f M model parameters)",
                    threads, setting, parameters / 1e6)
        torch.set_num_threads(threads)
    return threads
