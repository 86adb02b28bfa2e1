"""The small Stable Diffusion shipped in models/tiny-sd, and LUMEN's method on it: a ControlNet trained briefly on
its layouts, judged by layout fidelity and by a colour edit in the prompt (the slow tests)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumen.testing.synthetic_coco import THING_COLOURS
from lumen.testing.tiny_sd import tiny_sd_settings

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "tiny-sd"
THING_LABELS = 91  # label-map values below this are things (COCO ids 1..91 minus one)


def test_the_shipped_model_is_small_and_records_how_it_was_made():
    from diffusers import StableDiffusionPipeline

    info = tiny_sd_settings(SHIPPED)
    assert info is not None, f"{SHIPPED} is missing or was made by another builder version"
    assert info["command"].startswith("python scripts/make_tiny_sd.py models/tiny-sd ")
    assert info["vae_train_steps"] > 0 and info["unet_train_steps"] > 0 and info["weights_dtype"] == "float16"
    size = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert size < 8_000_000
    import torch

    pipe = StableDiffusionPipeline.from_pretrained(SHIPPED, dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32 and pipe.unet.config.sample_size == 16


@pytest.fixture(scope="session")
def shipped_run(tmp_path_factory):
    """PCA, cache and a ControlNet trained for a short while on the shipped model and a fresh synthetic data set
    (128 px, 20 components, one process). Returns the entry-point arguments."""
    from lumen.testing.synthetic_coco import write_synthetic_coco_stuff
    from lumen_train.commands import encode_layouts, fit_pca, train_controlnet

    base = tmp_path_factory.mktemp("shipped")
    data = write_synthetic_coco_stuff(base / "data", num_train=96, num_val=10, width=160, height=128, seed=11,
                                      progress=False)
    args = [str(REPO / "configs" / "tiny.yaml"), f"output_dir={base / 'run'}", f"model.pretrained={SHIPPED}",
            f"data.root={data}", "encode.visualize=0", "train.report_to=none", "validation.steps=0",
            "train.checkpointing_steps=1000", "train.max_train_steps=150"]
    assert fit_pca.main(args) == 0 and encode_layouts.main(args) == 0 and train_controlnet.main(args) == 0
    return args


def _things_mean_colour(image: np.ndarray, label: np.ndarray) -> np.ndarray:
    return image[label < THING_LABELS].reshape(-1, 3).astype(float).mean(axis=0)


@pytest.mark.slow
def test_a_colour_word_in_the_prompt_moves_the_things_colour_toward_it(shipped_run, tmp_path):
    """Same layout, same seed, two prompts that differ only in the colour word: the mean colour of the source's
    things moves toward the colour each prompt names."""
    from lumen.build import split_dataset
    from lumen.config import load_config
    from lumen_train.commands import sample

    cfg = load_config([shipped_run[0]], shipped_run[1:])
    val = split_dataset(cfg, "val", labels="stuffthingmaps")
    colour_word = re.compile(r"\b(" + "|".join(THING_COLOURS) + r")\b")
    moves = []
    for i in range(len(val)):
        item = val[i]
        caption, label = item["caption"].lower(), item["label"].numpy()
        if not colour_word.search(caption) or (label < THING_LABELS).mean() < 0.02:
            continue  # a caption without a colour, or a thing too small to measure
        prompts = {c: colour_word.sub(c, caption, count=1) for c in ("red", "blue")}
        out = tmp_path / str(item["image_id"])
        assert sample.main([*shipped_run, f"sample.out_dir={out}", f"sample.image_ids=[{item['image_id']}]",
                            f"sample.prompts=[{prompts['red']}, {prompts['blue']}]"]) == 0
        records = json.loads((out / "samples.json").read_text())["images"]
        assert len({r["seed"] for r in records}) == 1
        colour = {r["prompt_index"]: _things_mean_colour(np.asarray(Image.open(out / r["file"])), label)
                  for r in records}
        red, blue = np.array(THING_COLOURS["red"]), np.array(THING_COLOURS["blue"])
        toward_red = np.linalg.norm(colour[2] - red) - np.linalg.norm(colour[1] - red)  # blue prompt minus red's
        toward_blue = np.linalg.norm(colour[1] - blue) - np.linalg.norm(colour[2] - blue)
        moves.append((toward_red, toward_blue))
        if len(moves) == 6:
            break
    assert len(moves) >= 2
    moves = np.array(moves)
    # averaged over the sources, each prompt's things are closer to its own colour than the other prompt's are
    # (measured: 29 toward red, 53 toward blue, every source both ways), and so for most sources one by one
    assert moves[:, 0].mean() > 10 and moves[:, 1].mean() > 10, moves
    assert (moves > 0).all(axis=1).mean() >= 0.6, moves


@pytest.fixture(scope="session")
def shipped_sweep(shipped_run, tmp_path_factory) -> dict:
    """Six val sources sampled with k = 1 and k = 20 components, evaluated: the rows by k."""
    from lumen_train.commands import evaluate, sample

    base = tmp_path_factory.mktemp("shipped_sweep")
    assert sample.main([*shipped_run, f"sample.out_dir={base / 'sweep'}", "sample.num_sources=6",
                        "sample.sweep_components=[1,20]"]) == 0
    assert evaluate.main([*shipped_run, f"evaluate.samples={base / 'sweep' / 'samples.json'}",
                          f"evaluate.out={base / 'evaluation'}"]) == 0
    return {r["n_components"]: r for r in json.loads((base / "evaluation" / "metrics.json").read_text())["rows"]}


@pytest.mark.slow
def test_the_layout_of_a_sample_is_closer_to_its_own_source_than_to_the_others(shipped_sweep):
    assert shipped_sweep[20]["images"] == 6
    assert shipped_sweep[20]["layout_margin"] > 0.15, shipped_sweep[20]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="after 150 steps on one process the layout cosine does not rise with the number "
                                       "of components (the demo's 160 steps on two processes: 0.48 -> 0.64)")
def test_more_components_give_a_layout_closer_to_the_source(shipped_sweep):
    assert shipped_sweep[20]["layout_cosine"] > shipped_sweep[1]["layout_cosine"] + 0.05, shipped_sweep
