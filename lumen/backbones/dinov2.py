"""DINOv2 (with or without registers): a block's tokens, by default the last block's (SD-DINO's choice)."""

from __future__ import annotations

from pathlib import Path

from lumen.backbones.registry import BackboneSpec, register
from lumen.backbones.transformer_loading import (
    IMAGENET_NORM,
    TINY_SIZE,
    TransformerKind,
    last_layer,
    save_tiny,
    transformer_backbone,
)


def load_config(location: str, **kwargs):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(location, **kwargs)


def load_model(location: str, dtype, **kwargs):
    from transformers import Dinov2Model, Dinov2WithRegistersModel

    registers = load_config(location, **kwargs).model_type == "dinov2_with_registers"
    cls = Dinov2WithRegistersModel if registers else Dinov2Model
    return cls.from_pretrained(location, dtype=dtype, **kwargs)


def save_tiny_dinov2(folder: Path, seed: int, registers: int = 0) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    if registers:
        model = tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(**TINY_SIZE, num_register_tokens=registers))
    else:
        model = tf.Dinov2Model(tf.Dinov2Config(**TINY_SIZE))
    return save_tiny(model, tf.BitImageProcessor(image_mean=IMAGENET_NORM[0], image_std=IMAGENET_NORM[1]), folder)


DINOV2 = TransformerKind(
    name="dinov2", default_model="facebook/dinov2-base", default_facet="token", default_layer=last_layer,
    layer_doc="the last", load_config=load_config, load_model=load_model,
    tiny={"dinov2": save_tiny_dinov2, "dinov2_registers": lambda folder, seed: save_tiny_dinov2(folder, seed, 2)})

SPEC: BackboneSpec = register(transformer_backbone(
    "dinov2", DINOV2, "DINOv2's tokens of a block (with or without registers; CLS and registers dropped)"))
