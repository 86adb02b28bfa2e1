"""Tiny vision transformers with random weights, for the demo and the tests: each backbone's transformer kind
declares its tiny models (``TransformerKind.tiny``: the real transformers class at a tiny size, saved with
``save_pretrained`` beside a preprocessor config with the real model's normalisation), so they load through
exactly the path real weights take. A backbone registered with tiny models is tested without editing tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

from lumen.backbones import BACKBONES


def tiny_builders() -> dict[str, Callable[[Path, int], Path]]:
    """Every tiny model of the registered backbones: name -> ``save(folder, seed)``."""
    builders: dict[str, Callable[[Path, int], Path]] = {}
    for spec in BACKBONES.values():
        if spec.transformer is not None:
            builders.update(spec.transformer.tiny)
    return builders


KINDS = tuple(tiny_builders())


def save_tiny_backbone(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny model ``kind`` (one of ``KINDS``) as a transformers folder."""
    builders = tiny_builders()
    if kind not in builders:
        raise ValueError(f"unknown tiny backbone {kind!r} (one of {', '.join(builders)})")
    return builders[kind](Path(folder), seed)


def tiny_model_of(backbone: str) -> Optional[str]:
    """The tiny model a backbone is tested with: its transformer's first (None for a backbone without one)."""
    kind = BACKBONES[backbone].transformer
    return next(iter(kind.tiny)) if kind is not None and kind.tiny else None
