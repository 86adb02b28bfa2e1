"""What the benchmark scripts (scripts/bench_*.py, scripts/gpu_check.py) share: timing, FLOP counting and the
devices' peak rates."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Optional

import torch

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets, matched against
# torch.cuda.get_device_name() in this order (the first substring that matches wins, so the specific names
# come before the family's).
BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
]


def device_name(device: str | torch.device) -> str:
    """``"NVIDIA H100 80GB HBM3"``-style names for a GPU, ``"cpu"`` otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def peak_tflops(name: str, override: Optional[float] = None) -> Optional[float]:
    """The bf16 dense peak of the device called ``name`` (``override`` wins); None when not in the table
    (the CPU, unknown GPUs): then no % of peak is reported."""
    if override is not None:
        return override
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``fn`` (matmuls, convolutions, attention; forward and
    backward), counted by ``torch.utils.flop_counter`` on an eager run. Elementwise work is not counted, as in
    the usual model-FLOPs accounting."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def synchronizer(device: str | torch.device) -> Callable[[], object]:
    """What makes queued work on ``device`` finish (a no-op on the CPU)."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def timed(fn: Callable[[], object], sync: Callable[[], object] = lambda: None) -> float:
    """Seconds one call of ``fn`` takes; ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after, so
    queued device work is counted where it belongs."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def alternate(calls: dict[str, Callable[[], object]], rounds: int, sync: Callable[[], object] = lambda: None,
              warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each of ``calls``, measured in turn (A, B, A, B, ...) for ``rounds`` rounds
    after ``warmup`` untimed rounds, so that a noisy machine slows all of them alike."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(timed(fn, sync))
    return {name: statistics.median(values) for name, values in times.items()}
