"""Bookkeeping of unusable inputs: each reported once, counted, summarised, and a limit on their share."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from lumen.errors import LumenError

logger = logging.getLogger(__name__)


class TooManyBadInputs(LumenError, RuntimeError):
    """More inputs were unusable than ``data.max_bad_fraction`` allows."""


@dataclass
class ProblemLog:
    """Collects ``(path, reason)`` problems of one split; a path is warned about only the first time.

    ``check(total)`` raises ``TooManyBadInputs`` listing every problem when their share of ``total`` items
    exceeds ``max_bad_fraction``: a data set that is mostly broken should stop a run, not thin it silently.
    """

    split: str
    max_bad_fraction: float
    problems: dict[str, str] = field(default_factory=dict)

    def record(self, path: str, reason: str) -> None:
        if path in self.problems:
            return
        self.problems[path] = reason
        logger.warning("skipping unusable %s image %s: %s", self.split, path, reason)

    def __len__(self) -> int:
        return len(self.problems)

    def fraction(self, total: int) -> float:
        return len(self.problems) / max(total, 1)

    def summary(self, total: int) -> str:
        if not self.problems:
            return f"{self.split}: all {total} images usable"
        lines = [f"{self.split}: {len(self.problems)} of {total} images unusable ({100 * self.fraction(total):.2f}%)"]
        lines += [f"  - {path}: {reason}" for path, reason in sorted(self.problems.items())]
        return "\n".join(lines)

    def check(self, total: int, stopped_early: bool = False) -> None:
        """Raise ``TooManyBadInputs`` when the problems pass the limit (``stopped_early``: the work stopped as
        soon as that was certain, so the count is a lower bound)."""
        if self.fraction(total) > self.max_bad_fraction:
            early = " (stopped as soon as this was certain: there may be more)" if stopped_early else ""
            raise TooManyBadInputs(
                self.summary(total)
                + f"\nThis is more than data.max_bad_fraction={self.max_bad_fraction}{early}. Fix or remove these "
                f"files (lumen doctor lists every problem), or raise data.max_bad_fraction."
            )
