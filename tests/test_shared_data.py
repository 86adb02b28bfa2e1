"""Checks on the real COCO / COCO-Stuff files beside the project (skipped where they are absent)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from lumen.config import DataConfig
from lumen.data.dataset import SplitDataset
from lumen.data.labels import IGNORE
from lumen.data.sources.coco import read_split, resolve_split_paths
from lumen_train.commands import doctor

REPO = Path(__file__).resolve().parent.parent


def test_doctor_counts_coco_mini(shared_data, capsys):
    code = doctor.main([str(REPO / "configs" / "tiny.yaml"), f"data.root={shared_data / 'coco-mini'}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "images listed:  80\n  with captions:  80 images, 400 captions" in out
    assert "images listed:  79\n  with captions:  79 images, 395 captions" in out
    assert "s per 1000 images" in out


@pytest.fixture
def damaged_copy(shared_data, tmp_path):
    root = tmp_path / "coco-mini"
    shutil.copytree(shared_data / "coco-mini", root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    truncated = root / "train2017" / "000000000790.jpg"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    deleted = root / "val2017" / "000000000139.jpg"
    deleted.unlink()
    return root, truncated, deleted


def test_doctor_reports_exactly_the_damaged_files(damaged_copy, capsys):
    root, truncated, deleted = damaged_copy
    config = str(REPO / "configs" / "tiny.yaml")
    code = doctor.main([config, f"data.root={root}", "data.max_bad_fraction=0.02"])
    out = capsys.readouterr().out
    assert code == 0, out
    problem_lines = [line for line in out.splitlines() if line.startswith("    - ")]
    assert len(problem_lines) == 2, out
    assert any(str(truncated) in line and "truncated" in line for line in problem_lines)
    assert any(str(deleted) in line and "missing" in line for line in problem_lines)
    # 1 of 80 train images bad = 1.25%: over a 1% limit the doctor fails.
    assert doctor.main([config, f"data.root={root}", "data.max_bad_fraction=0.01"]) == 1
    assert "doctor: FAIL" in capsys.readouterr().out


def test_fixture_label_maps_agree_between_stuff_json_and_png(shared_data):
    fixture = shared_data / "coco-stuff-fixture" / "derived" / "fixture_val2017"
    data = DataConfig(root=str(fixture), images_dir=str(shared_data / "coco-mini" / "{split}2017"))
    index = read_split(resolve_split_paths(data, "val"), load_stuff=True)
    assert [r.image_id for r in index.records] == [139, 802]
    from_png = SplitDataset(index, 512, train=False, labels="stuffthingmaps")
    from_json = SplitDataset(index, 512, train=False, labels="stuff_json")
    for i, record in enumerate(index.records):
        png, js = from_png._label(record), from_json._label(record)
        assert png.shape == js.shape == (record.height, record.width)
        stuff = js != IGNORE
        assert 0.5 < stuff.mean() < 1.0  # most pixels are stuff; things and unlabeled are 255 in the JSON map
        np.testing.assert_array_equal(png[stuff], js[stuff])
        assert ((js[stuff] >= 91) & (js[stuff] <= 181)).all()  # stuff ids 92-182 as id - 1
        assert (png[~stuff] < 91).mean() > 0.5  # where the JSON says nothing, the PNG mostly holds things
        sample = from_png[i]
        assert sample["label"].shape == (512, 512)
