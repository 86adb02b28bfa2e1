"""Every backbone through the whole layout pipeline on the tiny model: PCA, cache, training, sampling,
evaluation; artifacts record the backbone and refuse another."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lumen.backbones import BACKBONES as REGISTERED
from lumen.config import load_config
from lumen.layout.cache import CacheMismatchError
from lumen.layout.settings import SettingsMismatchError
from lumen.testing.tiny_backbones import tiny_model_of
from lumen.training.controlnet import ControlNetMismatchError
from lumen_train.commands import encode_layouts, evaluate, fit_pca, sample
from lumen_train.commands.train_controlnet import main as train_main

REPO = Path(__file__).resolve().parent.parent
# Every registered backbone with a transformer (SD alone runs through every other test) -> the tiny model it reads.
BACKBONES = {name: tiny_model_of(name) for name, spec in REGISTERED.items() if spec.transformer is not None}


def backbone_args(tiny_args, tiny_backbones, backbone, out):
    return [*tiny_args, f"output_dir={out}", f"layout.backbone={backbone}",
            f"layout.backbone_model={tiny_backbones[BACKBONES[backbone]]}", "encode.splits=[train]",
            "train.max_train_steps=2", "train.batch_size=4", "train.report_to=none", "validation.steps=0",
            "sample.num_sources=1", "sample.num_inference_steps=2", "sample.prompts=[]"]


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_the_pipeline_runs_on_every_backbone(backbone, tiny_args, tiny_backbones, tmp_path):
    out = tmp_path / "run"
    args = backbone_args(tiny_args, tiny_backbones, backbone, out)
    assert fit_pca.main(args) == 0
    recorded = json.loads((out / "pca" / "pca.json").read_text())
    assert recorded["backbone"] == backbone and recorded["backbone_model"] == str(tiny_backbones[BACKBONES[backbone]])
    assert recorded["image_size"] == 16 and recorded["feature_grid"] == [4, 4]  # patch 4 x 64 px / 16
    assert recorded["facet"] == REGISTERED[backbone].transformer.default_facet
    assert (recorded["layers"] is None) == (not REGISTERED[backbone].uses_sd)  # SD's taps only where SD is used
    assert encode_layouts.main(args) == 0
    assert json.loads((out / "cache" / "cache.json").read_text())["backbone"] == backbone
    assert train_main(args) == 0
    assert json.loads((out / "controlnet" / "lumen.json").read_text())["layout"]["backbone"] == backbone
    assert sample.main(args) == 0
    cfg = load_config([args[0]], [*args[1:], f"evaluate.judge_pca={out / 'pca'}"])
    rows = evaluate.evaluate(cfg)["rows"]
    assert [row["images"] for row in rows] == [1] and rows[0]["miou"] is None


@pytest.fixture(scope="module")
def dinov2_run(tmp_path_factory, tiny_args_for, tiny_backbones):
    out = tmp_path_factory.mktemp("dinov2")
    args = backbone_args(tiny_args_for(out), tiny_backbones, "dinov2", out)
    assert fit_pca.main(args) == 0 and encode_layouts.main(args) == 0 and train_main(args) == 0
    return args, out


def test_artifacts_of_one_backbone_are_refused_under_another(dinov2_run, tiny_backbones):
    args, out = dinov2_run
    other = [*args, "layout.backbone=dino", f"layout.backbone_model={tiny_backbones['dino']}"]
    with pytest.raises(SettingsMismatchError) as err:
        encode_layouts.main(other)
    assert "backbone: 'dino' (config) vs 'dinov2'" in str(err.value) and "facet: 'key' (config) vs 'token'" in str(
        err.value)
    # Another layer: another PCA, and the cache made with the last layer refuses it.
    assert fit_pca.main([*args, "layout.backbone_layer=2", f"layout.pca_dir={out / 'pca-l2'}"]) == 0
    with pytest.raises(CacheMismatchError, match="backbone_layer: 4 \\(cache\\) vs 2 \\(config\\)"):
        encode_layouts.main([*args, "layout.backbone_layer=2", f"layout.pca_dir={out / 'pca-l2'}"])
    with pytest.raises(ControlNetMismatchError, match="backbone: 'sd' \\(now\\) vs 'dinov2'"):
        sample.main([*args, "layout.backbone=sd", f"sample.out_dir={out / 's'}"])


def test_layouts_on_the_fly_and_validation_run_the_backbone(dinov2_run, tmp_path):
    """train.use_cache=false: the DINOv2 backbone makes the layouts every step, and the validation set's."""
    args, _ = dinov2_run
    out = tmp_path / "fly"
    out.mkdir()
    shutil.copytree(dinov2_run[1] / "pca", out / "pca")
    assert train_main([*args, f"output_dir={out}", "train.use_cache=false", "train.max_train_steps=1",
                       "validation.steps=1", "validation.num_images=1", "validation.num_inference_steps=2"]) == 0
    assert (out / "validation" / "step-000001.png").is_file()
    assert json.loads((out / "controlnet" / "lumen.json").read_text())["layout"]["backbone"] == "dinov2"


def test_a_controlnet_trained_on_dinov2_layouts_samples_in_diffusers_alone(dinov2_run, tiny_sd_dir):
    _, out = dinov2_run
    script = textwrap.dedent(f"""
        import sys, torch
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
        controlnet = ControlNetModel.from_pretrained({str(out / "controlnet")!r})
        pipe = StableDiffusionControlNetPipeline.from_pretrained({str(tiny_sd_dir)!r}, controlnet=controlnet,
                                                                 safety_checker=None)
        layout = torch.randn(1, controlnet.config.conditioning_channels, 64, 64)
        image = pipe("a red ball", image=layout, height=64, width=64, num_inference_steps=2,
                     generator=torch.Generator().manual_seed(0), output_type="np").images
        assert not any(name == "lumen" or name.startswith("lumen") for name in sys.modules)
        print("sampled", image.shape, controlnet.config.conditioning_channels)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], cwd="/", env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sampled (1, 64, 64, 3) 8" in result.stdout


def test_another_backbones_samples_need_a_judge_and_an_sd_judge_measures_them(dinov2_run, prepared_layouts):
    from lumen_train.commands.evaluate import EvaluationInputError

    args, out = dinov2_run
    assert sample.main([*args, f"sample.out_dir={out / 'samples'}"]) == 0
    cfg = load_config([args[0]], [*args[1:], f"evaluate.samples={out / 'samples' / 'samples.json'}"])
    with pytest.raises(EvaluationInputError, match="come from dinov2 layouts.*evaluate.judge_pca="):
        evaluate.evaluate(cfg)
    judged = load_config([args[0]], [*args[1:], f"evaluate.samples={out / 'samples' / 'samples.json'}",
                                      f"evaluate.judge_pca={prepared_layouts / 'pca'}", f"evaluate.out={out / 'ev'}"])
    result = evaluate.evaluate(judged)
    assert result["judge"]["backbone"] == "sd" and result["judge"]["own"] is False
    assert "Measured with the sd layouts" in (out / "ev" / "metrics.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_backbone_fits_and_encodes_the_real_photos(backbone, shared_data, tiny_sd_dir, tiny_backbones,
                                                         tmp_path):
    args = [str(REPO / "configs" / "tiny.yaml"), f"output_dir={tmp_path}", f"model.pretrained={tiny_sd_dir}",
            f"data.root={shared_data / 'coco-mini'}", f"layout.backbone={backbone}",
            f"layout.backbone_model={tiny_backbones[BACKBONES[backbone]]}"]
    assert fit_pca.main(args) == 0 and encode_layouts.main(args) == 0
    pca = json.loads((tmp_path / "pca" / "pca.json").read_text())
    wanted = load_config([args[0]], args[1:]).pca.num_samples  # configs/tiny.yaml's
    assert pca["backbone"] == backbone and pca["num_samples"] == wanted and pca["skipped_images"] == 0
    index = json.loads((tmp_path / "cache" / "train" / "index.json").read_text())
    assert index["rows"] == 80


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_backbone_trains_on_two_processes(backbone, tiny_args, tiny_backbones, tmp_path):
    out = tmp_path / "run"
    args = backbone_args(tiny_args, tiny_backbones, backbone, out)
    assert fit_pca.main(args) == 0 and encode_layouts.main(args) == 0
    command = [sys.executable, "-m", "lumen_train", "launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", "0", "train", *args, "train.batch_size=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "world size 2" in result.stdout + result.stderr
    assert json.loads((out / "controlnet" / "lumen.json").read_text())["layout"]["backbone"] == backbone
    assert sample.main(args) == 0
    cfg = load_config([args[0]], [*args[1:], f"evaluate.judge_pca={out / 'pca'}"])
    assert evaluate.evaluate(cfg)["rows"][0]["images"] == 1
