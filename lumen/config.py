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
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from lumen.errors import LumenError


class DType(str, enum.Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class DataLayout(str, enum.Enum):
    """Where images and label maps lie below ``data.root`` (see ``lumen.data.paths``)."""

    auto = "auto"  # the official layout if its folders exist, else the cocostuff README's
    official = "official"  # {root}/{split}2017, {root}/stuffthingmaps_trainval2017/{split}2017
    cocostuff = "cocostuff"  # {root}/images/{split}2017, {root}/annotations/{split}2017


class LabelSource(str, enum.Enum):
    """Which label maps to read with the images (all decoded to the stuffthingmaps convention)."""

    none = "none"
    stuffthingmaps = "stuffthingmaps"  # PNG, value = COCO-Stuff id - 1, 255 unlabeled
    stuff_json = "stuff_json"  # compressed RLE in stuff_{split}2017.json, stuff classes only


@dataclass
class ModelConfig:
    """Stable Diffusion weights: a local diffusers folder or a Hugging Face model id."""

    pretrained: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    revision: Optional[str] = None
    variant: Optional[str] = None  # e.g. "fp16" to read the half-precision files of a model id
    dtype: DType = DType.float32  # dtype of the frozen parts (VAE, UNet, text encoder)


@dataclass
class DataConfig:
    """A COCO-Stuff / COCO captions data set on disk (see data/README.md for the layouts)."""

    root: str = "data/coco-stuff"
    layout: DataLayout = DataLayout.auto
    train_split: str = "train"
    val_split: str = "val"
    # Explicit paths override the layout; "{root}" and "{split}" are filled in.
    images_dir: Optional[str] = None
    captions_file: str = "{root}/annotations/captions_{split}2017.json"
    stuff_file: str = "{root}/annotations/stuff_{split}2017.json"
    label_maps_dir: Optional[str] = None
    labels: LabelSource = LabelSource.none
    resolution: int = 512  # shorter side resized to this, then centre-cropped to a square
    # A split with more unusable images (missing, unreadable, truncated) than this fraction is refused.
    max_bad_fraction: float = 0.01
    num_workers: int = 2
    limit: Optional[int] = None  # use only the first N images of each split (by image id)


@dataclass
class SyntheticDataConfig:
    """The embedded default's data set, written in the official layout by ``lumen.data.synthetic``."""

    num_train: int = 48
    num_val: int = 8
    width: int = 160
    height: int = 128
    seed: int = 0


class Backbone(str, enum.Enum):
    sd = "sd"  # Stable Diffusion UNet decoder taps (model.pretrained)


class PCASolver(str, enum.Enum):
    sklearn = "sklearn"  # scikit-learn PCA (covariance + eigh: exact, fast for many more samples than dims)
    torch = "torch"  # the same computation with torch on the extraction device (a GPU makes it milliseconds)


@dataclass
class LayoutConfig:
    """How features are extracted and turned into a neural layout (method.md sections 2 and 4)."""

    backbone: Backbone = Backbone.sd
    layers: list[int] = field(default_factory=lambda: [2, 5, 8])  # decoder layers, SD-DINO's numbering
    timestep: int = 100  # noise level the image is seen at
    noise_seed: int = 42  # seed of the one fixed noise tensor added to every latent
    prompt: str = ""  # text condition of the UNet during extraction (its embedding is computed once)
    batch_size: int = 4
    pca_dir: str = "${output_dir}/pca"  # the PCA layouts are projected on
    n_components: Optional[int] = None  # keep only the first k whitened components (None: all)


@dataclass
class PCAConfig:
    num_samples: int = 40_000  # feature vectors (pixels) drawn uniformly over (image, pixel) positions
    num_images: Optional[int] = None  # images they are drawn from (None: enough for ~32 pixels per image)
    n_components: int = 20
    seed: int = 0
    solver: PCASolver = PCASolver.sklearn
    save_samples: bool = False  # also write pca/samples.safetensors, so anyone can check the fit


@dataclass
class EncodeConfig:
    """The cache of layouts and VAE latents (scripts/encode_layouts.py)."""

    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    shard_size: int = 1000  # images per shard: the unit of resumption and of work per process
    visualize: int = 0  # write pictures of the first K layouts of each split


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


class Tracker(str, enum.Enum):
    tensorboard = "tensorboard"
    wandb = "wandb"  # WANDB_MODE=offline works without network
    none = "none"


@dataclass
class TrainConfig:
    """The ControlNet trainer (train/train_controlnet.py)."""

    controlnet: Optional[str] = None  # a pretrained ControlNet folder to continue from (None: from the UNet)
    use_cache: bool = True  # read layouts + latents from output_dir/cache (False: compute them every step)
    batch_size: int = 4  # per process
    gradient_accumulation_steps: int = 1
    max_train_steps: Optional[int] = None  # optimizer steps; None: num_train_epochs over the data
    num_train_epochs: int = 1
    learning_rate: float = 1e-5
    lr_scheduler: LRScheduler = LRScheduler.constant
    lr_warmup_steps: int = 0  # optimizer steps
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = False  # needs bitsandbytes
    mixed_precision: MixedPrecision = MixedPrecision.no
    upcast_vae: bool = True  # keep the VAE in float32 in fp16 runs (SD's VAE overflows in fp16)
    gradient_checkpointing: bool = False
    attention: Attention = Attention.sdpa
    allow_tf32: bool = False
    channels_last: bool = False
    # Probability that a training draw uses the empty prompt (classifier-free guidance; ControlNet used 0.5).
    empty_prompt_probability: float = 0.5
    checkpointing_steps: int = 500
    checkpoints_total_limit: Optional[int] = 3
    resume_from_checkpoint: Optional[str] = None  # "latest" or a checkpoint-<step> folder
    checkpoint_on_interrupt: bool = True  # Ctrl-C / SIGTERM: save a checkpoint, then stop
    report_to: Tracker = Tracker.tensorboard
    ema: bool = False
    ema_decay: float = 0.9999
    record_batches: bool = False  # write logs/rank-<i>.json: image ids each process trained on (debugging)
    # With this probability a sample keeps only its first k whitened components (k uniform in 1..N), so one
    # ControlNet serves every k at sampling time: fewer components, more diversity.
    component_dropout: float = 0.0


@dataclass
class ValidationConfig:
    steps: int = 500  # sample the validation images every this many optimizer steps (0: never)
    num_images: int = 4  # the first images of the val split
    prompt_edits: list[str] = field(default_factory=list)  # extra prompts applied to every validation layout
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    conditioning_scale: float = 1.0
    seed: int = 0
    metrics: bool = False  # also compute and log layout fidelity of the validation samples


class SamplerName(str, enum.Enum):
    unipc = "unipc"
    ddim = "ddim"
    euler = "euler"


@dataclass
class SampleConfig:
    """scripts/sample.py: sources x prompts -> images, grids and the metadata to regenerate each."""

    controlnet: str = "${output_dir}/controlnet"  # a trained controlnet/ or a checkpoint-<step>/ folder
    images: list[str] = field(default_factory=list)  # image files as sources...
    image_ids: list[int] = field(default_factory=list)  # ...or ids of data.val_split (or `split`)
    split: Optional[str] = None  # the split image_ids / from_cache refer to (None: data.val_split)
    from_cache: bool = False  # take the layouts of image_ids (or the first num_sources) from the cache
    num_sources: int = 4  # with no images / image_ids given: the first images of the split
    prompts: list[str] = field(default_factory=list)  # edits; the source's own caption is always column one
    num_images_per_prompt: int = 1
    seed: int = 0
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    conditioning_scale: float = 1.0
    scheduler: SamplerName = SamplerName.unipc
    resolution: Optional[int] = None  # None: data.resolution
    batch_size: int = 8
    dtype: Optional[DType] = None  # None: float16 on a GPU, float32 on the CPU
    device: Optional[str] = None  # None: cuda when available
    n_components: Optional[int] = None  # keep the first k whitened components (None: all)
    sweep_components: list[int] = field(default_factory=list)  # one grid over these k instead of prompts
    out_dir: str = "${output_dir}/samples"
    replay: Optional[str] = None  # a samples JSON: regenerate its images (or only `replay_image`) exactly
    replay_image: Optional[str] = None


@dataclass
class SynthesizeConfig:
    """scripts/synthesize.py: a new data set generated from the layouts of a split."""

    split: str = "train"
    images_per_source: int = 1  # K generated images per source image
    prompts: list[str] = field(default_factory=list)  # prompts to cycle through (empty: the source's caption)
    limit: Optional[int] = None  # only the first N source images
    shard_size: int = 64
    out_root: str = "${output_dir}/synthetic"
    out_split: Optional[str] = None  # name of the written split (None: the source split's)


@dataclass
class EvaluateConfig:
    """scripts/evaluate.py: layout fidelity, diversity, and optionally mIoU of generated images."""

    samples: str = "${output_dir}/samples/samples.json"  # a samples JSON written by scripts/sample.py
    kmeans_clusters: int = 6  # clusters of the layouts' k-means segmentations compared by adjusted Rand index
    segmenter: Optional[str] = None  # a transformers AutoModelForSemanticSegmentation folder, for mIoU
    segmenter_label_offset: int = 0  # added to the segmenter's class ids to get label-map values
    out: str = "${output_dir}/evaluation"


@dataclass
class TinyModelConfig:
    """The tiny random-weight Stable Diffusion that the demo and tests build (lumen.tiny_sd)."""

    seed: int = 0
    vae_train_steps: int = 0  # fit the VAE to synthetic scenes first, so generated images can be measured
    unet_train_steps: int = 0  # then train the UNet to generate such scenes (a base model a ControlNet can steer)


@dataclass
class LumenConfig:
    output_dir: str = "outputs/run"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    tiny_model: TinyModelConfig = field(default_factory=TinyModelConfig)
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


class ConfigError(LumenError, ValueError):
    """A config file or override that does not fit the schema."""


def _valid_keys(parent: str) -> list[str]:
    """Field names of the schema section at dotted path ``parent`` ('' for the root)."""
    node: Any = LumenConfig()
    for part in [p for p in parent.split(".") if p]:
        node = getattr(node, part, None)
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def _explain(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    key = str(key)
    if isinstance(err, ConfigKeyError) or "Key '" in str(err) and "not in" in str(err):
        parent, _, leaf = key.rpartition(".")
        candidates = _valid_keys(parent)
        full = [f"{parent}.{c}" if parent else c for c in candidates]
        close = difflib.get_close_matches(leaf, candidates, n=1, cutoff=0.6)
        hint = f" Did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
        listing = ", ".join(full) if full else "(none: this section takes no keys)"
        return ConfigError(f"unknown config key '{key}' (from {source}).{hint}\n  valid keys here: {listing}")
    msg = str(err).splitlines()[0]
    return ConfigError(f"bad value for config key '{key}' (from {source}): {msg}")


def _merge(base: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise _explain(err, source) from None


def load_config(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> LumenConfig:
    """Merge the schema's defaults, ``files`` in order, then ``overrides`` (``key=value``).

    Returns the validated config as plain dataclasses (interpolations such as ``${output_dir}`` resolved).
    Raises ``ConfigError`` naming the key and its source when anything does not fit the schema.
    """
    cfg = OmegaConf.structured(LumenConfig)
    for path in files:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # yaml syntax errors come in several types
            raise ConfigError(f"cannot parse {path} as YAML: {err}") from None
        if loaded is None:
            continue
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path} must hold a mapping of config keys, found {type(loaded).__name__}")
        cfg = _merge(cfg, loaded, str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.empty_prompt_probability=0.1)")
        try:
            dot = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as err:
            raise ConfigError(f"cannot parse override '{item}': {err}") from None
        cfg = _merge(cfg, dot, f"command-line override '{item}'")
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise _explain(err, "interpolation") from None


def to_yaml(cfg: LumenConfig) -> str:
    """The resolved config as YAML (enums as their names), as written next to every output."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: LumenConfig, output_dir: str | Path) -> Path:
    """Write the resolved config to ``output_dir/config.yaml`` and return that path."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(to_yaml(cfg))
    return path


def config_from_argv(argv: Sequence[str] | None, prog: str, description: str) -> LumenConfig:
    """Parse ``CONFIG.yaml [more.yaml ...] [key=value ...]`` as every entry point takes it."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("items", nargs="+", metavar="CONFIG.yaml | key=value",
                        help="config files merged in order, then key=value overrides")
    args = parser.parse_args(argv)
    files = [a for a in args.items if "=" not in a]
    overrides = [a for a in args.items if "=" in a]
    if not files:
        parser.error("give at least one config file, e.g. configs/tiny.yaml")
    try:
        return load_config(files, overrides)
    except ConfigError as err:
        print(f"{prog}: config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
