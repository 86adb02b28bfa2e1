"""Every config key of every stage: a tree of dataclasses, one section per component, each key declared with
its default, range and doc (``lumen.config.fields.setting``).

Library code never receives this tree: entry points pick the fields a component needs and pass them as
arguments or as the small dataclasses below (``DataConfig``, ``ModelConfig``, ...)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from lumen.config.fields import seed_field, setting


def registered_backbones() -> list[str]:
    """The values ``layout.backbone`` takes: the backbones registered in ``lumen.backbones``."""
    from lumen.backbones import BACKBONES

    return list(BACKBONES)


def registered_data_sources() -> list[str]:
    """The values ``data.source`` takes: the sources registered in ``lumen.data.sources``."""
    from lumen.data.sources import DATA_SOURCES

    return list(DATA_SOURCES)


class DType(str, enum.Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class DataLayout(str, enum.Enum):
    """Where images and label maps lie below ``data.root`` (see ``lumen.data.sources.coco``)."""

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

    source: str = setting("coco", choices=registered_data_sources,
        doc="How the data set is stored (data/README.md; one module each in lumen/data/sources/).")
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
    """The embedded default's data set, written in the official layout by ``lumen.testing.synthetic_coco``."""

    num_train: int = setting(48, low=1, doc="Synthetic training images.")
    num_val: int = setting(8, low=1, doc="Synthetic validation images.")
    width: int = setting(160, low=32, doc="Their width in pixels.")
    height: int = setting(128, low=32, doc="Their height in pixels.")
    seed: int = seed_field(doc="Seed of the synthetic scenes.")


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
    """How features are extracted and turned into a neural layout (docs/layouts.md)."""

    backbone: str = setting("sd", choices=registered_backbones,
        doc="The foundation model whose features make the layout (one module each in lumen/backbones/).")
    backbone_model: Optional[str] = setting(None,
        doc="The transformer backbone's model id or transformers folder (None: the backbone's default model, "
            "docs/layouts.md).")
    backbone_revision: Optional[str] = setting(None, doc="Git revision of layout.backbone_model's model id.")
    backbone_layer: Optional[int] = setting(None, low=1,
        doc="The transformer block read, 1-based (None: the backbone's default, docs/layouts.md).")
    facet: Optional[Facet] = setting(None,
        doc="token, key, query or value of that block (None: the backbone's default, docs/layouts.md).")
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
    """The layout PCA (lumen fit-pca)."""

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
    """The cache of layouts and VAE latents (lumen encode-layouts)."""

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
    """The ControlNet trainer (lumen train)."""

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
    """lumen sample: sources x prompts -> images, grids and the metadata to regenerate each."""

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
    """lumen synthesize: a new data set generated from the layouts of a split."""

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
    """lumen evaluate: layout fidelity, diversity, and optionally mIoU of generated images."""

    samples: str = setting("${output_dir}/samples/samples.json", doc="A samples JSON written by lumen sample.")
    kmeans_clusters: int = setting(6, low=2, doc="Clusters of the layouts' k-means segmentations compared by ARI.")
    segmenter: Optional[str] = setting(None, doc="A transformers AutoModelForSemanticSegmentation folder, for mIoU.")
    segmenter_label_offset: int = setting(0, low=-255, high=255, doc="Added to the segmenter's class ids.")
    out: str = setting("${output_dir}/evaluation", doc="Where metrics.json and metrics.md go.")
    judge_pca: Optional[str] = setting(None,
        doc="The PCA folder whose backbone and layouts measure fidelity and diversity, so runs of different "
            "backbones are measured with one ruler (None: the samples' own PCA, for SD layouts only).")


@dataclass
class CompareConfig:
    """lumen compare-backbones: one pipeline per backbone on the same images, measured with one judge."""

    backbones: list[str] = setting(factory=lambda: ["sd", "dinov2", "dino", "clip"], choices=registered_backbones,
        min_items=1, doc="The backbones compared (values of layout.backbone); the first SD one's PCA is the judge.")
    backbone_models: dict[str, str] = setting(factory=dict, key_choices=registered_backbones,
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
    """lumen correspond: semantic correspondence with the configured backbone (layout.backbone)."""

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
