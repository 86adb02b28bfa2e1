"""The ControlNet that reads neural layouts: diffusers' stock ``ControlNetModel`` with N conditioning channels.

A trained ControlNet is a diffusers folder (``config.json`` + safetensors) that ``ControlNetModel.from_pretrained``
loads without any Lumen code, plus ``lumen.json``: the layout settings, the PCA it was trained with (folder
and fingerprint) and N, so that sampling computes layouts exactly as training saw them, or refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from lumen.artifacts import read_json
from lumen.errors import LumenError, writing
from lumen.layout.pca import PCA
from lumen.layout.settings import LayoutSettings, describe_differences
from lumen.pretrained import load_part

LUMEN_JSON = "lumen.json"


class ControlNetMismatchError(LumenError, ValueError):
    """A ControlNet trained on layouts of another PCA, number of components or settings."""


def controlnet_from_unet(unet, conditioning_channels: int):
    """A new ControlNet: the UNet's encoder copied, a conditioning embedding for ``conditioning_channels``
    inputs (downsampling by 8, so the layout is given at image resolution) and zero-initialised outputs."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_channels=conditioning_channels)


def controlnet_folder(path: str | Path) -> Path:
    """A trained ``controlnet/`` folder, or the ``controlnet/`` inside a ``checkpoint-<step>/`` folder."""
    folder = Path(path)
    if (folder / "controlnet" / "config.json").is_file():
        folder = folder / "controlnet"
    if not (folder / "config.json").is_file():
        raise ControlNetMismatchError(
            f"{path} is neither a ControlNet folder (config.json) nor a checkpoint-<step>/ folder; "
            f"train one with lumen train"
        )
    return folder


def load_controlnet(folder: str | Path, conditioning_channels: Optional[int] = None):
    """A pretrained ControlNet (diffusers folder) to continue from; its condition width must be N."""
    from diffusers import ControlNetModel

    controlnet = load_part("ControlNet", folder, lambda: ControlNetModel.from_pretrained(folder))
    found = controlnet.config.conditioning_channels
    if conditioning_channels is not None and found != conditioning_channels:
        raise ControlNetMismatchError(
            f"the ControlNet in {folder} takes {found} conditioning channels, but the layouts have "
            f"{conditioning_channels} (the PCA's components); train a new one (train.controlnet=null)"
        )
    return controlnet


def lumen_metadata(settings: LayoutSettings, pca: PCA, pca_dir: str | Path) -> dict[str, Any]:
    return {"layout": settings.to_json(), "pca_dir": str(pca_dir), "pca_fingerprint": pca.fingerprint(),
            "n_components": pca.n_components}


def write_lumen_json(folder: str | Path, metadata: dict[str, Any]) -> Path:
    path = Path(folder) / LUMEN_JSON
    with writing(path, "the ControlNet's lumen.json"):
        path.write_text(json.dumps(metadata, indent=2))
    return path


def read_lumen_json(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / LUMEN_JSON
    if not path.is_file():
        raise ControlNetMismatchError(f"{folder} has no {LUMEN_JSON}: it was not trained by Lumen, so the layouts "
                                      f"it expects are unknown")
    return read_json(path, f"the ControlNet in {folder}", "train it again, or copy its lumen.json back")


def check_controlnet_matches(metadata: dict[str, Any], settings: LayoutSettings, pca: PCA, folder: str,
                             dtype_hint: str = "") -> None:
    """Refuse to drive a ControlNet with layouts made differently from the ones it was trained on
    (``dtype_hint``: what to do when only the dtype differs)."""
    differences = describe_differences(settings, LayoutSettings.from_json(metadata["layout"], f"{folder}/{LUMEN_JSON}"),
                                       "now", f"{folder}/{LUMEN_JSON}")
    if metadata["pca_fingerprint"] != pca.fingerprint():
        differences.append(f"PCA: fingerprint {pca.fingerprint()} (now) vs {metadata['pca_fingerprint']} "
                           f"({metadata['pca_dir']}, recorded in {folder}/{LUMEN_JSON})")
    if differences:
        hint = f"\n{dtype_hint}" if dtype_hint and all(d.startswith("dtype:") for d in differences) else ""
        raise ControlNetMismatchError(f"the ControlNet in {folder} was trained on other layouts:\n  "
                                      + "\n  ".join(differences) + hint)
