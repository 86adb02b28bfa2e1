"""lumen sample: grids, metadata, exact replay, batch independence, component control, refusals."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumen.training.controlnet import ControlNetMismatchError
from lumen_train.commands import fit_pca, sample


def run_sample(args, tmp_path, *more):
    out = tmp_path / "samples"
    sample.main([*args, f"sample.out_dir={out}", "sample.num_inference_steps=3", *more])
    return out, json.loads((out / "samples.json").read_text())


def load(out, record):
    return np.asarray(Image.open(out / record["file"]))


def test_grids_images_and_metadata(trained_run, tmp_path):
    run_dir = Path(trained_run[1].split("=", 1)[1])
    training_record = (run_dir / "config.yaml").read_bytes()
    out, meta = run_sample(trained_run, tmp_path, "sample.num_sources=2", "sample.num_images_per_prompt=2",
                           "sample.prompts=[a watercolor painting]")
    # Sampling keeps its resolved config beside its images and leaves the training run's record alone.
    assert (run_dir / "config.yaml").read_bytes() == training_record
    assert "num_images_per_prompt: 2" in (out / "config.yaml").read_text()
    assert len(meta["images"]) == 2 * 2 * 2  # sources x prompts (caption + one edit) x images per prompt
    assert {r["prompt_index"] for r in meta["images"]} == {0, 1}
    first = meta["sources"][0]
    assert next(r["prompt"] for r in meta["images"] if r["source"] == 0 and r["prompt_index"] == 0) == first["caption"]
    # one seed per (source, repeat), the same for every prompt: the columns differ only by their prompt
    seeds = {(r["source"], r["repeat"]): {x["seed"] for x in meta["images"]
                                          if (x["source"], x["repeat"]) == (r["source"], r["repeat"])}
             for r in meta["images"]}
    assert all(len(s) == 1 for s in seeds.values()) and len(set.union(*seeds.values())) == 4
    for record in meta["images"]:
        assert load(out, record).shape == (64, 64, 3)
    assert (out / f"{first['name']}_grid.png").is_file()
    assert meta["settings"]["lumen"]["n_components"] == 8


def test_regenerating_from_the_metadata_gives_the_identical_image(trained_run, tmp_path, capsys):
    out, meta = run_sample(trained_run, tmp_path, "sample.num_sources=2", "sample.batch_size=3",
                           "sample.prompts=[a snowy scene]")
    target = meta["images"][3]["file"]
    sample.main([*trained_run, f"sample.replay={out / 'samples.json'}", f"sample.replay_image={target}"])
    assert "1 identical" in capsys.readouterr().out
    assert np.array_equal(np.asarray(Image.open(out / "replay" / target)), np.asarray(Image.open(out / target)))


def test_batch_size_does_not_change_the_images(trained_run, tmp_path):
    one, meta_one = run_sample(trained_run, tmp_path / "b1", "sample.num_sources=4", "sample.batch_size=1",
                               "sample.prompts=[a snowy scene]")
    eight, meta_eight = run_sample(trained_run, tmp_path / "b8", "sample.num_sources=4", "sample.batch_size=8",
                                   "sample.prompts=[a snowy scene]")
    assert [r["seed"] for r in meta_one["images"]] == [r["seed"] for r in meta_eight["images"]]
    assert len(meta_one["images"]) == 8
    differing = [a["file"] for a, b in zip(meta_one["images"], meta_eight["images"])
                 if not np.array_equal(load(one, a), load(eight, b))]
    assert differing == [], f"batch 8 changed these images: {differing}"


def test_batch_size_invariance_is_undone_after_sampling(tiny_sd_dir):
    import torch

    from lumen.pretrained import load_sd_components
    from lumen.sampling.pipeline import batch_size_invariant, build_controlnet_pipeline
    from lumen.training.controlnet import controlnet_from_unet

    parts = load_sd_components(str(tiny_sd_dir))
    pipe = build_controlnet_pipeline(parts, controlnet_from_unet(parts.unet, conditioning_channels=4))
    linear = parts.unet.time_embedding.linear_1
    rows = torch.randn(6, linear.in_features)
    with batch_size_invariant(pipe):
        assert pipe.vae.use_slicing and "forward" in vars(linear)
        assert torch.equal(linear(rows)[2:3], linear(rows[2:3]))  # a sample alone = the sample in a batch
    assert not pipe.vae.use_slicing and "forward" not in vars(linear)


def test_component_control_changes_the_images_and_sweeps(trained_run, tmp_path):
    out, meta = run_sample(trained_run, tmp_path, "sample.num_sources=1", "sample.sweep_components=[1,8]")
    by_k = {r["n_components"]: load(out, r) for r in meta["images"]}
    assert set(by_k) == {1, 8}
    assert not np.array_equal(by_k[1], by_k[8])
    assert (out / f"{meta['sources'][0]['name']}_sweep.png").is_file()
    with pytest.raises(Exception, match="components"):
        run_sample(trained_run, tmp_path / "bad", "sample.num_sources=1", "sample.n_components=9")


def test_a_controlnet_trained_with_another_pca_is_refused(trained_run, tmp_path):
    other = tmp_path / "other-pca"
    assert fit_pca.main([*trained_run, f"layout.pca_dir={other}", "pca.seed=9"]) == 0
    with pytest.raises(ControlNetMismatchError, match="PCA: fingerprint"):
        run_sample(trained_run, tmp_path, f"layout.pca_dir={other}")


def test_image_files_and_checkpoints_as_input(trained_run, tmp_path, synthetic_root, capsys):
    run = Path(trained_run[1].split("=", 1)[1])
    files = sorted((synthetic_root / "val2017").glob("*.jpg"))[:1]
    _, meta = run_sample(trained_run, tmp_path, f"sample.images=[{files[0]}]",
                         f"sample.controlnet={run / 'checkpoint-3'}", "sample.prompts=[]")
    assert meta["sources"][0]["kind"] == "file" and meta["sources"][0]["caption"] == ""
    assert meta["settings"]["controlnet"].endswith("checkpoint-3/controlnet")
    assert len(meta["images"]) == 1
    # A file has no caption: with no prompt either, it is sampled from the layout alone, and that is said.
    assert (f"note: 1 source(s) have no caption ({files[0].stem}): their images are sampled with the empty prompt, "
            f"from the layout alone; give prompts with sample.prompts=[...]") in capsys.readouterr().err


def test_cached_layouts_as_sources(trained_run, tmp_path):
    _, meta = run_sample(trained_run, tmp_path, "sample.from_cache=true", "sample.num_sources=2", "sample.prompts=[]")
    assert all(s["from_cache"] for s in meta["sources"]) and len(meta["images"]) == 2
