"""From a config to objects: the one module that reads a ``LumenConfig``, for the entry points' use.

Everything it builds takes explicit arguments; this is only the wiring (which config field goes where),
kept in one place so that every entry point builds the same extractor, layout settings and data sets.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

import torch

from lumen.backbones import ExtractorRequest, get_backbone
from lumen.backbones.base import FeatureExtractor
from lumen.backbones.transformer_loading import TransformerSpec, resolve_transformer_spec
from lumen.config import DType, Facet, LumenConfig
from lumen.cpu.threads import apply_cpu_threads
from lumen.data.dataset import SplitDataset
from lumen.data.sources import read_data_split
from lumen.layout.encoder import LayoutEncoder
from lumen.layout.pca import load_pca
from lumen.layout.settings import LayoutSettings
from lumen.pretrained import TORCH_DTYPES, SDComponents, dtype_name, load_part, load_sd_components
from lumen.sampling.pipeline import build_controlnet_pipeline
from lumen.training.controlnet import check_controlnet_matches, controlnet_folder, read_lumen_json

logger = logging.getLogger(__name__)


def layout_dtype(cfg: LumenConfig, device: torch.device, pca=None) -> torch.dtype:
    """The dtype layouts are computed in: ``layout.dtype`` when set; else the PCA's (every stage after the fit
    computes layouts exactly as the PCA's features were); else, when fitting, ``compute_dtype``."""
    if cfg.layout.dtype is not None:
        return TORCH_DTYPES[cfg.layout.dtype.value]
    if pca is not None and pca.settings.get("dtype") in TORCH_DTYPES:
        return TORCH_DTYPES[pca.settings["dtype"]]
    return compute_dtype(cfg, device)


def transformer_spec(cfg: LumenConfig) -> Optional[TransformerSpec]:
    """The transformer part of the configured backbone, its defaults filled in (None for a backbone without)."""
    lay = cfg.layout
    kind = get_backbone(lay.backbone).transformer
    if kind is None:
        return None
    return resolve_transformer_spec(kind, lay.backbone_model, lay.backbone_revision, lay.backbone_layer,
                                    lay.facet.value if lay.facet else None, lay.image_size, cfg.data.resolution)


def layout_settings(cfg: LumenConfig, dtype: torch.dtype) -> LayoutSettings:
    """What decides a layout's meaning, with ``dtype`` the dtype its features are computed in. Only the parts
    the backbone uses are recorded (None for the others), so a setting that changes nothing refuses nothing."""
    lay = cfg.layout
    backbone = get_backbone(lay.backbone)
    sd = backbone.uses_sd
    spec = transformer_spec(cfg)
    return LayoutSettings(
        backbone=lay.backbone,
        model=cfg.model.pretrained if sd else None,
        revision=cfg.model.revision if sd else None,
        layers=tuple(lay.layers) if sd else None,
        timestep=lay.timestep if sd else None,
        noise_seed=lay.noise_seed if sd else None,
        prompt=lay.prompt if sd else None,
        backbone_model=spec.model if spec else None,
        backbone_revision=spec.revision if spec else None,
        backbone_layer=spec.layer if spec else None,
        facet=spec.facet if spec else None,
        image_size=spec.image_size if spec else None,
        fusion_weights=tuple(lay.fusion_weights) if backbone.fused else None,
        resolution=cfg.data.resolution,
        dtype=dtype_name(dtype),
    )


def config_for_layout(cfg: LumenConfig, settings: LayoutSettings) -> LumenConfig:
    """``cfg`` with the backbone and layout settings a PCA (or ControlNet) records: to make layouts exactly as
    it did (the judge of lumen.evaluation)."""
    lay = cfg.layout
    keep = lambda value, current: current if value is None else value  # noqa: E731
    layout = replace(
        lay, backbone=settings.backbone, layers=list(keep(settings.layers, lay.layers)),
        timestep=keep(settings.timestep, lay.timestep), noise_seed=keep(settings.noise_seed, lay.noise_seed),
        prompt=keep(settings.prompt, lay.prompt), backbone_model=settings.backbone_model,
        backbone_revision=settings.backbone_revision, backbone_layer=settings.backbone_layer,
        facet=Facet(settings.facet) if settings.facet else None, image_size=settings.image_size,
        fusion_weights=list(keep(settings.fusion_weights, lay.fusion_weights)), dtype=DType(settings.dtype))
    model = replace(cfg.model, pretrained=keep(settings.model, cfg.model.pretrained),
                    revision=settings.revision if settings.model else cfg.model.revision)
    return replace(cfg, layout=layout, model=model, data=replace(cfg.data, resolution=settings.resolution))


def compute_dtype(cfg: LumenConfig, device: torch.device) -> torch.dtype:
    """The frozen parts' dtype: model.dtype on a GPU; float32 on the CPU, where half precision is slow."""
    dtype = TORCH_DTYPES[cfg.model.dtype.value]
    if device.type == "cpu" and dtype != torch.float32:
        logger.warning("model.dtype=%s requested, but running on the CPU: using float32", cfg.model.dtype.value)
        return torch.float32
    return dtype


def load_components(cfg: LumenConfig, device: torch.device, dtype: torch.dtype) -> SDComponents:
    parts = load_sd_components(cfg.model.pretrained, cfg.model.revision, cfg.model.variant, dtype)
    apply_cpu_threads(cfg.cpu_threads, parts.unet, device)
    return parts.to(device)


def build_extractor(cfg: LumenConfig, parts: SDComponents, early_exit: bool = True,
                    dtype: Optional[torch.dtype] = None) -> FeatureExtractor:
    """The configured backbone on ``parts``' device, sharing their VAE (and, for SD, their UNet). A transformer
    backbone is loaded in ``dtype`` (default: the UNet's): the dtype its layouts are made in."""
    lay = cfg.layout
    request = ExtractorRequest(parts=parts, layers=tuple(lay.layers), timestep=lay.timestep,
                               noise_seed=lay.noise_seed, prompt=lay.prompt, transformer=transformer_spec(cfg),
                               fusion_weights=tuple(lay.fusion_weights), dtype=dtype or parts.unet.dtype,
                               early_exit=early_exit)
    return get_backbone(lay.backbone).build(request)


def split_dataset(cfg: LumenConfig, split: str, train: bool = False, labels: str = "none",
                  head: Optional[int] = None, image_ids: Optional[list[int]] = None) -> SplitDataset:
    """The data set of a split at the config's resolution (training draws or evaluation captions). A streaming
    source (webdataset) gives the images ``image_ids``, or its first ``head`` images (``read_data_split``)."""
    index = read_data_split(cfg.data, split, load_stuff=labels == "stuff_json", head=head, image_ids=image_ids)
    return SplitDataset(index, cfg.data.resolution, train=train, seed=cfg.seed,
                            empty_prompt_probability=cfg.train.empty_prompt_probability, labels=labels)


def cache_settings(cfg: LumenConfig, pca) -> dict:
    """What a layout cache must share with the config that reads it: layout settings (in the PCA's dtype, the
    one the cache is made in) and the PCA."""
    settings = layout_settings(cfg, layout_dtype(cfg, torch.device("cpu"), pca))
    # The cache also holds SD's VAE latents, whatever the backbone.
    return dict(settings.to_json(), vae_model=cfg.model.pretrained, vae_revision=cfg.model.revision,
                pca_fingerprint=pca.fingerprint(),
                pca_n_components=pca.n_components, pca_num_samples=pca.settings.get("num_samples"))


def sampling_device(name: Optional[str]) -> torch.device:
    """``sample.device`` as a torch device (None: cuda when available); one that does not exist is refused."""
    from lumen.errors import LumenError

    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise LumenError(f"sample.device={name} is not a device name ({err}); use cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LumenError(f"sample.device={name}, but no GPU is visible: use sample.device=cpu (or leave it unset)")
    return device


class SamplingSetup:
    """Loads the model, the ControlNet and the PCA once; turns sources and jobs into images."""

    def __init__(self, cfg: LumenConfig, controlnet_path: str) -> None:
        from diffusers import ControlNetModel

        s = cfg.sample
        self.device = sampling_device(s.device)
        self.folder = controlnet_folder(controlnet_path)
        self.metadata = read_lumen_json(self.folder)
        self.pca = load_pca(cfg.layout.pca_dir)
        # Layouts must be made exactly as in training: same settings, same PCA, same dtype. SD's features come
        # from the sampling UNet itself, so with an SD backbone the model samples in the layouts' dtype; a
        # transformer backbone is loaded in the layouts' dtype whatever the sampling dtype.
        trained = LayoutSettings.from_json(self.metadata["layout"], f"{self.folder}/lumen.json")
        layout_dtype = TORCH_DTYPES[trained.dtype]
        self.dtype = TORCH_DTYPES[s.dtype.value] if s.dtype else layout_dtype
        uses_sd = get_backbone(cfg.layout.backbone).uses_sd
        check_controlnet_matches(self.metadata, layout_settings(cfg, self.dtype if uses_sd else layout_dtype),
                                 self.pca, str(self.folder),
                                 dtype_hint="leave sample.dtype unset to sample in the dtype the layouts were made in")
        self.parts = load_sd_components(cfg.model.pretrained, cfg.model.revision, cfg.model.variant, self.dtype)
        self.parts.to(self.device)
        apply_cpu_threads(cfg.cpu_threads, self.parts.unet, self.device)
        self.controlnet = load_part("ControlNet", self.folder, lambda: ControlNetModel.from_pretrained(
            self.folder, torch_dtype=self.dtype)).to(self.device)
        self.extractor = build_extractor(cfg, self.parts, dtype=layout_dtype)
        self.batch_invariant = s.batch_invariant
        self.encoder = LayoutEncoder(self.pca)
        self.pipes: dict[str, object] = {}

    def pipe(self, scheduler: str):
        if scheduler not in self.pipes:
            self.pipes[scheduler] = build_controlnet_pipeline(self.parts, self.controlnet, scheduler)
        return self.pipes[scheduler]
