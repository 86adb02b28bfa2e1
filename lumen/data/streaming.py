"""Training samples streamed from tar shards (``lumen.data.sources.webdataset``), for training without the layout cache.

Each process reads only its own shards (process i of n: shards i, i + n, ...; DataLoader workers split those
again), so no two processes read the same sample. Every pass over the shards is an epoch: its shard order and a
shuffle buffer are seeded by (seed, epoch, process), and the captions are drawn as the map-style data sets draw
them (seeded by the seed, the epoch and the sample's id), so a run reads the same stream each time it starts.
The stream never ends: the trainer stops it at ``train.max_train_steps``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from lumen.data.dataset import BadSample, draw_caption
from lumen.data.split_index import decode_image_bytes, stable_id
from lumen.data.transforms import image_to_tensor


class StreamingTrainDataset(torch.utils.data.IterableDataset):
    """``{"pixel_values" (3, R, R) in [-1, 1], "caption", "image_id"}`` or ``BadSample``, endlessly.

    Args:
        stream: a ``lumen.data.sources.webdataset.WebDatasetSplit``.
        process_index, num_processes: which shards are this process's.
        shuffle_buffer: samples held to shuffle across shard boundaries (0: shard order only).
    """

    def __init__(self, stream, resolution: int, process_index: int, num_processes: int, seed: int = 0,
                 empty_prompt_probability: float = 0.0, shuffle_buffer: int = 256) -> None:
        self.stream = stream
        self.resolution = resolution
        self.urls = stream.urls[process_index::num_processes]
        self.process_index = process_index
        self.seed = seed
        self.empty_prompt_probability = empty_prompt_probability
        self.shuffle_buffer = shuffle_buffer
        if not self.urls:
            raise ValueError(f"process {process_index} of {num_processes} has no shard: the split has "
                             f"{len(stream.urls)}")

    def _samples(self, epoch: int, worker: int, num_workers: int) -> Iterator[Any]:
        rng = np.random.default_rng([self.seed, epoch, self.process_index, worker])
        urls = [self.urls[i] for i in rng.permutation(len(self.urls))][worker::num_workers]
        buffer: list = []
        for url in urls:
            for sample in self.stream.iter_shard(url):
                buffer.append(sample)
                if len(buffer) > self.shuffle_buffer:
                    yield buffer.pop(int(rng.integers(len(buffer))))
        rng.shuffle(buffer)
        yield from buffer

    def _item(self, sample, epoch: int) -> dict[str, Any] | BadSample:
        if not sample.captions:
            return BadSample(sample.key, "no caption")
        if sample.image is None:
            return BadSample(sample.key, "no image member")
        try:
            image = decode_image_bytes(sample.image)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            return BadSample(sample.key, f"unreadable image ({err})")
        image_id = stable_id(sample.key)
        caption = draw_caption(sample.captions, True, self.seed, epoch, image_id, self.empty_prompt_probability)
        return {"pixel_values": image_to_tensor(image, self.resolution), "caption": caption, "image_id": image_id}

    def __iter__(self) -> Iterator[dict[str, Any] | BadSample]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if worker >= len(self.urls):  # more workers than shards: the extra ones have nothing to read
            return
        num_workers = min(num_workers, len(self.urls))
        epoch = 0
        while True:
            for sample in self._samples(epoch, worker, num_workers):
                yield self._item(sample, epoch)
            epoch += 1
