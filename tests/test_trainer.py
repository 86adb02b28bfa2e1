"""The ControlNet trainer on the tiny model, one process (multi-process runs are in test_trainer_ddp.py)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumen.config import load_config
from lumen.errors import LumenError, MissingDependencyError
from lumen_train import checkpointing
from lumen_train.checkpointing import complete_checkpoints, resolve_checkpoint
from lumen_train.commands.train_controlnet import main as train_main
from lumen_train.trainer import Trainer, TrainingDivergedError


def cfg_of(args, *more):
    return load_config([args[0]], [*args[1:], *more])


def final_weights(out: Path) -> dict:
    return load_file(out / "controlnet" / "diffusion_pytorch_model.safetensors")


def test_trains_and_writes_a_diffusers_controlnet_with_lumen_json(train_args, caplog):
    import logging

    caplog.set_level(logging.INFO)
    cfg = cfg_of(train_args, "train.report_to=tensorboard", "validation.steps=2", "validation.num_images=2",
                 "validation.num_inference_steps=2", "train.checkpointing_steps=2", "train.checkpoints_total_limit=1",
                 "validation.metrics=true")
    with Trainer(cfg) as trainer:
        trainer.train()
    assert sum("validation metrics: layout_cosine" in r.message for r in caplog.records) == 2
    out = Path(cfg.output_dir)
    meta = json.loads((out / "controlnet" / "lumen.json").read_text())
    assert meta["n_components"] == 8 and meta["layout"]["layers"] == [2, 5, 8]
    assert json.loads((out / "controlnet" / "config.json").read_text())["conditioning_channels"] == 8
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-4"]  # total limit 1 pruned checkpoint-2
    assert (out / "checkpoint-4" / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "checkpoint-4" / "controlnet" / "lumen.json").is_file()
    assert sorted(p.name for p in (out / "validation").glob("*.png")) == ["step-000002.png", "step-000004.png"]
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    weights = final_weights(out)
    # Trained: the zero-initialised output convolutions of a fresh ControlNet have moved.
    assert any(weights[k].abs().sum() > 0 for k in weights if k.startswith("controlnet_down_blocks"))


def test_only_the_controlnet_is_trained(train_args):
    with Trainer(cfg_of(train_args)) as trainer:
        before = {k: v.clone() for k, v in trainer.parts.unet.state_dict().items()}
        trainer.train()
    assert all(torch.equal(before[k], v) for k, v in trainer.parts.unet.state_dict().items())
    assert not any(p.requires_grad for p in trainer.parts.vae.parameters())


def stop_at(monkeypatch, step):
    original = Trainer._stop_requested

    def stop(self):
        return self.global_step == step or original(self)

    monkeypatch.setattr(Trainer, "_stop_requested", stop)


@pytest.mark.parametrize("extra", [[], ["train.gradient_accumulation_steps=2", "train.lr_scheduler=cosine",
                                        "train.lr_warmup_steps=2"],
                                   pytest.param(["train.compile=true", "train.compile_unet=true", "train.ema=true"],
                                                marks=pytest.mark.slow, id="compiled")])
def test_stop_and_resume_equals_an_uninterrupted_run_bitwise(train_args, tmp_path, monkeypatch, extra):
    # 12 images / batch 4 = 3 batches per epoch: step 4 is mid-epoch, and step 8 lies two epoch boundaries on.
    common = [*train_args, "train.max_train_steps=8", *extra]
    run = Path(cfg_of(common).output_dir)
    train_main(common)
    uninterrupted = final_weights(run)
    # Second run in a fresh folder with the same PCA and cache: stopped at step 4, then resumed to 8.
    import shutil

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(run / "pca", resumed_dir / "pca")
    shutil.copytree(run / "cache", resumed_dir / "cache")
    again = [*common, f"output_dir={resumed_dir}"]
    stop_at(monkeypatch, 4)
    with Trainer(cfg_of(again)) as trainer:
        assert trainer.train() is False
    assert [p.name for p in complete_checkpoints(resumed_dir)] == ["checkpoint-4"]
    assert not (resumed_dir / "controlnet").exists()
    monkeypatch.undo()
    train_main([*again, "train.resume_from_checkpoint=latest"])
    resumed = final_weights(resumed_dir)
    assert uninterrupted.keys() == resumed.keys()
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)
    # A compiled ControlNet is saved under its own names (no torch.compile wrapper prefix), in every file.
    for weights in [resumed, load_file(resumed_dir / "checkpoint-4" / "controlnet" /
                                       "diffusion_pytorch_model.safetensors")]:
        assert not any("_orig_mod" in k for k in weights) and "controlnet_mid_block.weight" in weights


def test_a_kill_during_a_checkpoint_write_leaves_latest_loadable(train_args, monkeypatch):
    cfg = cfg_of(train_args, "train.checkpointing_steps=2", "train.max_train_steps=4")
    out = Path(cfg.output_dir)
    real_save_file = checkpointing.save_file

    def dies_while_writing_the_second(tensors, path):
        real_save_file(tensors, path)
        if "checkpoint-4" in str(path):
            raise SystemExit("killed in the middle of writing checkpoint-4")

    monkeypatch.setattr(checkpointing, "save_file", dies_while_writing_the_second)
    with pytest.raises(SystemExit), Trainer(cfg) as trainer:
        trainer.train()
    assert (out / "checkpoint-4.tmp").is_dir()  # the half-written one is there, under its temporary name
    assert resolve_checkpoint(out, "latest") == out / "checkpoint-2"
    monkeypatch.undo()
    train_main([*train_args, "train.checkpointing_steps=2", "train.max_train_steps=4",
                "train.resume_from_checkpoint=latest"])
    assert (out / "controlnet" / "lumen.json").is_file()
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]


@pytest.mark.parametrize("log_every", [1, 4])
def test_a_nan_loss_stops_at_once_naming_the_step_and_keeps_the_checkpoint(train_args, log_every):
    """Found at the next health check (every train.log_every steps), named with its own step, before the next
    checkpoint is written."""
    cfg = cfg_of(train_args, "train.checkpointing_steps=2", "train.max_train_steps=6", f"train.log_every={log_every}")
    with Trainer(cfg) as trainer:
        real_forward = trainer.task.forward
        calls = []

        def forward(*args, **kwargs):
            result = real_forward(*args, **kwargs)
            calls.append(1)
            if len(calls) == 3:
                result.loss = result.loss * float("nan")
            return result

        trainer.task.forward = forward
        with pytest.raises(TrainingDivergedError) as err:
            trainer.train()
    assert "step 3" in str(err.value) and "fp16" in str(err.value) and "learning rate" in str(err.value)
    assert [p.name for p in complete_checkpoints(cfg.output_dir)] == ["checkpoint-2"]


def test_a_corrupt_image_is_skipped_and_reported_and_the_run_completes(train_args, synthetic_root, tmp_path, caplog):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    broken = sorted((data / "train2017").glob("*.jpg"))[2]
    broken.write_bytes(broken.read_bytes()[:200])
    cfg = cfg_of(train_args, "train.use_cache=false", f"data.root={data}", "data.max_bad_fraction=0.2",
                 "train.max_train_steps=3")
    with Trainer(cfg) as trainer:
        trainer.train()
    assert str(broken) in trainer.problems.problems
    assert any(str(broken) in r.message for r in caplog.records)
    assert (Path(cfg.output_dir) / "controlnet" / "lumen.json").is_file()


def test_too_many_corrupt_images_stop_the_run_with_the_list(train_args, synthetic_root, tmp_path):
    import shutil

    from lumen.data.problems import TooManyBadInputs

    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    for path in sorted((data / "train2017").glob("*.jpg"))[:3]:
        path.write_bytes(b"not a jpeg")
    cfg = cfg_of(train_args, "train.use_cache=false", f"data.root={data}", "data.max_bad_fraction=0.1",
                 "train.max_train_steps=3")
    with pytest.raises(TooManyBadInputs, match="max_bad_fraction"), Trainer(cfg) as trainer:
        trainer.train()


def test_cached_and_image_paths_agree(train_args):
    """With the same generator state, the same image gives (almost) the same loss on both data paths: the
    cache only adds float16 rounding."""
    cfg = cfg_of(train_args)
    from lumen.data.dataset import collate_skipping_bad
    from lumen.layout.cached_dataset import collate_cached

    with Trainer(cfg_of(train_args, "train.use_cache=false")) as on_images:  # one run at a time in a folder
        images = on_images.dataset
    trainer = Trainer(cfg)
    cached_batch = collate_cached([trainer.dataset[i] for i in range(4)])
    image_batch = collate_skipping_bad([images[i] for i in range(4)])
    assert cached_batch["caption"] == image_batch["caption"]
    controlnet = trainer.accelerator.unwrap_model(trainer.controlnet)
    with torch.no_grad():
        losses = [trainer.task.forward(controlnet, batch, torch.Generator().manual_seed(7)).loss.item()
                  for batch in (cached_batch, image_batch)]
    trainer.close()
    assert losses[0] == pytest.approx(losses[1], rel=2e-3)


@pytest.mark.parametrize("setting, package", [("train.attention=xformers", "xformers"),
                                              ("train.use_8bit_adam=true", "bitsandbytes")])
def test_optional_packages_missing_give_a_clear_error(train_args, setting, package):
    try:
        __import__(package)
        pytest.skip(f"{package} is installed here")
    except ImportError:
        pass
    with pytest.raises(MissingDependencyError, match=package):
        Trainer(cfg_of(train_args, setting))


def test_a_missing_cache_says_how_to_make_it(train_args, tmp_path):
    import shutil

    cfg = cfg_of(train_args)
    shutil.rmtree(Path(cfg.output_dir) / "cache")
    with pytest.raises(LumenError, match="lumen encode-layouts"):
        Trainer(cfg)


def test_ema_weights_are_saved_and_resumed(train_args, monkeypatch):
    from diffusers import ControlNetModel

    args = [*train_args, "train.ema=true", "train.ema_decay=0.5", "train.max_train_steps=4"]
    stop_at(monkeypatch, 2)
    with Trainer(cfg_of(args)) as trainer:
        trainer.train()
    monkeypatch.undo()
    with Trainer(cfg_of(args, "train.resume_from_checkpoint=latest")) as trainer:
        trainer.train()
    assert trainer.ema.optimization_step == 4  # two steps before the stop, two after the resume
    out = Path(cfg_of(args).output_dir)
    ema = ControlNetModel.from_pretrained(out / "controlnet_ema")
    plain = ControlNetModel.from_pretrained(out / "controlnet")
    assert (out / "controlnet_ema" / "lumen.json").is_file()
    differs = [not torch.equal(a, b) for a, b in zip(ema.state_dict().values(), plain.state_dict().values())]
    assert any(differs)


def test_wandb_logs_offline(train_args, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    (tmp_path / "wandb").mkdir()
    with Trainer(cfg_of(train_args, "train.report_to=wandb", "train.max_train_steps=2")) as trainer:
        trainer.train()
    runs = list((tmp_path / "wandb").rglob("*.wandb"))
    assert runs, "no offline wandb run file was written"


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; a run with another mixed precision needs it cleared."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_trains_and_validates_on_images_with_float32_master_weights(train_args, tmp_path,
                                                                         fresh_accelerate_state):
    from accelerate.state import AcceleratorState

    from lumen_train.commands import fit_pca

    # Layouts on the fly come from the bf16 UNet: the PCA must have been fitted on bf16 features too.
    pca16 = f"layout.pca_dir={tmp_path / 'pca-bf16'}"
    assert fit_pca.main([*train_args, "layout.dtype=bfloat16", pca16]) == 0
    assert json.loads((tmp_path / "pca-bf16" / "pca.json").read_text())["dtype"] == "bfloat16"
    AcceleratorState._reset_state(reset_partial_state=True)
    cfg = cfg_of(train_args, "train.mixed_precision=bf16", "train.use_cache=false", "train.max_train_steps=2",
                 "validation.steps=2", "validation.num_images=1", "validation.num_inference_steps=2",
                 "validation.metrics=true", pca16)
    with Trainer(cfg) as trainer:
        trainer.train()
    assert trainer.parts.unet.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in trainer.accelerator.unwrap_model(trainer.controlnet).parameters())
    out = Path(cfg.output_dir)
    assert [p.name for p in (out / "validation").glob("*.png")] == ["step-000002.png"]
    weights = final_weights(out)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_fp16_without_a_gpu_is_refused_with_what_to_use(train_args, fresh_accelerate_state):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: fp16 is allowed")
    with pytest.raises(LumenError, match="mixed_precision=bf16 or no"):
        Trainer(cfg_of(train_args, "train.mixed_precision=fp16"))
