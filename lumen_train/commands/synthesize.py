"""Synthetic training data from layouts: python scripts/synthesize.py CONFIG.yaml [more.yaml ...] [key=value ...]

For every image of synthesize.split (the first synthesize.limit), generates synthesize.images_per_source images
from its neural layout, with its first caption or the prompts of synthesize.prompts (in turn), and writes a new
data set in the official COCO layout under synthesize.out_root:

    {split}2017/<id>.jpg                               generated images (the training resolution, square)
    annotations/captions_{split}2017.json              the prompt of each generated image
    stuffthingmaps_trainval2017/{split}2017/<id>.png   the source's label map, resized and cropped as the
    annotations/stuff_{split}2017.json                 source image was (so it is pixel-aligned with the
                                                       generated image); stuff as RLE, things as 'other'
The generated image of source id S, number k, has id S * 100 + k. Work is cut into shards of
synthesize.shard_size sources, spread over the processes under `accelerate launch`, and a killed run resumes
(finished shards are kept). The result passes scripts/doctor.py.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from lumen.artifacts import ensure_writable
from lumen.build import SamplingSetup, split_dataset
from lumen.config import LumenConfig, config_from_argv, save_config
from lumen.data.labels import IGNORE, STUFF_OTHER_ID
from lumen.data.paths import resolve_split_paths
from lumen.errors import run_cli
from lumen.sampling import SampleJob, run_jobs
from lumen_train.distributed import close_processes, make_accelerator

MAX_PER_SOURCE = 100  # generated ids are source id * 100 + k (synthesize.images_per_source <= 99 in the schema)


def stuff_annotations(label_map: np.ndarray, image_id: int) -> list[dict]:
    """One compressed-RLE annotation per stuff class of a label map (stuffthingmaps values), things as 'other'."""
    from pycocotools import mask as mask_utils

    annotations = []
    values = [int(v) for v in np.unique(label_map) if v != IGNORE]
    groups = [(v + 1, label_map == v) for v in values if v >= 91]
    things = np.isin(label_map, [v for v in values if v < 91])
    if things.any():
        groups.append((STUFF_OTHER_ID, things))
    for category, mask in groups:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append({"image_id": image_id, "category_id": category, "iscrowd": 0,
                            "segmentation": {"size": [int(x) for x in rle["size"]],
                                             "counts": rle["counts"].decode("ascii")},
                            "area": float(mask_utils.area(rle)), "bbox": [float(x) for x in mask_utils.toBbox(rle)]})
    return annotations


def synthesize(cfg: LumenConfig) -> Path:
    accelerator = make_accelerator()
    try:
        return _synthesize(cfg, accelerator)
    finally:
        close_processes(accelerator)


def _synthesize(cfg: LumenConfig, accelerator) -> Path:
    s = cfg.synthesize
    out = ensure_writable(s.out_root, "the synthetic data set")
    out_split = s.out_split or s.split
    shards_dir = out / ".shards"
    setup = SamplingSetup(cfg, cfg.sample.controlnet)
    has_labels = resolve_split_paths(cfg.data, s.split).label_maps_dir is not None
    dataset = split_dataset(cfg, s.split, labels="stuffthingmaps" if has_labels else "none")
    count = len(dataset) if s.limit is None else min(s.limit, len(dataset))
    shards = [range(a, min(a + s.shard_size, count)) for a in range(0, count, s.shard_size)]
    if accelerator.is_main_process:
        save_config(cfg, out, "lumen_config.yaml")
        for folder in (out / f"{out_split}2017", out / "stuffthingmaps_trainval2017" / f"{out_split}2017",
                       out / "annotations", shards_dir):
            folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    resolution = cfg.data.resolution
    mine = [i for i in range(len(shards)) if i % accelerator.num_processes == accelerator.process_index]
    todo = [i for i in mine if not (shards_dir / f"shard-{i:05d}.json").is_file()]
    bar = tqdm(total=sum(len(shards[i]) for i in todo) * s.images_per_source, desc="synthesize", unit="img",
               disable=not accelerator.is_main_process)
    pipe = setup.pipe(cfg.sample.scheduler.value)
    for shard in todo:
        images, captions, stuff, skipped = [], [], [], []
        for index in shards[shard]:
            item = dataset[index]
            record = dataset.index.records[index]
            if not isinstance(item, dict):
                skipped.append([item.path, item.reason])
                continue
            layout = setup.encoder(setup.extractor(item["pixel_values"][None]).features).cpu()
            jobs = []
            for k in range(s.images_per_source):
                prompt = s.prompts[k % len(s.prompts)] if s.prompts else record.captions[0]
                # The seed depends on the source and k only: the same data set whatever the sharding.
                jobs.append(SampleJob(0, prompt, k, 0, cfg.sample.seed + record.image_id * MAX_PER_SOURCE + k,
                                      cfg.sample.n_components, cfg.sample.num_inference_steps,
                                      cfg.sample.guidance_scale, cfg.sample.conditioning_scale,
                                      cfg.sample.scheduler.value, resolution))
            generated = run_jobs(pipe, layout, jobs, cfg.sample.batch_size, progress=bar)
            for k, (job, image) in enumerate(zip(jobs, generated)):
                new_id = record.image_id * MAX_PER_SOURCE + k
                name = f"{new_id:012d}"
                Image.fromarray(image).save(out / f"{out_split}2017" / f"{name}.jpg", quality=95)
                images.append({"license": 0, "file_name": f"{name}.jpg", "coco_url": "", "height": resolution,
                               "width": resolution, "date_captured": "", "flickr_url": "", "id": new_id,
                               "source_image_id": record.image_id, "seed": job.seed})
                captions.append({"image_id": new_id, "caption": job.prompt})
                if "label" in item:
                    label = item["label"].numpy().astype(np.uint8)
                    Image.fromarray(label, mode="L").save(
                        out / "stuffthingmaps_trainval2017" / f"{out_split}2017" / f"{name}.png")
                    stuff += stuff_annotations(label, new_id)
        fragment = {"images": images, "captions": captions, "stuff": stuff, "skipped": skipped}
        tmp = shards_dir / f"shard-{shard:05d}.json.tmp{accelerator.process_index}"
        tmp.write_text(json.dumps(fragment))
        tmp.rename(shards_dir / f"shard-{shard:05d}.json")  # a shard counts as done only once complete
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        merge_shards(cfg, out, out_split, shards_dir, len(shards), setup, has_labels)
    accelerator.wait_for_everyone()
    return out


def merge_shards(cfg, out: Path, out_split: str, shards_dir: Path, num_shards: int, setup, has_labels: bool) -> None:
    images, captions, stuff, skipped = [], [], [], []
    for shard in range(num_shards):
        fragment = json.loads((shards_dir / f"shard-{shard:05d}.json").read_text())
        images += fragment["images"]
        captions += fragment["captions"]
        stuff += fragment["stuff"]
        skipped += fragment["skipped"]
    for i, annotation in enumerate(captions + stuff, start=1):
        annotation["id"] = i
    info = {"description": f"generated by Lumen from the layouts of {cfg.data.root} ({cfg.synthesize.split})",
            "controlnet": str(setup.folder), "version": "1.0", "year": 2026, "contributor": "lumen", "url": "",
            "date_created": ""}
    licences = [{"id": 0, "name": "generated image; see the source data set's licences", "url": ""}]
    (out / "annotations" / f"captions_{out_split}2017.json").write_text(
        json.dumps({"info": info, "licenses": licences, "images": images, "annotations": captions}))
    if has_labels:
        categories = sorted({a["category_id"] for a in stuff})
        (out / "annotations" / f"stuff_{out_split}2017.json").write_text(json.dumps({
            "info": info, "licenses": licences, "images": images, "annotations": stuff,
            "categories": [{"id": c, "name": str(c), "supercategory": ""} for c in categories]}))
    (out / "lumen_synthesized.json").write_text(json.dumps({
        "controlnet": str(setup.folder), "source_split": cfg.synthesize.split, "images": len(images),
        "skipped_sources": skipped, "prompts": list(cfg.synthesize.prompts),
        "images_per_source": cfg.synthesize.images_per_source, "seed": cfg.sample.seed}, indent=2))
    shutil.rmtree(shards_dir)
    print(f"{len(images)} generated images in {out} (split '{out_split}'); "
          f"{len(skipped)} unusable source images skipped")
    print(f"check it: python scripts/doctor.py CONFIG data.root={out} data.train_split={out_split} "
          f"data.val_split={out_split}")


def main(argv=None) -> int:
    cfg = config_from_argv(argv, "synthesize.py", __doc__.splitlines()[0])
    synthesize(cfg)
    return 0


def cli() -> None:
    """``scripts/synthesize.py`` and ``lumen-synthesize``."""
    sys.exit(run_cli(main, "synthesize.py"))


if __name__ == "__main__":
    cli()
