"""Past one machine and one process, on accelerate: two "machines" on 127.0.0.1, DeepSpeed ZeRO-2, and what
a checkpoint written in one mode does in another."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumen.errors import LumenError
from lumen_train.commands.train_controlnet import main as train_main

REPO = Path(__file__).resolve().parent.parent
LUMEN_LAUNCH = [sys.executable, "-m", "lumen_train", "launch"]  # `lumen launch`
pytestmark = pytest.mark.multiprocess


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def output_dir(args) -> Path:
    return Path(next(a for a in args if a.startswith("output_dir=")).split("=", 1)[1])


def weights(out: Path, folder: str = "controlnet") -> dict:
    return load_file(out / folder / "diffusion_pytorch_model.safetensors")


@pytest.mark.slow
def test_two_machines_on_one_host_train_together_and_agree_on_the_weights(train_args):
    """`accelerate launch --num_machines 2 --machine_rank 0/1 --main_process_ip ...`, one process per
    "machine", the output folder shared as on a cluster file system: one world of two ranks, disjoint batches,
    the same weights on both, a checkpoint that a single machine with two processes resumes."""
    port = free_port()
    args = [*train_args, "train.record_batches=true", "train.max_train_steps=2", "train.batch_size=2",
            "train.checkpointing_steps=2"]
    commands = [[*LUMEN_LAUNCH, "--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank),
                 "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                 "train", *args] for rank in (0, 1)]
    machines = [subprocess.Popen(c, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for c in commands]
    outputs = [m.communicate(timeout=600)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "world size 2" in outputs[0]
    out = output_dir(args)
    records = [json.loads((out / "logs" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in records] == [2, 2]
    for step_0, step_1 in zip(records[0]["steps"], records[1]["steps"]):
        assert not set(step_0) & set(step_1)
    assert records[0]["weights_fingerprint"] == records[1]["weights_fingerprint"]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["state_format"] == "plain"

    # The same checkpoint resumed on one machine with two processes (DDP): the same format, so it continues.
    resumed = subprocess.run([*LUMEN_LAUNCH, "--multi_gpu", "--num_processes", "2",
                              "--main_process_port", str(free_port()), "train", *args,
                              "train.max_train_steps=3", "train.resume_from_checkpoint=latest",
                              "train.overwrite_output_dir=true"],
                             cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr + resumed.stdout and "(step 3)" in resumed.stdout


def test_fsdp_without_a_gpu_is_refused_by_accelerate_in_one_line(train_args):
    """accelerate builds FSDP only on an accelerator (CUDA, XPU, ...): on this CPU machine the FSDP config ends
    with accelerate's own reason, one line and exit code 2, not a traceback."""
    result = subprocess.run([*LUMEN_LAUNCH, "--config_file",
                             "configs/accelerate/fsdp_shard_grad_op.yaml", "--num_processes", "2",
                             "--main_process_port", str(free_port()), "train", *train_args],
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: FSDP runs")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert "FSDP needs a GPU" in result.stdout + result.stderr


def test_a_checkpoint_of_another_distributed_mode_is_refused_naming_both(train_args):
    """accelerate cannot load a DeepSpeed (or FSDP) checkpoint in a plain run: refused before loading, with
    the way to continue from its weights."""
    args = [*train_args, "train.max_train_steps=2", "train.checkpointing_steps=2"]
    assert train_main(args) == 0
    out = output_dir(args)
    state_file = out / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["state_format"] == "plain"
    state_file.write_text(json.dumps(dict(state, state_format="deepspeed")))
    with pytest.raises(LumenError, match="DeepSpeed's format, and this run uses single-process / DDP.*"
                                         "train.controlnet=.*checkpoint-2/controlnet"):
        train_main([*args, "train.max_train_steps=4", "train.resume_from_checkpoint=latest"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed "
                    "(pip install deepspeed)")
def test_deepspeed_zero2_trains_saves_and_resumes_exactly_and_other_modes_say_why_they_cannot(train_args, tmp_path):
    """ZeRO-2 with one process (DeepSpeed's CPU accelerator here): stopped at step 2 and resumed to 4, the
    weights equal an uninterrupted 4-step run; a plain run cannot load its optimizer state and says so."""
    launch = [*LUMEN_LAUNCH, "--config_file", "configs/accelerate/deepspeed_zero2.yaml", "--num_processes", "1"]
    args = [*train_args, "train.batch_size=2", "train.checkpointing_steps=2", "train.mixed_precision=no"]
    out = output_dir(args)
    again = tmp_path / "again"
    again.mkdir()
    for folder in ("pca", "cache"):
        shutil.copytree(out / folder, again / folder)

    def run(*more, launcher=launch):
        result = subprocess.run([*launcher, "--main_process_port", str(free_port()), "train", *args, *more]
                                if launcher else [sys.executable, "-m", "lumen_train", "train", *args, *more],
                                cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
        return result.returncode, result.stdout + result.stderr

    code, log = run("train.max_train_steps=4")
    assert code == 0, log[-3000:]
    code, log = run(f"output_dir={again}", "train.max_train_steps=2")
    assert code == 0, log[-3000:]
    assert json.loads((again / "checkpoint-2" / "trainer_state.json").read_text())["state_format"] == "deepspeed"
    code, log = run(f"output_dir={again}", "train.max_train_steps=4", "train.resume_from_checkpoint=latest",
                    "train.overwrite_output_dir=true")
    assert code == 0, log[-3000:]
    straight, resumed = weights(out), weights(again)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)

    code, log = run(f"output_dir={again}", "train.max_train_steps=6", "train.resume_from_checkpoint=latest",
                    "train.overwrite_output_dir=true", launcher=None)
    assert code == 2 and "Traceback" not in log, log[-3000:]
    assert "in DeepSpeed's format, and this run uses single-process / DDP" in log
