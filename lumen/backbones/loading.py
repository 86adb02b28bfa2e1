"""The vision transformers a layout can come from: which class loads each, and what identifies the features.

| backbone | class (``from_pretrained``) | default layer / facet | e.g. |
|---|---|---|---|
| ``dinov2`` | ``Dinov2Model`` / ``Dinov2WithRegistersModel`` | last / token | facebook/dinov2-base |
| ``dino`` | ``ViTModel`` (DINO v1 weights) | 9 of 12 / key | facebook/dino-vitb8 |
| ``clip`` | ``CLIPVisionModel`` | penultimate / token | openai/clip-vit-large-patch14 |
| ``vit`` | ``AutoModel`` (its vision tower) | last / token | facebook/dinov3-..., google/siglip-... |

``sd+dinov2`` adds a ``dinov2`` part to SD's decoder features (``lumen.backbones.sd_dinov2``). No remote code is
ever run: only transformers' own classes. The input size defaults to the one whose patch grid equals SD's
layer-8 grid at the data resolution (``resolution / 16`` patches a side: 448 px for patch 14 at 512 px).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from lumen.backbones.transformer import BackboneError, TransformerFeatureExtractor, default_layer, num_special_tokens
from lumen.pretrained import check_weights, load_part, model_folder, resolve_model_location

DEFAULT_MODELS = {"dinov2": "facebook/dinov2-base", "dino": "facebook/dino-vitb8",
                  "clip": "openai/clip-vit-large-patch14", "sd+dinov2": "facebook/dinov2-base"}
SD_GRID_STRIDE = 16  # SD's decoder layer 8 lies on a grid of resolution / 16


@dataclass(frozen=True)
class TransformerSpec:
    """Everything that decides the features of a transformer backbone (recorded in layout settings)."""

    kind: str  # dinov2, dino, clip or vit
    model: str
    revision: Optional[str]
    layer: int  # 1-based block
    facet: str
    image_size: int
    patch_size: int

    def to_json(self) -> dict:
        return asdict(self)


def _config_class(kind: str):
    from transformers import AutoConfig, CLIPVisionConfig, ViTConfig

    return {"dino": ViTConfig, "clip": CLIPVisionConfig}.get(kind, AutoConfig)


def _vision_config(config):
    """The vision part of a config (a CLIP or SigLIP checkpoint holds text and vision)."""
    return getattr(config, "vision_config", None) or config


def resolve_transformer_spec(kind: str, model: Optional[str], revision: Optional[str], layer: Optional[int],
                             facet: Optional[str], image_size: Optional[int], resolution: int) -> TransformerSpec:
    """Fill in the defaults of a transformer backbone from its config.json (no weights are read)."""
    if kind == "sd+dinov2":
        kind = "dinov2"
    model = model or DEFAULT_MODELS.get(kind)
    if model is None:
        raise BackboneError("layout.backbone=vit needs layout.backbone_model: a transformers model id or folder")
    location, local_only = resolve_model_location(model, revision, key="layout.backbone_model",
                                                  transformers_folder=True)
    config = load_part(f"{kind} backbone's config", location, lambda: _config_class(kind).from_pretrained(
        location, revision=revision, local_files_only=local_only))
    vision = _vision_config(config)
    patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
    num_layers = vision.num_hidden_layers
    return TransformerSpec(kind=kind, model=model, revision=revision,
                           layer=default_layer(kind, num_layers, layer),
                           facet=facet or ("key" if kind == "dino" else "token"),
                           image_size=image_size or patch * (resolution // SD_GRID_STRIDE), patch_size=patch)


PROCESSOR_FILE = "preprocessor_config.json"


def check_transformer_files(kind: str, model: Optional[str], revision: Optional[str]) -> str:
    """Refuse, in one line and before anything loads, a transformer backbone whose folder (or cached snapshot)
    lacks its image processor or has damaged weight files; returns the location it loads from."""
    if kind == "sd+dinov2":
        kind = "dinov2"
    model = model or DEFAULT_MODELS.get(kind)
    if model is None:
        raise BackboneError("layout.backbone=vit needs layout.backbone_model: a transformers model id or folder")
    location, _ = resolve_model_location(model, revision, key="layout.backbone_model", transformers_folder=True)
    folder = model_folder(location, revision)
    if folder is not None and not (folder / PROCESSOR_FILE).is_file():
        raise BackboneError(f"{folder} has no {PROCESSOR_FILE}: the {kind} backbone's image processor (the "
                            f"normalisation its weights expect) is saved beside them. Save it there with "
                            f"AutoImageProcessor.from_pretrained(<its model id>).save_pretrained({folder}), or "
                            f"download the whole model again")
    check_weights(f"{kind} backbone", location, revision)
    return location


def load_transformer_extractor(spec: TransformerSpec, vae, device: torch.device, dtype: torch.dtype,
                               early_exit: bool = True) -> TransformerFeatureExtractor:
    """The frozen model of ``spec`` on ``device`` in ``dtype``, behind the feature-extractor interface."""
    from transformers import (
        AutoImageProcessor,
        AutoModel,
        CLIPVisionModel,
        Dinov2Model,
        Dinov2WithRegistersModel,
        ViTModel,
    )

    location, local_only = resolve_model_location(spec.model, spec.revision, key="layout.backbone_model",
                                                  transformers_folder=True)
    check_transformer_files(spec.kind, spec.model, spec.revision)
    common = dict(revision=spec.revision, local_files_only=local_only)

    def load():
        if spec.kind == "dinov2":
            config = _config_class("dinov2").from_pretrained(location, **common)
            cls = Dinov2WithRegistersModel if config.model_type == "dinov2_with_registers" else Dinov2Model
            return cls.from_pretrained(location, dtype=dtype, **common)
        if spec.kind == "dino":
            return ViTModel.from_pretrained(location, add_pooling_layer=False, dtype=dtype, **common)
        if spec.kind == "clip":
            return CLIPVisionModel.from_pretrained(location, dtype=dtype, **common)
        loaded = AutoModel.from_pretrained(location, dtype=dtype, **common)
        return getattr(loaded, "vision_model", loaded)  # a text + vision checkpoint: its vision tower

    model = load_part(f"{spec.kind} backbone", location, load)
    model.requires_grad_(False).eval().to(device)
    processor = load_part(f"{spec.kind} backbone's image processor (preprocessor_config.json)", location,
                          lambda: AutoImageProcessor.from_pretrained(location, **common))
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is None or std is None:
        raise BackboneError(f"the image processor of {spec.model} gives no image_mean / image_std: the "
                            f"normalisation the model was trained with is unknown")
    config = _vision_config(model.config)
    return TransformerFeatureExtractor(model, vae, spec.layer, spec.facet, spec.image_size, spec.patch_size,
                                       num_special_tokens(model, config), mean, std, early_exit=early_exit)
