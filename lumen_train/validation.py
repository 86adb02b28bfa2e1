"""Validation during training: fixed val layouts sampled with the modules already in memory.

The (image, prompt) jobs are spread over the processes and gathered on the main process, so no process
idles at a collective while another samples alone (the cause of NCCL time-outs on long validations).
The grid (source | layout | first caption | each prompt edit) is written to ``output_dir/validation/`` and
sent to the trackers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from accelerate.utils import gather_object
from PIL import Image

from lumen.data.transforms import uint8_to_pixels
from lumen.layout.encoder import resize_layout
from lumen.plotting import to_uint8_image
from lumen.sampling.grids import GridRow, save_sample_grid
from lumen.sampling.pipeline import build_controlnet_pipeline


@dataclass
class ValidationSet:
    images: torch.Tensor  # (K, 3, R, R) in [-1, 1]
    layouts: torch.Tensor  # (K, N, h, w)
    captions: list[str]  # the first caption of each image
    image_ids: list[int]
    names: Optional[list[str]] = None  # how the grid labels each image (None: "image <id>")

    def label(self, i: int) -> str:
        return self.names[i] if self.names else f"image {self.image_ids[i]}"


def build_validation_set(dataset, num_images: int, extractor=None, encoder=None,
                         cached_layouts: Optional[dict[int, torch.Tensor]] = None) -> ValidationSet:
    """The first ``num_images`` usable images of ``dataset`` (evaluation mode) with their layouts: the cached
    ones (``{image id: (N, h, w)}``, exactly what training reads) where given, else computed here."""
    samples = []
    for i in range(len(dataset)):
        sample = dataset[i]
        if isinstance(sample, dict) and (cached_layouts is None or sample["image_id"] in cached_layouts):
            samples.append(sample)
        if len(samples) == num_images:
            break
    images = torch.stack([s["pixel_values"] for s in samples])
    if cached_layouts is not None:
        layouts = torch.stack([cached_layouts[s["image_id"]].float() for s in samples])
    else:
        layouts = encoder(extractor.features(images)).cpu()
    return ValidationSet(images, layouts, [s["caption"] for s in samples], [s["image_id"] for s in samples])


def files_validation_set(sources, extractor, encoder) -> ValidationSet:
    """A validation set of image files (``SourceImage`` s) with their layouts computed here."""
    from lumen.data.split_index import stable_id

    images = torch.stack([s.pixel_values for s in sources])
    layouts = encoder(extractor.features(images)).cpu()
    return ValidationSet(images, layouts, [s.caption for s in sources], [stable_id(s.path) for s in sources],
                         names=[s.name for s in sources])


def _residuals_in(dtype: torch.dtype):
    """A forward hook casting a ControlNet's ``(down residuals, mid residual)`` output to ``dtype``."""

    def hook(module, args, output):
        if isinstance(output, tuple) and len(output) == 2:
            down, mid = output
            return [r.to(dtype) for r in down], mid.to(dtype)
        return output

    return hook


def run_validation(accelerator, parts, controlnet, val: ValidationSet, prompt_edits: list[str], step: int,
                   out_dir: Path, num_inference_steps: int, guidance_scale: float, conditioning_scale: float,
                   seed: int, main_only: bool = False) -> Optional[tuple[Path, dict]]:
    """Sample every (validation image, prompt) pair, shared among the processes; with ``main_only`` (a sharded
    ControlNet gathered on the main process, ``controlnet`` None elsewhere) the main process samples them all.
    On the main process returns the grid's path and the samples ``{(image index, prompt index): (R, R, 3)
    uint8}``; None elsewhere."""
    resolution = val.images.shape[-1]
    prompts = [[caption, *prompt_edits] for caption in val.captions]
    jobs = [(i, j) for i in range(len(prompts)) for j in range(len(prompts[i]))]
    if main_only:
        if not accelerator.is_main_process:
            gather_object([])
            return None
        mine = jobs
    else:
        mine = jobs[accelerator.process_index::accelerator.num_processes]
    pipe = build_controlnet_pipeline(parts, controlnet)
    results = []
    was_training = controlnet.training
    controlnet.eval()
    # The ControlNet keeps float32 master weights while the UNet computes in fp16 / bf16: its residuals are
    # cast to the UNet's dtype, as in the training step (CPU autocast does not run group norm in float32).
    cast = controlnet.register_forward_hook(_residuals_in(parts.unet.dtype))
    try:
        with torch.no_grad(), accelerator.autocast():
            for i, j in mine:
                condition = resize_layout(val.layouts[i:i + 1], resolution).to(accelerator.device)
                image = pipe(prompts[i][j], image=condition, height=resolution, width=resolution,
                             num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                             controlnet_conditioning_scale=conditioning_scale, output_type="np",
                             generator=torch.Generator().manual_seed(seed + i)).images[0]
                results.append((i, j, (image * 255).round().clip(0, 255).astype(np.uint8)))
    finally:
        cast.remove()
        controlnet.train(was_training)
    gathered = gather_object(results) if accelerator.num_processes > 1 else results
    if not accelerator.is_main_process:
        return None
    samples = {(i, j): image for i, j, image in gathered}
    path = save_validation_grid(val, prompts, samples, out_dir / f"step-{step:06d}.png", step)
    with Image.open(path) as picture:
        grid = np.asarray(picture.convert("RGB"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("validation", grid, step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"validation": [wandb.Image(grid, caption=f"step {step}")]}, step=step)
    return path, samples


def validation_metrics(extractor, encoder, val: ValidationSet, samples: dict) -> dict[str, float]:
    """The metrics of ``METRICS`` cheap enough for training (``in_validation``), averaged over the samples: each
    sample's layout against its validation image's (and the other validation images')."""
    from lumen.evaluation.metrics import METRICS, ImageContext

    scores: dict[str, list[float]] = {m.name: [] for m in METRICS.values() if m.in_validation and m.per_image}
    for (i, _), image in samples.items():
        generated = encoder(extractor.features(uint8_to_pixels(image)[None]))[0].cpu()
        context = ImageContext(generated, val.layouts[i], [layout for j, layout in enumerate(val.layouts) if j != i])
        for name in scores:
            value = METRICS[name].per_image(context)
            if value is not None:
                scores[name].append(value)
    return {name: float(np.mean(values)) for name, values in scores.items() if values}


def save_validation_grid(val: ValidationSet, prompts: list[list[str]], samples: dict, path: Path, step: int) -> Path:
    """Rows: validation images. Columns: source, layout (components 1-3), then one sample per prompt."""
    rows = [GridRow(to_uint8_image(val.images[i]), val.label(i), val.layouts[i],
                    [samples[(i, j)] for j in range(len(row_prompts))],
                    [("caption: " if j == 0 else "edit: ") + prompt for j, prompt in enumerate(row_prompts)])
            for i, row_prompts in enumerate(prompts)]
    return save_sample_grid(rows, path, f"validation at step {step}")
