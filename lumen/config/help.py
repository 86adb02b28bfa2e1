"""``--help``'s list of config keys: per section, each key with its default, what it accepts and its doc."""

from __future__ import annotations

import enum
import textwrap
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Optional

from lumen.config.schema import LumenConfig


def _accepts(f: Any, kind: Any, shown: Any) -> str:
    """What a key accepts, in parentheses (empty when the type says it all)."""
    bounds = f.metadata.get("range")
    if "choices" in f.metadata:
        return f" ({' | '.join(f.metadata['choices']())})"
    if "key_choices" in f.metadata:
        return f" (keys: {' | '.join(f.metadata['key_choices']())})"
    if bounds is not None:
        integer = isinstance(shown, int) or (isinstance(shown, list) and all(isinstance(v, int) for v in shown))
        return f" ({bounds.describe(integer)})"
    args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    if isinstance(args[0], type) and issubclass(args[0], enum.Enum):
        return f" ({' | '.join(member.value for member in args[0])})"
    return ""


def describe_keys(cls: Any = LumenConfig, prefix: str = "", sections: Optional[Sequence[str]] = None) -> list[str]:
    """Each key with its default, what it accepts and its doc; the top-level keys first, then each section
    (only those named in ``sections``, when given)."""
    lines, nested = [], []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            if sections is None or f.name in sections:
                nested.append((key, type(default)))
            continue
        shown = default.value if isinstance(default, enum.Enum) else default
        lines.append(f"  {key} = {'null' if shown is None else shown}{_accepts(f, hints[f.name], shown)}")
        lines += textwrap.wrap(f.metadata.get("doc", ""), width=110, initial_indent="      ",
                               subsequent_indent="      ")
    for key, section in nested:
        summary = " ".join((section.__doc__ or "").strip().split("\n\n")[0].split())  # its first paragraph
        lines += ["", *textwrap.wrap(f"{key}: {summary}", width=114, subsequent_indent="  ")]
        lines += describe_keys(section, key + ".")
    return lines
