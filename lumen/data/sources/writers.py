"""Write captioned images in the layouts ``data.source`` reads: an image folder with ``metadata.jsonl``, a
``save_to_disk`` dataset and webdataset tar shards. Used to convert data (``scripts/convert_data.py``) and by the tests.

Each writer takes ``splits``: split name -> a list of ``(image file, captions)``; the image files are copied
as they are (no re-encoding), the captions written as a list per image.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from lumen.errors import writing

CaptionedImages = Sequence[tuple[Path, Sequence[str]]]


def _fresh(out: Path) -> Path:
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another folder (nothing was written)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def write_imagefolder(out: str | Path, splits: Mapping[str, CaptionedImages]) -> Path:
    """``out/<split>/<image>`` with ``out/<split>/metadata.jsonl`` (``file_name`` and ``text``, a list)."""
    out = Path(out)
    tmp = _fresh(out)
    with writing(tmp, "the image folder"):
        for split, items in splits.items():
            folder = tmp / split
            folder.mkdir(parents=True)
            rows = []
            for path, captions in items:
                shutil.copyfile(path, folder / Path(path).name)
                rows.append({"file_name": Path(path).name, "text": list(captions)})
            (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.rename(out)
    return out


def write_hf_dataset(out: str | Path, splits: Mapping[str, CaptionedImages]) -> Path:
    """A ``DatasetDict`` saved with ``save_to_disk``: columns ``image`` (the encoded file, embedded) and ``text``
    (a list of captions)."""
    from datasets import Dataset, DatasetDict, Features, Image, List, Value

    out = Path(out)
    tmp = _fresh(out)
    features = Features({"image": Image(), "text": List(Value("string"))})
    tables = {}
    for split, items in splits.items():
        tables[split] = Dataset.from_dict(
            {"image": [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p, _ in items],
             "text": [list(c) for _, c in items]}, features=features)
    with writing(tmp, "the dataset"):
        DatasetDict(tables).save_to_disk(str(tmp))
        tmp.rename(out)
    return out


def write_webdataset(out: str | Path, splits: Mapping[str, CaptionedImages], shard_size: int = 1000) -> Path:
    """``out/<split>/<000000>.tar`` ...: each sample an image member (the file, its own extension) and a ``txt``
    member with one caption per line, ``shard_size`` samples per shard; keys are the images' stems."""
    import io
    import tarfile

    out = Path(out)
    tmp = _fresh(out)
    with writing(tmp, "the shards"):
        for split, items in splits.items():
            folder = tmp / split
            folder.mkdir(parents=True)
            for start in range(0, len(items), shard_size):
                with tarfile.open(folder / f"{start // shard_size:06d}.tar", "w") as tar:
                    for path, captions in items[start:start + shard_size]:
                        path = Path(path)
                        members = ((path.suffix.lstrip(".").lower(), path.read_bytes()),
                                   ("txt", "\n".join(captions).encode("utf-8")))
                        for extension, data in members:
                            info = tarfile.TarInfo(f"{path.stem}.{extension}")
                            info.size = len(data)
                            tar.addfile(info, io.BytesIO(data))
        tmp.rename(out)
    return out


WRITERS = {"imagefolder": write_imagefolder, "hf_dataset": write_hf_dataset, "webdataset": write_webdataset}


def coco_captioned_images(images_dir: str | Path, captions_file: str | Path, limit: int | None = None
                          ) -> list[tuple[Path, list[str]]]:
    """``(image file, captions)`` of a COCO captions file, by image id (the first ``limit``)."""
    data = json.loads(Path(captions_file).read_text(encoding="utf-8"))
    captions: dict[int, list[tuple[int, str]]] = {}
    for ann in data["annotations"]:
        captions.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), str(ann["caption"]).strip()))
    images = sorted(data["images"], key=lambda im: int(im["id"]))[:limit]
    return [(Path(images_dir) / im["file_name"], [c for _, c in sorted(captions.get(int(im["id"]), []))])
            for im in images]
