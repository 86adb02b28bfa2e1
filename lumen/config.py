"""Typed experiment configuration.

The schema is a tree of dataclasses; ``load_config`` turns it into an OmegaConf structured config and merges,
in order, the schema's defaults, each YAML file and the ``key=value`` overrides. Because the config is
structured, an unknown key or a value of the wrong type is refused; we re-raise OmegaConf's error as a
``ConfigError`` that names the key, where it came from and, for a near-miss, the closest valid key.

Library code never receives this tree: entry points pick the fields a component needs and pass them as
arguments or as the small dataclasses below (``DataConfig``, ``ModelConfig``, ...).
"""

from __future__ import annotations

import difflib
import enum
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from lumen.errors import LumenError

SEED_MAX = 2**32 - 1  # numpy's legacy seeding (accelerate's set_seed) takes 0 .. 2**32 - 1


@dataclass(frozen=True)
class Range:
    """The values a numeric config key accepts (every element, for a list); None is always accepted where the
    key's type is Optional. ``low_open`` / ``high_open`` exclude the bound itself."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    multiple_of: Optional[int] = None
    min_items: int = 0  # for lists: at least this many elements

    def accepts(self, value: Any) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return self.multiple_of is None or value % self.multiple_of == 0

    def describe(self, integer: bool) -> str:
        kind = "an integer" if integer else "a number"
        if self.multiple_of is not None:
            kind = f"a multiple of {self.multiple_of}"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_num(self.high)}"
        return kind


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def setting(default: Any = None, *, doc: str, factory: Any = None, **bounds: Any) -> Any:
    """A config key: its default (or ``factory`` for a list), its one-line ``doc`` (what ``--help`` shows) and, for
    a number, its valid range (``Range`` keyword arguments; ``load_config`` checks it for every entry point)."""
    metadata: dict[str, Any] = {"doc": doc}
    if bounds:
        metadata["range"] = Range(**bounds)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def seed_field(default: int = 0, *, doc: str) -> Any:
    return setting(default, low=0, high=SEED_MAX, doc=doc)


class DType(str, enum.Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class DataLayout(str, enum.Enum):
    """Where images and label maps lie below ``data.root`` (see ``lumen.data.paths``)."""

    auto = "auto"  # the official layout if its folders exist, else the cocostuff README's
    official = "official"  # {root}/{split}2017, {root}/stuffthingmaps_trainval2017/{split}2017
    cocostuff = "cocostuff"  # {root}/images/{split}2017, {root}/annotations/{split}2017


class DataSource(str, enum.Enum):
    """How a data set is stored (see data/README.md); every source but coco is read with ``datasets``."""

    coco = "coco"  # COCO 2017 / COCO-Stuff: {split}2017/ folders and annotations/captions_{split}2017.json
    imagefolder = "imagefolder"  # a folder of images with metadata.jsonl or metadata.csv (split subfolders optional)
    hf_dataset = "hf_dataset"  # a save_to_disk folder or a Hugging Face dataset id
    webdataset = "webdataset"  # tar shards of image + caption members, read streaming


class LabelSource(str, enum.Enum):
    """Which label maps to read with the images (all decoded to the stuffthingmaps convention)."""

    none = "none"
    stuffthingmaps = "stuffthingmaps"  # PNG, value = COCO-Stuff id - 1, 255 unlabeled
    stuff_json = "stuff_json"  # compressed RLE in stuff_{split}2017.json, stuff classes only


@dataclass
class ModelConfig:
    """Stable Diffusion weights: a local diffusers folder or a Hugging Face model id."""

    pretrained: str = setting("stable-diffusion-v1-5/stable-diffusion-v1-5",
        doc="A diffusers folder or a Hugging Face model id.")
    revision: Optional[str] = setting(None, doc="Git revision of a model id (pin a commit for exact reproducibility).")
    variant: Optional[str] = setting(None,
        doc="E.g. \"fp16\" to read the half-precision files of a model id.")
    dtype: DType = setting(DType.float32, doc="Dtype of the frozen parts (VAE, UNet, text encoder).")


@dataclass
class DataConfig:
    """The images and captions: COCO-Stuff / COCO, an image folder, a Hugging Face dataset or tar shards (see
    data/README.md for each layout)."""

    source: DataSource = setting(DataSource.coco,
        doc="How the data set is stored: coco, imagefolder, hf_dataset or webdataset (data/README.md).")
    root: str = setting("data/coco-stuff",
        doc="coco: the folder holding {split}2017/ and annotations/; imagefolder: the folder of images and "
            "metadata; hf_dataset: a save_to_disk folder or a dataset id; webdataset: the folder (or fsspec URL) "
            "that data.shards starts from.")
    shards: str = setting("{root}/{split}/*.tar",
        doc="webdataset: the tar shards of a split ({root} and {split} filled in): a glob, a brace range "
            "({000000..000099}.tar) or a comma-separated list; local paths or fsspec URLs.")
    image_column: Optional[str] = setting(None,
        doc="imagefolder / hf_dataset: the image column (None: the first image feature); webdataset: the image "
            "member's extension (None: the first of jpg, jpeg, png, webp).")
    caption_column: Any = setting(None,
        doc="The caption column (webdataset: member, e.g. txt or json.caption), or a list of them whose captions "
            "are pooled; a column may hold one caption or a list (None: the first of text, caption, captions, txt; "
            "webdataset: txt, caption, text, json.caption, json.captions).")
    layout: DataLayout = setting(DataLayout.auto,
        doc="Where images and label maps lie below data.root (auto: official, else cocostuff).")
    train_split: str = setting("train", doc="The split that trains (PCA fit, cache, ControlNet).")
    val_split: str = setting("val",
        doc="The split that validates and is sampled from (imagefolder / hf_dataset: val also finds validation).")
    images_dir: Optional[str] = setting(None,
        doc="Explicit image folder ({root} and {split} filled in); overrides data.layout.")
    captions_file: str = setting("{root}/annotations/captions_{split}2017.json",
        doc="COCO captions file ({root} and {split} filled in).")
    stuff_file: str = setting("{root}/annotations/stuff_{split}2017.json",
        doc="COCO-Stuff stuff annotations ({root} and {split} filled in), for data.labels=stuff_json.")
    label_maps_dir: Optional[str] = setting(None, doc="Explicit stuffthingmaps folder (None: the layout's).")
    labels: LabelSource = setting(LabelSource.none,
        doc="Label maps read with the images: none, stuffthingmaps (PNG) or stuff_json (RLE).")
    resolution: int = setting(512, low=64, multiple_of=8,
        doc="Shorter side resized to this, then centre-cropped to a square. A multiple of 8 (the VAE's factor) "
            "and at least 64 (the UNet halves the latent three times).")
    max_bad_fraction: float = setting(0.01, low=0, high=1,
        doc="A split with more unusable images (missing, unreadable, truncated) than this fraction is refused.")
    num_workers: int = setting(2, low=0, doc="DataLoader worker processes that decode images (or read the cache).")
    pin_memory: Optional[bool] = setting(None,
        doc="Page-locked batches for faster host-to-GPU copies (None: when training on a GPU).")
    prefetch_factor: Optional[int] = setting(None, low=1,
        doc="Batches each worker loads ahead (None: torch's default, 2; needs data.num_workers > 0).")
    persistent_workers: bool = setting(True,
        doc="Keep the DataLoader workers alive from one epoch to the next (with data.num_workers > 0).")
    limit: Optional[int] = setting(None, low=1, doc="Use only the first N images of each split (by image id).")


@dataclass
class SyntheticDataConfig:
    """The embedded default's data set, written in the official layout by ``lumen.data.synthetic``."""

    num_train: int = setting(48, low=1, doc="Synthetic training images.")
    num_val: int = setting(8, low=1, doc="Synthetic validation images.")
    width: int = setting(160, low=32, doc="Their width in pixels.")
    height: int = setting(128, low=32, doc="Their height in pixels.")
    seed: int = seed_field(doc="Seed of the synthetic scenes.")


class Backbone(str, enum.Enum):
    """Where the features of a layout come from (lumen.backbones)."""

    sd = "sd"  # Stable Diffusion UNet decoder taps (model.pretrained)
    dinov2 = "dinov2"  # DINOv2 (with or without registers): a layer's tokens
    dino = "dino"  # DINO v1 (ViTModel): a layer's key facet, as DINO-ViT-Features
    clip = "clip"  # CLIP's vision tower: the penultimate layer's tokens
    sd_dinov2 = "sd+dinov2"  # SD-DINO's fusion of both
    vit = "vit"  # any transformers vision transformer AutoModel loads


class Facet(str, enum.Enum):
    token = "token"  # the block's output tokens
    key = "key"  # the block's attention projections of its input, heads concatenated
    query = "query"
    value = "value"


class PCASolver(str, enum.Enum):
    sklearn = "sklearn"  # scikit-learn PCA (covariance + eigh: exact, fast for many more samples than dims)
    torch = "torch"  # the same computation with torch on the extraction device (a GPU makes it milliseconds)


@dataclass
class LayoutConfig:
    """How features are extracted and turned into a neural layout (method.md sections 2 and 4)."""

    backbone: Backbone = setting(Backbone.sd, doc="The foundation model whose features make the layout.")
    backbone_model: Optional[str] = setting(None,
        doc="The transformer backbone's model id or transformers folder (None: facebook/dinov2-base for dinov2 and "
            "sd+dinov2, facebook/dino-vitb8 for dino, openai/clip-vit-large-patch14 for clip; vit needs one).")
    backbone_revision: Optional[str] = setting(None, doc="Git revision of layout.backbone_model's model id.")
    backbone_layer: Optional[int] = setting(None, low=1,
        doc="The transformer block read, 1-based (None: the last for dinov2 and vit, the penultimate for clip, "
            "9 of 12 for dino).")
    facet: Optional[Facet] = setting(None,
        doc="token, key, query or value of that block (None: key for dino, token otherwise).")
    image_size: Optional[int] = setting(None, low=8,
        doc="The transformer's square input size, a multiple of its patch size (None: the size whose patch grid "
            "is SD's layer-8 grid, patch size x data.resolution / 16: 448 px for patch 14 at 512).")
    fusion_weights: list[float] = setting(factory=lambda: [1.0, 1.0], low=0, min_items=2,
        doc="sd+dinov2: weights of the L2-normalised SD and DINOv2 parts (SD-DINO: equal).")
    layers: list[int] = setting(factory=lambda: [2, 5, 8], low=1, min_items=1,
        doc="Decoder layers, SD-DINO's numbering (SD 1.x has 1..12; the model's own count is checked when it "
            "loads).")
    timestep: int = setting(100, low=0, high=999, doc="Noise level the image is seen at (SD's 1000 train steps).")
    noise_seed: int = seed_field(42, doc="Seed of the one fixed noise tensor added to every latent.")
    prompt: str = setting("", doc="Text condition of the UNet during extraction (its embedding is computed once).")
    batch_size: int = setting(4, low=1, doc="Images per extraction batch (per process).")
    pca_dir: str = setting("${output_dir}/pca", doc="Folder of the PCA that layouts are projected on.")
    dtype: Optional[DType] = setting(None,
        doc="The dtype features are computed in; part of what a layout means (bf16 moves features by ~1 %). "
            "None: when fitting the PCA, model.dtype on a GPU and float32 on the CPU; afterwards, the PCA's.")


@dataclass
class PCAConfig:
    """The layout PCA (scripts/fit_pca.py)."""

    num_samples: int = setting(40_000, low=1,
        doc="Feature vectors (pixels) drawn uniformly over (image, pixel) positions.")
    num_images: Optional[int] = setting(None, low=1, doc="Images they are drawn from (None: ~32 pixels per image).")
    n_components: int = setting(20, low=1,
        doc="At most the feature width and pca.num_samples (checked before extraction).")
    seed: int = seed_field(doc="Seed of the sample plan (which images and pixels).")
    solver: PCASolver = setting(PCASolver.sklearn,
        doc="scikit-learn (CPU) or torch (the same maths on the extraction device).")
    save_samples: bool = setting(False, doc="Also write pca/samples.safetensors, so anyone can check the fit.")
    overwrite: bool = setting(False,
        doc="A PCA already in layout.pca_dir fitted with other settings is kept unless this is true (caches and "
            "ControlNets made with it would no longer match); one fitted with the same settings is reused.")


@dataclass
class EncodeConfig:
    """The cache of layouts and VAE latents (scripts/encode_layouts.py)."""

    splits: list[str] = setting(factory=lambda: ["train", "val"], doc="The splits to cache.")
    shard_size: int = setting(1000, low=1, doc="Images per shard: the unit of resumption and of work per process.")
    visualize: int = setting(0, low=0, doc="Write pictures of the first K layouts of each split.")


class MixedPrecision(str, enum.Enum):
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


class LRScheduler(str, enum.Enum):
    constant = "constant"
    constant_with_warmup = "constant_with_warmup"
    linear = "linear"
    cosine = "cosine"
    cosine_with_restarts = "cosine_with_restarts"
    polynomial = "polynomial"


class Attention(str, enum.Enum):
    sdpa = "sdpa"  # torch's scaled_dot_product_attention (diffusers' default)
    xformers = "xformers"


class CompileMode(str, enum.Enum):
    default = "default"
    reduce_overhead = "reduce-overhead"
    max_autotune = "max-autotune"


class Tracker(str, enum.Enum):
    tensorboard = "tensorboard"
    wandb = "wandb"  # WANDB_MODE=offline works without network
    none = "none"


@dataclass
class TrainConfig:
    """The ControlNet trainer (train/train_controlnet.py)."""

    controlnet: Optional[str] = setting(None,
        doc="A pretrained ControlNet folder to continue from (None: from the UNet).")
    use_cache: bool = setting(True,
        doc="Read layouts + latents from output_dir/cache (False: compute them every step).")
    verify_cache: bool = setting(True,
        doc="Check the SHA-256 sums of every cache shard before training reads it (a changed byte is found, not "
            "trained on); false skips the check.")
    batch_size: int = setting(4, low=1, doc="Images per process and micro-batch.")
    gradient_accumulation_steps: int = setting(1, low=1, doc="Micro-batches per optimizer step.")
    max_train_steps: Optional[int] = setting(None, low=1, doc="Optimizer steps; None: num_train_epochs over the data.")
    num_train_epochs: int = setting(1, low=1, doc="Passes over the data when train.max_train_steps is None.")
    learning_rate: float = setting(1e-5, low=0, low_open=True, doc="AdamW learning rate (after warmup).")
    lr_scheduler: LRScheduler = setting(LRScheduler.constant, doc="Learning-rate schedule (diffusers' get_scheduler).")
    lr_warmup_steps: int = setting(0, low=0, doc="Warmup of the learning rate, in optimizer steps.")
    adam_beta1: float = setting(0.9, low=0, high=1, high_open=True, doc="AdamW beta1.")
    adam_beta2: float = setting(0.999, low=0, high=1, high_open=True, doc="AdamW beta2.")
    adam_weight_decay: float = setting(1e-2, low=0, doc="AdamW weight decay.")
    adam_epsilon: float = setting(1e-8, low=0, low_open=True, doc="AdamW epsilon.")
    max_grad_norm: float = setting(1.0, low=0, low_open=True, doc="Gradients are clipped to this total norm.")
    use_8bit_adam: bool = setting(False, doc="bitsandbytes' 8-bit AdamW (needs bitsandbytes).")
    mixed_precision: MixedPrecision = setting(MixedPrecision.no,
        doc="No, fp16 (a GPU) or bf16: the frozen parts compute in it, master weights stay float32.")
    upcast_vae: bool = setting(True, doc="Keep the VAE in float32 in fp16 runs (SD's VAE overflows in fp16).")
    gradient_checkpointing: bool = setting(False,
        doc="Recompute the ControlNet's activations in the backward pass (less memory).")
    attention: Attention = setting(Attention.sdpa, doc="Attention kernels: sdpa (torch) or xformers.")
    allow_tf32: bool = setting(False, doc="TF32 matmuls on Ampere and newer GPUs.")
    channels_last: bool = setting(False, doc="Channels-last memory format for the UNet and the ControlNet.")
    compile: bool = setting(False,
        doc="torch.compile the ControlNet (in place: checkpoints, EMA and save_pretrained see the same module).")
    compile_unet: bool = setting(False,
        doc="torch.compile the frozen UNet's training forward (layout extraction and validation stay eager).")
    compile_mode: CompileMode = setting(CompileMode.default,
        doc="torch.compile mode: default, reduce-overhead (CUDA graphs) or max-autotune.")
    empty_prompt_probability: float = setting(0.5, low=0, high=1,
        doc="Probability that a training draw uses the empty prompt (classifier-free guidance; ControlNet used "
            "0.5).")
    log_every: int = setting(10, low=1,
        doc="Loss, unusable images and stop requests are gathered from every process (one collective, a "
            "host-device sync) and logged every this many optimizer steps; a NaN is still named with its own "
            "step.")
    checkpointing_steps: int = setting(500, low=1, doc="A checkpoint every this many optimizer steps.")
    checkpoints_total_limit: Optional[int] = setting(3, low=1, doc="The newest checkpoints kept (None: every one).")
    resume_from_checkpoint: Optional[str] = setting(None,
        doc="\"latest\" or a checkpoint-<step> folder.")
    overwrite_output_dir: bool = setting(False,
        doc="A run that finds another run's checkpoints or controlnet/ in output_dir (and is not resuming) "
            "stops; true removes them first.")
    checkpoint_on_interrupt: bool = setting(True, doc="Ctrl-C / SIGTERM: save a checkpoint, then stop (exit code 3).")
    report_to: Tracker = setting(Tracker.tensorboard, doc="Tracker: tensorboard, wandb or none.")
    tracker_project_name: str = setting("lumen",
        doc="The trackers' project (wandb's project; tensorboard's run folder below train.logging_dir).")
    logging_dir: str = setting("${output_dir}/logs", doc="Where the trackers write (tensorboard's event files).")
    ema: bool = setting(False, doc="Also keep an exponential moving average of the ControlNet (controlnet_ema/).")
    ema_decay: float = setting(0.9999, low=0, high=1, doc="Its decay per optimizer step.")
    record_batches: bool = setting(False,
        doc="Write logs/rank-<i>.json: image ids each process trained on (debugging).")
    component_dropout: float = setting(0.0, low=0, high=1,
        doc="With this probability a sample keeps only its first k whitened components (k uniform in 1..N), so "
            "one ControlNet serves every k at sampling time: fewer components, more diversity.")


@dataclass
class ValidationConfig:
    """Samples of the validation images during training."""

    steps: int = setting(500, low=0, doc="Sample the validation images every this many optimizer steps (0: never).")
    num_images: int = setting(4, low=0,
        doc="The first images of the val split (with validation.images: at most this many of them).")
    images: list[str] = setting(factory=list,
        doc="Image files to validate on instead of the val split's first images.")
    captions: list[str] = setting(factory=list,
        doc="One caption per validation.images file (empty: the empty prompt for each).")
    prompt_edits: list[str] = setting(factory=list, doc="Extra prompts applied to every validation layout.")
    num_inference_steps: int = setting(20, low=1, high=1000, doc="Sampler steps per validation image.")
    guidance_scale: float = setting(7.5, low=0, doc="Classifier-free guidance scale.")
    conditioning_scale: float = setting(1.0, low=0, doc="ControlNet conditioning scale.")
    seed: int = seed_field(doc="Seed of the validation samples (image i: seed + i).")
    metrics: bool = setting(False, doc="Also compute and log layout fidelity of the validation samples.")


class SamplerName(str, enum.Enum):
    unipc = "unipc"
    ddim = "ddim"
    euler = "euler"


@dataclass
class SampleConfig:
    """scripts/sample.py: sources x prompts -> images, grids and the metadata to regenerate each."""

    controlnet: str = setting("${output_dir}/controlnet", doc="A trained controlnet/ or a checkpoint-<step>/ folder.")
    images: list[str] = setting(factory=list, doc="Image files as sources...")
    image_ids: list[int] = setting(factory=list, low=0, doc="...or ids of data.val_split (or `split`).")
    split: Optional[str] = setting(None, doc="The split image_ids / from_cache refer to (None: data.val_split).")
    from_cache: bool = setting(False, doc="Take the layouts of image_ids (or the first num_sources) from the cache.")
    num_sources: int = setting(4, low=1, doc="With no images / image_ids given: the first images of the split.")
    prompts: list[str] = setting(factory=list, doc="Edits; the source's own caption is always column one.")
    num_images_per_prompt: int = setting(1, low=1, doc="Images per (source, prompt).")
    seed: int = seed_field(doc="Seed of the first image (repeat r of source i: seed + i * num_images_per_prompt + r, "
                                "the same for every prompt and k).")
    num_inference_steps: int = setting(20, low=1, high=1000, doc="Sampler steps.")
    guidance_scale: float = setting(7.5, low=0, doc="Classifier-free guidance scale.")
    conditioning_scale: float = setting(1.0, low=0, doc="ControlNet conditioning scale.")
    scheduler: SamplerName = setting(SamplerName.unipc, doc="Sampler: unipc, ddim or euler.")
    resolution: Optional[int] = setting(None, low=64, multiple_of=8, doc="None: data.resolution.")
    batch_size: int = setting(8, low=1, doc="Images per pipeline call (the images do not depend on it).")
    dtype: Optional[DType] = setting(None,
        doc="None: the dtype the ControlNet's layouts were made in (lumen.json), so layouts are computed "
            "exactly as in training; another dtype is refused, since it would compute the layouts differently.")
    device: Optional[str] = setting(None, doc="None: cuda when available.")
    batch_invariant: Optional[bool] = setting(None,
        doc="Sample so that an image is the same bits in any batch (few-row linears one sample at a time, VAE "
            "slicing): exact on the CPU, no guarantee on a GPU (None: on the CPU only).")
    n_components: Optional[int] = setting(None, low=1, doc="Keep the first k whitened components (None: all).")
    sweep_components: list[int] = setting(factory=list, low=1, doc="One grid over these k instead of prompts.")
    out_dir: str = setting("${output_dir}/samples", doc="Where images, grids and samples.json go.")
    replay: Optional[str] = setting(None, doc="A samples JSON: regenerate its images (or only `replay_image`) exactly.")
    replay_image: Optional[str] = setting(None,
        doc="With sample.replay: only this image (its file name in samples.json).")


@dataclass
class SynthesizeConfig:
    """scripts/synthesize.py: a new data set generated from the layouts of a split."""

    split: str = setting("train", doc="The split whose layouts are used.")
    images_per_source: int = setting(1, low=1, high=99, doc="K generated images per source (ids: source id x 100 + k).")
    prompts: list[str] = setting(factory=list, doc="Prompts to cycle through (empty: the source's caption).")
    limit: Optional[int] = setting(None, low=1, doc="Only the first N source images.")
    shard_size: int = setting(64, low=1,
        doc="Source images per shard (the unit of resumption and of work per process).")
    out_root: str = setting("${output_dir}/synthetic", doc="Root of the generated data set (official COCO layout).")
    out_split: Optional[str] = setting(None, doc="Name of the written split (None: the source split's).")


@dataclass
class EvaluateConfig:
    """scripts/evaluate.py: layout fidelity, diversity, and optionally mIoU of generated images."""

    samples: str = setting("${output_dir}/samples/samples.json", doc="A samples JSON written by scripts/sample.py.")
    kmeans_clusters: int = setting(6, low=2, doc="Clusters of the layouts' k-means segmentations compared by ARI.")
    segmenter: Optional[str] = setting(None, doc="A transformers AutoModelForSemanticSegmentation folder, for mIoU.")
    segmenter_label_offset: int = setting(0, low=-255, high=255, doc="Added to the segmenter's class ids.")
    out: str = setting("${output_dir}/evaluation", doc="Where metrics.json and metrics.md go.")
    judge_pca: Optional[str] = setting(None,
        doc="The PCA folder whose backbone and layouts measure fidelity and diversity, so runs of different "
            "backbones are measured with one ruler (None: the samples' own PCA, for SD layouts only).")


@dataclass
class CompareConfig:
    """scripts/compare_backbones.py: one pipeline per backbone on the same images, measured with one judge."""

    backbones: list[str] = setting(factory=lambda: ["sd", "dinov2", "dino", "clip"],
        doc="The backbones compared (values of layout.backbone); the first SD one's PCA is the judge.")
    backbone_models: dict[str, str] = setting(factory=dict,
        doc="backbone -> its layout.backbone_model (unset: that backbone's default model).")
    train_steps: int = setting(200, low=0,
        doc="Optimizer steps of each backbone's ControlNet (0: compare the PCAs, speeds and layouts only).")
    num_sources: int = setting(4, low=1, doc="Validation images sampled and shown for every backbone.")
    benchmark: Optional[str] = setting(None,
        doc="A correspondence benchmark in SPair-71k's layout: PCK per backbone (corr.split, corr.alphas, "
            "corr.pck_reference, corr.resolution).")
    out: str = setting("${output_dir}/compare", doc="Where each backbone's run, the table and the picture go.")


class CorrFeatures(str, enum.Enum):
    raw = "raw"
    pca = "pca"


class PCKReference(str, enum.Enum):
    bbox = "bbox"
    image = "image"


@dataclass
class CorrespondenceConfig:
    """scripts/correspond.py: semantic correspondence with the configured backbone (layout.backbone)."""

    source: Optional[str] = setting(None, doc="The image whose points are matched.")
    target: Optional[str] = setting(None, doc="The image they are matched in.")
    points: list[list[float]] = setting(factory=list,
        doc="Source points [[x, y], ...] in source pixels (empty: a corr.grid x corr.grid grid of points).")
    grid: int = setting(6, low=1, high=64, doc="Points per side of the grid used when corr.points is empty.")
    features: CorrFeatures = setting(CorrFeatures.raw,
        doc="raw: the backbone's features; pca: projected by the layout PCA (layout.pca_dir) first.")
    resolution: int = setting(512, low=64, multiple_of=64,
        doc="Images are resized to this square size for the backbone (points are mapped back); with "
            "corr.features=pca, data.resolution is used, as for the PCA's layouts.")
    mutual: bool = setting(False, doc="Keep only mutual nearest neighbours in the picture and the JSON.")
    soft_window: int = setting(0, low=0, high=7,
        doc="Sub-cell precision: soft-argmax over (2r+1)^2 cells around the best match (0: off).")
    soft_temperature: float = setting(0.02, low=0, low_open=True, doc="Temperature of the soft-argmax.")
    joint_pca: bool = setting(False,
        doc="Also draw the joint PCA of the images' features (the first three components as RGB).")
    images: list[str] = setting(factory=list,
        doc="Images for the joint-PCA picture (empty: corr.source and corr.target).")
    benchmark: Optional[str] = setting(None,
        doc="A folder in SPair-71k's layout: report PCK on its pairs instead of matching two images.")
    split: str = setting("test", doc="The benchmark split (PairAnnotation/<split>).")
    limit: Optional[int] = setting(None, low=1, doc="Use only the first N pairs of the benchmark (by file name).")
    alphas: list[float] = setting(factory=lambda: [0.05, 0.1, 0.15], low=0, low_open=True, high=1, min_items=1,
        doc="PCK thresholds, as fractions of the reference size.")
    pck_reference: PCKReference = setting(PCKReference.bbox,
        doc="bbox: alpha x the larger side of the target's bounding box (SPair-71k); image: of the target image "
            "(PF-PASCAL).")
    chunk: int = setting(4096, low=1, doc="Target cells compared at a time (memory stays flat in the grid size).")
    out: str = setting("${output_dir}/correspondence", doc="Where pictures, tables and JSON go.")


@dataclass
class LumenConfig:
    """Every setting of every stage."""

    output_dir: str = setting("outputs/run", doc="The run's folder: PCA, cache, checkpoints, ControlNet, samples.")
    seed: int = seed_field(doc="Seed of the data order, caption draws and training noise.")
    cpu_threads: int = setting(0, low=0, high=1024,
        doc="Threads per process on the CPU; 0: one for a tiny model (< 20 M UNet parameters, robust when other "
            "programs share the cores), torch's default (or OMP_NUM_THREADS) otherwise.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    corr: CorrespondenceConfig = field(default_factory=CorrespondenceConfig)


class ConfigError(LumenError, ValueError):
    """A config file or override that does not fit the schema."""

    label = "config error"


def _valid_keys(parent: str) -> list[str]:
    """Field names of the schema section at dotted path ``parent`` ('' for the root)."""
    node: Any = LumenConfig()
    for part in [p for p in parent.split(".") if p]:
        node = getattr(node, part, None)
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def _explain(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    key = str(key)
    if isinstance(err, ConfigKeyError) or ("Key '" in str(err) and "not in" in str(err)):
        parent, _, leaf = key.rpartition(".")
        candidates = _valid_keys(parent)
        full = [f"{parent}.{c}" if parent else c for c in candidates]
        close = difflib.get_close_matches(leaf, candidates, n=1, cutoff=0.6)
        hint = f" Did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
        listing = ", ".join(full) if full else "(none: this section takes no keys)"
        return ConfigError(f"unknown config key '{key}' (from {source}).{hint}\n  valid keys here: {listing}")
    msg = str(err).splitlines()[0]
    return ConfigError(f"bad value for config key '{key}' (from {source}): {msg}")


# YAML 1.1 reads a bare no / yes / off / on as a boolean; for a choice key they mean the choice of that name.
_BOOLEAN_WORDS = {False: ("no", "off", "false"), True: ("yes", "on", "true")}


def _unwrap_optional(kind: Any) -> Any:
    """``Optional[X]`` -> ``X``; any other type as it is."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is typing.Union and len(args) == 1:
        return args[0]
    return kind


def _schema_type(key: str) -> Any:
    """The declared type of the dotted config key ``key`` (None when the schema has no such key); below a
    mapping-valued key (``compare.backbone_models.dino``), the type of its values."""
    node: Any = LumenConfig
    parts = key.split(".")
    for position, part in enumerate(parts):
        if not is_dataclass(node):
            return None
        kind = _unwrap_optional(typing.get_type_hints(node).get(part))
        if kind is None:
            return None
        if typing.get_origin(kind) is dict and position == len(parts) - 2:
            return typing.get_args(kind)[1]
        node = kind
    return node


def _shape_error(key: str, value: Any, source: str, expected: str) -> ConfigError:
    return ConfigError(f"bad value for config key '{key}' (from {source}): {value}; expected {expected}")


def _conform(values: dict, section: Any, source: str, typed: Callable[[str], Any], prefix: str = "") -> dict:
    """``values`` (a config file's or an override's mapping) checked against the schema section ``section`` for
    what OmegaConf would report in its own terms, with the word the user typed (``typed(dotted key)``):
    a scalar for a list or a section, a list or mapping for a single value, and YAML's reading of a bare word
    (``no`` as false, ``{a,b}`` as a mapping) where the key wants a string or a choice."""
    hints = typing.get_type_hints(section)
    result = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        kind = _unwrap_optional(hints.get(key)) if key in hints else None
        if kind is None or kind is Any or value is None or (isinstance(value, str) and value.startswith("${")):
            result[key] = value  # unknown keys are named by OmegaConf, with the closest valid key
            continue
        origin, word = typing.get_origin(kind), typed(name)
        if is_dataclass(kind):
            if not isinstance(value, dict):
                raise _shape_error(name, word if word is not None else value, source,
                                   f"a section of keys, e.g. {name}.{fields(kind)[0].name}=...")
            value = _conform(value, kind, source, typed, name + ".")
        elif origin is list:
            if not isinstance(value, list):
                raise _shape_error(name, word if word is not None else value, source,
                                   f"a list, e.g. {name}=[{word if word is not None else value}]")
        elif origin is dict:
            if not isinstance(value, dict):
                raise _shape_error(name, word if word is not None else value, source,
                                   f"a mapping, e.g. {name}.<key>=<value>")
        elif isinstance(kind, type) and issubclass(kind, enum.Enum) and isinstance(value, bool):
            choices = [member.value for member in kind]
            chosen = word if word in choices else next((w for w in _BOOLEAN_WORDS[value] if w in choices), None)
            if chosen is None:
                raise _shape_error(name, repr(word if word is not None else value), source,
                                   f"one of {', '.join(choices)}")
            value = chosen
        elif kind is str and not isinstance(value, str) and isinstance(word, str):
            value = word  # what was typed, not YAML's reading of it (a boolean, a number, a brace pattern)
        elif isinstance(value, (dict, list)):
            raise _shape_error(name, word if word is not None else value, source, "a single value")
        result[key] = value
    return result


def _lookup(tree: Any, key: str) -> Any:
    """The value at dotted ``key`` in a nested dict (None when absent)."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _merge(base: DictConfig, plain: dict, source: str, typed: Callable[[str], Any]) -> DictConfig:
    try:
        return OmegaConf.merge(base, OmegaConf.create(_conform(plain, LumenConfig, source, typed)))
    except OmegaConfBaseException as err:
        raise _explain(err, source) from None


def _nested(key: str, value: Any) -> dict:
    """``a.b.c``, v -> ``{"a": {"b": {"c": v}}}``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def parse_override(item: str) -> dict:
    """``key=value`` -> a nested mapping. The value is read as YAML (numbers, lists, null, ...); for a key that
    holds a string, a value YAML cannot read (``data.shards={root}/{split}/{000000..000099}.tar``) is taken
    as typed."""
    import yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.empty_prompt_probability=0.1)")
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"{key}={text}"]), resolve=False)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        if _schema_type(key) is not str:
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(f"cannot parse override '{item}': {detail}") from None
        parsed = _nested(key, text)
    return parsed


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every leaf of a plain (nested dict) config."""
    if not isinstance(node, dict):
        return [prefix]
    keys = []
    for key, value in node.items():
        keys += _leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def load_config(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> LumenConfig:
    """Merge the schema's defaults, ``files`` in order, then ``overrides`` (``key=value``).

    Returns the validated config as plain dataclasses (interpolations such as ``${output_dir}`` resolved).
    Raises ``ConfigError`` naming the key and its source when anything does not fit the schema: an unknown
    key, a wrong type, or a value outside the key's range (``Range``).
    """
    import yaml

    cfg = OmegaConf.structured(LumenConfig)
    sources: dict[str, str] = {}  # dotted key -> where its value came from (the last one to set it)
    for path in files:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
            # Every scalar as the text it was written with, for messages and for string keys.
            typed_tree = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
        except Exception as err:  # yaml syntax errors come in several types
            raise ConfigError(f"cannot parse {path} as YAML: {err}") from None
        if loaded is None:
            continue
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path} must hold a mapping of config keys, found {type(loaded).__name__}")
        plain = OmegaConf.to_container(loaded, resolve=False)
        cfg = _merge(cfg, plain, str(path), lambda key, tree=typed_tree: _lookup(tree, key))
        sources.update(dict.fromkeys(_leaf_keys(plain), str(path)))
    for item in overrides:
        plain = parse_override(item)
        key, _, text = (part.strip() for part in item.partition("="))
        source = f"command-line override '{item}'"
        cfg = _merge(cfg, plain, source, lambda name, key=key, text=text: text if name == key else None)
        sources.update(dict.fromkeys(_leaf_keys(plain), source))
    try:
        result = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise _explain(err, "interpolation") from None
    problems = range_problems(result, sources) + relation_problems(result, sources)
    if problems:
        raise ConfigError("\n".join(problems))
    return result


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def range_problems(cfg: Any, sources: dict[str, str], prefix: str = "") -> list[str]:
    """One line per value outside its key's ``Range``: the key, the value, where it came from, what is valid."""
    problems = []
    for f in fields(cfg):
        key = f"{prefix}{f.name}"
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            problems += range_problems(value, sources, key + ".")
            continue
        bounds: Optional[Range] = f.metadata.get("range")
        if bounds is None or value is None:
            continue
        items = value if isinstance(value, list) else [value]
        integer = all(isinstance(v, int) for v in items)
        bad = [v for v in items if _numeric(v) and not bounds.accepts(v)]
        if isinstance(value, list) and len(value) < bounds.min_items:
            problems.append(f"bad value for config key '{key}' (from {sources.get(key, 'the defaults')}): "
                            f"{value}; expected a list of at least {bounds.min_items} element(s)")
        elif bad:
            what = f"{value} (element {bad[0]})" if isinstance(value, list) else f"{value}"
            expected = bounds.describe(integer) + (" for every element" if isinstance(value, list) else "")
            problems.append(f"bad value for config key '{key}' (from {sources.get(key, 'the defaults')}): "
                            f"{what}; expected {expected}")
    return problems


def relation_problems(cfg: LumenConfig, sources: dict[str, str]) -> list[str]:
    """Checks that involve two keys of one section."""
    problems = []
    if len(cfg.layout.fusion_weights) != 2:
        problems.append(f"bad value for config key 'layout.fusion_weights' (from "
                        f"{sources.get('layout.fusion_weights', 'the defaults')}): {cfg.layout.fusion_weights}; "
                        f"expected two weights, for the SD part and the DINOv2 part")
    known = [b.value for b in Backbone]
    for name in cfg.compare.backbone_models:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            key = f"compare.backbone_models.{name}"
            hint = f" Did you mean compare.backbone_models.{close[0]}?" if close else ""
            problems.append(f"unknown config key '{key}' (from {sources.get(key, 'the defaults')}): '{name}' is not a "
                            f"backbone.{hint}\n  valid keys here: "
                            + ", ".join(f"compare.backbone_models.{b}" for b in known))
    for number, point in enumerate(cfg.corr.points, start=1):
        if len(point) != 2:
            problems.append(f"bad value for config key 'corr.points' (from "
                            f"{sources.get('corr.points', 'the defaults')}): point {number} is {point}; expected "
                            f"points of two numbers, [[x, y], ...] in source pixels")
            break
    unknown = [b for b in cfg.compare.backbones if b not in known]
    if unknown or len(set(cfg.compare.backbones)) != len(cfg.compare.backbones) or not cfg.compare.backbones:
        problems.append(f"bad value for config key 'compare.backbones' (from "
                        f"{sources.get('compare.backbones', 'the defaults')}): {cfg.compare.backbones}; expected "
                        f"distinct backbones among {', '.join(known)}")
    if cfg.validation.captions and len(cfg.validation.captions) != len(cfg.validation.images):
        problems.append(f"bad value for config key 'validation.captions' (from "
                        f"{sources.get('validation.captions', 'the defaults')}): {len(cfg.validation.captions)} "
                        f"caption(s) for {len(cfg.validation.images)} validation.images; give one per image, or none")
    captions = cfg.data.caption_column
    if not (captions is None or isinstance(captions, str)
            or (isinstance(captions, list) and captions and all(isinstance(c, str) for c in captions))):
        problems.append(f"bad value for config key 'data.caption_column' (from "
                        f"{sources.get('data.caption_column', 'the defaults')}): {captions}; expected a column name "
                        f"or a non-empty list of column names")
    if cfg.pca.n_components > cfg.pca.num_samples:
        problems.append(
            f"bad value for config key 'pca.n_components' (from {sources.get('pca.n_components', 'the defaults')}): "
            f"{cfg.pca.n_components} components need at least as many samples, and pca.num_samples="
            f"{cfg.pca.num_samples} (from {sources.get('pca.num_samples', 'the defaults')})")
    return problems


def to_yaml(cfg: LumenConfig) -> str:
    """The resolved config as YAML (enums as their names), as written next to every output."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: LumenConfig, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config to ``folder/name`` and return that path. Each command writes its own, beside
    its outputs (the training run's is ``output_dir/config.yaml``), so no command replaces another's record."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(to_yaml(cfg))
    return path


def split_argv(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """``CONFIG.yaml ... key=value ...`` -> (files, overrides). An argument without "=" must be a config file:
    a bare dotted key (a forgotten "=value") is named as such instead of being looked for as a file."""
    files, overrides = [], []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif Path(item).is_file() or item.endswith((".yaml", ".yml")):
            files.append(item)
        else:
            raise ConfigError(f"'{item}' is neither a config file (no such file) nor a key=value override; "
                              f"did you mean {item}=<value>?")
    return files, overrides


def describe_keys(cls: Any = LumenConfig, prefix: str = "") -> list[str]:
    """``--help``'s list of config keys: per section, each key with its default, its range and its doc."""
    import textwrap

    lines, sections = [], []
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            sections.append((key, type(default)))
            continue
        shown = default.value if isinstance(default, enum.Enum) else default
        bounds = f.metadata.get("range")
        valid = ""
        if bounds is not None:
            integer = isinstance(shown, int) or (isinstance(shown, list) and all(isinstance(v, int) for v in shown))
            valid = f" ({bounds.describe(integer)})"
        elif isinstance(default, enum.Enum):
            valid = f" ({' | '.join(member.value for member in type(default))})"
        lines.append(f"  {key} = {'null' if shown is None else shown}{valid}")
        lines += textwrap.wrap(f.metadata.get("doc", ""), width=110, initial_indent="      ",
                               subsequent_indent="      ")
    for key, section in sections:
        lines += ["", f"{key}: {(section.__doc__ or '').strip().splitlines()[0]}"]
        lines += describe_keys(section, key + ".")
    return lines


def config_from_argv(argv: Sequence[str] | None, prog: str, description: str) -> LumenConfig:
    """Parse ``CONFIG.yaml [more.yaml ...] [key=value ...]`` as every entry point takes it; a config that does not
    fit the schema raises ``ConfigError`` (``lumen.errors.run_cli`` reports it in one message, exit code 2)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (in CONFIG.yaml files, or key=value on the command line; defaults shown):\n"
               + "\n".join(describe_keys()))
    parser.add_argument("items", nargs="+", metavar="CONFIG.yaml | key=value",
                        help="config files merged in order, then key=value overrides")
    args = parser.parse_args(argv)
    files, overrides = split_argv(args.items)
    if not files:
        parser.error("give at least one config file, e.g. configs/tiny.yaml")
    return load_config(files, overrides)
