import hashlib

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from lumen.config import DataConfig
from lumen.data.doctor import run_doctor
from lumen.data.labels import IGNORE, read_stuffthingmap
from lumen.testing.synthetic_coco import synthetic_matches, write_synthetic_coco_stuff


def folder_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_official_layout_and_pycocotools_round_trip(synthetic_root):
    for split, count in (("train", 12), ("val", 4)):
        captions = COCO(str(synthetic_root / "annotations" / f"captions_{split}2017.json"))
        assert len(captions.getImgIds()) == count
        for image_id in captions.getImgIds():
            info = captions.loadImgs(image_id)[0]
            assert info["file_name"] == f"{image_id:012d}.jpg"
            with Image.open(synthetic_root / f"{split}2017" / info["file_name"]) as image:
                assert image.size == (info["width"], info["height"]) == (96, 80)
            assert len(captions.getAnnIds(imgIds=image_id)) == 5
        stuff = COCO(str(synthetic_root / "annotations" / f"stuff_{split}2017.json"))
        assert {c["id"] for c in stuff.loadCats(stuff.getCatIds())} <= set(range(92, 184))
        for image_id in stuff.getImgIds():
            label = read_stuffthingmap(
                synthetic_root / "stuffthingmaps_trainval2017" / f"{split}2017" / f"{image_id:012d}.png")
            covered = np.zeros(label.shape, bool)
            for ann in stuff.loadAnns(stuff.getAnnIds(imgIds=image_id)):
                mask = stuff.annToMask(ann).astype(bool)
                assert not (covered & mask).any(), "stuff annotations of one image overlap"
                covered |= mask
                if ann["category_id"] == 183:  # 'other' = every thing pixel
                    assert ((label[mask] < 91) & (label[mask] != IGNORE)).all()
                else:
                    assert (label[mask] == ann["category_id"] - 1).all()
                assert ann["area"] == mask.sum()
            # Pixels no annotation covers are exactly the unlabeled ones.
            assert ((label == IGNORE) == ~covered).all()


def test_annotations_are_not_grouped_and_some_captions_need_stripping(synthetic_root):
    coco = COCO(str(synthetic_root / "annotations" / "captions_train2017.json"))
    image_order = [a["image_id"] for a in coco.dataset["annotations"]]
    assert image_order != sorted(image_order)
    raw = [a["caption"] for a in coco.dataset["annotations"]]
    assert any(c != c.strip() for c in raw)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = write_synthetic_coco_stuff(tmp_path / "a", 3, 2, 64, 48, seed=5, progress=False)
    b = write_synthetic_coco_stuff(tmp_path / "b", 3, 2, 64, 48, seed=5, progress=False)
    c = write_synthetic_coco_stuff(tmp_path / "c", 3, 2, 64, 48, seed=6, progress=False)
    assert folder_digest(a) == folder_digest(b) != folder_digest(c)
    assert synthetic_matches(a, 3, 2, 64, 48, 5) and not synthetic_matches(a, 3, 2, 64, 48, 6)


def test_rewrite_removes_old_files_and_refuses_foreign_folders(tmp_path):
    root = write_synthetic_coco_stuff(tmp_path / "d", 6, 2, 64, 48, seed=0, progress=False)
    write_synthetic_coco_stuff(root, 2, 1, 64, 48, seed=0, progress=False)
    assert len(list((root / "train2017").iterdir())) == 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_synthetic_coco_stuff(foreign, 1, 1, 64, 48, progress=False)
    assert (foreign / "keep.txt").exists()


def test_synthetic_data_passes_the_doctor(synthetic_root):
    passed, report = run_doctor(DataConfig(root=str(synthetic_root), num_workers=1), progress=False)
    assert passed, report
    assert "label maps:     12 of 12 found" in report
