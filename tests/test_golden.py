"""Golden values: numbers the tiny model gives with fixed seeds, stored in tests/golden/ and compared here.

The ``golden`` fixture (tests/conftest.py) compares them. They catch a change of behaviour that every
relation between outputs would let through (a random draw moved,
a default changed, a kernel swapped). When a change of these numbers is intended, regenerate them and commit
the new files with the change that explains them:

    LUMEN_UPDATE_GOLDEN=1 bash scripts/test.sh -k "golden or evaluate_writes"

Tolerances allow for another CPU's kernels (vector width, thread count), not for another computation.
"""

import json

import numpy as np
import torch

from lumen.build import build_extractor, load_components, split_dataset
from lumen.config import load_config
from lumen.layout.encoder import LayoutEncoder
from lumen.layout.pca import load_pca


def cfg_of(args, *more):
    return load_config([args[0]], [*args[1:], *more])


def test_the_first_training_losses(train_args, monkeypatch, golden):
    """Six steps on the cache (seed 0, batch 4, lr 1e-3, component dropout 0.5): the loss of each."""
    from lumen_train.trainer import Trainer

    losses = []
    original = Trainer.check_health

    def record(self):
        health = original(self)
        losses.extend(health.losses)
        return health

    monkeypatch.setattr(Trainer, "check_health", record)
    with Trainer(cfg_of(train_args, "train.max_train_steps=6", "train.log_every=1",
                        "train.component_dropout=0.5")) as trainer:
        trainer.train()
    assert len(losses) == 6
    golden("training_losses", [round(v, 7) for v in losses], atol=1e-5, rtol=1e-4)


def test_a_layout_slice(prepared_layouts, tiny_args, golden):
    """The layout of the first val image: components 1-3 of its top-left 2x2 cells (whitened units)."""
    cfg = cfg_of(tiny_args, f"output_dir={prepared_layouts}")
    extractor = build_extractor(cfg, load_components(cfg, torch.device("cpu"), torch.float32))
    encoder = LayoutEncoder(load_pca(prepared_layouts / "pca"))
    image = split_dataset(cfg, "val")[0]["pixel_values"][None]
    layout = encoder(extractor(image).features)[0]
    assert layout.shape == (8, 4, 4)
    golden("layout_slice", [[[round(float(v), 5) for v in row] for row in channel]
                           for channel in layout[:3, :2, :2]], atol=2e-4)


def test_a_sampled_image_slice(trained_run, tmp_path, golden):
    """The first image sampled from the trained ControlNet (seed 0, 3 UniPC steps): a 3x3 corner, RGB."""
    from PIL import Image

    from lumen_train.commands import sample

    out = tmp_path / "samples"
    assert sample.main([*trained_run, f"sample.out_dir={out}", "sample.num_sources=1", "sample.num_inference_steps=3",
                        "sample.prompts=[]"]) == 0
    record = json.loads((out / "samples.json").read_text())["images"][0]
    image = np.asarray(Image.open(out / record["file"]))
    golden("sample_slice", image[:3, :3].tolist(), atol=2)
