"""How multi-process runs end: cleanly when finished, with exit code 3 and a checkpoint when stopped, and a
stopped run continues on another number of processes."""

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lumen.config import load_config
from lumen.errors import EXIT_STOPPED
from lumen.folder_lock import FolderLock
from lumen_train.checkpointing import complete_checkpoints
from lumen_train.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.multiprocess


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def launch(args, **kwargs):
    command = [sys.executable, "-m", "lumen_train", "launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", "0", "train", *args]
    return subprocess.Popen(command, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def test_a_finished_two_process_run_exits_cleanly(train_args):
    """Trackers, checkpoints and validation on two gloo ranks. An unordered shutdown used to fail here at random;
    test_closing_ends_the_process_group_and_its_threads checks its cause itself, so one run is enough."""
    process = launch([*train_args, "train.batch_size=2", "train.max_train_steps=2", "train.checkpointing_steps=1",
                      "train.report_to=tensorboard", "validation.steps=2", "validation.num_images=2",
                      "validation.num_inference_steps=2", "train.overwrite_output_dir=true"])
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    assert "terminate called" not in output and "Traceback" not in output
    assert "final ControlNet" in output


def test_sigterm_to_the_launcher_stops_both_processes_with_a_checkpoint_and_code_3(train_args, caplog):
    out = Path(train_args[1].split("=", 1)[1])
    process = launch([*train_args, "train.batch_size=2", "train.max_train_steps=100000",
                      "train.checkpointing_steps=100000", "train.report_to=tensorboard"])
    try:
        deadline = time.time() + 300
        while not any((out / "logs").rglob("events.out.tfevents.*")) and time.time() < deadline:
            assert process.poll() is None, process.stdout.read()[-3000:]
            time.sleep(0.1)
        time.sleep(3.0)  # a few steps
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == EXIT_STOPPED, output[-3000:]
    assert "Traceback" not in output
    assert output.count("stopped on request at step") == 2  # both ranks, at the same step
    checkpoints = complete_checkpoints(out)
    assert len(checkpoints) == 1
    step = int(checkpoints[0].name.split("-")[1])

    # One process continues what two started: weights, optimizer and schedule from the same step, with a
    # warning that the data order is not the original run's.
    caplog.set_level(logging.WARNING)
    cfg = load_config([train_args[0]], [*train_args[1:], "train.batch_size=2", "train.resume_from_checkpoint=latest",
                                        f"train.max_train_steps={step + 2}", "train.report_to=none"])
    trainer = Trainer(cfg)
    try:
        assert trainer.train() is True
    finally:
        trainer.close()
    assert trainer.global_step == step + 2
    assert any("written by 2 process(es) and this run has 1" in r.message for r in caplog.records)
    assert (out / "controlnet" / "lumen.json").is_file()


def test_a_second_launch_on_a_held_folder_ends_in_one_line_and_code_2(train_args):
    """Both ranks meet the same refusal: the launcher prints it once, with no torch elastic traceback."""
    out = Path(train_args[1].split("=", 1)[1])
    holder = FolderLock(out, "lumen train").acquire()
    try:
        process = launch(train_args)
        output, _ = process.communicate(timeout=300)
    finally:
        holder.release()
    assert process.returncode == 2, output[-3000:]
    assert "Traceback" not in output and "ChildFailedError" not in output
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("lumen train: error: ") and \
        "is in use by another run" in errors[0], output[-3000:]


def test_closing_ends_the_process_group_and_its_threads(tmp_path):
    """A process group that outlives close_processes keeps gloo's threads until the interpreter's teardown,
    where they can abort a finished run: after closing, none may be left (on either rank)."""
    script = tmp_path / "close_check.py"
    script.write_text(f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
import torch
from lumen_train.distributed import close_processes, make_accelerator

def gloo_threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{{task}}/comm").read())
        except FileNotFoundError:  # the thread ended between listing and reading
            pass
    return sum("gloo" in name for name in names)

accelerator = make_accelerator()
model = torch.nn.Linear(4, 4)
model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
accelerator.backward(model(torch.ones(2, 4)).sum())
optimizer.step()
accelerator.wait_for_everyone()
before = gloo_threads()
model, optimizer = accelerator.unwrap_model(model), None
close_processes(accelerator)
# A joined thread can stay listed in /proc for a moment while the kernel finishes its exit; one that
# outlives the group stays until the interpreter ends, far longer than this wait.
deadline = time.monotonic() + 5
while gloo_threads() and time.monotonic() < deadline:
    time.sleep(0.05)
print(f"rank {{accelerator.process_index}}: gloo threads {{before}} before closing, {{gloo_threads()}} after")
""")
    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc here to count threads")
    command = [sys.executable, "-m", "lumen_train", "launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", "0", str(script)]
    result = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # The two ranks print into one pipe unbuffered, so one's line can run into the other's: read the reports,
    # not the lines.
    counts = re.findall(r"rank (\d): gloo threads (\d+) before closing, (\d+) after", result.stdout)
    assert sorted(rank for rank, _, _ in counts) == ["0", "1"], result.stdout
    assert all(after == "0" for _, _, after in counts), counts
    assert all(before != "0" for _, before, _ in counts), counts  # there were threads to end
