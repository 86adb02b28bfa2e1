"""lumen fit-pca and lumen encode-layouts end to end on the tiny model and the synthetic data."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.decomposition import PCA as SkPCA

from lumen.build import build_extractor, load_components, split_dataset
from lumen.config import load_config
from lumen.layout.cache import CacheDamagedError, CacheMismatchError, load_cache
from lumen.layout.encoder import LayoutEncoder
from lumen.layout.pca import load_pca
from lumen.layout.settings import SettingsMismatchError
from lumen_train.commands import encode_layouts, fit_pca


@pytest.fixture
def fitted_run(tiny_args):
    assert fit_pca.main(tiny_args) == 0
    cfg = load_config([tiny_args[0]], tiny_args[1:])
    return cfg, Path(cfg.output_dir)


def test_fit_pca_writes_a_self_describing_pca_that_agrees_with_scikit_learn(fitted_run):
    cfg, out = fitted_run
    assert {p.name for p in (out / "pca").iterdir()} == {"pca.safetensors", "pca.json", "explained_variance.png",
                                                         "samples.safetensors", "config.yaml"}
    pca = load_pca(out / "pca")
    assert pca.settings["num_samples"] == 150 and pca.settings["num_images"] == 10  # ceil(150 / 16): 4x4 grid
    assert pca.settings["layers"] == [2, 5, 8] and pca.settings["resolution"] == 64
    samples = load_file(out / "pca" / "samples.safetensors")["features"]
    assert samples.shape == (150, 160)
    reference = SkPCA(n_components=8).fit(samples.numpy())
    cos = np.abs((pca.components.numpy() * reference.components_).sum(axis=1))
    assert cos.min() >= 0.999
    np.testing.assert_allclose(pca.explained_variance.numpy(), reference.explained_variance_, rtol=1e-3)
    assert load_config([out / "pca" / "config.yaml"]) == cfg  # the fit's own resolved config, inside the PCA
    assert not (out / "config.yaml").exists()  # the training run's record is the trainer's alone


def test_the_same_image_gives_the_identical_layout_and_the_cache_holds_it(fitted_run, tiny_args):
    cfg, out = fitted_run
    assert encode_layouts.main([*tiny_args, "encode.visualize=2"]) == 0
    rows = load_cache(out / "cache", "val")
    dataset = split_dataset(cfg, "val")
    assert len(rows) == len(dataset) == 4
    parts = load_components(cfg, torch.device("cpu"), torch.float32)
    extractor, encoder = build_extractor(cfg, parts), LayoutEncoder(load_pca(out / "pca"))
    image = dataset[1]["pixel_values"][None]
    first, second = encoder(extractor(image).features), encoder(extractor(image).features)
    assert torch.equal(first, second)
    assert rows[1]["image_id"].item() == dataset.index.records[1].image_id
    assert rows[1]["layout"].shape == (8, 4, 4)
    # The cache was made in batches of 4: batched kernels may flip a float16 rounding.
    torch.testing.assert_close(rows[1]["layout"], first[0].half().float(), rtol=2e-3, atol=2e-3)
    assert rows[1]["captions"] == list(dataset.index.records[1].captions)
    output = extractor(image)
    torch.testing.assert_close(rows[1]["latent_mean"], output.latent_mean[0].half().float(), rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(rows[1]["latent_std"], output.latent_std[0].half().float(), rtol=2e-3, atol=1e-5)
    assert len(list((out / "cache" / "val" / "pictures").glob("*.png"))) == 2
    assert len(load_cache(out / "cache", "train")) == 12


def test_resume_redoes_only_unfinished_shards(fitted_run, tiny_args):
    _, out = fitted_run
    argv = [*tiny_args, "encode.splits=[train]"]
    assert encode_layouts.main(argv) == 0
    split_dir = out / "cache" / "train"
    assert sorted(p.name for p in split_dir.glob("shard-*")) == ["shard-00000", "shard-00001", "shard-00002"]
    before = {p.name: (p / "shard.json").stat().st_mtime_ns for p in split_dir.glob("shard-*")}
    reference = load_cache(out / "cache", "train")[:]["layout"].clone()
    # A kill in the middle of shard 1: its folder half-written under the temporary name, no index.
    shutil.rmtree(split_dir / "shard-00001")
    (split_dir / "shard-00001.tmp.0").mkdir()
    (split_dir / "index.json").unlink()
    with pytest.raises(CacheDamagedError, match="lumen encode-layouts"):
        load_cache(out / "cache", "train")
    assert encode_layouts.main(argv) == 0
    after = {p.name: (p / "shard.json").stat().st_mtime_ns for p in split_dir.glob("shard-*")}
    assert after.keys() == before.keys()
    assert after["shard-00000"] == before["shard-00000"] and after["shard-00002"] == before["shard-00002"]
    assert after["shard-00001"] != before["shard-00001"]
    assert torch.equal(load_cache(out / "cache", "train")[:]["layout"], reference)
    assert json.loads((split_dir / "index.json").read_text())["rows"] == 12


def test_a_cache_made_with_another_pca_is_refused(fitted_run, tiny_args, tmp_path):
    assert encode_layouts.main([*tiny_args, "encode.splits=[val]"]) == 0
    other_pca = tmp_path / "other-pca"
    assert fit_pca.main([*tiny_args, "pca.seed=5", f"layout.pca_dir={other_pca}"]) == 0
    with pytest.raises(CacheMismatchError) as err:
        encode_layouts.main([*tiny_args, "encode.splits=[val]", f"layout.pca_dir={other_pca}"])
    assert "pca_fingerprint" in str(err.value) and "(cache) vs" in str(err.value)
    with pytest.raises(SettingsMismatchError, match="timestep: 300 \\(config\\) vs 100"):
        encode_layouts.main([*tiny_args, "encode.splits=[val]", "layout.timestep=300"])


def test_fit_pca_on_real_photos(shared_data, tiny_sd_dir, tmp_path):
    argv = ["configs/tiny.yaml", f"output_dir={tmp_path}", f"model.pretrained={tiny_sd_dir}",
            f"data.root={shared_data / 'coco-mini'}"]
    assert fit_pca.main(argv) == 0
    pca = load_pca(tmp_path / "pca")
    assert pca.settings["num_samples"] == 4000 and pca.n_components == 20 and pca.settings["skipped_images"] == 0
