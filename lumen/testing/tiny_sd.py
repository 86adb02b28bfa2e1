"""Build a tiny Stable Diffusion from the real diffusers / transformers classes: seeded random weights, or
trained on the synthetic captioned scenes of ``lumen.testing.synthetic_coco``.

Nothing can be downloaded at run time in the demo and the tests, so they use this model instead of SD 1.5:
the tests its random-weight form, the demo the trained one shipped in ``models/tiny-sd``.
It has SD 1.5's *structure* where our code depends on it (a VAE that downsamples by 8, a UNet with four
resolution levels and three sub-layers per decoder block, so decoder layers 2/5/8 exist; a CLIP text encoder
with a byte-level BPE tokenizer of 77 tokens; SD 1.5's noise schedule) at a size that runs in seconds on a CPU.
It is saved with ``StableDiffusionPipeline.save_pretrained`` and read back with ``from_pretrained``: the
same path real weights take. The same seed and step counts give the same weights.
"""

from __future__ import annotations

import collections
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from lumen.data.labels import FIRST_STUFF_VALUE
from lumen.data.transforms import uint8_to_pixels
from lumen.pretrained import TORCH_DTYPES

BUILDER_VERSION = 5  # bump when the builder's output changes, so stale tiny models are rebuilt

# Words the tokenizer's merges are learned from: the vocabulary of the synthetic captions and of common
# prompt edits, so that captions become word-level tokens, as with CLIP's real 49K-token vocabulary.
_TOKENIZER_CORPUS = """
a an the of on in at under over above below with and near by next to beside behind front middle
sky blue grey gray cloudy clouds sunny grass green field meadow sea ocean water waves sand beach desert
wall brick concrete floor room snow mountain road street tree trees forest river
ball kite car person dog cat bird bus boat chair sign plant box red yellow orange white black purple pink
brown round square small large big little two three one some there is are photo picture painting drawing
sketch view scene image day night winter summer autumn spring style watercolor oil cartoon photograph
flying sitting standing parked lying floating
"""


def _learn_bpe_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Greedy byte-pair merges over ``words`` (each ends in ``</w>``, as CLIP's BPE expects).

    Deterministic: ties between equally frequent pairs are broken by the pair itself.
    """
    vocab = collections.Counter((*w[:-1], w[-1] + "</w>") for w in words)
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: collections.Counter = collections.Counter()
        for symbols, count in vocab.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = collections.Counter()
        for symbols, count in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        vocab = merged
    return merges


def build_tiny_tokenizer(num_merges: int = 400):
    """A CLIP tokenizer (byte-level BPE, ``</w>`` word ends, 77 tokens) with a small learned vocabulary."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 byte symbols of byte-level BPE
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges = _learn_bpe_merges(sorted(set(_TOKENIZER_CORPUS.split())), num_merges)
    tokens += ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _calibrate_vae(vae, num_images: int = 16, size: int = 128) -> None:
    """Give the random VAE the latent statistics of a trained one, as the rest of the pipeline assumes them.

    - A trained VAE's posterior is nearly deterministic (SD's std is tiny next to its mean): the encoder's
      log-variance output is made constant at -10 (std ~0.007).
    - SD's scaling factor (0.18215) is 1 / std of its latents over its training images; with random weights
      that value would leave the latents ~25x smaller than the diffusion noise (an image at t = 100 would be
      almost pure noise). The same rule is applied here, on seeded synthetic scenes.
    """
    from lumen.testing.synthetic_coco import render_scene

    channels = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[channels:] = 0
        vae.quant_conv.bias[channels:] = -10.0
        rng = np.random.default_rng(0)
        images = np.stack([render_scene(rng, size, size)[0] for _ in range(num_images)])
        pixels = uint8_to_pixels(images)
        latents = vae.encode(pixels).latent_dist.mean
    vae.register_to_config(scaling_factor=round(1.0 / float(latents.std()), 5))


def _train_vae(vae, steps: int, seed: int, size: int = 128, batch_size: int = 8, num_images: int = 512,
               learning_rate: float = 2e-3) -> None:
    """Fit the tiny VAE to reconstruct synthetic scenes (L1 + MSE on the posterior mean, learning rate decayed
    by a cosine to a tenth), so that its decoder inverts its encoder, saturated colours of small things
    included: without it, a generated latent decoded by the random decoder and encoded again comes back
    unrelated, and nothing measured on generated images can reflect their layout or their colours."""
    from tqdm import tqdm

    from lumen.testing.synthetic_coco import render_scene

    rng = np.random.default_rng(seed + 100)
    images = np.stack([render_scene(rng, size, size)[0] for _ in range(num_images)])
    pixels = uint8_to_pixels(images)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(vae.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps))
    vae.train()
    bar = tqdm(range(steps), desc="tiny VAE", unit="step", mininterval=2)
    for _ in bar:
        batch = pixels[torch.randint(0, num_images, (batch_size,), generator=generator)]
        error = vae.decode(vae.encode(batch).latent_dist.mean).sample - batch
        loss = error.abs().mean() + error.square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    vae.eval()


UNET_TRAIN_IMAGES = 2048  # captioned scenes the UNet is trained on (rendered once, encoded once)
THING_LOSS_WEIGHT = 8.0  # extra loss weight of the latent pixels things cover (see _train_unet)


def _train_unet(unet, vae, text_encoder, tokenizer, scheduler, steps: int, seed: int, size: int = 128,
                batch_size: int = 16, learning_rate: float = 1e-3, text_encoder_learning_rate: float = 1e-4,
                thing_loss_weight: float = THING_LOSS_WEIGHT, num_images: int | None = None) -> None:
    """Train the tiny UNet and text encoder as a text-conditioned denoiser of synthetic scenes (SD's schedule,
    the scheduler's prediction type, timesteps uniform; each step a random one of each image's five captions,
    a fifth of them dropped for classifier-free guidance).

    The captions name the things, their colours and the ground, so the prompt steers what is drawn; a
    ControlNet on top then only has to say where. Three choices make a tiny model learn that in minutes
    (the first two measured as the x0 error at t = 900 with the right caption against the empty one, after
    800 steps):
    - v-prediction: at high noise an epsilon loss hardly depends on the picture, and the picture is what a
      caption decides; with v the loss there is the picture's error (gap 0.4 % -> 2.3 %);
    - the text encoder trains along at a tenth of the UNet's rate: its random padding tokens carry little of
      the caption, and they are most of what cross-attention sees; learning lets them carry it (gap -> 12 %).
      At the UNet's rate it first forgets what tells captions apart, and the UNet learns to ignore the text;
    - the loss weighs the things' latent pixels ``1 + thing_loss_weight`` times (by the share of each latent
      pixel the things cover, normalised to the batch's mean weight). Things cover ~5 % of a scene and their
      colour is visible in the noisy latent down to high noise, so with a plain loss the colour words hardly
      pay off: a caption with another colour word moved 48 held-out things' predicted colour (x0 at t = 800)
      toward that colour by -0.4 RGB units after 800 steps, by 9.6 with the weight 4 and 17.2 with 8.
    The weights of both end as their exponential moving average."""
    from diffusers.training_utils import EMAModel
    from tqdm import tqdm

    from lumen.testing.synthetic_coco import render_captioned_scene

    num_images = num_images or UNET_TRAIN_IMAGES
    rng = np.random.default_rng(seed + 200)
    scenes = [render_captioned_scene(rng, size, size) for _ in range(num_images)]
    pixels = uint8_to_pixels(np.stack([image for image, _, _ in scenes]))
    captions = [" ".join(c.lower().split()) for _, five, _ in scenes for c in five]  # image i: rows 5i..5i+4
    ids = tokenizer([*captions, ""], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pixels.split(64)])
        latents = latents * vae.config.scaling_factor
    # (N, 1, h, w): the share of each latent pixel that things cover (label values below FIRST_STUFF_VALUE)
    things = torch.from_numpy(np.stack([label < FIRST_STUFF_VALUE for _, _, label in scenes])).float()
    things = torch.nn.functional.avg_pool2d(things[:, None], size // latents.shape[-1])
    generator = torch.Generator().manual_seed(seed + 3)
    unet_params, text_params = list(unet.parameters()), list(text_encoder.parameters())
    params = unet_params + text_params
    optimizer = torch.optim.AdamW([{"params": unet_params, "lr": learning_rate},
                                   {"params": text_params, "lr": text_encoder_learning_rate}], weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps, warmup=max(1, steps // 20)))
    ema = EMAModel(params, decay=0.999)
    num_timesteps = scheduler.config.num_train_timesteps
    unet.train()
    text_encoder.train()
    bar = tqdm(range(steps), desc="tiny UNet", unit="step", mininterval=2)
    for _ in bar:
        index = torch.randint(0, num_images, (batch_size,), generator=generator)
        caption = index * 5 + torch.randint(0, 5, (batch_size,), generator=generator)
        caption = torch.where(torch.rand(batch_size, generator=generator) < 0.2, len(captions), caption)
        clean = latents[index]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, num_timesteps, (batch_size,), generator=generator)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(clean, noise, timesteps)
        else:
            target = noise
        text = text_encoder(ids[caption])[0]
        weight = 1 + thing_loss_weight * things[index]
        error = (unet(noisy, timesteps, encoder_hidden_states=text).sample - target).square()
        loss = (error * weight).mean() / weight.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        ema.step(params)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    ema.copy_to(params)
    unet.eval()
    text_encoder.eval()


def _warmup_cosine(steps: int, warmup: int = 0):
    """Learning-rate factor of step i: linear warmup over ``warmup`` steps, then a cosine from 1 to a tenth."""
    return lambda i: min(1.0, (i + 1) / max(warmup, 1)) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * i / steps)))


def build_tiny_sd(seed: int = 0, vae_train_steps: int = 0, unet_train_steps: int = 0):
    """The tiny pipeline parts, each built under ``torch.manual_seed(seed + i)`` so weights are reproducible
    (on the same torch version and thread count: threads change the order of floating-point sums).

    Returns a ``StableDiffusionPipeline`` (no safety checker) holding VAE, UNet, text encoder, tokenizer and
    SD 1.5's PNDM scheduler configuration. ``vae_train_steps`` > 0 first fits the VAE to synthetic scenes
    (~0.3 s a step on two CPU cores), so generated images can be decoded and measured; ``unet_train_steps``
    > 0 then trains the UNet (v-prediction) and the text encoder to generate such scenes from their captions
    (~0.4 s a step).
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    # Four blocks, so it downsamples by 8 like SD's VAE (the ControlNet's condition encoder assumes 8).
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=128,
        )
    if vae_train_steps:
        _train_vae(vae, vae_train_steps, seed)
    _calibrate_vae(vae)
    torch.manual_seed(seed + 1)
    # SD 1.5's block types and layers_per_block=2 (three sub-layers per decoder block), tiny widths.
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=2,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # SD 1.5's schedule: 1000 steps, scaled_linear betas 0.00085 -> 0.012; epsilon prediction (SD 1.5's) for
    # random weights, v-prediction (SD 2's) for a trained UNet, which learns its captions faster with it.
    scheduler = PNDMScheduler(
        prediction_type="v_prediction" if unet_train_steps else "epsilon",
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    if unet_train_steps:
        from diffusers import DDPMScheduler

        _train_unet(unet, vae, text_encoder, tokenizer, DDPMScheduler.from_config(scheduler.config),
                    unet_train_steps, seed)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _write_tokenizer_like_sd15(tokenizer, folder: Path) -> None:
    """Store the tokenizer as SD 1.5's folder does (vocab.json + merges.txt), so loading takes that route."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer.json").unlink(missing_ok=True)


def save_tiny_sd(out_dir: str | Path, seed: int = 0, vae_train_steps: int = 0, unet_train_steps: int = 0,
                 weights_dtype: str = "float32", overwrite: bool = True, command: str | None = None) -> Path:
    """Build the tiny SD and save it in diffusers format (``model_index.json`` + one folder per part).

    The folder is written under a temporary name and renamed, so an interrupted build never leaves a folder
    that looks complete. ``lumen_tiny_sd.json`` records how it was made: seed, step counts, the command,
    library versions, threads and the time taken. ``weights_dtype="float16"`` halves the files (the model is
    loaded in the dtype asked for, as SD 1.5's fp16 weights are). An existing ``out_dir`` is replaced only
    with ``overwrite``.
    """
    import platform
    import shutil
    import time

    import diffusers

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another folder or pass --overwrite to replace it")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    start = time.perf_counter()
    pipe = build_tiny_sd(seed, vae_train_steps, unet_train_steps)
    seconds = time.perf_counter() - start
    pipe.to(TINY_WEIGHT_DTYPES[weights_dtype]).save_pretrained(tmp, safe_serialization=True)
    _write_tokenizer_like_sd15(pipe.tokenizer, tmp / "tokenizer")
    info = {"builder": "lumen.tiny_sd", "version": BUILDER_VERSION, "seed": seed,
            "vae_train_steps": vae_train_steps, "unet_train_steps": unet_train_steps, "weights_dtype": weights_dtype,
            "prediction_type": pipe.scheduler.config.prediction_type,
            "thing_loss_weight": THING_LOSS_WEIGHT if unet_train_steps else None,
            "command": command, "build_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
            "machine": platform.machine()}
    (tmp / "lumen_tiny_sd.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


# The dtypes the tiny model's files may be written in (float16 halves them, as SD 1.5's fp16 variant does).
TINY_WEIGHT_DTYPES = {name: TORCH_DTYPES[name] for name in ("float32", "float16")}


def tiny_sd_settings(folder: str | Path) -> dict | None:
    """What ``lumen_tiny_sd.json`` records of how a tiny SD folder was made (seed, step counts, command, ...);
    None when the folder is not one, or was built by another version of this builder."""
    marker = Path(folder) / "lumen_tiny_sd.json"
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    if info.get("version") != BUILDER_VERSION:
        return None
    return info


def build_sd15_architecture(device: str | torch.device = "cpu", seed: int = 0):
    """SD 1.5's VAE, UNet and text encoder *architectures* with random weights, and its DDPM schedule.

    For benchmarks and shape checks where nothing can be downloaded (``device="meta"`` builds shapes only).
    Returns ``(vae, unet, text_encoder, noise_scheduler)``; pair them with any CLIP tokenizer (e.g. the tiny one).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # the defaults are SD 1.5's UNet
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            scaling_factor=0.18215)
        text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                    num_attention_heads=12, max_position_embeddings=77))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear")
    for module in (vae, unet, text_encoder):
        module.eval().requires_grad_(False)
    return vae, unet, text_encoder, scheduler
