"""The training run's folder: one run at a time, no mixing with another run's checkpoints, verified
checkpoints, a full disk that keeps the last good checkpoint, every run closed."""

import errno
import json
import logging
from pathlib import Path

import pytest
from safetensors import SafetensorError

from lumen.config import load_config
from lumen.errors import EXIT_STOPPED, StorageError
from lumen.folder_lock import FolderInUseError, FolderLock
from lumen_train import trainer as trainer_module
from lumen_train.checkpointing import CheckpointNotFoundError, complete_checkpoints, resolve_checkpoint
from lumen_train.commands.train_controlnet import main as train_main
from lumen_train.trainer import OutputDirInUseError, Trainer


def cfg_of(args, *more):
    return load_config([args[0]], [*args[1:], *more])


def out_of(args) -> Path:
    return Path(cfg_of(args).output_dir)


def names(out: Path) -> list[str]:
    return [p.name for p in complete_checkpoints(out)]


def test_a_fresh_run_beside_another_runs_checkpoints_stops_and_deletes_nothing(train_args):
    out = out_of(train_args)
    assert train_main([*train_args, "train.max_train_steps=6", "train.checkpointing_steps=3"]) == 0
    assert names(out) == ["checkpoint-3", "checkpoint-6"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lumen.lock"}
    with pytest.raises(OutputDirInUseError) as err:
        train_main([*train_args, "train.max_train_steps=2", "train.checkpointing_steps=1"])
    message = str(err.value)
    assert "checkpoint-3, checkpoint-6, controlnet" in message and "train.resume_from_checkpoint=latest" in message
    assert "train.overwrite_output_dir=true" in message
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lumen.lock"} == before
    # Asked to, the new run replaces the old one's results, and keeps its own checkpoints.
    assert train_main([*train_args, "train.max_train_steps=2", "train.checkpointing_steps=1",
                       "train.overwrite_output_dir=true", "train.checkpoints_total_limit=2"]) == 0
    assert names(out) == ["checkpoint-1", "checkpoint-2"]
    assert resolve_checkpoint(out, "latest") == out / "checkpoint-2"


def test_resuming_from_an_older_checkpoint_with_newer_ones_present_stops(train_args):
    out = out_of(train_args)
    assert train_main([*train_args, "train.max_train_steps=4", "train.checkpointing_steps=2"]) == 0
    with pytest.raises(OutputDirInUseError, match="checkpoint-4.*a run resumed from checkpoint-2"):
        Trainer(cfg_of(train_args, f"train.resume_from_checkpoint={out / 'checkpoint-2'}"))


def test_a_checkpoint_that_lost_its_weights_is_skipped_by_latest(train_args, caplog):
    out = out_of(train_args)
    assert train_main([*train_args, "train.max_train_steps=4", "train.checkpointing_steps=2"]) == 0
    (out / "checkpoint-4" / "controlnet" / "diffusion_pytorch_model.safetensors").unlink()
    caplog.set_level(logging.WARNING)
    assert resolve_checkpoint(out, "latest") == out / "checkpoint-2"
    assert any("skipping damaged checkpoint" in r.message and "diffusion_pytorch_model.safetensors is missing"
               in r.message for r in caplog.records)
    with pytest.raises(CheckpointNotFoundError, match="diffusion_pytorch_model.safetensors is missing"):
        resolve_checkpoint(out, str(out / "checkpoint-4"))
    # Resuming takes checkpoint-2 and writes a complete checkpoint-4 over the damaged one.
    assert train_main([*train_args, "train.max_train_steps=6", "train.checkpointing_steps=2",
                       "train.resume_from_checkpoint=latest"]) == 0
    assert names(out) == ["checkpoint-4", "checkpoint-6"]  # configs/tiny.yaml keeps 2
    # A truncated optimizer state is caught by its recorded size.
    optimizer = out / "checkpoint-6" / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    assert resolve_checkpoint(out, "latest") == out / "checkpoint-4"
    assert "optimizer.bin is 100 bytes" in caplog.text


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2"),
                                     SafetensorError("Error while serializing: I/O error: No space left on device "
                                                     "(os error 28)")], ids=["OSError", "torch", "safetensors"])
def test_a_full_disk_while_checkpointing_says_so_and_keeps_the_last_good_checkpoint(train_args, monkeypatch,
                                                                                      failure):
    trainer = Trainer(cfg_of(train_args, "train.max_train_steps=6", "train.checkpointing_steps=2"))
    real = trainer.accelerator.save_state

    def save_state(path, *args, **kwargs):
        if path.endswith("checkpoint-4.tmp"):
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "partial.bin").write_bytes(b"x" * 100)
            raise failure
        return real(path, *args, **kwargs)

    monkeypatch.setattr(trainer.accelerator, "save_state", save_state)
    with pytest.raises(StorageError) as err:
        try:
            trainer.train()
        finally:
            trainer.close()
    out = out_of(train_args)
    assert "the disk is full: writing checkpoint-4" in str(err.value) and "free)" in str(err.value)
    assert f"The last good checkpoint, {out / 'checkpoint-2'}, is kept" in str(err.value)
    assert names(out) == ["checkpoint-2"] and not (out / "checkpoint-4.tmp").exists()


def test_a_second_run_on_the_same_folder_stops_naming_the_first(train_args):
    out = out_of(train_args)
    holder = FolderLock(out, "lumen train").acquire()
    try:
        with pytest.raises(FolderInUseError) as err:
            Trainer(cfg_of(train_args))
        import os
        import socket

        assert f"host {socket.gethostname()}, pid {os.getpid()}" in str(err.value)
        assert not (out / "config.yaml").exists()
    finally:
        holder.release()
    # The lock file stays behind, as after a kill -9; with nobody holding it, it does not block.
    (out / ".lumen.lock").write_text(json.dumps({"host": "elsewhere", "pid": 999999, "command": "x"}))
    assert train_main([*train_args, "train.max_train_steps=1"]) == 0


def test_every_run_is_closed_finished_stopped_or_failed(train_args, monkeypatch):
    closed = []
    real = trainer_module.close_processes
    monkeypatch.setattr(trainer_module, "close_processes", lambda acc: closed.append(1) or real(acc))
    original = Trainer._stop_requested
    monkeypatch.setattr(Trainer, "_stop_requested", lambda self: self.global_step == 2 or original(self))
    assert train_main([*train_args, "train.report_to=tensorboard"]) == EXIT_STOPPED
    out = out_of(train_args)
    assert names(out) == ["checkpoint-2"] and not (out / "controlnet").exists() and closed == [1]
    monkeypatch.undo()
    monkeypatch.setattr(trainer_module, "close_processes", lambda acc: closed.append(2) or real(acc))
    with pytest.raises(CheckpointNotFoundError, match="resume_from_checkpoint=nowhere is not a complete checkpoint"):
        train_main([*train_args, "train.resume_from_checkpoint=nowhere"])  # a refusal while building still closes
    assert closed == [1, 2]
    # The stopped run resumes: config of the resumed run recorded beside the first one's.
    assert train_main([*train_args, "train.resume_from_checkpoint=latest"]) == 0
    assert (out / "config.yaml").is_file() and (out / "config-resumed-from-checkpoint-2.yaml").is_file()


def test_resuming_at_the_last_step_only_writes_the_final_controlnet(train_args):
    out = out_of(train_args)
    assert train_main([*train_args, "train.max_train_steps=2", "train.checkpointing_steps=2"]) == 0
    first = (out / "controlnet" / "diffusion_pytorch_model.safetensors").read_bytes()
    trainer = Trainer(cfg_of(train_args, "train.max_train_steps=2", "train.resume_from_checkpoint=latest"))
    try:
        assert trainer.train() is True
    finally:
        trainer.close()
    assert trainer.global_step == 2
    assert (out / "controlnet" / "diffusion_pytorch_model.safetensors").read_bytes() == first


def test_layouts_on_the_fly_in_another_dtype_than_the_pcas_are_refused(train_args, fresh_accelerate_state):
    from lumen.layout.settings import SettingsMismatchError

    with pytest.raises(SettingsMismatchError) as err:
        Trainer(cfg_of(train_args, "train.mixed_precision=bf16", "train.use_cache=false"))
    assert "bfloat16" in str(err.value) and "made in float32" in str(err.value)
    assert "layout.dtype=bfloat16" in str(err.value)


@pytest.fixture
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_sampling_in_another_dtype_than_the_layouts_is_refused(trained_run):
    from lumen.build import SamplingSetup
    from lumen.training.controlnet import ControlNetMismatchError

    cfg = load_config([trained_run[0]], [*trained_run[1:], "sample.dtype=bfloat16"])
    with pytest.raises(ControlNetMismatchError) as err:
        SamplingSetup(cfg, cfg.sample.controlnet)
    assert "dtype: 'bfloat16' (now) vs 'float32'" in str(err.value) and "leave sample.dtype unset" in str(err.value)
    metadata = json.loads((Path(cfg.output_dir) / "controlnet" / "lumen.json").read_text())
    assert metadata["layout"]["dtype"] == "float32"



def test_a_kill_while_pruning_leaves_no_half_checkpoint_and_the_next_run_cleans_up(train_args, monkeypatch, caplog):
    """A checkpoint is renamed before it is deleted: a kill in the middle of the deletion (simulated: the deletion
    removes one file, then the process dies) leaves checkpoint-2.pruned, never a checkpoint-2 with half its
    files; the next run removes it, and a half-written checkpoint, and says so."""
    import shutil

    from lumen_train import checkpointing

    out = out_of(train_args)
    real_rmtree = shutil.rmtree

    def killed_while_deleting(path, *args, **kwargs):
        if Path(path).name in ("checkpoint-2", "checkpoint-2.pruned"):
            (Path(path) / "controlnet" / "diffusion_pytorch_model.safetensors").unlink()
            raise SystemExit("killed while deleting checkpoint-2")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpointing.shutil, "rmtree", killed_while_deleting)
    with pytest.raises(SystemExit), Trainer(cfg_of(train_args, "train.max_train_steps=6", "train.checkpointing_steps=2",
                                                   "train.checkpoints_total_limit=1")) as trainer:
        trainer.train()
    monkeypatch.setattr(checkpointing.shutil, "rmtree", real_rmtree)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2.pruned", "checkpoint-4"]
    (out / "checkpoint-9.tmp").mkdir()  # a write a kill cut short
    caplog.set_level(logging.WARNING)
    assert train_main([*train_args, "train.max_train_steps=6", "train.checkpointing_steps=2",
                       "train.checkpoints_total_limit=1", "train.resume_from_checkpoint=latest"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]
    assert "removed what an interrupted run left unfinished: checkpoint-2.pruned (half deleted), checkpoint-9.tmp " \
           "(half written)" in caplog.text


def test_pruning_also_removes_damaged_checkpoints_older_than_the_kept_ones(train_args, caplog):
    """What an older Lumen's interrupted pruning left (a checkpoint missing files) goes at the next pruning."""
    out = out_of(train_args)
    assert train_main([*train_args, "train.max_train_steps=4", "train.checkpointing_steps=2"]) == 0
    (out / "checkpoint-2" / "optimizer.bin").unlink()
    caplog.set_level(logging.WARNING)
    assert train_main([*train_args, "train.max_train_steps=8", "train.checkpointing_steps=2",
                       "train.resume_from_checkpoint=latest"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    assert f"removing {out / 'checkpoint-2'}: damaged (optimizer.bin is missing)" in caplog.text


def test_resuming_where_every_checkpoint_is_damaged_does_not_advise_resuming(train_args):
    out = out_of(train_args)
    assert train_main([*train_args, "train.max_train_steps=2", "train.checkpointing_steps=2"]) == 0
    weights = out / "checkpoint-2" / "controlnet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    with pytest.raises(OutputDirInUseError) as err:
        Trainer(cfg_of(train_args, "train.resume_from_checkpoint=latest"))
    message = str(err.value)
    assert message.startswith(f"nothing to resume in output_dir={out}: every checkpoint there is damaged "
                              f"(checkpoint-2: controlnet/diffusion_pytorch_model.safetensors is missing)"), message
    assert "train.overwrite_output_dir=true" in message and "resume_from_checkpoint" not in message
