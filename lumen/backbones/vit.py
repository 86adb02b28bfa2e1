"""Any vision transformer ``AutoModel`` loads (DINOv3, SigLIP, ...; of a text + vision checkpoint, its vision
tower): the last block's tokens. It has no default model: ``layout.backbone_model`` names one."""

from __future__ import annotations

from pathlib import Path

from lumen.backbones.registry import BackboneSpec, register
from lumen.backbones.transformer_loading import TINY_SIZE, TransformerKind, last_layer, save_tiny, transformer_backbone


def load_config(location: str, **kwargs):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(location, **kwargs)


def load_model(location: str, dtype, **kwargs):
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(location, dtype=dtype, **kwargs)
    return getattr(loaded, "vision_model", loaded)  # a text + vision checkpoint: its vision tower


def save_tiny_siglip(folder: Path, seed: int) -> Path:
    """SigLIP's vision tower: a ViT without CLS and registers, as "any ViT"."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**TINY_SIZE))
    return save_tiny(model, tf.SiglipImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3), folder)


ANY_VIT = TransformerKind(
    name="vit", default_model=None, default_facet="token", default_layer=last_layer, layer_doc="the last",
    load_config=load_config, load_model=load_model, tiny={"siglip": save_tiny_siglip})

SPEC: BackboneSpec = register(transformer_backbone(
    "vit", ANY_VIT, "any vision transformer AutoModel loads (DINOv3, SigLIP, ...): a block's tokens"))
