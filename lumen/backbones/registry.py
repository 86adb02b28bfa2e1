"""The registry of layout backbones: one ``BackboneSpec`` per backbone, registered by the module that owns it
(``lumen/backbones/<name>.py``), so the stages ask the spec instead of branching on a backbone's name.

``docs/extending.md`` gives the recipe for a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from lumen.backbones.transformer import BackboneError
from lumen.registry import add_entry, find_entry

if TYPE_CHECKING:
    from lumen.backbones.base import FeatureExtractor
    from lumen.backbones.transformer_loading import TransformerKind, TransformerSpec
    from lumen.pretrained import SDComponents


@dataclass(frozen=True)
class ExtractorRequest:
    """What building a backbone's extractor may use; each backbone takes what it needs.

    parts: SD's loaded parts (every backbone uses its VAE: the cache stores SD latents whatever the backbone).
    layers, timestep, noise_seed, prompt: SD's decoder taps and how the image is seen (``lumen.backbones.sd``).
    transformer: the transformer part with its defaults filled in (None for a backbone without one).
    fusion_weights: the weights of the fused parts (SD, transformer).
    dtype: the dtype a transformer part is loaded in (the dtype its layouts are made in).
    early_exit: stop each forward after what is needed (False: the whole model, for tests and benchmarks).
    """

    parts: SDComponents
    layers: tuple[int, ...] = (2, 5, 8)
    timestep: int = 100
    noise_seed: int = 42
    prompt: str = ""
    transformer: Optional[TransformerSpec] = None
    fusion_weights: tuple[float, float] = (1.0, 1.0)
    dtype: torch.dtype = torch.float32
    early_exit: bool = True


@dataclass(frozen=True)
class BackboneSpec:
    """One layout backbone: the value of ``layout.backbone`` and everything the stages need to know about it.

    name: the value of ``layout.backbone``.
    summary: what its features are, in one line (the docs and ``--help``).
    uses_sd: SD's decoder features are (part of) it: its layout settings record SD's (model, layers, timestep,
        noise seed, prompt), and the sampler's own UNet computes them.
    transformer: its vision transformer (defaults, how it loads, tiny models for the tests; None for SD alone):
        its layout settings record the transformer's (model, revision, layer, facet, image size).
    fused: its features fuse SD's and the transformer's (its layout settings record the fusion weights).
    build: the extractor, from an ``ExtractorRequest``.
    """

    name: str
    summary: str
    build: Callable[[ExtractorRequest], FeatureExtractor]
    uses_sd: bool = False
    transformer: Optional[TransformerKind] = None
    fused: bool = False


BACKBONES: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to ``BACKBONES`` (by the module that defines the backbone, when it is imported)."""
    return add_entry(BACKBONES, spec, "backbone")


def get_backbone(name: str) -> BackboneSpec:
    """The spec of ``layout.backbone=name``; an unknown name is refused with the registered ones."""
    return find_entry(BACKBONES, name, "layout.backbone", BackboneError)
