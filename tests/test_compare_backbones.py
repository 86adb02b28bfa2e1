"""lumen compare-backbones on the tiny config: one run per backbone, one judge, a table and a picture."""

import json

import numpy as np
from PIL import Image

from lumen.testing.synthetic_coco import render_scene
from lumen_train.commands import compare_backbones
from lumen_train.commands.make_warp_pairs import main as make_warp_pairs


def test_compare_backbones_writes_its_table_json_and_picture(tiny_args, tiny_backbones, tmp_path):
    out = tmp_path / "compare"
    models = f"{{dinov2: {tiny_backbones['dinov2']}, clip: {tiny_backbones['clip']}}}"
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(render_scene(np.random.default_rng(0), 96, 64)[0]).save(images / "scene.png")
    assert make_warp_pairs([str(images), str(tmp_path / "pairs"), "--warps", "flip", "rotation"]) == 0
    args = [*tiny_args, "compare.backbones=[dinov2,sd,clip]", f"compare.backbone_models={models}",
            "compare.train_steps=2", "compare.num_sources=1", f"compare.out={out}", "train.report_to=none",
            "sample.num_inference_steps=2", f"compare.benchmark={tmp_path / 'pairs'}", "corr.resolution=64"]
    assert compare_backbones.main(args) == 0
    result = json.loads((out / "comparison.json").read_text())
    assert [row["backbone"] for row in result["rows"]] == ["sd", "dinov2", "clip"]  # the judge's run first
    assert result["judge_pca"] == str(out / "sd" / "pca")
    for row in result["rows"]:
        assert row["n_components"] == 8 and row["extraction_images_per_s"] > 0
        assert row["diversity"] is not None and row["miou"] is None
    assert {row["feature_channels"] for row in result["rows"]} == {160, 32}
    judged = [json.loads((out / name / "evaluation" / "metrics.json").read_text())["judge"] for name in ("dinov2",
                                                                                                        "clip")]
    assert all(j["backbone"] == "sd" and j["pca_dir"] == str(out / "sd" / "pca") for j in judged)
    table = (out / "comparison.md").read_text()
    assert table.startswith("| backbone | feature channels |") and "| dinov2 | 32 |" in table
    assert "| PCK@0.05 | PCK@0.1 | PCK@0.15 |" in table.splitlines()[0]
    for row in result["rows"]:  # PCK of each backbone on the warp pairs, from its own benchmark run
        name = row["backbone"]
        pck = json.loads((out / name / "correspondence" / "pck.json").read_text())
        assert pck["backbone"] == name and pck["pairs"] == 2 and row["pck"] == pck["pck"]["all"]
    with Image.open(out / "comparison.png") as picture:
        assert picture.width > 3 * picture.height  # one row: the source, then layout + sample per backbone


def test_every_backbone_is_checked_before_the_first_is_computed(tiny_args, tiny_backbones, tmp_path):
    """A backbone without its image processor and one with a cut weight file: both named, in one line each,
    before the SD run (which comes first) has started; transformers' hub text never shows."""
    import shutil

    import pytest

    from lumen.errors import LumenError

    clip = shutil.copytree(tiny_backbones["clip"], tmp_path / "clip")
    (clip / "preprocessor_config.json").unlink()
    dinov2 = shutil.copytree(tiny_backbones["dinov2"], tmp_path / "dinov2")
    weights = dinov2 / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    out = tmp_path / "compare"
    args = [*tiny_args, "compare.backbones=[sd,dinov2,clip]", f"compare.backbone_models={{dinov2: {dinov2}, "
            f"clip: {clip}}}", "compare.train_steps=0", f"compare.out={out}"]
    with pytest.raises(LumenError) as err:
        compare_backbones.main(args)
    lines = str(err.value).splitlines()
    assert lines[0] == "not every backbone of compare.backbones can be loaded; nothing was computed:"
    assert lines[1].startswith(f"  dinov2: the dinov2 backbone in {dinov2} has damaged weight files: "
                               f"model.safetensors (Error while deserializing header"), lines[1]
    assert lines[2].startswith(f"  clip: {clip} has no preprocessor_config.json: the clip backbone's image processor"
                               ), lines[2]
    assert len(lines) == 3 and "huggingface.co" not in str(err.value)
    assert not out.exists()
