"""What the registries share (backbones, data sources, metrics): each is a plain dict of frozen specs keyed by
name, filled by the modules that own the entries when they are imported."""

from __future__ import annotations

from typing import Any, TypeVar

from lumen.errors import LumenError

Spec = TypeVar("Spec")


def add_entry(table: dict[str, Any], spec: Spec, kind: str) -> Spec:
    """Add ``spec`` to ``table`` under ``spec.name``; a second entry of one name is a bug, not a user's mistake."""
    if spec.name in table:
        raise ValueError(f"a {kind} named {spec.name!r} is registered already")
    table[spec.name] = spec
    return spec


def find_entry(table: dict[str, Any], name: str, key: str, error: type[LumenError] = LumenError) -> Any:
    """The entry of config value ``key=name``; an unknown name is refused with the registered ones."""
    if name not in table:
        raise error(f"{key}={name} is not registered; registered: {', '.join(table)}")
    return table[name]
