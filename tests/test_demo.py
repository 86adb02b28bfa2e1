from pathlib import Path

from diffusers import StableDiffusionPipeline

from lumen_train.commands import demo, make_tiny_sd

REPO = Path(__file__).resolve().parent.parent


def test_demo_builds_model_and_data_and_runs_every_stage(tmp_path, capfd):
    out = tmp_path / "demo"
    args = [str(REPO / "configs" / "tiny.yaml"), f"output_dir={out}", "synthetic.num_train=6", "synthetic.num_val=2",
            "tiny_model.vae_train_steps=0", "pca.num_samples=90", "pca.n_components=8", "encode.shard_size=4",
            "train.max_train_steps=4", "train.checkpointing_steps=2", "validation.steps=4",
            "validation.num_inference_steps=2", "data.resolution=64", "compare.backbones=[sd,dinov2]"]
    assert demo.main(args) == 0
    captured = capfd.readouterr()  # capfd: the stages run as subprocesses
    text = captured.out + captured.err
    assert "doctor: PASS" in text and "Demo finished" in text
    assert (out / "config.yaml").is_file()
    assert (out / "data_preview.png").stat().st_size > 10_000
    assert (out / "pca" / "explained_variance.png").is_file()
    assert len(list((out / "cache" / "val" / "pictures").glob("*.png"))) == 2
    assert (out / "cache" / "train" / "index.json").is_file()
    assert "world size 2" in text
    assert (out / "checkpoint-2" / "controlnet").is_dir() and (out / "checkpoint-4" / "controlnet").is_dir()
    assert (out / "validation" / "step-000004.png").is_file()
    assert (out / "controlnet" / "lumen.json").is_file()
    assert (out / "tiny-sd" / "model_index.json").is_file()
    assert (out / "backbones" / "dinov2" / "preprocessor_config.json").is_file()
    assert (out / "compare" / "comparison.png").is_file()
    assert len(list((out / "data" / "train2017").glob("*.jpg"))) == 6


def test_a_second_demo_reuses_the_tiny_models(tmp_path, capsys):
    from lumen.config import load_config

    cfg = load_config([REPO / "configs" / "tiny.yaml"], [f"output_dir={tmp_path}", "tiny_model.vae_train_steps=0"])
    demo.prepare_tiny_models(cfg, tmp_path)
    weights = tmp_path / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors"
    stamps = {p: p.stat().st_mtime_ns for p in [weights, *(tmp_path / "backbones").rglob("*.safetensors")]}
    assert len(stamps) == 6  # the SD UNet and five transformers
    capsys.readouterr()
    demo.prepare_tiny_models(cfg, tmp_path)
    assert "reusing" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_make_tiny_sd_writes_a_loadable_pipeline(tmp_path):
    assert make_tiny_sd.main([str(tmp_path / "sd"), "--seed", "4"]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "sd")
    assert pipe.unet.config.block_out_channels == [32, 32, 64, 64]
