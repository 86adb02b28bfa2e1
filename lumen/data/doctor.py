"""Preflight of a data set (COCO-Stuff, an image folder or a Hugging Face dataset): find every problem before any
GPU time is spent.

For each split: images listed in the caption file (or metadata, or table) and found, captions and caption-count
statistics,
images without captions, files listed but missing, images that cannot be decoded (corrupt or truncated),
label maps (present, readable, 2-D uint8, the image's size, values in the expected set) and stuff annotations.
Every image is decoded in full, with a thread pool (Pillow releases the GIL while decoding).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from lumen.config import DataConfig
from lumen.data.labels import LabelMapError, read_stuffthingmap, valid_label_values
from lumen.data.sources import get_data_source, read_data_split
from lumen.data.sources.coco import DataLayoutError
from lumen.data.sources.webdataset import TruncatedShardError
from lumen.data.split_index import ImageRecord, SplitIndex

_VALID_LABELS = valid_label_values()


@dataclass
class SplitReport:
    split: str
    index: SplitIndex
    bad_images: dict[str, str] = field(default_factory=dict)  # path -> reason (missing, unreadable, truncated)
    label_maps_found: int = 0
    label_problems: dict[str, str] = field(default_factory=dict)  # path -> reason
    warnings: dict[str, str] = field(default_factory=dict)  # path -> note (usable, but worth a look)
    stuff_images: Optional[int] = None  # images with stuff annotations, when the stuff file is there
    stuff_annotations: Optional[int] = None
    broken_shards: dict[str, str] = field(default_factory=dict)  # tar shard -> why it is not whole
    seconds: float = 0.0

    @property
    def images_checked(self) -> int:
        return len(self.index.records)

    @property
    def bad_fraction(self) -> float:
        return len(self.bad_images) / max(self.images_checked, 1)


def _check_image(index: SplitIndex, record: ImageRecord) -> tuple[Optional[str], Optional[str], Optional[str], bool]:
    """Returns (image problem, label-map problem, warning, label map found) for one record."""
    image_problem = label_problem = warning = None
    size = None
    if record.row is None and not record.path.is_file():
        image_problem = ("listed in the caption file but missing on disk" if index.paths is not None
                         else "listed in the metadata but missing on disk")
    else:
        try:
            image = index.read_image(record)
            size = (image.height, image.width)
        except Exception as err:
            image_problem = f"cannot be decoded ({type(err).__name__}: {err})"
    if size is not None and record.height and size != (record.height, record.width):
        warning = f"image is {size[1]}x{size[0]} but the caption file says {record.width}x{record.height}"
    found = False
    if record.label_path is not None:
        if not record.label_path.is_file():
            label_problem = "label map missing"
        else:
            found = True
            try:
                label = read_stuffthingmap(record.label_path)
            except (OSError, LabelMapError) as err:
                label_problem = f"unreadable label map ({err})"
            else:
                if size is not None and label.shape != size:
                    label_problem = f"label map is {label.shape[1]}x{label.shape[0]}, image is {size[1]}x{size[0]}"
                else:
                    bad_values = np.unique(label[~_VALID_LABELS[label]])
                    if bad_values.size:
                        label_problem = (f"values outside the stuffthingmaps set (0-181 without the 11 unused "
                                         f"thing ids, 255 unlabeled): {bad_values[:10].tolist()}")
    return image_problem, label_problem, warning, found


def check_split(index: SplitIndex, num_workers: int = 4, progress: bool = True) -> SplitReport:
    """Check every image (and label map) of ``index``; counts and problems go into a ``SplitReport``."""
    report = SplitReport(split=index.split, index=index)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        results = pool.map(lambda record: _check_image(index, record), index.records)
        for record, (image_problem, label_problem, warning, found) in tqdm(
            zip(index.records, results), total=len(index.records), desc=f"checking {report.split}",
            unit="img", disable=not progress,
        ):
            if image_problem:
                report.bad_images[record.key or str(record.path)] = image_problem
            if label_problem:
                report.label_problems[str(record.label_path)] = label_problem
            if warning:
                report.warnings[str(record.path)] = warning
            report.label_maps_found += found
    if index.paths is not None and index.paths.stuff_file is not None:
        with open(index.paths.stuff_file, encoding="utf-8") as handle:
            annotations = json.load(handle).get("annotations", [])
        report.stuff_annotations = len(annotations)
        report.stuff_images = len({int(a["image_id"]) for a in annotations})
    report.seconds = time.perf_counter() - start
    return report


def check_stream_split(stream, num_workers: int = 4, progress: bool = True) -> SplitReport:
    """``check_split`` for tar shards (a ``lumen.data.sources.webdataset.WebDatasetSplit``), read shard by shard: every
    image decoded, samples without a caption listed."""
    from lumen.data.split_index import decode_image_bytes, stable_id

    def problem(sample) -> Optional[str]:
        if sample.image is None:
            return f"no image member '{stream.image_member}'"
        try:
            decode_image_bytes(sample.image)
        except Exception as err:
            return f"cannot be decoded ({type(err).__name__}: {err})"
        return None

    start = time.perf_counter()
    records, without, bad, listed = [], [], {}, 0
    broken = dict(stream.truncated)  # not read: their samples after the cut are missing
    bar = tqdm(desc=f"checking {stream.split}", unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for url in stream.urls:
            if url in broken:
                continue
            try:
                samples = list(stream.iter_shard(url))  # one shard in memory at a time
            except TruncatedShardError as err:
                broken[url] = f"unreadable to its end ({err})"
                continue
            for sample, reason in zip(samples, pool.map(problem, samples)):
                listed += 1
                if not sample.captions:
                    without.append(sample.key)
                    continue
                records.append(ImageRecord(stable_id(sample.key), Path(sample.key), sample.captions, 0, 0,
                                           key=sample.key))
                if reason:
                    bad[sample.key] = reason
            bar.update(len(samples))
    bar.close()
    index = SplitIndex(paths=None, records=records, images_listed=listed,
                       num_captions=sum(len(r.captions) for r in records), images_without_captions=without,
                       split_name=stream.split, location=stream.location, image_column=stream.image_member,
                       caption_columns=stream.caption_members)
    return SplitReport(split=stream.split, index=index, bad_images=bad, broken_shards=broken,
                       seconds=time.perf_counter() - start)


def _caption_stats(index: SplitIndex) -> str:
    counts = [len(r.captions) for r in index.records]
    if not counts:
        return "no captions"
    histogram = ", ".join(f"{n} captions: {k}" for n, k in sorted(Counter(counts).items()))
    words = [len(c.split()) for r in index.records for c in r.captions]
    return (f"per image min {min(counts)} / median {statistics.median(counts):g} / max {max(counts)} "
            f"({histogram}); words per caption median {statistics.median(words):g}, max {max(words)}")


def format_report(report: SplitReport, max_bad_fraction: float, show: int = 50) -> str:
    """A human-readable report of one split; problems are listed with their paths (up to ``show`` each)."""
    index, paths = report.index, report.index.paths
    lines = [f"== split '{report.split}' =="]
    if paths is not None:
        lines += [f"  images folder:  {paths.images_dir}",
                  f"  captions file:  {paths.captions_file}",
                  f"  label maps:     {paths.label_maps_dir or '(none found)'}",
                  f"  stuff file:     {paths.stuff_file or '(none found)'}"]
    else:
        lines += [f"  read from:      {index.location}",
                  f"  columns:        image '{index.image_column}', captions "
                  f"{', '.join(repr(c) for c in index.caption_columns)}"]
    lines += [f"  images listed:  {index.images_listed}",
             f"  with captions:  {len(index.records)} images, {index.num_captions} captions",
             f"  captions:       {_caption_stats(index)}"]
    if index.images_without_captions:
        ids = ", ".join(str(i) for i in index.images_without_captions[:show])
        lines.append(f"  WITHOUT CAPTION (excluded): {len(index.images_without_captions)} images: {ids}")
    if index.empty_captions:
        lines.append(f"  blank captions (dropped): {index.empty_captions}")
    if paths is not None and paths.label_maps_dir is not None:
        lines.append(f"  label maps:     {report.label_maps_found} of {len(index.records)} found")
    if report.stuff_annotations is not None:
        lines.append(f"  stuff JSON:     {report.stuff_annotations} annotations over {report.stuff_images} images")
    usable = len(index.records) - len(report.bad_images)
    lines.append(f"  usable images:  {usable} of {len(index.records)}"
                 + (f" (in the whole shards; {len(report.broken_shards)} shard(s) not read)"
                    if report.broken_shards else ""))
    for title, problems in (("TRUNCATED SHARDS (write or copy them again)", report.broken_shards),
                            ("UNUSABLE IMAGES", report.bad_images), ("LABEL-MAP PROBLEMS", report.label_problems),
                            ("warnings", report.warnings)):
        if problems:
            lines.append(f"  {title}: {len(problems)}")
            for path, reason in sorted(problems.items())[:show]:
                lines.append(f"    - {path}: {reason}")
            if len(problems) > show:
                lines.append(f"    ... and {len(problems) - show} more")
    verdict = "OK" if split_passes(report, max_bad_fraction) else "FAIL"
    lines.append(f"  bad fraction:   {100 * report.bad_fraction:.2f}% (limit data.max_bad_fraction="
                 f"{max_bad_fraction}) -> {verdict}")
    per_thousand = report.seconds / max(report.images_checked, 1) * 1000
    lines.append(f"  speed:          {report.seconds:.2f} s for {report.images_checked} images "
                 f"({per_thousand:.1f} s per 1000 images)")
    return "\n".join(lines)


def split_passes(report: SplitReport, max_bad_fraction: float) -> bool:
    """A split passes when its share of unusable images is within the limit, its label maps are sound and every
    tar shard is whole (a truncated one lost an unknown number of images)."""
    return (report.bad_fraction <= max_bad_fraction and not report.broken_shards
            and len(report.label_problems) <= max_bad_fraction * max(report.images_checked, 1))


def seconds_per_thousand(reports: list[SplitReport]) -> float:
    images = sum(r.images_checked for r in reports)
    return sum(r.seconds for r in reports) / max(images, 1) * 1000


def run_doctor(data: DataConfig, progress: bool = True) -> tuple[bool, str]:
    """Check the train and val splits of ``data``; returns (passed, the report as text)."""
    sections, reports, passed = [], [], True
    for split in dict.fromkeys([data.train_split, data.val_split]):
        start = time.perf_counter()
        workers = max(1, data.num_workers)
        try:
            source = get_data_source(data.source)
            if source.streams:  # read shard by shard while they are checked
                stream = source.open_stream(data, split, False)  # shards that are not whole: listed in the report
                report = check_stream_split(stream, num_workers=workers, progress=progress)
            else:
                index = read_data_split(data, split)
                listing = time.perf_counter() - start
                report = check_split(index, num_workers=workers, progress=progress)
                report.seconds += listing  # the speed counts reading the caption file or table too
        except DataLayoutError as err:
            sections.append(f"== split '{split}' ==\n  FAIL: {err}")
            passed = False
            continue
        reports.append(report)
        sections.append(format_report(report, data.max_bad_fraction))
        passed &= split_passes(report, data.max_bad_fraction)
    if reports:
        sections.append(f"checked {sum(r.images_checked for r in reports)} images at "
                        f"{seconds_per_thousand(reports):.1f} s per 1000 images")
    sections.append("doctor: PASS" if passed else "doctor: FAIL (see the problems above)")
    return passed, "\n".join(sections)
