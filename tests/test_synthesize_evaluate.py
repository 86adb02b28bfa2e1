"""lumen synthesize (a data set generated from layouts) and lumen evaluate (metrics)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from lumen.config import DataConfig, load_config
from lumen.data.doctor import run_doctor
from lumen.data.labels import read_stuffthingmap
from lumen.data.transforms import resize_and_center_crop
from lumen_train.commands import evaluate, sample, synthesize


def config_of(args, *more):
    return load_config([args[0]], [*args[1:], *more])


def test_synthesized_data_is_coco_passes_the_doctor_and_keeps_the_label_maps(trained_run, tmp_path, synthetic_root):
    out = tmp_path / "synthetic"
    args = [*trained_run, f"synthesize.out_root={out}", "synthesize.split=val", "synthesize.images_per_source=2",
            "synthesize.prompts=[a photo, a painting]", "synthesize.limit=3", "synthesize.shard_size=2",
            "sample.num_inference_steps=2"]
    assert synthesize.main(args) == 0
    captions = COCO(str(out / "annotations" / "captions_val2017.json"))
    assert len(captions.getImgIds()) == 6
    assert sorted({a["caption"] for a in captions.dataset["annotations"]}) == ["a painting", "a photo"]
    stuff = COCO(str(out / "annotations" / "stuff_val2017.json"))
    passed, report = run_doctor(DataConfig(root=str(out), train_split="val", val_split="val", num_workers=1),
                                progress=False)
    assert passed, report
    for info in captions.loadImgs(captions.getImgIds()):
        source_id = info["source_image_id"]
        assert info["id"] // 100 == source_id
        generated = read_stuffthingmap(out / "stuffthingmaps_trainval2017" / "val2017" / f"{info['id']:012d}.png")
        source = Image.open(synthetic_root / "stuffthingmaps_trainval2017" / "val2017" / f"{source_id:012d}.png")
        expected = np.asarray(resize_and_center_crop(source, 64, Image.Resampling.NEAREST))
        assert np.array_equal(generated, expected)  # the source's label map, aligned with the generated image
        for ann in stuff.loadAnns(stuff.getAnnIds(imgIds=info["id"])):
            if ann["category_id"] != 183:
                assert (generated[stuff.annToMask(ann).astype(bool)] == ann["category_id"] - 1).all()


def test_synthesis_resumes_after_a_kill(trained_run, tmp_path, monkeypatch):
    out = tmp_path / "synthetic"
    args = [*trained_run, f"synthesize.out_root={out}", "synthesize.split=val", "synthesize.limit=4",
            "synthesize.shard_size=1", "sample.num_inference_steps=2"]
    from lumen.sampling import generated_dataset as synthesis

    real_run_jobs = synthesis.run_jobs
    calls = []

    def dies_on_the_third_shard(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run_jobs(*a, **k)

    monkeypatch.setattr(synthesis, "run_jobs", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        synthesize.main(args)
    done = sorted(p.name for p in (out / ".shards").glob("shard-*.json"))
    assert done == ["shard-00000.json", "shard-00001.json"]
    monkeypatch.undo()
    redone = []
    monkeypatch.setattr(synthesis, "run_jobs", lambda *a, **k: redone.append(1) or real_run_jobs(*a, **k))
    assert synthesize.main(args) == 0
    assert len(redone) == 2  # only the two unfinished shards
    assert len(COCO(str(out / "annotations" / "captions_val2017.json")).getImgIds()) == 4


def test_evaluate_writes_metrics_per_number_of_components(trained_run, tmp_path, golden):
    samples = tmp_path / "samples"
    sample.main([*trained_run, f"sample.out_dir={samples}", "sample.num_sources=2", "sample.num_images_per_prompt=2",
                 "sample.sweep_components=[1,8]", "sample.num_inference_steps=3"])
    out = tmp_path / "evaluation"
    result = evaluate.evaluate(config_of(trained_run, f"evaluate.samples={samples / 'samples.json'}",
                                         f"evaluate.out={out}"))
    rows = {row["n_components"]: row for row in result["rows"]}
    assert set(rows) == {1, 8} and rows[8]["images"] == 4
    assert all(row["miou"] is None for row in rows.values())
    golden("evaluation_rows", [[round(rows[k][name], 5) for name in ("layout_cosine", "layout_kmeans_ari", "diversity")]
                               for k in (1, 8)], atol=0.02)
    assert "skipped" in result["segmentation"]
    table = (out / "metrics.md").read_text()
    assert table.startswith("| components |") and "| 8 | 4 |" in table
    assert json.loads((out / "metrics.json").read_text())["rows"] == result["rows"]


def test_evaluate_names_deleted_and_damaged_images_and_how_to_make_them_again(trained_run, tmp_path):
    from lumen.evaluation.scoring import UnreadableSampleError

    samples = tmp_path / "samples"
    sample.main([*trained_run, f"sample.out_dir={samples}", "sample.num_sources=2", "sample.num_inference_steps=2"])
    files = sorted(p.relative_to(samples).as_posix() for p in samples.glob("*/p*.png"))
    (samples / files[0]).unlink()
    cfg = config_of(trained_run, f"evaluate.samples={samples / 'samples.json'}", f"evaluate.out={tmp_path / 'e'}")
    with pytest.raises(evaluate.EvaluationInputError) as err:
        evaluate.evaluate(cfg)
    listing = samples / "samples.json"
    assert str(err.value) == (f"1 of the {len(files)} images {listing} lists are missing from {samples} "
                              f"({files[0]}). Make them again with 'lumen sample CONFIG "
                              f"sample.replay={listing}' (bit for bit), or evaluate another sample set")
    (samples / files[0]).write_bytes(b"not a png")
    with pytest.raises(UnreadableSampleError, match=f"cannot read the generated image {samples / files[0]}"):
        evaluate.evaluate(cfg)


def test_evaluate_with_a_segmentation_model_given_by_path(trained_run, tmp_path):
    """A segmenter that predicts one class c everywhere: the mIoU is IoU(c) over the classes of the map and c."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    from lumen.build import split_dataset

    cfg = config_of(trained_run)
    label = split_dataset(cfg, "val", labels="stuffthingmaps")[0]["label"].numpy()
    values, counts = np.unique(label[label != 255], return_counts=True)
    c = int(values[counts.argmax()])
    expected = counts.max() / counts.sum() / len(values)  # IoU(c) = |label == c| / |valid|; 0 for the others

    segmenter = tmp_path / "segmenter"
    model = SegformerForSemanticSegmentation(SegformerConfig(num_labels=182, hidden_sizes=[8, 16, 24, 32],
                                                             depths=[1, 1, 1, 1], decoder_hidden_size=16,
                                                             num_attention_heads=[1, 1, 1, 1]))
    with torch.no_grad():
        model.decode_head.classifier.weight.zero_()
        model.decode_head.classifier.bias.zero_()
        model.decode_head.classifier.bias[c] = 10.0
    model.save_pretrained(segmenter)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(segmenter)
    samples = tmp_path / "samples"
    sample.main([*trained_run, f"sample.out_dir={samples}", "sample.num_sources=1", "sample.num_inference_steps=2"])
    result = evaluate.evaluate(config_of(trained_run, f"evaluate.samples={samples / 'samples.json'}",
                                         f"evaluate.out={tmp_path / 'ev'}", f"evaluate.segmenter={segmenter}"))
    assert result["rows"][0]["miou"] == pytest.approx(expected, abs=1e-6)
    assert str(segmenter) in result["segmentation"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_synthesize_the_same_data_set_as_one(trained_run, tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    common = [*trained_run, "synthesize.split=val", "synthesize.limit=4", "synthesize.shard_size=1",
              "sample.num_inference_steps=2"]
    assert synthesize.main([*common, f"synthesize.out_root={tmp_path / 'one'}"]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "-m", "lumen_train", "synthesize", *common, f"synthesize.out_root={tmp_path / 'two'}"],
        cwd=repo, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "annotations" / "captions_val2017.json").read_text())
    two = json.loads((tmp_path / "two" / "annotations" / "captions_val2017.json").read_text())
    assert sorted(i["id"] for i in one["images"]) == sorted(i["id"] for i in two["images"])
    for info in one["images"]:  # per-image seeds: each image is the same whichever process made it
        a = np.asarray(Image.open(tmp_path / "one" / "val2017" / info["file_name"]), dtype=int)
        b = np.asarray(Image.open(tmp_path / "two" / "val2017" / info["file_name"]), dtype=int)
        assert np.abs(a - b).max() <= 2  # JPEG of identical pixels, up to rounding in the batch kernels
