"""CLIP's vision tower (``CLIPVisionModel``): the penultimate block's tokens (the last one serves the image-level
embedding)."""

from __future__ import annotations

from pathlib import Path

from lumen.backbones.registry import BackboneSpec, register
from lumen.backbones.transformer_loading import TINY_SIZE, TransformerKind, save_tiny, transformer_backbone

CLIP_NORM = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])


def load_config(location: str, **kwargs):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig.from_pretrained(location, **kwargs)


def load_model(location: str, dtype, **kwargs):
    from transformers import CLIPVisionModel

    return CLIPVisionModel.from_pretrained(location, dtype=dtype, **kwargs)


def save_tiny_clip(folder: Path, seed: int) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    model = tf.CLIPVisionModel(tf.CLIPVisionConfig(**TINY_SIZE))
    return save_tiny(model, tf.CLIPImageProcessor(image_mean=CLIP_NORM[0], image_std=CLIP_NORM[1]), folder)


CLIP = TransformerKind(
    name="clip", default_model="openai/clip-vit-large-patch14", default_facet="token",
    default_layer=lambda num_layers: max(1, num_layers - 1), layer_doc="the penultimate",
    load_config=load_config, load_model=load_model, tiny={"clip": save_tiny_clip})

SPEC: BackboneSpec = register(transformer_backbone("clip", CLIP, "CLIP's vision tower: the penultimate block's tokens"))
