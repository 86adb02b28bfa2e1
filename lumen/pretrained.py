"""Load the parts of Stable Diffusion (VAE, UNet, text encoder, tokenizer, noise scheduler).

Every part is read with its class's ``from_pretrained`` from a diffusers-format folder (``model_index.json``
plus one subfolder per part) or from a Hugging Face model id. The tiny random-weight model of the demo and
the tests (``lumen.testing.tiny_sd``) is saved in the same format, so it takes exactly this code path too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from lumen.errors import LumenError

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# accelerate's mixed-precision modes -> the dtype the frozen parts compute in
MIXED_PRECISION_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the key of ``TORCH_DTYPES``)."""
    return str(dtype).replace("torch.", "")
COMPONENTS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


class ModelNotFoundError(LumenError, RuntimeError):
    """The weights are neither in a local folder nor in the hub cache, and cannot be downloaded."""


def model_folder(location: str, revision: Optional[str] = None) -> Optional[Path]:
    """The folder holding a model's files: ``location`` itself when it is one, else its snapshot in the Hugging
    Face cache (None when it is not cached: it would be fetched)."""
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(location, revision=revision, local_files_only=True))
    except Exception:  # not cached (the hub client reports it with several error types)
        return None


def damaged_weight_files(folder: Path) -> list[str]:
    """One line per safetensors file below ``folder`` that cannot be opened or whose header does not cover the
    file (cut short by an interrupted download or copy); reads the headers only."""
    from safetensors import safe_open

    problems = []
    for path in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except Exception as err:  # safetensors reports damage with its own error type, I/O with OSError
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
            problems.append(f"{path.relative_to(folder)} ({detail})")
    return problems


def check_weights(what: str, location: str, revision: Optional[str] = None) -> None:
    """Refuse, in one line, a model whose local or cached safetensors files are damaged, before anything loads."""
    folder = model_folder(location, revision)
    problems = damaged_weight_files(folder) if folder is not None else []
    if problems:
        raise ModelNotFoundError(f"the {what} in {folder} has damaged weight files: {'; '.join(problems)}. Download "
                                 f"or save the model again")


def load_part(what: str, location: str | Path, load):
    """Call ``load()`` (a ``from_pretrained``); missing or damaged files become a ``ModelNotFoundError`` that
    names the part and the folder instead of a loader's traceback."""
    try:
        return load()
    except (OSError, ValueError, RuntimeError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelNotFoundError(
            f"cannot load the {what} from {location}: {detail}\nIts files are missing or damaged (e.g. an "
            f"interrupted download or copy): download or save the model again."
        ) from None


@dataclass
class SDComponents:
    """The frozen Stable Diffusion parts, loaded once and shared by every stage."""

    vae: AutoencoderKL  # noqa: F821
    unet: UNet2DConditionModel  # noqa: F821
    text_encoder: CLIPTextModel  # noqa: F821
    tokenizer: CLIPTokenizer  # noqa: F821
    noise_scheduler: DDPMScheduler  # noqa: F821
    source: str  # the folder or model id they were read from

    def to(self, device: torch.device | str) -> SDComponents:
        for module in (self.vae, self.unet, self.text_encoder):
            module.to(device)
        return self


def _where_to_put(model: str, key: str, folder_kind: str) -> str:
    name = model.split("/")[-1]
    return (
        f"To use '{model}' without network access, download it once on a machine that has access\n"
        f"  (hf download {model} --local-dir weights/{name})\n"
        f"and point the config at that folder ({key}=weights/{name}), or copy a\n"
        f"Hugging Face cache that holds it to this machine (HF_HOME). {folder_kind}"
    )


DIFFUSERS_FOLDER = f"A diffusers folder holds model_index.json and the subfolders {', '.join(COMPONENTS)}."
TRANSFORMERS_FOLDER = "A transformers folder holds config.json, the weights and preprocessor_config.json."


def resolve_model_location(model: str, revision: Optional[str] = None, key: str = "model.pretrained",
                           transformers_folder: bool = False) -> tuple[str, bool]:
    """Decide where ``model`` (the value of config key ``key``) is read from before any weights are loaded.

    Returns ``(location, local_files_only)``. A local folder must be a diffusers folder (or, with
    ``transformers_folder``, hold a transformers ``config.json``). A model id is used from the hub cache when
    cached; otherwise the hub must be reachable, which is checked with one quick request so that a machine
    without network fails at once with advice, instead of after minutes of retries with a stack trace from
    the hub client.
    """
    folder_kind = TRANSFORMERS_FOLDER if transformers_folder else DIFFUSERS_FOLDER
    path = Path(model).expanduser()
    looks_like_path = path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1
    if path.exists() or looks_like_path:
        if not path.is_dir():
            raise ModelNotFoundError(f"{key}='{model}' is not a folder. Expected a local folder or a Hugging Face "
                                     f"model id. {folder_kind}")
        if transformers_folder and not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is not a transformers model folder: it has no config.json. Save the "
                                     f"model with save_pretrained.")
        missing = [] if transformers_folder else [c for c in COMPONENTS if not (path / c).is_dir()]
        if missing:
            raise ModelNotFoundError(
                f"{path} is not a complete diffusers folder: missing subfolder(s) {', '.join(missing)}. "
                f"Save the model with StableDiffusionPipeline.save_pretrained, or build the tiny one with "
                f"'lumen make-tiny-sd {path}'."
            )
        return str(path), True

    from huggingface_hub import model_info, try_to_load_from_cache

    marker = "config.json" if transformers_folder else "model_index.json"
    cached = try_to_load_from_cache(model, marker, revision=revision)
    if isinstance(cached, str):
        return model, True
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        raise ModelNotFoundError(f"'{model}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set.\n"
                                 + _where_to_put(model, key, folder_kind))
    try:
        model_info(model, revision=revision, timeout=10)
    except Exception as err:  # network errors, unknown or gated repositories: all mean "cannot fetch"
        raise ModelNotFoundError(
            f"cannot fetch '{model}' from the Hugging Face Hub ({type(err).__name__}: {str(err).splitlines()[0]}).\n"
            + _where_to_put(model, key, folder_kind)
        ) from None
    return model, False


def load_sd_components(
    model: str,
    revision: Optional[str] = None,
    variant: Optional[str] = None,
    dtype: torch.dtype = torch.float32,
) -> SDComponents:
    """Load VAE, UNet, text encoder, tokenizer and the DDPM training noise scheduler of an SD 1.x model.

    Args:
        model: a diffusers folder or a model id (e.g. ``stable-diffusion-v1-5/stable-diffusion-v1-5``).
        revision: git revision of a model id.
        variant: weight file variant (e.g. ``"fp16"``).
        dtype: dtype of the VAE, UNet and text encoder. They are frozen (``requires_grad_(False)``, eval mode).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    location, local_only = resolve_model_location(model, revision)
    common = dict(revision=revision, local_files_only=local_only)
    weights = dict(common, variant=variant, torch_dtype=dtype)
    vae = load_part("VAE", location, lambda: AutoencoderKL.from_pretrained(location, subfolder="vae", **weights))
    unet = load_part("UNet", location,
                     lambda: UNet2DConditionModel.from_pretrained(location, subfolder="unet", **weights))
    text_encoder = load_part("text encoder", location, lambda: CLIPTextModel.from_pretrained(
        location, subfolder="text_encoder", revision=revision, local_files_only=local_only, variant=variant,
        dtype=dtype))  # transformers calls it dtype, diffusers torch_dtype
    tokenizer = load_part("tokenizer", location,
                          lambda: CLIPTokenizer.from_pretrained(location, subfolder="tokenizer", **common))
    # Training adds noise with the DDPM schedule the model was trained with, whatever its sampling scheduler.
    noise_scheduler = load_part("noise scheduler", location, lambda: DDPMScheduler.from_pretrained(
        location, subfolder="scheduler", **common))
    for module in (vae, unet, text_encoder):
        module.requires_grad_(False)
        module.eval()
    return SDComponents(vae, unet, text_encoder, tokenizer, noise_scheduler, source=model)
