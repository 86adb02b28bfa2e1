"""DINO v1 (``ViTModel`` with DINO weights): the key facet of block 9 of 12, heads concatenated, as
DINO-ViT-Features reads its dense descriptors (the block scaled to the model's depth)."""

from __future__ import annotations

from pathlib import Path

from lumen.backbones.registry import BackboneSpec, register
from lumen.backbones.transformer_loading import (
    IMAGENET_NORM,
    TINY_SIZE,
    TransformerKind,
    save_tiny,
    transformer_backbone,
)


def load_config(location: str, **kwargs):
    from transformers import ViTConfig

    return ViTConfig.from_pretrained(location, **kwargs)


def load_model(location: str, dtype, **kwargs):
    from transformers import ViTModel

    return ViTModel.from_pretrained(location, add_pooling_layer=False, dtype=dtype, **kwargs)


def save_tiny_dino(folder: Path, seed: int) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    model = tf.ViTModel(tf.ViTConfig(**TINY_SIZE), add_pooling_layer=False)
    return save_tiny(model, tf.ViTImageProcessor(image_mean=IMAGENET_NORM[0], image_std=IMAGENET_NORM[1]), folder)


DINO = TransformerKind(
    name="dino", default_model="facebook/dino-vitb8", default_facet="key",
    default_layer=lambda num_layers: max(1, round(num_layers * 9 / 12)), layer_doc="9 of 12, scaled to the depth",
    load_config=load_config, load_model=load_model, tiny={"dino": save_tiny_dino})

SPEC: BackboneSpec = register(transformer_backbone(
    "dino", DINO, "DINO v1's key facet of a late block, heads concatenated (DINO-ViT-Features)"))
