"""scripts/gpu_check.sh without a GPU: the scaled-down run that proves the GPU check works end to end."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the check runs at full size (minutes)")
def test_gpu_check_runs_scaled_down_on_the_cpu_and_says_so(tmp_path):
    result = subprocess.run(["bash", "scripts/gpu_check.sh", "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "No GPU: scaled down" in result.stdout and "scaled down (no GPU)" in result.stdout
    report = json.loads((tmp_path / "cpu-scaled-down.json").read_text())
    assert report["scaled_down"] is True and report["device"] == "cpu"
    steps = report["sections"]["train_step"]
    assert [r["name"] for r in steps] == ["batch 2", "batch 2 + checkpointing"]
    # FLOPs are counted (the tiny model's step at 64 px is a few GFLOP per image), and the rates are real.
    assert all(1e8 < r["flops_per_image"] < 1e11 and r["images_per_s"] > 0 for r in steps)
    assert report["sections"]["diffusers"]["ratio"] > 0
    assert all(rate > 0 for rate in report["sections"]["loader_images_per_s"].values())
    runs = report["sections"]["end_to_end"]
    assert runs["bf16"]["finished"] is True and runs["bf16"]["validation_grids"] == ["step-000002.png"]
    assert runs["fp16"] == "not run: needs a GPU"
    assert sorted(report["skipped"]) == ["layout_extraction", "sampling", "train_step_compiled"]
    assert "Self CPU" in report["sections"]["profile"]["table"]  # torch.profiler's table of the top operators
    markdown = (tmp_path / "cpu-scaled-down.md").read_text()
    assert "| batch 2 + checkpointing |" in markdown and "scaled down" in markdown
