"""DINOv3 (``DINOv3ViTModel``: patch 16, a CLS token and register tokens, rotary position embeddings): a block's
tokens, by default the last block's, as DINOv2's."""

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
    from transformers import DINOv3ViTConfig

    return DINOv3ViTConfig.from_pretrained(location, **kwargs)


def load_model(location: str, dtype, **kwargs):
    from transformers import DINOv3ViTModel

    return DINOv3ViTModel.from_pretrained(location, dtype=dtype, **kwargs)


def save_tiny_dinov3(folder: Path, seed: int) -> Path:
    """A tiny DINOv3 with 4 registers. Its preprocessor_config.json (the normalisation Lumen reads) is written by
    ``BitImageProcessor``: DINOv3's own processor classes cannot be built without torchvision."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    model = tf.DINOv3ViTModel(tf.DINOv3ViTConfig(**TINY_SIZE, num_register_tokens=4))
    return save_tiny(model, tf.BitImageProcessor(image_mean=IMAGENET_NORM[0], image_std=IMAGENET_NORM[1]), folder)


DINOV3 = TransformerKind(
    name="dinov3", default_model="facebook/dinov3-vitb16-pretrain-lvd1689m", default_facet="token",
    default_layer=last_layer, layer_doc="the last", load_config=load_config, load_model=load_model,
    tiny={"dinov3": save_tiny_dinov3})

SPEC: BackboneSpec = register(transformer_backbone(
    "dinov3", DINOV3, "DINOv3's tokens of a block (CLS and registers dropped)"))
