"""PCA and layout cache: refused before anything is written, complete before they appear, verified on reuse."""

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from lumen.artifacts import DamagedArtifactError
from lumen.config import load_config
from lumen.data.problems import TooManyBadInputs
from lumen.errors import StorageError
from lumen.layout import pca as pca_module
from lumen.layout.cache import CacheDamagedError, load_cache
from lumen.layout.pca import PCAExistsError, PCASettingsError, load_pca
from lumen_train.commands import encode_layouts, fit_pca


def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture
def fitted(tiny_args):
    assert fit_pca.main(tiny_args) == 0
    return Path(load_config([tiny_args[0]], tiny_args[1:]).output_dir)


def test_more_components_than_feature_channels_is_refused_before_extraction(fitted, tiny_args, monkeypatch):
    before = snapshot(fitted / "pca")
    extracted = []
    monkeypatch.setattr(fit_pca, "extract_on_processes", lambda *a, **k: extracted.append(1))
    with pytest.raises(PCASettingsError, match="pca.n_components=161, but the features .* have 160 channels"):
        fit_pca.main([*tiny_args, "pca.n_components=161", "pca.num_samples=170", "pca.overwrite=true"])
    assert not extracted
    assert snapshot(fitted / "pca") == before and not (fitted / "pca.tmp").exists()


def test_a_pca_fitted_with_other_settings_is_kept_unless_overwrite_is_asked(fitted, tiny_args, capsys):
    first = load_pca(fitted / "pca").fingerprint()
    before = snapshot(fitted / "pca")
    with pytest.raises(PCAExistsError) as err:
        fit_pca.main([*tiny_args, "pca.seed=5"])
    assert "seed: 5 (now) vs 0" in str(err.value) and "pca.overwrite=true" in str(err.value)
    assert snapshot(fitted / "pca") == before
    # The same request again: reused, untouched.
    capsys.readouterr()
    assert fit_pca.main(tiny_args) == 0
    assert "reusing it" in capsys.readouterr().out and snapshot(fitted / "pca") == before
    # Asked for: replaced by a complete new one.
    assert fit_pca.main([*tiny_args, "pca.seed=5", "pca.overwrite=true"]) == 0
    replaced = load_pca(fitted / "pca")
    assert replaced.fingerprint() != first and replaced.settings["request"]["seed"] == 5
    assert (fitted / "pca" / "config.yaml").is_file()
    assert sorted(p.name for p in fitted.iterdir() if p.name.startswith("pca")) == ["pca"]


def test_a_failure_while_writing_a_pca_keeps_the_previous_one(fitted, tiny_args, monkeypatch):
    first = load_pca(fitted / "pca").fingerprint()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pca_module, "plot_explained_variance", disk_full)
    with pytest.raises(StorageError, match="the disk is full: writing the PCA to .*pca.tmp"):
        fit_pca.main([*tiny_args, "pca.seed=5", "pca.overwrite=true"])
    assert load_pca(fitted / "pca").fingerprint() == first


def test_a_truncated_pca_is_refused_with_the_command_that_remakes_it(fitted):
    tensors = fitted / "pca" / "pca.safetensors"
    size = tensors.stat().st_size
    tensors.write_bytes(tensors.read_bytes()[: size // 2])
    with pytest.raises(DamagedArtifactError) as err:
        load_pca(fitted / "pca")
    assert f"pca.safetensors is {size // 2} bytes, {size} were written" in str(err.value)
    assert "lumen fit-pca CONFIG pca.overwrite=true" in str(err.value)


@pytest.fixture
def encoded(fitted, tiny_args):
    assert encode_layouts.main([*tiny_args, "encode.splits=[train]"]) == 0
    return fitted / "cache"


def test_a_truncated_arrow_file_is_found_named_and_encoded_again(encoded, tiny_args, capsys):
    reference = load_cache(encoded, "train")[:]["layout"].clone()
    arrow = next((encoded / "train" / "shard-00001").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:-100])
    with pytest.raises(CacheDamagedError) as err:
        load_cache(encoded, "train")
    assert "shard-00001" in str(err.value) and "it re-encodes shard-00001" in str(err.value)
    capsys.readouterr()
    assert encode_layouts.main([*tiny_args, "encode.splits=[train]"]) == 0
    out = capsys.readouterr().out
    assert "shard-00001 is damaged" in out and "3 shards (2 already done)" in out
    assert torch.equal(load_cache(encoded, "train")[:]["layout"], reference)


def test_a_changed_shard_file_of_the_same_size_is_found_by_its_checksum(encoded, tiny_args, capsys):
    arrow = next((encoded / "train" / "shard-00002").glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[-20] ^= 0xFF
    arrow.write_bytes(bytes(data))
    capsys.readouterr()
    assert encode_layouts.main([*tiny_args, "encode.splits=[train]"]) == 0
    assert "shard-00002 is damaged" in capsys.readouterr().out


def test_a_deleted_shard_is_named_with_the_command_that_repairs_it(encoded):
    shutil.rmtree(encoded / "train" / "shard-00000")
    with pytest.raises(CacheDamagedError, match="shard-00000 is damaged \\(missing\\).*lumen encode-layouts"):
        load_cache(encoded, "train")


def test_encoding_stops_as_soon_as_the_bad_image_limit_is_certain(fitted, tiny_args, synthetic_root, tmp_path,
                                                                  monkeypatch):
    data = tmp_path / "broken"
    shutil.copytree(synthetic_root, data)
    for path in sorted((data / "train2017").glob("*.jpg"))[:3]:
        path.write_bytes(b"not a jpeg")
    from lumen_train import cache_over_processes as encoding

    calls = []
    real = encoding.write_shard
    monkeypatch.setattr(encoding, "write_shard", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    with pytest.raises(TooManyBadInputs) as err:
        # 12 images, limit 0.1 -> more than 1.2 bad is certain after the first batch of 4 (3 unusable).
        encode_layouts.main([*tiny_args, f"data.root={data}", "encode.splits=[train]", "data.max_bad_fraction=0.1",
                             "layout.batch_size=4"])
    assert "3 of 12 images unusable" in str(err.value) and "stopped as soon as this was certain" in str(err.value)
    assert calls == []  # no shard was finished: it stopped in the first one
    split_dir = fitted / "cache" / "train"
    assert not any(split_dir.glob("shard-0*")) and not (split_dir / "index.json").exists()
    # The next run starts clean (the stop record is removed) and refuses again.
    with pytest.raises(TooManyBadInputs):
        encode_layouts.main([*tiny_args, f"data.root={data}", "encode.splits=[train]", "data.max_bad_fraction=0.1"])


def test_artifacts_record_the_extraction_dtype(encoded):
    assert json.loads((encoded.parent / "pca" / "pca.json").read_text())["dtype"] == "float32"
    assert json.loads((encoded / "cache.json").read_text())["dtype"] == "float32"


def test_a_damaged_pca_is_not_reused_and_the_message_says_how_to_refit(fitted, tiny_args):
    """Same size, other bytes: only the checksum tells; fit_pca must not call it 'fitted with these settings'."""
    tensors = fitted / "pca" / "pca.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-10] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(DamagedArtifactError) as err:
        fit_pca.main(tiny_args)
    assert str(err.value) == (f"the PCA in {fitted / 'pca'} is damaged (pca.safetensors has changed since it was "
                              f"written (SHA-256 differs)); refit it: lumen fit-pca CONFIG "
                              f"pca.overwrite=true")
    assert fit_pca.main([*tiny_args, "pca.overwrite=true"]) == 0
    assert fit_pca.main(tiny_args) == 0  # the refitted one verifies and is reused


def test_training_verifies_every_cache_shard_before_reading_it(encoded, tiny_args, capsys):
    """A shard changed in place (same size) is refused by training too, unless train.verify_cache=false."""
    from lumen_train.commands import train_controlnet

    arrow = next((encoded / "train" / "shard-00002").glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[-20] ^= 0xFF
    arrow.write_bytes(bytes(data))
    train = [*tiny_args, "train.max_train_steps=1", "train.report_to=none", "validation.steps=0"]
    with pytest.raises(CacheDamagedError) as err:
        train_controlnet.main(train)
    assert str(err.value).startswith(
        f"the cache of split 'train' in {encoded} changed since it was written: shard-00002 (data-00000-of-00001.arrow "
        f"has changed since it was written (SHA-256 differs)). Run 'lumen encode-layouts CONFIG' again")
    assert train_controlnet.main([*train, "train.verify_cache=false"]) == 0


def test_a_full_disk_while_encoding_leaves_no_partial_shard_and_a_killed_runs_are_removed(fitted, tiny_args,
                                                                                       monkeypatch, capsys):
    from datasets import Dataset

    real = Dataset.save_to_disk

    def disk_full_at_shard_1(self, path, *args, **kwargs):
        if Path(path).name.startswith("shard-00001.tmp"):
            Path(path).mkdir(parents=True)
            (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_to_disk", disk_full_at_shard_1)
    with pytest.raises(StorageError, match="the disk is full: writing cache shard shard-00001"):
        encode_layouts.main([*tiny_args, "encode.splits=[train]"])
    split = fitted / "cache" / "train"
    assert not list(split.glob("shard-*.tmp*"))  # the space is given back at once
    monkeypatch.undo()
    (split / "shard-00002.tmp.1").mkdir()  # what a kill -9 in the middle of a write leaves
    (split / "shard-00002.tmp.1" / "data-00000-of-00001.arrow").write_bytes(b"x" * 1000)
    capsys.readouterr()
    assert encode_layouts.main([*tiny_args, "encode.splits=[train]"]) == 0
    assert ("train: removed 1 unfinished shard folder(s) an interrupted run left: shard-00002.tmp.1"
            in capsys.readouterr().out)
    assert not list(split.glob("shard-*.tmp*"))
