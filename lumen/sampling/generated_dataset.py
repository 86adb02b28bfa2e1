"""Synthetic training data from layouts, written in the official COCO layout (single device; the sharding over
processes is ``lumen_train.commands.synthesize``).

For source image S of a split, image k is generated from S's neural layout with its first caption or the
prompts given (in turn), and gets id ``S * 100 + k`` and a seed that depends on S and k only, so the data set
is the same however the work is shared out. Below ``out_root``::

    {split}2017/<id>.jpg                               generated images (the training resolution, square)
    annotations/captions_{split}2017.json              the prompt of each generated image
    stuffthingmaps_trainval2017/{split}2017/<id>.png   the source's label map, resized and cropped as the
    annotations/stuff_{split}2017.json                 source image was (so it is pixel-aligned with the
                                                       generated image); stuff as RLE, things as 'other'
    lumen_synthesized.json                             what made it (ControlNet, prompts, seed, skipped sources)
Work is cut into shards of sources; each finished shard leaves ``.shards/shard-<n>.json`` (its images'
records), which a rerun keeps, and the annotation files are written from all of them at the end.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lumen.artifacts import shard_name, write_text_atomically
from lumen.config import SampleConfig
from lumen.data.labels import stuff_annotations
from lumen.sampling.pipeline import SampleJob, run_jobs

MAX_PER_SOURCE = 100  # generated ids are source id * 100 + k (synthesize.images_per_source <= 99 in the schema)


@dataclass(frozen=True)
class SyntheticSplit:
    """Where one generated split goes."""

    root: Path
    split: str

    @property
    def images(self) -> Path:
        return self.root / f"{self.split}2017"

    @property
    def label_maps(self) -> Path:
        return self.root / "stuffthingmaps_trainval2017" / f"{self.split}2017"

    @property
    def shards(self) -> Path:
        return self.root / ".shards"

    def shard_file(self, shard: int) -> Path:
        return self.shards / f"{shard_name(shard)}.json"

    def make_folders(self) -> None:
        for folder in (self.images, self.label_maps, self.root / "annotations", self.shards):
            folder.mkdir(parents=True, exist_ok=True)


def source_number(record) -> int:
    """The number a source's seeds and generated ids start from: COCO's id, else its 63-bit id cut to 31 bits
    (seed + number * 100 + k must stay a valid seed)."""
    return record.image_id if not record.key else record.image_id % 2**31


def synthesize_shard(target: SyntheticSplit, shard: int, dataset, indices, pipe, extractor, encoder,
                     prompts: list[str], images_per_source: int, sample: SampleConfig, resolution: int,
                     progress=None, tmp_suffix: str = "") -> None:
    """Generate the images of the sources ``indices`` of ``dataset`` (an evaluation-mode data set, with label
    maps when it has them) and write them, then the shard's record (which marks it done). Sources other than
    COCO's name their images ``<source name>_<k>.jpg`` and record them under ``files`` (``write_in_format``
    writes them in the source's layout)."""
    images, captions, stuff, skipped, files = [], [], [], [], []
    for index in indices:
        item = dataset[index]
        record = dataset.index.records[index]
        if not isinstance(item, dict):
            skipped.append([item.path, item.reason])
            continue
        layout = encoder(extractor.features(item["pixel_values"][None])).cpu()
        number = source_number(record)
        jobs = [SampleJob(0, prompts[k % len(prompts)] if prompts else record.captions[0], k, 0,
                          sample.seed + number * MAX_PER_SOURCE + k, sample.n_components,
                          sample.num_inference_steps, sample.guidance_scale, sample.conditioning_scale,
                          sample.scheduler.value, resolution)
                for k in range(images_per_source)]
        for job, image in zip(jobs, run_jobs(pipe, layout, jobs, sample.batch_size, progress=progress)):
            if record.key:
                name = f"{record.name}_{job.prompt_index:02d}"
                Image.fromarray(image).save(target.images / f"{name}.jpg", quality=95)
                files.append({"file_name": f"{name}.jpg", "captions": [job.prompt], "source": record.key,
                              "seed": job.seed})
                continue
            new_id = record.image_id * MAX_PER_SOURCE + job.prompt_index
            name = f"{new_id:012d}"
            Image.fromarray(image).save(target.images / f"{name}.jpg", quality=95)
            images.append({"license": 0, "file_name": f"{name}.jpg", "coco_url": "", "height": resolution,
                           "width": resolution, "date_captured": "", "flickr_url": "", "id": new_id,
                           "source_image_id": record.image_id, "seed": job.seed})
            captions.append({"image_id": new_id, "caption": job.prompt})
            if "label" in item:
                label = item["label"].numpy().astype(np.uint8)
                Image.fromarray(label, mode="L").save(target.label_maps / f"{name}.png")
                stuff += stuff_annotations(label, new_id)
    fragment = {"images": images, "captions": captions, "stuff": stuff, "skipped": skipped, "files": files}
    write_text_atomically(target.shard_file(shard), json.dumps(fragment), tmp_suffix)


def write_in_format(target: SyntheticSplit, num_shards: int, writer, out: Path, provenance: dict) -> dict:
    """For a source other than COCO: the generated images of every shard (``files``) written to ``out`` by
    ``writer`` (the source's, ``DataSourceSpec.write``: the layout the source had) with their prompts as captions, and
    ``lumen_synthesized.json``; the working folder ``target.root`` is then removed. Returns the summary."""
    files, skipped = [], []
    for shard in range(num_shards):
        fragment = json.loads(target.shard_file(shard).read_text())
        files += fragment["files"]
        skipped += fragment["skipped"]
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    writer(out, {target.split: [(target.images / f["file_name"], f["captions"]) for f in files]})
    summary = dict(provenance, images=len(files), skipped_sources=skipped,
                   sources={f["file_name"]: {"source": f["source"], "seed": f["seed"]} for f in files})
    (out / "lumen_synthesized.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(target.root)
    return summary


def merge_shards(target: SyntheticSplit, num_shards: int, has_labels: bool, provenance: dict) -> dict:
    """Write the caption (and stuff) annotation files and ``lumen_synthesized.json`` from every shard's record,
    then remove the records. ``provenance`` (what made the data set) goes into both. Returns the summary."""
    images, captions, stuff, skipped = [], [], [], []
    for shard in range(num_shards):
        fragment = json.loads(target.shard_file(shard).read_text())
        images += fragment["images"]
        captions += fragment["captions"]
        stuff += fragment["stuff"]
        skipped += fragment["skipped"]
    for i, annotation in enumerate(captions + stuff, start=1):
        annotation["id"] = i
    info = {"description": f"generated by Lumen from the layouts of {provenance['source']}",
            "controlnet": provenance["controlnet"], "version": "1.0", "year": 2026, "contributor": "lumen",
            "url": "", "date_created": ""}
    licences = [{"id": 0, "name": "generated image; see the source data set's licences", "url": ""}]
    annotations = target.root / "annotations"
    (annotations / f"captions_{target.split}2017.json").write_text(
        json.dumps({"info": info, "licenses": licences, "images": images, "annotations": captions}))
    if has_labels:
        categories = sorted({a["category_id"] for a in stuff})
        (annotations / f"stuff_{target.split}2017.json").write_text(json.dumps({
            "info": info, "licenses": licences, "images": images, "annotations": stuff,
            "categories": [{"id": c, "name": str(c), "supercategory": ""} for c in categories]}))
    summary = dict(provenance, images=len(images), skipped_sources=skipped)
    (target.root / "lumen_synthesized.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(target.shards)
    return summary
