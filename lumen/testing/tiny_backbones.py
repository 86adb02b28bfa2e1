"""Tiny vision transformers with random weights, for the demo and the tests: the real transformers classes
(DINOv2, DINOv2 with registers, ViT as DINO v1, CLIP's vision tower, SigLIP's vision tower as "any ViT"),
each saved with ``save_pretrained`` beside a preprocessor config with the real model's normalisation, so they
load through exactly the path real weights take (``lumen.backbones``)."""

from __future__ import annotations

from pathlib import Path

import torch

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CLIP_NORM = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
KINDS = ("dinov2", "dinov2_registers", "dino", "clip", "siglip")


def build_tiny_backbone(kind: str, seed: int = 0, patch_size: int = 4, image_size: int = 32):
    """(model, image processor) of a tiny ``kind`` (see ``KINDS``): 4 blocks of width 32, 2 heads."""
    import transformers as tf

    size = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                patch_size=patch_size, image_size=image_size)
    torch.manual_seed(seed)
    if kind == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(**size))
        processor = tf.BitImageProcessor(image_mean=IMAGENET[0], image_std=IMAGENET[1])
    elif kind == "dinov2_registers":
        model = tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(**size, num_register_tokens=2))
        processor = tf.BitImageProcessor(image_mean=IMAGENET[0], image_std=IMAGENET[1])
    elif kind == "dino":
        model = tf.ViTModel(tf.ViTConfig(**size), add_pooling_layer=False)
        processor = tf.ViTImageProcessor(image_mean=IMAGENET[0], image_std=IMAGENET[1])
    elif kind == "clip":
        model = tf.CLIPVisionModel(tf.CLIPVisionConfig(**size))
        processor = tf.CLIPImageProcessor(image_mean=CLIP_NORM[0], image_std=CLIP_NORM[1])
    elif kind == "siglip":
        model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**size))
        processor = tf.SiglipImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    else:
        raise ValueError(f"unknown tiny backbone {kind!r} (one of {', '.join(KINDS)})")
    return model.eval(), processor


def save_tiny_backbone(kind: str, folder: str | Path, seed: int = 0, patch_size: int = 4,
                       image_size: int = 32) -> Path:
    """Write a tiny ``kind`` as a transformers folder (config.json, safetensors, preprocessor_config.json)."""
    folder = Path(folder)
    model, processor = build_tiny_backbone(kind, seed, patch_size, image_size)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
