"""``--help``'s list of config keys: per section, each key with its default, its range and its doc."""

from __future__ import annotations

import enum
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from lumen.config.schema import LumenConfig


def describe_keys(cls: Any = LumenConfig, prefix: str = "") -> list[str]:
    """``--help``'s list of config keys: per section, each key with its default, its range and its doc."""
    import textwrap

    lines, sections = [], []
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            sections.append((key, type(default)))
            continue
        shown = default.value if isinstance(default, enum.Enum) else default
        bounds = f.metadata.get("range")
        valid = ""
        if bounds is not None:
            integer = isinstance(shown, int) or (isinstance(shown, list) and all(isinstance(v, int) for v in shown))
            valid = f" ({bounds.describe(integer)})"
        elif isinstance(default, enum.Enum):
            valid = f" ({' | '.join(member.value for member in type(default))})"
        lines.append(f"  {key} = {'null' if shown is None else shown}{valid}")
        lines += textwrap.wrap(f.metadata.get("doc", ""), width=110, initial_indent="      ",
                               subsequent_indent="      ")
    for key, section in sections:
        lines += ["", f"{key}: {(section.__doc__ or '').strip().splitlines()[0]}"]
        lines += describe_keys(section, key + ".")
    return lines
