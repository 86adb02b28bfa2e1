"""Every stage on data sources other than COCO: an image folder and a Hugging Face dataset, built from the real
photos and captions of coco-mini (the tests skip where the shared data folder is absent)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from lumen.config import DataConfig
from lumen.data.sources import DATA_SOURCES, read_data_split
from lumen.data.sources.coco import DataLayoutError, coco_captioned_images
from lumen.data.sources.webdataset import write_webdataset
from lumen.data.split_index import stable_id
from lumen.errors import LumenError

# Every registered source with a writer: the tests build their data in its layout.
WRITERS = {name: spec.write for name, spec in DATA_SOURCES.items() if spec.write is not None}
# How the built-in sources name a sample (pinned: caches refer to images by the stable id of that name); a new
# source is checked for a stable, unique id without an entry here.
FIRST_KEY = {"imagefolder": "train/{stem}.jpg", "hf_dataset": "train[0]", "webdataset": "000000.tar/{stem}"}


def data_of(source, root, **more):
    return DataConfig(source=source, root=str(root), **more)


@pytest.fixture(scope="session")
def coco_mini_items(shared_data):
    root = shared_data / "coco-mini"
    return {split: coco_captioned_images(root / f"{split}2017", root / "annotations" / f"captions_{split}2017.json",
                                         limit)
            for split, limit in (("train", 8), ("val", 4))}


@pytest.fixture(scope="session")
def source_roots(coco_mini_items, tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    roots = {name: write(base / name, coco_mini_items) for name, write in WRITERS.items() if name != "webdataset"}
    roots["webdataset"] = write_webdataset(base / "webdataset", coco_mini_items, shard_size=4)  # two train shards
    return roots


def source_args(tiny_args, source, root):
    return [*tiny_args, f"data.source={source}", f"data.root={root}", "data.val_split=val", "pca.num_samples=100"]


@pytest.mark.parametrize("source", list(WRITERS))
def test_a_split_lists_every_image_with_its_captions_and_a_stable_id(source, source_roots, coco_mini_items):
    index = read_data_split(data_of(source, source_roots[source]), "train", head=8)
    assert len(index.records) == 8
    first_file, first_captions = coco_mini_items["train"][0]
    assert index.records[0].captions == tuple(" ".join(c.split()) for c in first_captions)
    key = index.records[0].key
    if source in FIRST_KEY:
        assert key == FIRST_KEY[source].format(stem=first_file.stem)
    assert index.records[0].image_id == stable_id(key)
    assert len({r.image_id for r in index.records}) == len(index.records)
    assert stable_id("train/000000000790.jpg") == 3047305909806737139  # pinned: caches refer to images by it
    assert index.read_image(index.records[0]).size == Image.open(first_file).size


# One source in the default run (~10 s each); the others with the slow tests.
@pytest.mark.parametrize("source", [pytest.param(name, marks=[] if name == "imagefolder" else [pytest.mark.slow])
                                    for name in WRITERS])
def test_doctor_fit_pca_encode_train_and_sample(source, source_roots, tiny_args, tmp_path, capsys):
    from lumen.layout.cache import load_cache
    from lumen_train.commands import doctor, encode_layouts, evaluate, fit_pca, sample, synthesize
    from lumen_train.commands.train_controlnet import main as train_main

    args = [*source_args(tiny_args, source, source_roots[source]), f"output_dir={tmp_path / 'run'}"]
    assert doctor.main(args) == 0
    report = capsys.readouterr().out
    assert "usable images:  8 of 8" in report and "usable images:  4 of 4" in report
    assert "5 captions: 8" in report
    assert fit_pca.main(args) == 0
    assert encode_layouts.main(args) == 0
    rows = load_cache(tmp_path / "run" / "cache", "train")
    index = read_data_split(data_of(source, source_roots[source]), "train", head=8)
    assert rows[:]["image_id"].tolist() == [r.image_id for r in index.records]
    assert train_main([*args, "train.max_train_steps=2", "train.batch_size=2", "train.report_to=none",
                       "validation.steps=2", "validation.num_images=1", "validation.num_inference_steps=2"]) == 0
    assert (tmp_path / "run" / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    assert sample.main([*args, "sample.num_sources=2", "sample.num_inference_steps=2", "sample.prompts=[a cat]"]) == 0
    record = json.loads((tmp_path / "run" / "samples" / "samples.json").read_text())
    names = sorted(source["name"] for source in record["sources"])
    val = read_data_split(data_of(source, source_roots[source]), "val", head=4)
    assert names == sorted(r.name for r in val.records[:2])
    assert evaluate.main(args) == 0  # reads the sources back from the data by their ids
    rows = json.loads((tmp_path / "run" / "evaluation" / "metrics.json").read_text())["rows"]
    assert sum(row["images"] for row in rows) == 4
    # A data set generated from the val layouts, written in the source's own layout, and read back.
    out = tmp_path / "generated"
    assert synthesize.main([*args, f"synthesize.out_root={out}", "synthesize.split=val", "synthesize.limit=2",
                            "synthesize.images_per_source=2", "synthesize.prompts=[a photo, a drawing]",
                            "sample.num_inference_steps=2"]) == 0
    generated = read_data_split(data_of(source, out), "val", head=10)
    assert sorted(r.captions for r in generated.records) == [("a drawing",), ("a drawing",), ("a photo",),
                                                             ("a photo",)]
    assert not (tmp_path / "generated.work").exists()
    assert json.loads((out / "lumen_synthesized.json").read_text())["images"] == 4


@pytest.mark.parametrize("source", list(WRITERS))
def test_a_corrupt_image_is_skipped_named_and_counted(source, coco_mini_items, tmp_path, tiny_args, capsys):
    from lumen_train.commands import doctor, encode_layouts, fit_pca

    items = dict(coco_mini_items)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(items["train"][2][0].read_bytes()[:2000])  # a truncated JPEG
    items["train"] = [*items["train"][:2], (broken, ["a broken picture"]), *items["train"][3:]]
    root = WRITERS[source](tmp_path / source, items)
    args = [*source_args(tiny_args, source, root), f"output_dir={tmp_path / 'run'}"]
    assert doctor.main(args) == 1  # 1 of 8 is over the default 1 % limit
    report = capsys.readouterr().out
    key = read_data_split(data_of(source, root), "train", head=8).records[2].key
    assert "UNUSABLE IMAGES: 1" in report and f"- {key}: cannot be decoded" in report
    assert doctor.main([*args, "data.max_bad_fraction=0.2"]) == 0
    # The cache skips it too, and names and counts it in the split's index.
    lenient = [*args, "data.max_bad_fraction=0.2", "encode.splits=[train]"]
    assert fit_pca.main(lenient) == 0 and encode_layouts.main(lenient) == 0
    index = json.loads((tmp_path / "run" / "cache" / "train" / "index.json").read_text())
    assert index["rows"] == 7 and len(index["skipped"]) == 1
    assert index["skipped"][0][0].endswith(key.split("/")[-1])


@pytest.mark.parametrize("source", [name for name in WRITERS if DATA_SOURCES[name].named_columns])
def test_a_missing_caption_column_is_refused_naming_the_columns(source, source_roots):
    data = data_of(source, source_roots[source], caption_column="caption")
    there = "their members: jpg, txt" if source == "webdataset" else "its columns: image, text"
    with pytest.raises(DataLayoutError, match=rf"no (column|member) 'caption' in .*{there}"):
        read_data_split(data, "train", head=8)


def test_a_dataset_id_that_is_not_cached_is_refused_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = DataConfig(source="hf_dataset", root="nobody/no-such-dataset")
    with pytest.raises(DataLayoutError, match="nor a dataset in the Hugging Face cache, and HF_HUB_OFFLINE"):
        read_data_split(data, "train")


def test_an_image_folder_without_metadata_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DataLayoutError, match="no metadata.jsonl or metadata.csv"):
        read_data_split(DataConfig(source="imagefolder", root=str(tmp_path / "images")), "train")


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
    data = DataConfig(source="imagefolder", root=str(tmp_path / "a"))
    train, val = read_data_split(data, "train"), read_data_split(data, "val")
    assert (len(train.records), len(val.records)) == (4, 1)
    assert train.records[0].captions == tuple(coco_mini_items["train"][0][1][:2])
    assert convert_data.main(["--coco", str(shared_data / "coco-mini"), "--to", "hf_dataset", "--out",
                              str(tmp_path / "b"), "--limit", "3"]) == 0
    data = DataConfig(source="hf_dataset", root=str(tmp_path / "b"))
    assert len(read_data_split(data, "val").records) == 3
    with pytest.raises(LumenError, match="exists"):
        convert_data.main(["--coco", str(shared_data / "coco-mini"), "--to", "hf_dataset", "--out",
                           str(tmp_path / "b")])


def test_a_killed_encode_over_tar_shards_resumes_at_the_unfinished_shard(coco_mini_items, tiny_args, tmp_path):
    from lumen.layout.cache import CacheDamagedError, load_cache
    from lumen_train.commands import encode_layouts, fit_pca

    root = write_webdataset(tmp_path / "shards", coco_mini_items, shard_size=3)  # train: 3 shards
    args = [*source_args(tiny_args, "webdataset", root), f"output_dir={tmp_path / 'run'}", "encode.splits=[train]"]
    assert fit_pca.main(args) == 0
    assert encode_layouts.main(args) == 0
    split_dir = tmp_path / "run" / "cache" / "train"
    before = {p.name: (p / "shard.json").stat().st_mtime_ns for p in split_dir.glob("shard-*")}
    assert len(before) == 3
    reference = load_cache(tmp_path / "run" / "cache", "train")[:]["layout"].clone()
    # As a kill -9 in the middle of shard 1 leaves it: half-written under its temporary name, no index.
    shutil.rmtree(split_dir / "shard-00001")
    (split_dir / "shard-00001.tmp.0").mkdir()
    (split_dir / "index.json").unlink()
    with pytest.raises(CacheDamagedError):
        load_cache(tmp_path / "run" / "cache", "train")
    assert encode_layouts.main(args) == 0
    after = {p.name: (p / "shard.json").stat().st_mtime_ns for p in split_dir.glob("shard-*")}
    assert [n for n in sorted(after) if after[n] != before[n]] == ["shard-00001"]
    assert torch.equal(load_cache(tmp_path / "run" / "cache", "train")[:]["layout"], reference)
    meta = json.loads((split_dir / "shard-00001" / "shard.json").read_text())
    assert meta["read_from"].endswith("train/000001.tar") and meta["rows"] == 3


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_encode_disjoint_tar_shards(coco_mini_items, tiny_args, tmp_path):
    from test_multiprocess import launch_two

    from lumen_train.commands import fit_pca

    root = write_webdataset(tmp_path / "shards", coco_mini_items, shard_size=2)  # train: 4 shards
    args = [*source_args(tiny_args, "webdataset", root), f"output_dir={tmp_path / 'run'}", "encode.splits=[train]"]
    assert fit_pca.main(args) == 0
    launch_two("encode-layouts", args)
    split_dir = tmp_path / "run" / "cache" / "train"
    metas = [json.loads(p.read_text()) for p in sorted(split_dir.glob("shard-*/shard.json"))]
    read = {0: [], 1: []}
    for meta in metas:
        read[meta["process"]].append(Path(meta["read_from"]).name)
    assert read == {0: ["000000.tar", "000002.tar"], 1: ["000001.tar", "000003.tar"]}
    assert json.loads((split_dir / "index.json").read_text())["rows"] == 8


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("source", list(WRITERS))
def test_each_source_trains_on_two_processes(source, source_roots, tiny_args, tmp_path):
    from test_multiprocess import launch_two

    from lumen_train.commands import doctor, encode_layouts, fit_pca, sample

    args = [*source_args(tiny_args, source, source_roots[source]), f"output_dir={tmp_path / 'run'}"]
    assert doctor.main(args) == 0
    assert fit_pca.main(args) == 0
    assert encode_layouts.main(args) == 0
    launch_two("train", [*args, "train.max_train_steps=2", "train.batch_size=2",
                                                "train.report_to=none", "validation.steps=0",
                                                "train.record_batches=true"])
    for rank in (0, 1):
        record = json.loads((tmp_path / "run" / "logs" / f"rank-{rank}.json").read_text())
        assert record["num_processes"] == 2 and len(record["steps"]) == 2
    assert (tmp_path / "run" / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    assert sample.main([*args, "sample.num_sources=1", "sample.num_inference_steps=2"]) == 0


@pytest.mark.slow
def test_doctor_speed_on_ten_thousand_small_images(tmp_path, tiny_args, capsys):
    import numpy as np

    from lumen_train.commands import doctor

    rng = np.random.default_rng(0)
    for split, count in (("train", 10_000), ("val", 10)):
        folder = tmp_path / "images" / split
        folder.mkdir(parents=True)
        rows = []
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
            rows.append(json.dumps({"file_name": f"{i:05d}.png", "text": [f"picture {i}"]}))
        (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    assert doctor.main(source_args(tiny_args, "imagefolder", tmp_path / "images")) == 0
    report = capsys.readouterr().out
    line = next(line for line in report.splitlines() if "for 10000 images" in line)
    print(line)  # the figure: seconds per 1000 images, listing included
    assert "s per 1000 images" in line


@pytest.fixture(scope="session")
def streamed_run(coco_mini_items, tiny_args_for, tmp_path_factory):
    """Tar shards (train: 4 shards of 2 images) and a PCA fitted on them."""
    from lumen_train.commands import fit_pca

    base = tmp_path_factory.mktemp("streamed")
    root = write_webdataset(base / "shards", coco_mini_items, shard_size=2)
    args = [*source_args(tiny_args_for(base / "run"), "webdataset", root), "train.use_cache=false",
            "train.batch_size=2", "train.report_to=none", "validation.steps=0", "train.checkpointing_steps=2",
            "train.record_batches=true"]
    assert fit_pca.main(args) == 0
    return args, base


def test_training_streams_the_shards_without_the_cache_and_resumes(streamed_run, tmp_path):
    from safetensors.torch import load_file

    from lumen_train.commands.train_controlnet import main as train_main

    args, _ = streamed_run
    whole = [*args, f"output_dir={tmp_path / 'whole'}", f"layout.pca_dir={streamed_run[1] / 'run' / 'pca'}"]
    assert train_main([*whole, "train.max_train_steps=4"]) == 0
    steps = json.loads((tmp_path / "whole" / "logs" / "rank-0.json").read_text())["steps"]
    index = read_data_split(data_of("webdataset", streamed_run[1] / "shards"), "train", head=8)
    assert len(steps) == 4 and {i for step in steps for i in step} <= {r.image_id for r in index.records}
    # Stopped at step 2 (its checkpoint), then resumed to 4: the resumed stream skips what step 2 had read.
    part = [*args, f"output_dir={tmp_path / 'part'}", f"layout.pca_dir={streamed_run[1] / 'run' / 'pca'}"]
    assert train_main([*part, "train.max_train_steps=2"]) == 0
    assert train_main([*part, "train.max_train_steps=4", "train.resume_from_checkpoint=latest"]) == 0
    resumed = json.loads((tmp_path / "part" / "logs" / "rank-0.json").read_text())["steps"]
    assert resumed == steps[2:]
    a = load_file(tmp_path / "whole" / "controlnet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "part" / "controlnet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_streaming_needs_max_train_steps(streamed_run, tmp_path):
    from lumen_train.commands.train_controlnet import main as train_main

    args, base = streamed_run
    with pytest.raises(LumenError, match="set train.max_train_steps"):
        train_main([*args, f"output_dir={tmp_path}", f"layout.pca_dir={base / 'run' / 'pca'}",
                    "train.max_train_steps=null"])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_stream_disjoint_shards(streamed_run, tmp_path):
    from test_multiprocess import launch_two

    args, base = streamed_run
    launch_two("train", [*args, f"output_dir={tmp_path}", "train.max_train_steps=2",
                                                f"layout.pca_dir={base / 'run' / 'pca'}"])
    seen = [{i for step in json.loads((tmp_path / "logs" / f"rank-{r}.json").read_text())["steps"] for i in step}
            for r in (0, 1)]
    shards = sorted((base / "shards" / "train").glob("*.tar"))
    keys = {r: set() for r in (0, 1)}
    for n, shard in enumerate(shards):
        import tarfile

        with tarfile.open(shard) as tar:
            keys[n % 2] |= {stable_id(f"{shard.name}/{Path(m.name).stem}") for m in tar.getmembers()}
    assert seen[0] and seen[1] and seen[0] <= keys[0] and seen[1] <= keys[1] and not seen[0] & seen[1]


def test_an_image_folder_with_metadata_csv_and_two_caption_columns(coco_mini_items, tmp_path):
    import csv

    folder = tmp_path / "photos" / "train"
    folder.mkdir(parents=True)
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "title", "description"])
        for path, captions in coco_mini_items["train"][:3]:
            shutil.copyfile(path, folder / path.name)
            writer.writerow([path.name, captions[0], captions[1]])
    data = data_of("imagefolder", tmp_path / "photos", caption_column=["title", "description"])
    index = read_data_split(data, "train")
    folded = [tuple(" ".join(c.split()) for c in captions[:2]) for _, captions in coco_mini_items["train"][:3]]
    assert [r.captions for r in index.records] == folded


def cut_tar(path: Path, after_members: int, inside: bool = False) -> None:
    """Cut a tar file at the start of member ``after_members`` (or 100 bytes into its data, ``inside``), as a copy
    interrupted there leaves it."""
    import tarfile

    with tarfile.open(path) as tar:
        member = tar.getmembers()[after_members]
    cut = member.offset_data + 100 if inside else member.offset
    path.write_bytes(path.read_bytes()[:cut])


@pytest.fixture(scope="session")
def synthetic_shards(synthetic_root, tiny_args_for, tmp_path_factory):
    """The synthetic data set as tar shards (train: 4 shards of 3 images) and a PCA fitted on them."""
    from lumen_train.commands import fit_pca

    base = tmp_path_factory.mktemp("synthetic-shards")
    items = {split: coco_captioned_images(synthetic_root / f"{split}2017",
                                          synthetic_root / "annotations" / f"captions_{split}2017.json")
             for split in ("train", "val")}
    root = write_webdataset(base / "shards", items, shard_size=3)
    args = [*source_args(tiny_args_for(base / "run"), "webdataset", root), "train.use_cache=false",
            "train.batch_size=2", "train.report_to=none", "validation.steps=0"]
    assert fit_pca.main(args) == 0
    return args, base


@pytest.mark.parametrize("inside", [False, True], ids=["at-a-member-boundary", "inside-a-member"])
def test_a_truncated_tar_shard_is_named_by_the_doctor_encoding_and_streamed_training(synthetic_shards, tmp_path,
                                                                                     inside, capsys):
    """A shard cut after its first sample (of three) used to lose the others without a word; cut inside a member,
    it was a tarfile.ReadError traceback."""
    from lumen.data.sources.webdataset import TruncatedShardError
    from lumen_train.commands import doctor, encode_layouts
    from lumen_train.commands.train_controlnet import main as train_main

    args, base = synthetic_shards
    shards = shutil.copytree(base / "shards", tmp_path / "shards")
    cut_tar(shards / "train" / "000001.tar", after_members=2, inside=inside)  # members: jpg + txt per sample
    run = [*args, f"data.root={shards}", f"output_dir={tmp_path / 'run'}", f"layout.pca_dir={base / 'run' / 'pca'}"]
    capsys.readouterr()
    assert doctor.main(run) == 1
    report = capsys.readouterr().out
    problem = ("truncated: it does not end with the two zero blocks that end a tar file (cut after a member)"
               if not inside else "truncated:")
    assert f"TRUNCATED SHARDS (write or copy them again): 1\n    - {shards / 'train' / '000001.tar'}: {problem}" \
        in report, report
    assert "usable images:  9 of 9 (in the whole shards; 1 shard(s) not read)" in report
    assert "split 'train'" in report and "-> FAIL" in report
    for stage in (encode_layouts.main, train_main):
        with pytest.raises(TruncatedShardError) as err:
            stage([*run, "train.max_train_steps=1"])
        assert str(err.value).startswith(f"1 of the 4 tar shard(s) of split 'train' are not whole: "
                                         f"{shards / 'train' / '000001.tar'} is truncated: "), str(err.value)
        assert "write or copy them again" in str(err.value)


def test_convert_data_skips_files_that_are_not_images_and_names_a_coco_folder_without_captions(tmp_path, capsys):
    """A text file named b.jpg used to go into the shard as an image; a COCO folder without captions was told to
    set data.root, an option this command does not have."""
    import tarfile

    from lumen_train.commands import convert_data

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(photos / "a.jpg")
    (photos / "a.txt").write_text("a red picture\n")
    (photos / "b.jpg").write_text("this is not a picture")
    (photos / "b.txt").write_text("a caption\n")
    assert convert_data.main(["--images", str(photos), "--to", "webdataset", "--out", str(tmp_path / "shards")]) == 0
    assert f"skipped {photos / 'b.jpg'}: not a readable image (UnidentifiedImageError" in capsys.readouterr().err
    with tarfile.open(tmp_path / "shards" / "train" / "000000.tar") as tar:
        assert tar.getnames() == ["a.jpg", "a.txt"]
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    with pytest.raises(LumenError) as err:
        convert_data.main(["--coco", str(tmp_path / "coco"), "--to", "imagefolder", "--out", str(tmp_path / "c")])
    assert str(err.value).startswith(f"--coco {tmp_path / 'coco'}: missing "
                                     f"{tmp_path / 'coco' / 'annotations' / 'captions_train2017.json'}. --coco takes")
    assert "data.root" not in str(err.value)


def test_a_metadata_file_with_a_syntax_error_is_named_with_its_line(tmp_path):
    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    Image.new("RGB", (8, 8)).save(folder / "b.png")
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "one"}\n{"file_name": "b.png", "text": }\n')
    with pytest.raises(DataLayoutError) as err:
        read_data_split(data_of("imagefolder", tmp_path / "images"), "train")
    assert str(err.value).startswith(f"{folder / 'metadata.jsonl'}, line 2: not valid JSON (Expecting value at "
                                     f"column 32)"), str(err.value)
    # A line cut in the middle of a string: json's message ends with "at" itself.
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "one"}\n{"file_name": "b.png", "te\n')
    with pytest.raises(DataLayoutError, match="line 2: not valid JSON \\(Invalid control character at column 27\\)"):
        read_data_split(data_of("imagefolder", tmp_path / "images"), "train")
