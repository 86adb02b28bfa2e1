"""The trainer as users start it: separate processes, accelerate launch with two ranks, signals, kills."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lumen_train.checkpointing import complete_checkpoints, resolve_checkpoint
from lumen_train.commands.train_controlnet import main as train_main

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.multiprocess


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def test_two_processes_train_on_disjoint_batches_with_identical_weights(train_args):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "train/train_controlnet.py", *train_args, "train.record_batches=true", "train.max_train_steps=3",
               "train.batch_size=2", "validation.steps=2", "validation.num_images=2",
               "validation.num_inference_steps=2", "train.checkpointing_steps=2"]
    result = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "world size 2" in result.stderr + result.stdout
    out = Path(train_args[1].split("=", 1)[1])
    records = [json.loads((out / "logs" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in records] == [2, 2]
    for step_0, step_1 in zip(records[0]["steps"], records[1]["steps"]):
        assert not set(step_0) & set(step_1)  # the ranks saw disjoint batches at every step
    seen = [i for r in records for step in r["steps"] for i in step]
    assert len(seen) == 3 * 2 * 2 and len(set(seen)) == 12  # 3 steps x 2 ranks x 2 images; 12 distinct
    assert records[0]["weights_fingerprint"] == records[1]["weights_fingerprint"]
    assert (out / "checkpoint-2" / "controlnet").is_dir() and (out / "validation" / "step-000002.png").is_file()


def test_the_trained_controlnet_samples_in_diffusers_without_lumen(train_args, tiny_sd_dir):
    assert train_main(train_args) == 0  # in this process; the sampling below needs one without Lumen
    out = Path(train_args[1].split("=", 1)[1])
    script = textwrap.dedent(f"""
        import sys, torch
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
        controlnet = ControlNetModel.from_pretrained({str(out / "controlnet")!r})
        pipe = StableDiffusionControlNetPipeline.from_pretrained({str(tiny_sd_dir)!r}, controlnet=controlnet,
                                                                 safety_checker=None)
        layout = torch.randn(1, controlnet.config.conditioning_channels, 64, 64)
        image = pipe("a red ball on the grass", image=layout, height=64, width=64, num_inference_steps=3,
                     generator=torch.Generator().manual_seed(0), output_type="np").images
        assert image.shape == (1, 64, 64, 3), image.shape
        assert not any(name == "lumen" or name.startswith("lumen.") for name in sys.modules)
        print("sampled", image.shape, float(image.std()))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd="/", env=env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sampled (1, 64, 64, 3)" in result.stdout


def start_training(args):
    return subprocess.Popen([sys.executable, "-m", "lumen_train", "train", *args], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def test_sigterm_saves_a_checkpoint_and_exits_with_code_3(train_args, caplog):
    out = Path(train_args[1].split("=", 1)[1])
    process = start_training([*train_args, "train.max_train_steps=100000", "train.checkpointing_steps=100000",
                              "train.report_to=tensorboard"])
    try:
        assert wait_for(lambda: any((out / "logs").rglob("events.out.tfevents.*")), process)
        time.sleep(2.0)  # let it take a few steps
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 3, output[-3000:]  # stopped, not finished: a scheduler can tell them apart
    assert "Traceback" not in output
    checkpoints = complete_checkpoints(out)
    assert len(checkpoints) == 1 and "stopped on request at step" in output
    caplog.set_level(logging.INFO)
    assert train_main([*train_args, "train.resume_from_checkpoint=latest",
                       f"train.max_train_steps={int(checkpoints[0].name.split('-')[1]) + 1}"]) == 0
    assert f"resumed from {checkpoints[0]}" in caplog.text


def test_sigkill_while_checkpointing_every_step_leaves_latest_loadable(train_args, caplog):
    out = Path(train_args[1].split("=", 1)[1])
    process = start_training([*train_args, "train.max_train_steps=100000", "train.checkpointing_steps=1",
                              "train.checkpoints_total_limit=2"])
    # Kill it the moment a checkpoint folder is being written, i.e. in the middle of a write.
    try:
        assert wait_for(lambda: len(complete_checkpoints(out)) >= 2 and any(out.glob("checkpoint-*.tmp")), process)
    finally:
        process.kill()
        process.communicate(timeout=60)
    latest = resolve_checkpoint(out, "latest")
    assert latest is not None
    step = int(latest.name.split("-")[1])
    caplog.set_level(logging.INFO)
    assert train_main([*train_args, "train.resume_from_checkpoint=latest", f"train.max_train_steps={step + 1}"]) == 0
    assert f"resumed from {latest}" in caplog.text
