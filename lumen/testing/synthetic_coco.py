"""A small synthetic data set written in the official COCO-Stuff 2017 layout.

Scenes of stuff regions (sky over grass, sea, sand, snow or road; or a wall over a floor), with one or two
thing shapes on them (balls, kites, cars, boats, birds, chairs, plants) in one of nine colours, at random
places and sizes, and five captions per image that name them, their colours and the ground. Written exactly
like the real data:

    {root}/{split}2017/{id:012d}.jpg
    {root}/annotations/captions_{split}2017.json        5 captions per image, not grouped by image
    {root}/annotations/stuff_{split}2017.json           compressed RLE per (image, stuff class), 183 = things
    {root}/stuffthingmaps_trainval2017/{split}2017/{id:012d}.png   value = id - 1, 255 unlabeled

It is the embedded default's data, so every stage can run (and be tested) offline. Seeded: the same
arguments write the same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from lumen.data.labels import IGNORE, STUFF_OTHER_ID, stuff_annotations


@dataclass(frozen=True)
class Category:
    id: int  # COCO-Stuff id (JSON numbering)
    name: str  # COCO-Stuff name
    word: str  # how a caption says it
    colour: tuple[int, int, int]
    supercategory: str
    colour_word: str = ""  # a thing's colour as the captions name it (stuff has its own, unnamed)


SKIES = [Category(157, "sky-other", "sky", (110, 160, 225), "sky"),
         Category(106, "clouds", "cloudy sky", (200, 205, 215), "sky")]
GROUNDS = [Category(124, "grass", "grass", (70, 150, 60), "plant"),
           Category(155, "sea", "sea", (30, 90, 160), "water"),
           Category(154, "sand", "sand", (215, 190, 130), "ground"),
           Category(159, "snow", "snow", (240, 242, 248), "ground"),
           Category(149, "road", "road", (90, 90, 95), "ground")]
WALLS = [Category(172, "wall-concrete", "concrete wall", (185, 180, 170), "wall"),
         Category(171, "wall-brick", "brick wall", (160, 75, 55), "wall")]
FLOORS = [Category(118, "floor-wood", "wooden floor", (150, 105, 60), "floor"),
          Category(117, "floor-tile", "tiled floor", (210, 210, 200), "floor")]
EXTRA_STUFF = [Category(135, "mountain", "mountains", (120, 110, 105), "solid"),
               Category(169, "tree", "trees", (35, 95, 40), "plant")]
# Things with the shape they are drawn as and where they go. A thing's colour is drawn per image from
# THING_COLOURS and named in the captions, so a text-conditioned model learns what a colour word does.
THINGS = {
    "outdoor": [(Category(37, "sports ball", "ball", (230, 60, 40), "sports"), "circle"),
                (Category(38, "kite", "kite", (240, 200, 30), "sports"), "diamond"),
                (Category(3, "car", "car", (200, 30, 30), "vehicle"), "car"),
                (Category(16, "bird", "bird", (40, 40, 40), "animal"), "triangle")],
    "sea": [(Category(9, "boat", "boat", (250, 250, 250), "vehicle"), "boat"),
            (Category(16, "bird", "bird", (40, 40, 40), "animal"), "triangle")],
    "indoor": [(Category(37, "sports ball", "ball", (230, 60, 40), "sports"), "circle"),
               (Category(62, "chair", "chair", (120, 70, 30), "furniture"), "chair"),
               (Category(64, "potted plant", "potted plant", (40, 130, 50), "furniture"), "plant")],
}
THING_COLOURS = {"red": (215, 35, 30), "orange": (245, 135, 20), "yellow": (245, 215, 30),
                 "green": (40, 170, 50), "blue": (35, 75, 215), "purple": (135, 45, 175),
                 "pink": (245, 125, 180), "white": (248, 248, 248), "black": (25, 25, 25)}


def _draw_thing(draw: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, size: int, value: int) -> None:
    """Draw a thing's silhouette into a label map (``value`` = its label) centred at (cx, cy)."""
    s = size
    if shape == "circle":
        draw.ellipse([cx - s, cy - s, cx + s, cy + s], fill=value)
    elif shape == "diamond":
        draw.polygon([(cx, cy - s), (cx + s * 0.7, cy), (cx, cy + s), (cx - s * 0.7, cy)], fill=value)
    elif shape == "triangle":
        draw.polygon([(cx - s, cy), (cx, cy - s * 0.4), (cx + s, cy), (cx, cy + s * 0.3)], fill=value)
    elif shape == "car":
        draw.rectangle([cx - s * 1.6, cy - s * 0.3, cx + s * 1.6, cy + s * 0.5], fill=value)
        draw.rectangle([cx - s * 0.8, cy - s * 0.9, cx + s * 0.8, cy - s * 0.3], fill=value)
    elif shape == "boat":
        draw.polygon([(cx - s * 1.5, cy), (cx + s * 1.5, cy), (cx + s, cy + s * 0.6), (cx - s, cy + s * 0.6)],
                     fill=value)
        draw.polygon([(cx, cy - s * 1.4), (cx, cy), (cx + s * 0.9, cy)], fill=value)
    elif shape == "chair":
        draw.rectangle([cx - s * 0.6, cy - s * 1.2, cx - s * 0.4, cy + s], fill=value)
        draw.rectangle([cx - s * 0.6, cy, cx + s * 0.6, cy + s * 0.2], fill=value)
        draw.rectangle([cx + s * 0.4, cy, cx + s * 0.6, cy + s], fill=value)
    elif shape == "plant":
        draw.rectangle([cx - s * 0.4, cy, cx + s * 0.4, cy + s * 0.8], fill=value)
        draw.ellipse([cx - s * 0.8, cy - s * 1.2, cx + s * 0.8, cy + s * 0.1], fill=value)
    else:
        raise ValueError(f"unknown shape {shape}")


def _scene(rng: np.random.Generator, width: int, height: int):
    """One random scene: the label map (id - 1 convention), the categories used and five captions."""
    label = Image.new("L", (width, height), IGNORE)
    draw = ImageDraw.Draw(label)
    indoor = rng.random() < 0.25
    horizon = int(height * rng.uniform(0.35, 0.65))
    if indoor:
        upper, lower = WALLS[rng.integers(len(WALLS))], FLOORS[rng.integers(len(FLOORS))]
        pool = THINGS["indoor"]
    else:
        upper, lower = SKIES[rng.integers(len(SKIES))], GROUNDS[rng.integers(len(GROUNDS))]
        pool = THINGS["sea"] if lower.name == "sea" else THINGS["outdoor"]
    draw.rectangle([0, 0, width, horizon], fill=upper.id - 1)
    draw.rectangle([0, horizon, width, height], fill=lower.id - 1)
    used = [upper, lower]
    if not indoor and rng.random() < 0.4:  # a band of mountains or trees on the horizon
        extra = EXTRA_STUFF[rng.integers(len(EXTRA_STUFF))]
        peaks = [(0, horizon)] + [(x, horizon - int(rng.uniform(0.1, 0.3) * height))
                                  for x in np.linspace(0, width, 5)[1:-1]] + [(width, horizon)]
        draw.polygon(peaks, fill=extra.id - 1)
        used.append(extra)
    things = []
    for pick in rng.choice(len(pool), size=int(rng.integers(1, 3)), replace=False):
        category, shape = pool[pick]
        colour_word = list(THING_COLOURS)[rng.integers(len(THING_COLOURS))]
        category = replace(category, colour=THING_COLOURS[colour_word], colour_word=colour_word)
        size = int(min(width, height) * rng.uniform(0.1, 0.2))
        cx = int(rng.uniform(0.2, 0.8) * width)
        flies = shape in ("diamond", "triangle")
        cy = (int(rng.uniform(0.15, 0.8) * horizon) if flies
              else int(rng.uniform(horizon + size * 0.5, max(horizon + size * 0.5 + 1, height - size))))
        # A one-pixel unlabeled rim, as real annotations leave between touching regions.
        _draw_thing(draw, shape, cx, cy, size + 1, IGNORE)
        _draw_thing(draw, shape, cx, cy, size, category.id - 1)
        things.append(category)
    return np.array(label), used, things, indoor


def _a(word: str) -> str:
    """``word`` with its indefinite article ("a red", "an orange")."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _captions(rng: np.random.Generator, used, things, indoor: bool) -> list[str]:
    upper, lower = used[0], used[1]
    thing = things[0]
    colour = thing.colour_word
    where = "in a room" if indoor else f"under a {'cloudy' if upper.name == 'clouds' else 'blue'} sky"
    on = "on the" if thing.word not in ("kite", "bird") else "above the"
    extra = f" with {used[2].word} behind" if len(used) > 2 else ""
    many = f" and {_a(things[1].colour_word)} {things[1].word}" if len(things) > 1 else ""
    captions = [
        f"{_a(colour)} {thing.word}{many} {on} {lower.word} {where}",
        f"a photo of {_a(colour)} {thing.word} {on} {lower.word}{extra}",
        f"there is {_a(colour)} {thing.word} in front of the {upper.word}",
        f"{lower.word} and {upper.word} with a {thing.word}",
        f"a simple picture of {_a(colour)} {thing.word}{many} {on} {lower.word}",
    ]
    captions = [" ".join(c.split()) for c in captions]
    # Real COCO captions are raw human text: some start with a capital, some end with spaces or a newline.
    for i in range(len(captions)):
        roll = rng.random()
        if roll < 0.3:
            captions[i] = captions[i][0].upper() + captions[i][1:]
        elif roll < 0.45:
            captions[i] += " \n" if rng.random() < 0.5 else "  "
    return captions


def _render(rng: np.random.Generator, label_map: np.ndarray, categories: list[Category]) -> np.ndarray:
    """Colour each region with its category's colour, jittered per image, plus shading and texture noise."""
    height, _ = label_map.shape
    palette = np.zeros((256, 3), dtype=np.float32)
    palette[IGNORE] = (128, 128, 128)
    for category in categories:
        palette[category.id - 1] = np.array(category.colour) + rng.normal(0, 12, 3)
    image = palette[label_map]
    # Rims (255) take the colour of a neighbour so they look like an edge, not a grey outline.
    rim = label_map == IGNORE
    image[rim] = np.roll(image, 2, axis=0)[rim]
    shade = np.linspace(1.08, 0.92, height, dtype=np.float32)[:, None, None]
    image = image * shade + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One random scene: ``(H, W, 3)`` uint8 image and its ``(H, W)`` label map (stuffthingmaps values)."""
    label_map, used, things, _ = _scene(rng, width, height)
    return _render(rng, label_map, used + things), label_map


def render_captioned_scene(rng: np.random.Generator, width: int,
                           height: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """One random scene: ``(H, W, 3)`` uint8 image, its five captions and its ``(H, W)`` label map."""
    label_map, used, things, indoor = _scene(rng, width, height)
    return _render(rng, label_map, used + things), _captions(rng, used, things, indoor), label_map


def write_synthetic_split(root: str | Path, split: str, image_ids: list[int], width: int, height: int,
                          rng: np.random.Generator, progress: bool = True) -> None:
    """Write one split's images, label maps, captions and stuff annotations (see the module docstring)."""
    root = Path(root)
    image_dir = root / f"{split}2017"
    map_dir = root / "stuffthingmaps_trainval2017" / f"{split}2017"
    ann_dir = root / "annotations"
    for folder in (image_dir, map_dir, ann_dir):
        folder.mkdir(parents=True, exist_ok=True)
    licence = {"id": 1, "name": "CC0 1.0 (synthetic image)", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}
    images, captions, stuff = [], [], []
    categories: dict[int, Category] = {}
    for image_id in tqdm(image_ids, desc=f"synthetic {split}", disable=not progress):
        label_map, used, things, indoor = _scene(rng, width, height)
        for category in used + things:
            categories[category.id] = category
        file_name = f"{image_id:012d}.jpg"
        Image.fromarray(_render(rng, label_map, used + things)).save(image_dir / file_name, quality=92)
        Image.fromarray(label_map, mode="L").save(map_dir / f"{image_id:012d}.png")
        images.append({"license": 1, "file_name": file_name, "coco_url": "", "height": height, "width": width,
                       "date_captured": "2024-01-01 00:00:00", "flickr_url": "", "id": image_id})
        for text in _captions(rng, used, things, indoor):
            captions.append({"image_id": image_id, "caption": text})
        stuff += stuff_annotations(label_map, image_id, stuff_values=[c.id - 1 for c in used],
                                   thing_values=[t.id - 1 for t in things])
    # Like the real files: annotations not grouped by image and ids not contiguous per image.
    for ann_list in (captions, stuff):
        order = rng.permutation(len(ann_list))
        ann_list[:] = [ann_list[i] for i in order]
    next_id = int(rng.integers(1, 1000))
    for ann in captions + stuff:
        ann["id"] = next_id
        next_id += int(rng.integers(1, 5))
    info = {"description": f"Lumen synthetic COCO-Stuff-format data ({split})", "version": "1.0", "year": 2024,
            "contributor": "lumen.testing.synthetic_coco", "url": "", "date_created": "2024-01-01"}
    caption_file = {"info": info, "licenses": [licence], "images": images, "annotations": captions}
    stuff_categories = [{"id": c.id, "name": c.name, "supercategory": c.supercategory}
                        for c in sorted(categories.values(), key=lambda c: c.id) if c.id >= 92]
    stuff_categories.append({"id": STUFF_OTHER_ID, "name": "other", "supercategory": "other"})
    stuff_file = {"info": info, "images": images, "licenses": [licence], "categories": stuff_categories,
                  "annotations": stuff}
    (ann_dir / f"captions_{split}2017.json").write_text(json.dumps(caption_file))
    (ann_dir / f"stuff_{split}2017.json").write_text(json.dumps(stuff_file))


def write_synthetic_coco_stuff(root: str | Path, num_train: int, num_val: int, width: int, height: int,
                               seed: int = 0, progress: bool = True) -> Path:
    """Write a train and a val split under ``root`` (image ids drawn like COCO's, disjoint between splits).

    A marker file ``lumen_synthetic.json`` with the arguments is written last, so a folder that has it is
    complete; ``synthetic_matches`` tells whether an existing folder was written with the same arguments.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = sorted(int(i) for i in rng.choice(np.arange(1, 600_000), size=num_train + num_val, replace=False))
    order = rng.permutation(len(ids))
    train_ids = sorted(ids[i] for i in order[:num_train])
    val_ids = sorted(ids[i] for i in order[num_train:])
    marker = root / "lumen_synthetic.json"
    if root.is_dir() and any(root.iterdir()):
        if not marker.is_file():
            raise FileExistsError(f"{root} exists and is not a synthetic data set written by Lumen; "
                                  f"choose an empty or new folder")
        # Rewrite from scratch, so files of an earlier, larger data set do not linger unlisted.
        import shutil

        marker.unlink()
        for name in ("train2017", "val2017", "stuffthingmaps_trainval2017", "annotations"):
            shutil.rmtree(root / name, ignore_errors=True)
    write_synthetic_split(root, "train", train_ids, width, height, rng, progress)
    write_synthetic_split(root, "val", val_ids, width, height, rng, progress)
    marker.write_text(json.dumps(_settings(num_train, num_val, width, height, seed), indent=2))
    return root


def _settings(num_train: int, num_val: int, width: int, height: int, seed: int) -> dict:
    return {"num_train": num_train, "num_val": num_val, "width": width, "height": height, "seed": seed}


def synthetic_matches(root: str | Path, num_train: int, num_val: int, width: int, height: int, seed: int) -> bool:
    """True when ``root`` holds a complete synthetic data set written with these arguments."""
    marker = Path(root) / "lumen_synthetic.json"
    return marker.is_file() and json.loads(marker.read_text()) == _settings(num_train, num_val, width, height, seed)
