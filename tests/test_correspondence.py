"""Semantic correspondence: matching, PCK by hand, the SPair-format reader, warp pairs, pictures, every backbone."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lumen.backbones import BACKBONES as REGISTERED
from lumen.config import load_config
from lumen.correspondence.benchmark import read_pairs
from lumen.correspondence.matching import (
    cell_centres,
    correct_keypoints,
    joint_pca_colours,
    match_points,
    pck_threshold,
    point_cells,
)
from lumen.correspondence.pictures import point_colours, side_by_side_layout
from lumen.correspondence.warp_pairs import apply_homography, warp_matrix
from lumen.errors import LumenError
from lumen.testing.tiny_backbones import tiny_model_of
from lumen_train.commands import correspond as correspond_command
from lumen_train.commands.correspond import FeatureCache, pck_benchmark
from lumen_train.commands.make_warp_pairs import main as make_warp_pairs

REPO = Path(__file__).resolve().parent.parent
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini" / "val2017"
BACKBONES = {name: tiny_model_of(name) for name in REGISTERED}  # every registered backbone -> its tiny model


def one_hot(h, w, permutation=None):
    """(h*w, h, w) features: cell k is the unit vector e_{permutation[k]}."""
    n = h * w
    order = torch.arange(n) if permutation is None else torch.as_tensor(permutation)
    return torch.eye(n)[order].T.reshape(n, h, w)


def test_points_go_to_their_cells_and_back_to_cell_centres():
    points = torch.tensor([[0.0, 0.0], [99.9, 49.9], [50.0, 25.0], [130.0, -5.0]])
    cells = point_cells(points, (50, 100), (5, 10))  # 10 px cells
    assert cells.tolist() == [0, 49, 25, 9]  # the last one clamped to the top-right cell
    centres = cell_centres((5, 10), (50, 100))
    assert centres[0].tolist() == [5.0, 5.0] and centres[25].tolist() == [55.0, 25.0]


def test_a_known_permutation_of_cells_is_found_and_is_mutual():
    h, w = 4, 6
    permutation = torch.randperm(h * w, generator=torch.Generator().manual_seed(0))
    source = one_hot(h, w)
    target = one_hot(h, w, torch.argsort(permutation))  # target cell permutation[k] holds source cell k's feature
    points = cell_centres((h, w), (40, 60))  # one point per source cell
    for chunk in (5, 4096):  # chunked or not, the same answer
        matches = match_points(source, target, points, (40, 60), (80, 120), chunk=chunk)
        expected = cell_centres((h, w), (80, 120))[permutation]
        assert torch.allclose(matches.target, expected) and matches.mutual.all()
        assert torch.allclose(matches.similarity, torch.ones(h * w))


def test_soft_argmax_moves_a_match_towards_a_similar_neighbour():
    source = torch.tensor([[[1.0]], [[0.0]]])  # one cell, feature (1, 0)
    target = torch.zeros(2, 1, 3)
    target[:, 0, 1] = torch.tensor([1.0, 0.0])   # best: the middle cell
    target[:, 0, 2] = torch.tensor([0.95, (1 - 0.95**2) ** 0.5])  # cosine 0.95: its right neighbour
    target[:, 0, 0] = torch.tensor([-1.0, 0.0])   # opposite
    hard = match_points(source, target, torch.tensor([[0.5, 0.5]]), (1, 1), (10, 30)).target
    soft = match_points(source, target, torch.tensor([[0.5, 0.5]]), (1, 1), (10, 30), soft_window=1,
                        soft_temperature=0.05).target
    assert hard.tolist() == [[15.0, 5.0]]
    # weights e^(1/0.05) : e^(0.95/0.05) : e^(-1/0.05) -> x = (15 + 25 e^-1) / (1 + e^-1)
    expected = (15 + 25 * np.exp(-1)) / (1 + np.exp(-1))
    assert soft[0, 0].item() == pytest.approx(expected, rel=1e-5) and soft[0, 1].item() == pytest.approx(5.0)


def test_pck_thresholds_and_hits_by_hand():
    # SPair: alpha x the larger side of the target's box; PF-PASCAL: of the target image.
    assert pck_threshold("bbox", [10, 20, 110, 70], (300, 400), 0.1) == pytest.approx(10.0)  # 0.1 x 100
    assert pck_threshold("image", None, (300, 400), 0.1) == pytest.approx(40.0)             # 0.1 x 400
    with pytest.raises(ValueError):
        pck_threshold("bbox", None, (300, 400), 0.1)
    truth = torch.tensor([[50.0, 50.0], [60.0, 40.0], [0.0, 0.0]])
    predicted = torch.tensor([[56.0, 58.0], [60.0, 40.0], [30.0, 0.0]])  # off by 10, 0, 30 pixels
    assert correct_keypoints(predicted, truth, 10.0).tolist() == [True, True, False]   # 10 is inside (<=)
    assert correct_keypoints(predicted, truth, 9.99).tolist() == [False, True, False]
    assert correct_keypoints(predicted, truth, 40.0).tolist() == [True, True, True]


def write_benchmark(root: Path, pairs: list[dict], sizes: dict[str, tuple[int, int]]) -> Path:
    for name, (w, h) in sizes.items():
        folder = root / "JPEGImages" / "cat"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (128, 128, 128)).save(folder / name)
    annotations = root / "PairAnnotation" / "test"
    annotations.mkdir(parents=True, exist_ok=True)
    for i, pair in enumerate(pairs):
        text = pair if isinstance(pair, str) else json.dumps({"category": "cat", **pair})
        (annotations / f"{i:03d}.json").write_text(text)
    return root


class PositionFeatures:
    """A stand-in backbone whose features are one-hot in the cell index on a 4 x 4 grid: every point goes to the
    centre of the same cell in the target, so PCK can be worked out by hand."""

    resolution = 64

    def __call__(self, images):
        return [one_hot(4, 4) for _ in images]


def test_pck_of_a_benchmark_equals_the_hand_computed_value_and_bad_files_are_named(tmp_path, capsys):
    # a.jpg is 100 x 100 (cells of 25 px), b.jpg 200 x 100 (cells of 50 x 25 px). A source point in cell (r, c)
    # lands at the centre of cell (r, c) of the target: ((c + 0.5) 50, (r + 0.5) 25).
    pairs = [
        # 1st: predictions (25, 12.5), (125, 37.5), (175, 87.5): 0, 5 and 30 px off. Box 100 x 50 -> alpha 0.1: 10 px.
        {"src_imname": "a.jpg", "trg_imname": "b.jpg", "src_kps": [[10, 10], [60, 35], [90, 90]],
         "trg_kps": [[25, 12.5], [130, 37.5], [205, 87.5]], "src_bndbox": [0, 0, 100, 100],
         "trg_bndbox": [50, 25, 150, 75]},
        # 2nd: predictions (25, 12.5), (125, 62.5): both 8 px off; a 40 x 40 box.
        {"src_imname": "a.jpg", "trg_imname": "b.jpg", "src_kps": [[10, 10], [60, 60]],
         "trg_kps": [[33, 12.5], [125, 70.5]], "src_bndbox": [0, 0, 100, 100], "trg_bndbox": [0, 0, 40, 40]},
        "{not json",
        {"src_imname": "a.jpg", "trg_imname": "missing.jpg", "src_kps": [[1, 1]], "trg_kps": [[1, 1]]},
        {"src_imname": "a.jpg", "trg_imname": "b.jpg", "src_kps": [[1, 1], [2, 2]], "trg_kps": [[1, 1]]},
    ]
    root = write_benchmark(tmp_path / "bench", pairs, {"a.jpg": (100, 100), "b.jpg": (200, 100)})
    read, problems = read_pairs(root, "test")
    assert len(read) == 2 and [p.split(":")[0] for p in problems] == ["002.json", "003.json", "004.json"]
    assert "not valid JSON" in problems[0] and "missing.jpg not found" in problems[1] and "equally long" in problems[2]

    cfg = load_config([], [f"corr.benchmark={root}", "corr.alphas=[0.05,0.1,0.2]", f"corr.out={tmp_path / 'out'}"])
    (tmp_path / "out").mkdir()
    result = pck_benchmark(cfg, PositionFeatures(), tmp_path / "out")
    # pair 1 (radius 0.05 -> 5 px, 0.1 -> 10, 0.2 -> 20): errors 0, 5, 30 -> 2, 2, 2 hits (5 <= 5 counts)
    # pair 2 (box 40: radius 2, 4, 8): errors 8, 8 -> 0, 0, 2 hits
    assert result["keypoints"] == 5 and result["pairs"] == 2
    assert result["pck"]["all"] == pytest.approx({"PCK@0.05": 2 / 5, "PCK@0.1": 2 / 5, "PCK@0.2": 4 / 5})
    assert "| all | 5 | 40.0 | 40.0 | 80.0 |" in (tmp_path / "out" / "pck.md").read_text()

    image_cfg = load_config([], [f"corr.benchmark={root}", "corr.alphas=[0.05]", "corr.pck_reference=image"])
    # image reference: the target image's larger side, 200 -> 10 px: errors 0, 5, 30, 8, 8 -> 4 of 5
    assert pck_benchmark(image_cfg, PositionFeatures(), tmp_path / "out")["pck"]["all"]["PCK@0.05"] == 4 / 5


def test_a_pair_without_a_target_box_is_skipped_and_listed_when_pck_needs_the_box(tmp_path, capsys):
    good = {"src_imname": "a.jpg", "trg_imname": "b.jpg", "src_kps": [[10, 10]], "trg_kps": [[25, 12.5]],
            "trg_bndbox": [50, 25, 150, 75]}
    no_box = {"src_imname": "a.jpg", "trg_imname": "b.jpg", "src_kps": [[10, 10]], "trg_kps": [[25, 12.5]]}
    root = write_benchmark(tmp_path / "bench", [good, no_box], {"a.jpg": (100, 100), "b.jpg": (200, 100)})
    (tmp_path / "out").mkdir()
    result = pck_benchmark(load_config([], [f"corr.benchmark={root}"]), PositionFeatures(), tmp_path / "out")
    assert result["pairs"] == 1 and result["skipped"] == [
        "001.json: missing trg_bndbox (PCK is measured against the target's bounding box: corr.pck_reference=bbox)"]
    assert "skipped 001.json: missing trg_bndbox" in capsys.readouterr().err
    # Measured against the image, the box is not needed.
    image = load_config([], [f"corr.benchmark={root}", "corr.pck_reference=image"])
    assert pck_benchmark(image, PositionFeatures(), tmp_path / "out")["pairs"] == 2


def test_a_benchmark_folder_without_annotations_says_what_it_needs(tmp_path):
    with pytest.raises(LumenError, match="PairAnnotation/<split>"):
        read_pairs(tmp_path, "test")


def test_warps_map_keypoints_exactly(tmp_path):
    """An image whose colour encodes position (red = x, green = y): after each warp, the colour at a mapped
    keypoint says where it came from."""
    w, h = 160, 120
    xs, ys = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    picture = np.stack([xs / w * 255, ys / h * 255, np.full_like(xs, 128)], axis=-1).round().astype(np.uint8)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(picture).save(images / "gradient.png")
    assert make_warp_pairs([str(images), str(tmp_path / "pairs"), "--points", "30"]) == 0
    pairs, problems = read_pairs(tmp_path / "pairs", "test")
    assert not problems and sorted(p.category for p in pairs) == ["flip", "perspective", "rotation", "scale_crop"]
    for pair in pairs:
        target = np.asarray(Image.open(pair.target_image), dtype=np.float64)
        for (x, y), (u, v) in zip(pair.source_points, pair.target_points):
            r, g = target[int(v), int(u), :2]
            # within 2.5 px (colour steps of 255 / 160, JPEG and bicubic rounding) of the source position
            assert abs(r / 255 * w - x) < 2.5 and abs(g / 255 * h - y) < 2.5, (pair.category, x, y, u, v)
    with pytest.raises(LumenError, match="exists"):
        make_warp_pairs([str(images), str(tmp_path / "pairs")])


def test_homography_of_four_points_and_the_flip():
    corners = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    moved = np.array([[1, 2], [12, 1], [11, 13], [0, 9]], float)
    from lumen.correspondence.warp_pairs import homography

    assert np.allclose(apply_homography(homography(corners, moved), corners), moved)
    flip = warp_matrix("flip", 100, 50, np.random.default_rng(0))
    assert np.allclose(apply_homography(flip, np.array([[10.0, 5.0]])), [[90.0, 5.0]])


def test_joint_pca_gives_the_same_colour_to_the_same_feature_in_any_image():
    a = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(0))
    b = a.flip(-1)  # the same features, mirrored
    colours = joint_pca_colours([a, b])
    assert colours[0].shape == (3, 3, 4) and torch.allclose(colours[0], colours[1].flip(-1), atol=1e-5)
    assert colours[0].min() >= 0 and max(c.max() for c in colours) <= 1


def photos(tmp_path: Path, count: int) -> list[Path]:
    """Real photos when the shared COCO files are there, else synthetic scenes."""
    if COCO_MINI.is_dir():
        return sorted(COCO_MINI.glob("*.jpg"))[:count]
    from lumen.testing.synthetic_coco import render_scene

    out = []
    for i in range(count):
        image, _ = render_scene(np.random.default_rng(i), 160, 120)
        out.append(tmp_path / f"scene{i}.png")
        Image.fromarray(image).save(out[-1])
    return out


def test_the_matches_picture_draws_each_point_where_the_json_says(tiny_args, tmp_path):
    source, target = photos(tmp_path, 2)
    out = tmp_path / "corr"
    assert correspond_command.main([*tiny_args, f"corr.source={source}", f"corr.target={target}",
                                    "corr.points=[[40,40],[200,150],[300,60]]", f"corr.out={out}",
                                    "corr.resolution=64", "corr.joint_pca=true"]) == 0
    matches = json.loads((out / "matches.json").read_text())
    picture = np.asarray(Image.open(out / "matches.png").convert("RGB"))
    s_img, t_img = Image.open(source), Image.open(target)
    s, t, offset = side_by_side_layout(s_img, t_img)
    colours = point_colours(len(matches["matches"]))
    assert [m["source"] for m in matches["matches"]] == [[40, 40], [200, 150], [300, 60]]
    for k, match in enumerate(matches["matches"]):
        x, y = match["source"]
        assert tuple(picture[round(y * s), round(x * s)]) == colours[k]
        u, v = match["target"]
        later = [j for j, m in enumerate(matches["matches"]) if m["target"] == match["target"]]
        assert tuple(picture[round(v * t), round(offset + u * t)]) == colours[later[-1]]  # the last one drawn
        assert -1 <= match["similarity"] <= 1
    joint = Image.open(out / "joint_pca.png")
    assert joint.height == 2 * 384 + 8


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_an_image_against_itself_scores_pck_one_for_every_backbone(backbone, tiny_args, tiny_backbones, tmp_path):
    images = photos(tmp_path, 2)
    root = tmp_path / "self"
    annotations = root / "PairAnnotation" / "test"
    annotations.mkdir(parents=True)
    (root / "JPEGImages" / "photo").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, path in enumerate(images):
        image = Image.open(path).convert("RGB")
        image.save(root / "JPEGImages" / "photo" / f"{i}.jpg")
        points = rng.uniform((5, 5), (image.width - 5, image.height - 5), size=(10, 2)).round(1).tolist()
        (annotations / f"{i}.json").write_text(json.dumps({
            "src_imname": f"{i}.jpg", "trg_imname": f"{i}.jpg", "category": "photo", "src_kps": points,
            "trg_kps": points, "src_bndbox": [0, 0, image.width, image.height],
            "trg_bndbox": [0, 0, image.width, image.height]}))
    extra = [f"layout.backbone_model={tiny_backbones[BACKBONES[backbone]]}"] if BACKBONES[backbone] else []
    cfg = load_config([tiny_args[0]], [*tiny_args[1:], f"layout.backbone={backbone}", *extra,
                                       f"corr.benchmark={root}", "corr.resolution=128", f"corr.out={tmp_path / 'o'}"])
    result = correspond_command.correspond(cfg)
    assert result["pck"]["all"]["PCK@0.1"] == 1.0 and result["keypoints"] == 20


def test_the_feature_cache_extracts_each_image_once(tmp_path):
    calls = []

    class Counting(PositionFeatures):
        def __call__(self, images):
            calls.append(len(images))
            return super().__call__(images)

    paths = []
    for name in ("a", "b", "c"):
        paths.append(tmp_path / f"{name}.png")
        Image.new("RGB", (8, 8)).save(paths[-1])
    cache = FeatureCache(Counting(), size=2)
    cache.fill([paths[0], paths[1], paths[0]])
    cache.fill([paths[1], paths[2]])
    assert calls == [2, 1] and list(cache.items) == [paths[1], paths[2]]


def test_make_warp_pairs_names_unreadable_images_and_refuses_when_none_is_usable(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(LumenError, match="no pair could be made from 1 image.*broken.jpg"):
        make_warp_pairs([str(images), str(tmp_path / "none")])
    assert not (tmp_path / "none").exists() and not (tmp_path / "none.tmp").exists()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(images / "red.png")
    assert make_warp_pairs([str(images), str(tmp_path / "pairs"), "--warps", "flip"]) == 0
    assert "skipped" in capsys.readouterr().err and len(read_pairs(tmp_path / "pairs", "test")[0]) == 1

