"""Training samples read from the layout cache (``lumen.layout.cache``) instead of from images."""

from __future__ import annotations

from typing import Any

import torch

from lumen.data.dataset import draw_caption


class CachedLayoutDataset(torch.utils.data.Dataset):
    """Rows of a cached split: ``{"layout" (N, h, w), "latent_mean", "latent_std" (4, H/8, W/8), "caption",
    "image_id"}``. Captions are drawn exactly as ``SplitDataset`` draws them (seeded by the seed, the
    epoch and the index), so the cached and the image paths see the same captions."""

    def __init__(self, rows, train: bool, seed: int = 0, empty_prompt_probability: float = 0.0) -> None:
        self.rows = rows
        self.train = train
        self.seed = seed
        self.empty_prompt_probability = empty_prompt_probability if train else 0.0
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        return {
            "layout": row["layout"].float(),
            "latent_mean": row["latent_mean"].float(),
            "latent_std": row["latent_std"].float(),
            "caption": draw_caption(row["captions"], self.train, self.seed, self.epoch, i,
                                    self.empty_prompt_probability),
            "image_id": int(row["image_id"]),
        }


def collate_cached(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch = {key: torch.stack([item[key] for item in items]) for key in ("layout", "latent_mean", "latent_std")}
    batch["caption"] = [item["caption"] for item in items]
    batch["image_id"] = torch.tensor([item["image_id"] for item in items], dtype=torch.long)
    batch["bad"] = []
    return batch
