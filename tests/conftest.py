"""Shared fixtures: the tiny Stable Diffusion and the synthetic data set are built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the suite may reach the Hub; tests that check the online path set their own environment.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture
def golden():
    """``golden(name, values, atol, rtol=0)``: compare numbers with tests/golden/<name>.json (see
    tests/test_golden.py); with LUMEN_UPDATE_GOLDEN=1 in the environment, write them there instead."""
    import json

    import numpy as np

    def check(name: str, values, atol: float, rtol: float = 0.0) -> None:
        path = GOLDEN / f"{name}.json"
        if os.environ.get("LUMEN_UPDATE_GOLDEN") == "1":
            GOLDEN.mkdir(exist_ok=True)
            path.write_text(json.dumps(values) + "\n")
            return
        if not path.is_file():
            pytest.fail(f"{path} is missing: make it with "
                        f"LUMEN_UPDATE_GOLDEN=1 bash scripts/test.sh -k 'golden or evaluate_writes'")
        expected = np.asarray(json.loads(path.read_text()), dtype=float)
        np.testing.assert_allclose(np.asarray(values, dtype=float), expected, atol=atol, rtol=rtol,
                                   err_msg=f"{name} differs from {path}")

    return check


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    from lumen.testing.tiny_sd import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from lumen.testing.synthetic_coco import write_synthetic_coco_stuff

    return write_synthetic_coco_stuff(tmp_path_factory.mktemp("data") / "coco", num_train=12, num_val=4,
                                      width=96, height=80, seed=3, progress=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real COCO / COCO-Stuff files beside the project; tests using them skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def tiny_argv(output_dir, model, data) -> list[str]:
    """Entry-point arguments for the tiny model on the synthetic data at 64 px (4x4 feature grid, 8 components)."""
    return [str(REPO / "configs" / "tiny.yaml"), f"output_dir={output_dir}", f"model.pretrained={model}",
            f"data.root={data}", "data.resolution=64", "pca.num_samples=150", "pca.n_components=8",
            "encode.shard_size=5", "encode.visualize=0", "layout.batch_size=4"]


@pytest.fixture(scope="session")
def tiny_args_for(tiny_sd_dir, synthetic_root):
    """``tiny_args_for(output_dir)``: the tiny arguments for a folder of a longer-lived fixture."""
    return lambda output_dir: tiny_argv(output_dir, tiny_sd_dir, synthetic_root)


@pytest.fixture
def tiny_args(tmp_path, tiny_sd_dir, synthetic_root):
    """Entry-point arguments for the tiny model on the session's synthetic data, writing under tmp_path."""
    return tiny_argv(tmp_path / "run", tiny_sd_dir, synthetic_root)


@pytest.fixture(scope="session")
def prepared_layouts(tmp_path_factory, tiny_sd_dir, synthetic_root):
    """A PCA and a layout cache of the synthetic data (64 px), made once; tests copy them into their runs."""
    from lumen_train.commands import encode_layouts, fit_pca

    base = tmp_path_factory.mktemp("prepared")
    args = tiny_argv(base, tiny_sd_dir, synthetic_root)
    assert fit_pca.main(args) == 0 and encode_layouts.main(args) == 0
    return base


@pytest.fixture
def train_args(tmp_path, tiny_args, prepared_layouts):
    """Trainer arguments for a fresh run directory that already holds the prepared PCA and cache."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(prepared_layouts / "pca", run / "pca")
    shutil.copytree(prepared_layouts / "cache", run / "cache")
    return [*tiny_args, "train.batch_size=4", "train.max_train_steps=4", "train.checkpointing_steps=100",
            "train.report_to=none", "validation.steps=0", "train.learning_rate=1e-3"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_sd_dir, synthetic_root, prepared_layouts):
    """A run folder with the prepared PCA and cache and a ControlNet trained a few steps with component dropout.

    Returns the entry-point arguments for that folder (64 px, 8 components)."""
    import shutil

    from lumen_train.commands.train_controlnet import main as train_main

    run = tmp_path_factory.mktemp("trained")
    shutil.copytree(prepared_layouts / "pca", run / "pca")
    shutil.copytree(prepared_layouts / "cache", run / "cache")
    args = tiny_argv(run, tiny_sd_dir, synthetic_root)
    assert train_main([*args, "train.max_train_steps=6", "train.batch_size=4", "train.report_to=none",
                       "validation.steps=0", "train.checkpointing_steps=3", "train.learning_rate=1e-3",
                       "train.component_dropout=0.5"]) == 0
    return args


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> dict[str, Path]:
    """Tiny transformers backbones (random weights, patch 4, 32 px input) saved as model folders, by kind."""
    from lumen.testing.tiny_backbones import KINDS, save_tiny_backbone

    base = tmp_path_factory.mktemp("backbones")
    return {kind: save_tiny_backbone(kind, base / kind, seed=0) for kind in KINDS}
