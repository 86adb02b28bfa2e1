import torch

from lumen.config import load_config
from lumen.cpu.threads import TINY_MODEL_PARAMETERS, apply_cpu_threads, choose_cpu_threads


def test_a_tiny_model_computes_with_one_thread_unless_told_otherwise():
    tiny, large = 2_500_000, 860_000_000
    assert choose_cpu_threads(0, tiny, default_threads=8, threads_from_environment=False) == 1
    assert choose_cpu_threads(0, large, default_threads=8, threads_from_environment=False) == 8
    assert choose_cpu_threads(0, TINY_MODEL_PARAMETERS, 8, False) == 8
    # OMP_NUM_THREADS (the user's, or a launcher's) and the config key win over the choice
    assert choose_cpu_threads(0, tiny, default_threads=4, threads_from_environment=True) == 4
    assert choose_cpu_threads(3, tiny, default_threads=8, threads_from_environment=False) == 3
    assert choose_cpu_threads(3, large, default_threads=8, threads_from_environment=True) == 3


def test_apply_sets_torchs_count_on_the_cpu_only(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert apply_cpu_threads(0, torch.nn.Linear(10, 10), torch.device("cpu")) == 1
        assert torch.get_num_threads() == 1
        assert apply_cpu_threads(2, torch.nn.Linear(10, 10), torch.device("cpu")) == 2
        assert torch.get_num_threads() == 2
        assert apply_cpu_threads(0, torch.nn.Linear(10, 10), torch.device("meta")) == 2  # not the CPU's work
    finally:
        torch.set_num_threads(before)


def test_cpu_threads_is_a_checked_key(tmp_path):
    import pytest

    from lumen.config import ConfigError

    assert load_config([], ["cpu_threads=4"]).cpu_threads == 4
    with pytest.raises(ConfigError, match="cpu_threads"):
        load_config([], ["cpu_threads=-1"])
