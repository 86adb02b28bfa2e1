"""What the benchmark scripts (scripts/bench_*.py) share."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(fn: Callable[[], object], sync: Callable[[], object] = lambda: None) -> float:
    """Seconds one call of ``fn`` takes; ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after, so
    queued device work is counted where it belongs."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start
