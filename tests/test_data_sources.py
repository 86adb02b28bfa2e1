"""Every stage on data sources other than COCO: an image folder and a Hugging Face dataset, built from the real
photos and captions of coco-mini (the tests skip where the shared data folder is absent)."""

import json
import shutil

import pytest
from PIL import Image

from lumen.config import DataConfig, DataSource
from lumen.data.export import coco_captioned_images, write_hf_dataset, write_imagefolder
from lumen.data.paths import DataLayoutError
from lumen.data.splits import read_data_split
from lumen.data.tables import stable_id
from lumen.errors import LumenError

WRITERS = {"imagefolder": write_imagefolder, "hf_dataset": write_hf_dataset}


@pytest.fixture(scope="session")
def coco_mini_items(shared_data):
    root = shared_data / "coco-mini"
    return {split: coco_captioned_images(root / f"{split}2017", root / "annotations" / f"captions_{split}2017.json",
                                         limit)
            for split, limit in (("train", 8), ("val", 4))}


@pytest.fixture(scope="session")
def source_roots(coco_mini_items, tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    return {name: write(base / name, coco_mini_items) for name, write in WRITERS.items()}


def source_args(tiny_args, source, root):
    return [*tiny_args, f"data.source={source}", f"data.root={root}", "data.val_split=val", "pca.num_samples=100"]


@pytest.mark.parametrize("source", list(WRITERS))
def test_a_split_lists_every_image_with_its_captions_and_a_stable_id(source, source_roots, coco_mini_items):
    index = read_data_split(DataConfig(source=DataSource(source), root=str(source_roots[source])), "train")
    assert len(index.records) == 8
    first_file, first_captions = coco_mini_items["train"][0]
    assert index.records[0].captions == tuple(" ".join(c.split()) for c in first_captions)
    key = f"train/{first_file.name}" if source == "imagefolder" else "train[0]"
    assert index.records[0].key == key
    assert index.records[0].image_id == stable_id(key)
    assert stable_id("train/000000000790.jpg") == 3047305909806737139  # pinned: caches refer to images by it
    assert index.read_image(index.records[0]).size == Image.open(first_file).size


@pytest.mark.parametrize("source", list(WRITERS))
def test_doctor_fit_pca_encode_train_and_sample(source, source_roots, tiny_args, tmp_path, capsys):
    from lumen.cache import load_cache
    from lumen_train.commands import doctor, encode_layouts, fit_pca, sample
    from lumen_train.commands.train_controlnet import main as train_main

    args = [*source_args(tiny_args, source, source_roots[source]), f"output_dir={tmp_path / 'run'}"]
    assert doctor.main(args) == 0
    report = capsys.readouterr().out
    assert "usable images:  8 of 8" in report and "usable images:  4 of 4" in report
    assert "5 captions: 8" in report
    assert fit_pca.main(args) == 0
    assert encode_layouts.main(args) == 0
    rows = load_cache(tmp_path / "run" / "cache", "train")
    index = read_data_split(DataConfig(source=DataSource(source), root=str(source_roots[source])), "train")
    assert rows[:]["image_id"].tolist() == [r.image_id for r in index.records]
    assert train_main([*args, "train.max_train_steps=2", "train.batch_size=2", "train.report_to=none",
                       "validation.steps=2", "validation.num_images=1", "validation.num_inference_steps=2"]) == 0
    assert (tmp_path / "run" / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    assert sample.main([*args, "sample.num_sources=2", "sample.num_inference_steps=2", "sample.prompts=[a cat]"]) == 0
    record = json.loads((tmp_path / "run" / "samples" / "samples.json").read_text())
    names = sorted(source["name"] for source in record["sources"])
    val = read_data_split(DataConfig(source=DataSource(source), root=str(source_roots[source])), "val")
    assert names == sorted(r.name for r in val.records[:2])


@pytest.mark.parametrize("source", list(WRITERS))
def test_a_corrupt_image_is_skipped_named_and_counted(source, coco_mini_items, tmp_path, tiny_args, capsys):
    from lumen_train.commands import doctor

    items = dict(coco_mini_items)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(items["train"][2][0].read_bytes()[:2000])  # a truncated JPEG
    items["train"] = [*items["train"][:2], (broken, ["a broken picture"]), *items["train"][3:]]
    root = WRITERS[source](tmp_path / source, items)
    args = [*source_args(tiny_args, source, root), f"output_dir={tmp_path / 'run'}"]
    assert doctor.main(args) == 1  # 1 of 8 is over the default 1 % limit
    report = capsys.readouterr().out
    key = "train/broken.jpg" if source == "imagefolder" else "train[2]"
    assert "UNUSABLE IMAGES: 1" in report and f"- {key}: cannot be decoded" in report
    assert doctor.main([*args, "data.max_bad_fraction=0.2"]) == 0


@pytest.mark.parametrize("source", list(WRITERS))
def test_a_missing_caption_column_is_refused_naming_the_columns(source, source_roots):
    data = DataConfig(source=DataSource(source), root=str(source_roots[source]), caption_column="caption")
    with pytest.raises(DataLayoutError, match=r"no column 'caption' in .*its columns: image, text"):
        read_data_split(data, "train")


def test_a_dataset_id_that_is_not_cached_is_refused_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = DataConfig(source=DataSource.hf_dataset, root="nobody/no-such-dataset")
    with pytest.raises(DataLayoutError, match="nor a dataset in the Hugging Face cache, and HF_HUB_OFFLINE"):
        read_data_split(data, "train")


def test_an_image_folder_without_metadata_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DataLayoutError, match="no metadata.jsonl or metadata.csv"):
        read_data_split(DataConfig(source=DataSource.imagefolder, root=str(tmp_path / "images")), "train")


def test_writers_never_replace_a_folder(source_roots, coco_mini_items):
    for name, write in WRITERS.items():
        with pytest.raises(FileExistsError):
            write(source_roots[name], coco_mini_items)


def test_validation_images_tracker_project_and_logging_folder(source_roots, coco_mini_items, tiny_args, tmp_path):
    from lumen_train.commands import fit_pca
    from lumen_train.commands.train_controlnet import main as train_main

    files = [str(path) for path, _ in coco_mini_items["val"][:2]]
    args = [*source_args(tiny_args, "imagefolder", source_roots["imagefolder"]), f"output_dir={tmp_path / 'run'}",
            "train.use_cache=false", "encode.splits=[train]"]
    assert fit_pca.main(args) == 0
    assert train_main([*args, "train.max_train_steps=1", "train.batch_size=2", "validation.steps=1",
                       f"validation.images=[{','.join(files)}]", "validation.captions=[a dog,a red bus]",
                       "validation.num_inference_steps=2", "train.report_to=tensorboard",
                       "train.tracker_project_name=my-project", f"train.logging_dir={tmp_path / 'tb'}"]) == 0
    assert list((tmp_path / "tb" / "my-project").glob("events.out.tfevents.*"))
    grid = Image.open(tmp_path / "run" / "validation" / "step-000001.png")
    assert grid.height > 2 * 64  # two rows: the two files


def test_validation_captions_must_match_the_images():
    from lumen.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="2 caption\\(s\\) for 1 validation.images"):
        load_config([], ["validation.images=[a.jpg]", "validation.captions=[x,y]"])


def test_convert_a_folder_with_caption_files_and_a_coco_folder(coco_mini_items, shared_data, tmp_path, capsys):
    from lumen_train.commands import convert_data

    photos = tmp_path / "photos"
    photos.mkdir()
    for path, captions in coco_mini_items["train"][:5]:
        shutil.copyfile(path, photos / path.name)
        (photos / path.with_suffix(".txt").name).write_text("\n".join(captions[:2]) + "\n")
    shutil.copyfile(coco_mini_items["train"][5][0], photos / "uncaptioned.jpg")
    assert convert_data.main(["--images", str(photos), "--to", "imagefolder", "--out", str(tmp_path / "a"),
                              "--val", "1"]) == 0
    assert "skipped" in capsys.readouterr().err
    data = DataConfig(source=DataSource.imagefolder, root=str(tmp_path / "a"))
    train, val = read_data_split(data, "train"), read_data_split(data, "val")
    assert (len(train.records), len(val.records)) == (4, 1)
    assert train.records[0].captions == tuple(coco_mini_items["train"][0][1][:2])
    assert convert_data.main(["--coco", str(shared_data / "coco-mini"), "--to", "hf_dataset", "--out",
                              str(tmp_path / "b"), "--limit", "3"]) == 0
    data = DataConfig(source=DataSource.hf_dataset, root=str(tmp_path / "b"))
    assert len(read_data_split(data, "val").records) == 3
    with pytest.raises(LumenError, match="exists"):
        convert_data.main(["--coco", str(shared_data / "coco-mini"), "--to", "hf_dataset", "--out",
                           str(tmp_path / "b")])
