from pathlib import Path

from diffusers import StableDiffusionPipeline

from scripts import demo, make_tiny_sd

REPO = Path(__file__).resolve().parent.parent


def test_demo_builds_model_and_data_then_reuses_them(tmp_path, capsys):
    out = tmp_path / "demo"
    args = [str(REPO / "configs" / "tiny.yaml"), f"output_dir={out}", "synthetic.num_train=6", "synthetic.num_val=2",
            "pca.num_samples=300", "encode.shard_size=4"]
    assert demo.main(args) == 0
    text = capsys.readouterr().out
    assert "doctor: PASS" in text and "Demo finished" in text
    assert (out / "config.yaml").is_file()
    assert (out / "data_preview.png").stat().st_size > 10_000
    assert (out / "pca" / "explained_variance.png").is_file()
    assert len(list((out / "cache" / "val" / "pictures").glob("*.png"))) == 2
    assert (out / "cache" / "train" / "index.json").is_file()
    assert (out / "tiny-sd" / "model_index.json").is_file()
    assert len(list((out / "data" / "train2017").glob("*.jpg"))) == 6
    stamp = (out / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert demo.main(args) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


def test_make_tiny_sd_writes_a_loadable_pipeline(tmp_path):
    assert make_tiny_sd.main([str(tmp_path / "sd"), "--seed", "4"]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "sd")
    assert pipe.unet.config.block_out_channels == [32, 32, 64, 64]
