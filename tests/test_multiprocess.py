"""Two CPU processes under `accelerate launch` give the same PCA samples and cache as one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumen.layout.cache import load_cache
from lumen.layout.pca import load_pca

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.multiprocess


def launch_two(command_name, args, timeout=300):
    """``accelerate launch -m lumen_train <command>`` on two CPU processes (accelerate's own launcher)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml"), "-m", "lumen_train", command_name, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_two_processes_fit_the_same_pca_and_cache_as_one(tiny_args, tmp_path):
    from lumen_train.commands import encode_layouts, fit_pca

    one = [*tiny_args, f"output_dir={tmp_path / 'one'}"]
    two = [*tiny_args, f"output_dir={tmp_path / 'two'}"]
    assert fit_pca.main(one) == 0
    out = launch_two("fit-pca", two)
    assert "2 process(es)" in out
    a, b = load_pca(tmp_path / "one" / "pca"), load_pca(tmp_path / "two" / "pca")
    samples_a = load_file(tmp_path / "one" / "pca" / "samples.safetensors")["features"]
    samples_b = load_file(tmp_path / "two" / "pca" / "samples.safetensors")["features"]
    torch.testing.assert_close(samples_a, samples_b, rtol=1e-4, atol=1e-4)
    assert (a.components * b.components).sum(dim=1).abs().min() >= 0.999
    torch.testing.assert_close(a.explained_variance, b.explained_variance, rtol=1e-3, atol=0)

    # The cache: shards spread over both processes, the same rows as one process writes.
    assert encode_layouts.main([*one, "encode.splits=[train]"]) == 0
    launch_two("encode-layouts", [*two, "encode.splits=[train]", f"layout.pca_dir={tmp_path / 'one' / 'pca'}"])
    rows_a, rows_b = load_cache(tmp_path / "one" / "cache", "train"), load_cache(tmp_path / "two" / "cache", "train")
    assert rows_a[:]["image_id"].tolist() == rows_b[:]["image_id"].tolist()
    torch.testing.assert_close(rows_a[:]["layout"], rows_b[:]["layout"], rtol=1e-3, atol=2e-3)


def test_two_processes_stop_encoding_together_when_too_many_images_are_unusable(tiny_args, tmp_path,
                                                                                synthetic_root):
    import shutil

    from lumen_train.commands import fit_pca

    data = tmp_path / "broken"
    shutil.copytree(synthetic_root, data)
    for path in sorted((data / "train2017").glob("*.jpg"))[-3:]:  # in the last shard, which process 0 encodes
        path.write_bytes(b"not a jpeg")
    run = [*tiny_args, f"output_dir={tmp_path / 'run'}", f"data.root={data}", "encode.splits=[train]",
           "data.max_bad_fraction=0.1"]
    assert fit_pca.main([*run, "data.max_bad_fraction=0.5"]) == 0
    command = [sys.executable, "-m", "lumen_train", "launch", "--config_file",
               str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml"), "encode-layouts", *run]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # Both processes stop with the same message; the launcher prints a message every process met once (two
    # different ones would both show).
    assert result.stderr.count("stopped as soon as this was certain") == 1, result.stderr[-3000:]
    assert not (tmp_path / "run" / "cache" / "train" / "index.json").exists()
