"""How a config key is declared: its default, its one-line doc and, for a number, its valid range."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

SEED_MAX = 2**32 - 1  # numpy's legacy seeding (accelerate's set_seed) takes 0 .. 2**32 - 1


@dataclass(frozen=True)
class Range:
    """The values a numeric config key accepts (every element, for a list); None is always accepted where the
    key's type is Optional. ``low_open`` / ``high_open`` exclude the bound itself."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    multiple_of: Optional[int] = None
    min_items: int = 0  # for lists: at least this many elements

    def accepts(self, value: Any) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return self.multiple_of is None or value % self.multiple_of == 0

    def describe(self, integer: bool) -> str:
        kind = "an integer" if integer else "a number"
        if self.multiple_of is not None:
            kind = f"a multiple of {self.multiple_of}"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_num(self.high)}"
        return kind


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def setting(default: Any = None, *, doc: str, factory: Any = None, choices: Optional[Callable[[], list[str]]] = None,
            key_choices: Optional[Callable[[], list[str]]] = None, **bounds: Any) -> Any:
    """A config key: its default (or ``factory`` for a list), its one-line ``doc`` (what ``--help`` shows) and, for
    a number, its valid range (``Range`` keyword arguments; ``load_config`` checks it for every entry point).

    ``choices`` gives the names a string key (or every element of a list) may take, ``key_choices`` the keys a
    mapping may have: both are read when a config is checked, from a registry (the registered backbones, data
    sources, ...), so a new entry needs no change here."""
    metadata: dict[str, Any] = {"doc": doc}
    if bounds:
        metadata["range"] = Range(**bounds)
    if choices is not None:
        metadata["choices"] = choices
    if key_choices is not None:
        metadata["key_choices"] = key_choices
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def seed_field(default: int = 0, *, doc: str) -> Any:
    return setting(default, low=0, high=SEED_MAX, doc=doc)
