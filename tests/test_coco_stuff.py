import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from lumen.config import DataConfig, DataLayout
from lumen.data.dataset import BadSample, SplitDataset, collate_skipping_bad
from lumen.data.problems import ProblemLog, TooManyBadInputs
from lumen.data.sources.coco import DataLayoutError, read_split, resolve_split_paths
from lumen.data.transforms import image_to_tensor, label_map_to_tensor, resize_and_center_crop, to_rgb


def make_dataset(root, tmp_path, images, annotations, files=None):
    """A minimal caption file + JPEGs in the official layout."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    records = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 40, "width": 60} for i in images]
    (root / "annotations" / "captions_val2017.json").write_text(
        json.dumps({"images": records, "annotations": annotations}))
    for i in files if files is not None else images:
        Image.new("RGB", (60, 40), (i * 20 % 255, 100, 50)).save(root / "val2017" / f"{i:012d}.jpg")
    return resolve_split_paths(DataConfig(root=str(root)), "val")


def test_captions_are_stripped_ordered_by_id_and_uncaptioned_images_excluded(tmp_path):
    annotations = [
        {"image_id": 1, "id": 30, "caption": "  Third caption\n"},
        {"image_id": 1, "id": 7, "caption": "first  caption "},
        {"image_id": 1, "id": 12, "caption": "second\ncaption"},
        {"image_id": 1, "id": 13, "caption": "   "},
        {"image_id": 2, "id": 3, "caption": "only one"},
    ]
    index = read_split(make_dataset(tmp_path / "d", tmp_path, [1, 2, 3], annotations))
    assert [r.image_id for r in index.records] == [1, 2]
    assert index.records[0].captions == ("first caption", "second caption", "Third caption")
    assert index.images_without_captions == [3]
    assert index.empty_captions == 1
    assert index.num_captions == 4 and index.images_listed == 3


def test_training_draws_see_every_caption_and_evaluation_takes_the_first(synthetic_root):
    index = read_split(resolve_split_paths(DataConfig(root=str(synthetic_root)), "train"))
    train = SplitDataset(index, 64, train=True, seed=1, empty_prompt_probability=0.0)
    seen = set()
    for epoch in range(60):
        train.set_epoch(epoch)
        seen.add(train.caption_for(0))
    assert seen == set(index.records[0].captions)
    evaluation = SplitDataset(index, 64, train=False, empty_prompt_probability=0.9)
    assert {evaluation.caption_for(0) for _ in range(5)} == {index.records[0].captions[0]}


def test_caption_draws_are_reproducible_and_depend_on_seed_and_epoch(synthetic_root):
    index = read_split(resolve_split_paths(DataConfig(root=str(synthetic_root)), "train"))
    a = SplitDataset(index, 64, train=True, seed=1)
    b = SplitDataset(index, 64, train=True, seed=1)
    c = SplitDataset(index, 64, train=True, seed=2)
    draws = lambda d: [d.caption_for(i) for i in range(len(d))]  # noqa: E731
    assert draws(a) == draws(b)
    assert draws(a) != draws(c)
    before = draws(a)
    a.set_epoch(1)
    assert draws(a) != before


def test_empty_prompt_dropout_follows_its_probability(synthetic_root):
    index = read_split(resolve_split_paths(DataConfig(root=str(synthetic_root)), "train"))
    dataset = SplitDataset(index, 64, train=True, seed=0, empty_prompt_probability=0.3)
    draws = []
    for epoch in range(100):
        dataset.set_epoch(epoch)
        draws += [dataset.caption_for(i) == "" for i in range(len(dataset))]
    assert abs(np.mean(draws) - 0.3) < 0.04


def test_samples_have_the_documented_shapes(synthetic_root):
    index = read_split(resolve_split_paths(DataConfig(root=str(synthetic_root)), "val"))
    sample = SplitDataset(index, 64, train=False, labels="stuffthingmaps")[0]
    assert sample["pixel_values"].shape == (3, 64, 64) and sample["pixel_values"].dtype == torch.float32
    assert -1.0 <= sample["pixel_values"].min() and sample["pixel_values"].max() <= 1.0
    assert sample["label"].shape == (64, 64) and sample["label"].dtype == torch.long
    assert sample["caption"] == index.records[0].captions[0]


def test_stuff_json_and_stuffthingmaps_agree_on_stuff_pixels(synthetic_root):
    paths = resolve_split_paths(DataConfig(root=str(synthetic_root)), "train")
    index = read_split(paths, load_stuff=True)
    from_png = SplitDataset(index, 64, train=False, labels="stuffthingmaps")
    from_json = SplitDataset(index, 64, train=False, labels="stuff_json")
    for i in range(len(index)):
        a, b = from_png[i]["label"], from_json[i]["label"]
        stuff = b != 255
        assert stuff.any() and torch.equal(a[stuff], b[stuff])
        assert ((a[~stuff] < 91) | (a[~stuff] == 255)).all()  # the rest is things or unlabeled


def test_missing_and_truncated_images_are_skipped_reported_and_limited(tmp_path, caplog):
    annotations = [{"image_id": i, "id": i, "caption": f"image {i}"} for i in range(1, 6)]
    paths = make_dataset(tmp_path / "d", tmp_path, [1, 2, 3, 4, 5], annotations, files=[1, 2, 3, 4])
    jpeg = paths.images_dir / f"{2:012d}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    dataset = SplitDataset(read_split(paths), 32, train=False)
    batch = collate_skipping_bad([dataset[i] for i in range(5)])
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert batch["image_id"].tolist() == [1, 3, 4]
    reasons = dict(batch["bad"])
    assert set(reasons) == {str(jpeg), str(paths.images_dir / f"{5:012d}.jpg")}
    assert "file not found" in reasons[str(paths.images_dir / f"{5:012d}.jpg")]
    log = ProblemLog("val", max_bad_fraction=0.5)
    for _ in range(3):  # a path met again (next epoch) is counted and reported once
        for path, reason in batch["bad"]:
            log.record(path, reason)
    assert len(log) == 2
    assert sum("skipping unusable" in r.message for r in caplog.records) == 2
    log.check(total=5)  # 40% <= 50%
    log.max_bad_fraction = 0.3
    with pytest.raises(TooManyBadInputs) as err:
        log.check(total=5)
    assert str(jpeg) in str(err.value) and "max_bad_fraction" in str(err.value)


def test_an_all_bad_batch_collates_to_an_empty_batch():
    batch = collate_skipping_bad([BadSample("a.jpg", "file not found")])
    assert batch["pixel_values"] is None and batch["bad"] == [("a.jpg", "file not found")]


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "I;16", "1"])
def test_any_image_mode_becomes_rgb(mode):
    if mode == "I;16":
        image = Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)).convert("I;16")
        assert image.mode == "I;16"
    else:
        image = Image.new("RGB", (30, 20), (200, 30, 40)).convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (30, 20)
    assert image_to_tensor(image, 16).shape == (3, 16, 16)
    if mode == "I;16":
        assert np.asarray(rgb).max() == 156  # 40000 / 65535 of full scale: scaled by the bit depth, not clipped


def test_a_dim_16_bit_png_keeps_its_brightness(tmp_path):
    """16-bit grey is scaled by the bit depth: a dim image stays dim (scaling by its own maximum made it white)."""
    from lumen.data.split_index import load_image

    values = np.array([[0, 1000, 4000], [8000, 16384, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "dim.png")
    rgb = np.asarray(to_rgb(load_image(tmp_path / "dim.png")))
    assert rgb[..., 0].tolist() == [[0, 4, 16], [31, 64, 255]]
    dim = np.full((8, 8), 2000, dtype=np.uint16)
    Image.fromarray(dim).save(tmp_path / "dimmer.png")
    assert np.asarray(to_rgb(load_image(tmp_path / "dimmer.png"))).max() == 8


def test_resize_shorter_side_then_centre_crop():
    image = Image.new("RGB", (200, 100))
    image.paste((255, 0, 0), (0, 0, 50, 100))  # left quarter red: cropped away
    out = resize_and_center_crop(image, 50, Image.Resampling.BICUBIC)
    assert out.size == (50, 50)
    assert np.asarray(out)[:, :, 0].max() < 30  # the crop is the centre, which holds no red


def test_label_maps_are_resized_with_nearest_only():
    label = np.zeros((40, 60), dtype=np.uint8)
    label[:, 30:] = 181
    label[:5] = 255
    out = label_map_to_tensor(label, 17)
    assert set(out.unique().tolist()) <= {0, 181, 255}


def test_cocostuff_readme_layout_is_found(tmp_path, synthetic_root):
    root = tmp_path / "variant"
    (root / "images").mkdir(parents=True)
    shutil.copytree(synthetic_root / "val2017", root / "images" / "val2017")
    shutil.copytree(synthetic_root / "annotations", root / "annotations")
    shutil.copytree(synthetic_root / "stuffthingmaps_trainval2017" / "val2017", root / "annotations" / "val2017")
    for layout in (DataLayout.auto, DataLayout.cocostuff):
        paths = resolve_split_paths(DataConfig(root=str(root), layout=layout), "val")
        assert paths.images_dir == root / "images" / "val2017"
        assert paths.label_maps_dir == root / "annotations" / "val2017"
    index = read_split(paths)
    assert SplitDataset(index, 32, train=False, labels="stuffthingmaps")[0]["label"].shape == (32, 32)
    with pytest.raises(DataLayoutError, match="val2017"):
        resolve_split_paths(DataConfig(root=str(root), layout=DataLayout.official), "val")


def test_missing_folders_and_files_are_named(tmp_path):
    with pytest.raises(DataLayoutError) as err:
        resolve_split_paths(DataConfig(root=str(tmp_path)), "train")
    assert str(tmp_path / "train2017") in str(err.value) and str(tmp_path / "images" / "train2017") in str(err.value)
    (tmp_path / "train2017").mkdir()
    with pytest.raises(DataLayoutError, match="captions_train2017.json"):
        resolve_split_paths(DataConfig(root=str(tmp_path)), "train")


def test_labels_requested_without_label_maps_is_an_error(tmp_path):
    paths = make_dataset(tmp_path / "d", tmp_path, [1], [{"image_id": 1, "id": 1, "caption": "x"}])
    with pytest.raises(DataLayoutError, match="label_maps_dir"):
        SplitDataset(read_split(paths), 32, train=False, labels="stuffthingmaps")
    with pytest.raises(DataLayoutError, match="stuff"):
        read_split(paths, load_stuff=True)


def test_limit_keeps_the_first_images_by_id(synthetic_root):
    paths = resolve_split_paths(DataConfig(root=str(synthetic_root)), "train")
    full, few = read_split(paths), read_split(paths, limit=3)
    assert [r.image_id for r in few.records] == [r.image_id for r in full.records[:3]]
    assert Counter(len(r.captions) for r in full.records) == {5: 12}
