"""How a transformer backbone loads: its kind (``TransformerKind``: default model, layer and facet, the class that
loads it, its tiny models), its settings with the defaults filled in (``TransformerSpec``), the checks of its
files, and the extractor. Only transformers' own classes are used: no remote code is ever run.

The input size defaults to the one whose patch grid equals SD's layer-8 grid at the data resolution
(``resolution / 16`` patches a side: 448 px for patch 14 at 512 px).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from lumen.backbones.registry import BackboneSpec, ExtractorRequest
from lumen.backbones.transformer import BackboneError, TransformerFeatureExtractor, num_special_tokens
from lumen.pretrained import check_weights, load_part, model_folder, resolve_model_location

SD_GRID_STRIDE = 16  # SD's decoder layer 8 lies on a grid of resolution / 16
PROCESSOR_FILE = "preprocessor_config.json"
# The size of the tiny models the demo and the tests build (each kind saves one, ``TransformerKind.tiny``).
TINY_SIZE = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=4,
                 image_size=32)
IMAGENET_NORM = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@dataclass(frozen=True)
class TransformerKind:
    """A family of vision transformers a backbone reads.

    name: what messages call it (``dinov2``, ``clip``, ...).
    default_model: the model id read when ``layout.backbone_model`` is unset (None: it must be given).
    default_facet: the facet read when ``layout.facet`` is unset.
    default_layer: the 1-based block read when ``layout.backbone_layer`` is unset, from the model's depth.
    layer_doc: that default in words, for the docs.
    load_config: ``(location, **kwargs) -> config`` (``from_pretrained`` of the config class).
    load_model: ``(location, dtype, **kwargs) -> model`` (``from_pretrained`` of the model class: the vision model).
    tiny: tiny models with random weights, for the demo and the tests: name -> ``save(folder, seed) -> folder``.
    """

    name: str
    default_model: Optional[str]
    default_facet: str
    default_layer: Callable[[int], int]
    layer_doc: str
    load_config: Callable[..., Any]
    load_model: Callable[..., torch.nn.Module]
    tiny: Mapping[str, Callable[[Path, int], Path]] = field(default_factory=dict)


def last_layer(num_layers: int) -> int:
    return num_layers


def save_tiny(model: torch.nn.Module, processor, folder: str | Path) -> Path:
    """Save a tiny model and its image processor as a transformers folder (config.json, safetensors,
    preprocessor_config.json): it then loads exactly as real weights do."""
    folder = Path(folder)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@dataclass(frozen=True)
class TransformerSpec:
    """Everything that decides the features of a transformer backbone (recorded in layout settings)."""

    kind: str  # its TransformerKind's name
    model: str
    revision: Optional[str]
    layer: int  # 1-based block
    facet: str
    image_size: int
    patch_size: int

    def to_json(self) -> dict:
        return asdict(self)


def vision_config(config):
    """The vision part of a config (a CLIP or SigLIP checkpoint holds text and vision)."""
    return getattr(config, "vision_config", None) or config


def _model_of(kind: TransformerKind, model: Optional[str]) -> str:
    model = model or kind.default_model
    if model is None:
        raise BackboneError(f"the {kind.name} backbone has no default model: set layout.backbone_model to a "
                            f"transformers model id or folder")
    return model


def resolve_transformer_spec(kind: TransformerKind, model: Optional[str], revision: Optional[str],
                             layer: Optional[int], facet: Optional[str], image_size: Optional[int],
                             resolution: int) -> TransformerSpec:
    """Fill in the defaults of a transformer backbone from its config.json (no weights are read)."""
    model = _model_of(kind, model)
    location, local_only = resolve_model_location(model, revision, key="layout.backbone_model",
                                                  transformers_folder=True)
    config = load_part(f"{kind.name} backbone's config", location,
                       lambda: kind.load_config(location, revision=revision, local_files_only=local_only))
    vision = vision_config(config)
    patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
    return TransformerSpec(kind=kind.name, model=model, revision=revision,
                           layer=layer if layer is not None else kind.default_layer(vision.num_hidden_layers),
                           facet=facet or kind.default_facet,
                           image_size=image_size or patch * (resolution // SD_GRID_STRIDE), patch_size=patch)


def check_transformer_files(kind: TransformerKind, model: Optional[str], revision: Optional[str]) -> str:
    """Refuse, in one line and before anything loads, a transformer backbone whose folder (or cached snapshot)
    lacks its image processor or has damaged weight files; returns the location it loads from."""
    model = _model_of(kind, model)
    location, _ = resolve_model_location(model, revision, key="layout.backbone_model", transformers_folder=True)
    folder = model_folder(location, revision)
    if folder is not None and not (folder / PROCESSOR_FILE).is_file():
        raise BackboneError(f"{folder} has no {PROCESSOR_FILE}: the {kind.name} backbone's image processor (the "
                            f"normalisation its weights expect) is saved beside them. Save it there with "
                            f"AutoImageProcessor.from_pretrained(<its model id>).save_pretrained({folder}), or "
                            f"download the whole model again")
    check_weights(f"{kind.name} backbone", location, revision)
    return location


def load_transformer_extractor(kind: TransformerKind, spec: TransformerSpec, vae, device: torch.device,
                               dtype: torch.dtype, early_exit: bool = True) -> TransformerFeatureExtractor:
    """The frozen model of ``spec`` on ``device`` in ``dtype``, behind the feature-extractor interface."""
    from transformers.utils import cached_file

    location, local_only = resolve_model_location(spec.model, spec.revision, key="layout.backbone_model",
                                                  transformers_folder=True)
    check_transformer_files(kind, spec.model, spec.revision)
    common = dict(revision=spec.revision, local_files_only=local_only)
    model = load_part(f"{kind.name} backbone", location, lambda: kind.load_model(location, dtype, **common))
    model.requires_grad_(False).eval().to(device)
    # Only the normalisation is needed: read it from the processor's JSON, not through its class (some, such as
    # DINOv3's, need torchvision just to be built).
    processor = load_part(f"{kind.name} backbone's image processor ({PROCESSOR_FILE})", location,
                          lambda: json.loads(Path(cached_file(location, PROCESSOR_FILE, **common)).read_text()))
    mean, std = processor.get("image_mean"), processor.get("image_std")
    if mean is None or std is None:
        raise BackboneError(f"the image processor of {spec.model} gives no image_mean / image_std: the "
                            f"normalisation the model was trained with is unknown")
    config = vision_config(model.config)
    return TransformerFeatureExtractor(model, vae, spec.layer, spec.facet, spec.image_size, spec.patch_size,
                                       num_special_tokens(model, config), mean, std, early_exit=early_exit)


def transformer_backbone(name: str, kind: TransformerKind, summary: str) -> BackboneSpec:
    """The registry entry of a backbone that is one transformer of ``kind``."""

    def build(request: ExtractorRequest) -> TransformerFeatureExtractor:
        return load_transformer_extractor(kind, request.transformer, request.parts.vae, request.parts.unet.device,
                                          request.dtype, early_exit=request.early_exit)

    return BackboneSpec(name=name, summary=summary, build=build, transformer=kind)
