"""Dense features of a vision transformer (DINOv2, DINO v1, CLIP, SigLIP, DINOv3, ...): one facet of one layer.

A facet of layer L (1-based, the L-th transformer block):

- ``token``: the block's output tokens, as the model gives them: ``hidden_states[L]``, or for the last layer
  ``last_hidden_state`` (with the model's final norm where it has one, as DINOv2's and ViT's outputs do);
- ``key`` / ``query`` / ``value``: the block's self-attention projection of its (normed) input, all heads
  concatenated: DINO-ViT-Features' dense descriptors (DINO v1's key facet of a late layer).

The leading special tokens (CLS, registers) are dropped and the patch tokens reshaped to the patch grid
``(B, D, H/p, W/p)``. The forward stops right after what it needs (a ``_StopForward`` from a hook), so a middle
layer costs only the blocks up to it. Images are resized to ``image_size`` and normalised with the mean and
std of the model's own preprocessor config.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from lumen.backbones.base import FeatureExtractor
from lumen.errors import LumenError

FACETS = ("token", "key", "query", "value")
# The names transformers gives a block's attention projections, per facet.
_PROJECTIONS = {"key": ("k_proj", "key"), "query": ("q_proj", "query"), "value": ("v_proj", "value")}


class BackboneError(LumenError, ValueError):
    """A backbone model or setting that cannot give a dense feature map."""


class _StopForward(Exception):
    """Raised from a hook to end the forward once the features are captured."""


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's list of transformer blocks: the longest ``ModuleList`` whose blocks hold attention
    projections (``encoder.layer`` in DINOv2, ``layers`` in ViT, ``encoder.layers`` in CLIP, ...)."""
    candidates = [module for module in model.modules() if isinstance(module, torch.nn.ModuleList) and len(module)
                  and any(name.endswith(_PROJECTIONS["key"]) for name, _ in module[0].named_modules())]
    if not candidates:
        raise BackboneError(f"{type(model).__name__} has no transformer blocks with attention projections")
    return max(candidates, key=len)


def attention_projection(block: torch.nn.Module, facet: str) -> torch.nn.Module:
    """The linear layer of ``block``'s self-attention that computes ``facet`` (key, query or value)."""
    for name, module in block.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in _PROJECTIONS[facet]:
            return module
    raise BackboneError(f"no {facet} projection in {type(block).__name__}")


def _tokens(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


class TransformerFeatureExtractor(FeatureExtractor):
    """Image batch -> one facet of one layer of a vision transformer, on the patch grid.

    Args:
        model: the vision model (``Dinov2Model``, ``ViTModel``, ``CLIPVisionModel``, ...), frozen, on the device
            and in the dtype to compute in.
        vae: SD's VAE (for the posterior the cache stores; None where only features are needed).
        layer: 1-based block index (``1..num_layers``).
        facet: ``token``, ``key``, ``query`` or ``value``.
        image_size: the square input size, a multiple of ``patch_size``.
        patch_size: the model's patch size.
        num_prefix_tokens: leading special tokens (CLS and registers) before the patch tokens.
        image_mean, image_std: the model's normalisation (from its preprocessor config), per RGB channel.
        early_exit: stop the forward after what is needed (False runs the whole model, for tests and benchmarks).
    """

    def __init__(self, model, vae, layer: int, facet: str, image_size: int, patch_size: int, num_prefix_tokens: int,
                 image_mean, image_std, early_exit: bool = True) -> None:
        super().__init__(vae)
        self.model = model
        self.blocks = transformer_blocks(model)
        if not 1 <= layer <= len(self.blocks):
            raise BackboneError(f"layout.backbone_layer={layer}: this model has layers 1..{len(self.blocks)}")
        if facet not in FACETS:
            raise BackboneError(f"layout.facet={facet}: expected one of {', '.join(FACETS)}")
        if image_size % patch_size:
            raise BackboneError(f"layout.image_size={image_size} is not a multiple of the patch size {patch_size}")
        self.layer, self.facet = layer, facet
        self.image_size, self.patch_size, self.num_prefix_tokens = image_size, patch_size, num_prefix_tokens
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.early_exit = early_exit
        self._interpolates = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    def preprocess(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> the model's input: ``image_size`` square, normalised."""
        images = (pixel_values.float() + 1) / 2  # [0, 1], as the preprocessors' mean and std expect
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic",
                                   align_corners=False, antialias=True).clamp(0, 1)
        images = (images - self.mean.to(images.device)) / self.std.to(images.device)
        return images.to(self.device, self.dtype)

    @torch.no_grad()
    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)``: the facet's tokens, special tokens included."""
        inputs = self.preprocess(pixel_values)
        kwargs = {"interpolate_pos_encoding": True} if self._interpolates else {}
        last = self.layer == len(self.blocks)
        if self.facet == "token" and last:
            return self.model(pixel_values=inputs, **kwargs).last_hidden_state
        module = self.blocks[self.layer - 1]
        if self.facet != "token":
            module = attention_projection(module, self.facet)
        captured: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            captured["tokens"] = _tokens(output)
            if self.early_exit:
                raise _StopForward

        handle = module.register_forward_hook(hook)
        try:
            self.model(pixel_values=inputs, **kwargs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured["tokens"]

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(pixel_values)
        h, w = self.grid
        patches = tokens.shape[1] - self.num_prefix_tokens
        if patches != h * w:
            raise BackboneError(
                f"the model gives {tokens.shape[1]} tokens for a {self.image_size} px image: {self.num_prefix_tokens} "
                f"special token(s) (from its config) + {patches}, not the {h}x{w} patch grid of patch size "
                f"{self.patch_size}; check layout.image_size and the model's config"
            )
        patch_tokens = tokens[:, self.num_prefix_tokens:]  # (B, h*w, D)
        return patch_tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w).float()


def num_special_tokens(model, config) -> int:
    """CLS (where the embeddings have one) + register tokens (``config.num_register_tokens``)."""
    embeddings = getattr(model, "embeddings", None)
    has_cls = any(hasattr(embeddings, name) for name in ("cls_token", "class_embedding"))
    return int(has_cls) + int(getattr(config, "num_register_tokens", 0) or 0)
