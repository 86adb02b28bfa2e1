import json
from pathlib import Path

from diffusers import StableDiffusionPipeline

from lumen.testing.tiny_backbones import KINDS
from lumen_train.commands import demo, make_tiny_sd

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "tiny-sd"


def test_demo_builds_model_and_data_and_runs_every_stage(tmp_path, capfd):
    out = tmp_path / "demo"
    args = [str(REPO / "configs" / "tiny.yaml"), f"output_dir={out}", "synthetic.num_train=6", "synthetic.num_val=2",
            f"model.pretrained={SHIPPED}", "pca.num_samples=90", "pca.n_components=8", "encode.shard_size=4",
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
    assert json.loads((out / "demo_model.json").read_text())["model"] == str(SHIPPED)
    assert "Time per stage:" in text and "[8] train the ControlNet" in text and "total" in text
    assert (out / "backbones" / "dinov2" / "preprocessor_config.json").is_file()
    assert (out / "compare" / "comparison.png").is_file()
    assert len(list((out / "data" / "train2017").glob("*.jpg"))) == 6


def test_a_second_demo_reuses_the_tiny_backbones_and_a_new_model_makes_its_outputs_stale(tmp_path, capsys,
                                                                                         tiny_sd_dir):
    from lumen.config import load_config

    cfg = load_config([REPO / "configs" / "tiny.yaml"], [f"output_dir={tmp_path}", f"model.pretrained={SHIPPED}"])
    demo.prepare_tiny_models(cfg, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "backbones").rglob("*.safetensors")}
    assert len(stamps) == len(KINDS)  # every tiny model of the registered backbones
    (tmp_path / "pca").mkdir()
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    demo.prepare_tiny_models(cfg, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (tmp_path / "pca").is_dir()  # the same model: everything is kept
    capsys.readouterr()
    other = load_config([REPO / "configs" / "tiny.yaml"], [f"output_dir={tmp_path}", f"model.pretrained={tiny_sd_dir}"])
    demo.prepare_tiny_models(other, tmp_path)
    assert "removed what it made with it: " in capsys.readouterr().out
    assert not (tmp_path / "pca").exists() and not (tmp_path / "checkpoint-4").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "backbones").is_dir()


def test_stage_clock_reports_each_stage_and_the_total():
    clock = demo.StageClock()
    clock.stage(1, "first", "one")
    clock.stage(2, "second", "two")
    clock.stop()
    report = clock.report(setup_seconds=12.0)
    assert [line.split()[0] for line in report.splitlines()] == ["environment", "[1]", "[2]", "total"]
    total = float(report.splitlines()[-1].split()[1])
    assert 12.0 <= total < 13.0


def test_make_tiny_sd_writes_a_loadable_pipeline(tmp_path):
    assert make_tiny_sd.main([str(tmp_path / "sd"), "--seed", "4"]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "sd")
    assert pipe.unet.config.block_out_channels == [32, 32, 64, 64]
