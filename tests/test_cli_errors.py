"""A user's mistake ends with one message and exit code 2, never a traceback: every entry point, through
the wrapper its command line uses."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lumen.errors import run_cli
from lumen_train.commands import (
    demo,
    encode_layouts,
    evaluate,
    fit_pca,
    make_tiny_sd,
    sample,
    synthesize,
    train_controlnet,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no file can be written in. Root ignores permission bits, so there a folder of the read-only
    sysfs stands in (skipped where neither works)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_text("")
    except PermissionError:
        yield folder
        folder.chmod(0o755)
        return
    (folder / "probe").unlink()
    folder.chmod(0o755)
    candidate = Path("/sys/lumen-read-only-test")
    try:
        candidate.mkdir()
    except OSError:
        yield candidate
        return
    candidate.rmdir()
    pytest.skip("no read-only folder can be made here")


@pytest.fixture(scope="module")
def damaged_model(tmp_path_factory, tiny_sd_dir):
    copy = tmp_path_factory.mktemp("damaged") / "tiny-sd"
    shutil.copytree(tiny_sd_dir, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return copy


def run(main, prog, argv, capsys):
    try:
        code = run_cli(main, prog, argv)
    except SystemExit as exit_:  # the config parser exits 2 itself, after its message
        code = exit_.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def expect(main, prog, argv, capsys, *snippets):
    code, err = run(main, prog, argv, capsys)
    assert code == 2, err
    for snippet in snippets:
        assert snippet in err, err
    return err


def test_bad_numbers_for_every_entry_point(tiny_args, capsys):
    for main, prog, override in [(fit_pca.main, "lumen fit-pca", "pca.n_components=0"),
                                 (encode_layouts.main, "lumen encode-layouts", "layout.batch_size=0"),
                                 (train_controlnet.main, "lumen train", "train.checkpointing_steps=0"),
                                 (sample.main, "lumen sample", "sample.num_inference_steps=0"),
                                 (synthesize.main, "lumen synthesize", "synthesize.images_per_source=100"),
                                 (evaluate.main, "lumen evaluate", "evaluate.kmeans_clusters=1"),
                                 (demo.main, "lumen demo", "data.resolution=100")]:
        key = override.split("=")[0]
        expect(main, prog, [*tiny_args, override], capsys, f"{prog}: config error: bad value for config key '{key}'")


def test_a_device_that_does_not_exist(trained_run, tmp_path, capsys):
    expect(sample.main, "lumen sample", [*trained_run, "sample.device=gpu", f"sample.out_dir={tmp_path}"], capsys,
           "sample.device=gpu is not a device name")


def test_a_damaged_model_is_named(tiny_args, damaged_model, capsys):
    expect(fit_pca.main, "lumen fit-pca", [*tiny_args, f"model.pretrained={damaged_model}"], capsys,
           "cannot load the UNet from", "download or save the model again")


def test_a_read_only_output_is_refused_before_the_work(tiny_args, train_args, trained_run, read_only_dir, capsys):
    expect(fit_pca.main, "lumen fit-pca", [*tiny_args, f"layout.pca_dir={read_only_dir}/pca"], capsys,
           "cannot write the PCA")
    expect(train_controlnet.main, "lumen train", [*train_args, f"output_dir={read_only_dir}/run"], capsys,
           "cannot write the folder's lock file")
    expect(sample.main, "lumen sample", [*trained_run, f"sample.out_dir={read_only_dir}/samples"], capsys,
           "cannot write the samples")


def test_damaged_artifacts_are_named_with_what_to_do(train_args, trained_run, tmp_path, capsys):
    out = Path(train_args[1].split("=", 1)[1])
    tensors = out / "pca" / "pca.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:1000])
    expect(encode_layouts.main, "lumen encode-layouts", train_args, capsys, "pca.safetensors is 1000 bytes",
           "lumen fit-pca CONFIG pca.overwrite=true")
    shutil.copy(Path(trained_run[1].split("=", 1)[1]) / "pca" / "pca.safetensors", tensors)
    shutil.rmtree(out / "cache" / "train" / "shard-00001")
    expect(train_controlnet.main, "lumen train", train_args, capsys, "shard-00001 is damaged (missing)",
           "it re-encodes shard-00001")
    expect(train_controlnet.main, "lumen train", [*train_args, f"train.resume_from_checkpoint={tmp_path}"],
           capsys, "is not a complete checkpoint")
    # A ControlNet whose weights were cut short.
    controlnet = tmp_path / "controlnet"
    shutil.copytree(Path(trained_run[1].split("=", 1)[1]) / "controlnet", controlnet)
    weights = controlnet / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    expect(sample.main, "lumen sample", [*trained_run, f"sample.controlnet={controlnet}",
                                      f"sample.out_dir={tmp_path / 's'}"], capsys, "cannot load the ControlNet")
    (tmp_path / "bad.json").write_text("{ not json")
    expect(evaluate.main, "lumen evaluate", [*trained_run, f"evaluate.samples={tmp_path / 'bad.json'}"], capsys,
           "is damaged (not valid JSON")
    expect(sample.main, "lumen sample", [*trained_run, f"sample.replay={tmp_path / 'bad.json'}"], capsys,
           "is damaged (not valid JSON")


def test_make_tiny_sd_into_a_read_only_folder(read_only_dir, capsys):
    expect(make_tiny_sd.main, "lumen make-tiny-sd", [str(read_only_dir / "sd")], capsys, "lumen make-tiny-sd: error:")


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def test_the_command_lines_themselves_exit_2_without_a_traceback(train_args):
    """The same answers from real processes (what a user's shell sees)."""
    out = Path(train_args[1].split("=", 1)[1])
    shutil.rmtree(out / "cache" / "train" / "shard-00000")
    for command in (["-m", "lumen_train", "fit-pca", *train_args, "pca.n_components=0"],
                    ["train/train_controlnet.py", *train_args],  # the script accelerate launch takes
                    ["-m", "lumen_train", "fit-pca", *train_args, "train.max_train_steps"]):
        result = subprocess.run([sys.executable, *command], cwd=REPO, env=env(), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "error" in result.stderr.splitlines()[-1]
