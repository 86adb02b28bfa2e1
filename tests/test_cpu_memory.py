"""lumen.cpu_memory: memory freed at the end of a training step is reused by the next, not faulted in again."""

import statistics
import subprocess
import sys

import pytest

# A few training steps of a small convolutional net; prints the page faults of each step after the first.
STEPS = """
import resource, sys, torch
torch.set_num_threads(2)
if sys.argv[1] == "keep":
    from lumen.cpu.memory import keep_freed_cpu_memory
    assert keep_freed_cpu_memory(), "not applied"
torch.manual_seed(0)
blocks = []
for _ in range(6):
    blocks += [torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.GroupNorm(8, 32), torch.nn.SiLU()]
net = torch.nn.Sequential(*blocks)
x = torch.randn(1, 32, 128, 128)
faults = []
for step in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).square().mean().backward()
    net.zero_grad(set_to_none=True)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults[1:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_later_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again():
    def faults_per_later_step(mode):
        """Median page faults of a step after the first (the median: a step now and then grows a heap)."""
        out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
        return statistics.median(int(n) for n in out.stdout.split())

    default, kept = faults_per_later_step("default"), faults_per_later_step("keep")
    assert default > 2000, f"glibc's defaults faulted only {default} pages a step: the workload no longer shows it"
    assert kept < default / 5, f"kept: {kept} page faults a step against {default} with glibc's defaults"
