"""Writing and checking artifact folders: complete before they appear, verified before they are reused.

An artifact (a PCA, a cache shard, a checkpoint) is written under a temporary name and moved into place only
when complete; its JSON records the size (and, where cheap enough to check, the SHA-256) of every file, so
a later stage can tell a complete artifact from one that was truncated or lost a file since.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lumen.errors import LumenError, writing


class DamagedArtifactError(LumenError, ValueError):
    """An artifact whose files are missing, truncated or unreadable."""


def read_json(path: str | Path, what: str, fix: str) -> Any:
    """Read a JSON file that Lumen wrote; a missing or damaged one is a ``DamagedArtifactError`` saying ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedArtifactError(f"{what}: {path} is missing; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedArtifactError(f"{what}: {path} is damaged (not valid JSON: {err}); {fix}") from None


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(folder: str | Path, exclude: Iterable[str] = (), include: Iterable[str] | None = None,
                  checksums: bool = False) -> dict[str, dict]:
    """``{relative path: {"bytes": size[, "sha256": hash]}}`` of every file below ``folder`` (or only of
    ``include``), leaving out ``exclude``."""
    folder = Path(folder)
    skip, only = set(exclude), None if include is None else set(include)
    manifest = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name in skip or (only is not None and name not in only):
            continue
        entry: dict[str, Any] = {"bytes": path.stat().st_size}
        if checksums:
            entry["sha256"] = sha256_of(path)
        manifest[name] = entry
    return manifest


def manifest_problems(folder: str | Path, manifest: dict[str, dict], checksums: bool = False) -> list[str]:
    """What differs between ``folder`` and the manifest recorded when it was written (empty: it verifies).
    Sizes are always compared; SHA-256 sums too with ``checksums`` (where the manifest has them)."""
    folder = Path(folder)
    problems = []
    for name, entry in manifest.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{name} is {size} bytes, {entry['bytes']} were written")
        elif checksums and "sha256" in entry and sha256_of(path) != entry["sha256"]:
            problems.append(f"{name} has changed since it was written (SHA-256 differs)")
    return problems


def move_into_place(tmp: Path, final: Path) -> Path:
    """Replace ``final`` by the completely written folder ``tmp``. An older ``final`` is moved aside first and
    removed only once the new one is in place, so at every moment one complete version exists."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def setting_differences(expected: dict[str, Any], found: dict[str, Any], expected_from: str,
                        found_from: str) -> list[str]:
    """One line per key whose value differs, e.g. ``timestep: 100 (config) vs 261 (pca/pca.json)``."""
    return [f"{key}: {expected.get(key)!r} ({expected_from}) vs {found.get(key)!r} ({found_from})"
            for key in sorted(set(expected) | set(found)) if expected.get(key) != found.get(key)]


def ensure_writable(folder: str | Path, what: str) -> Path:
    """Make ``folder`` (and its parents) and check that a file can be written in it, before any work whose
    result would go there: a read-only or full place is refused at once, not after the work is done."""
    folder = Path(folder)
    with writing(folder, what):
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".lumen-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    return folder


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def shard_ranges(num_items: int, shard_size: int) -> list[range]:
    """Item ranges of the shards: shard s holds items ``[s * shard_size, (s + 1) * shard_size)``."""
    return [range(start, min(start + shard_size, num_items)) for start in range(0, num_items, shard_size)]


def shards_of_process(num_shards: int, process_index: int, num_processes: int) -> list[int]:
    """The shards one of ``num_processes`` processes makes (every num_processes-th): the unit of work and of
    resumption of the sharded stages (layout cache, synthetic data)."""
    return list(range(process_index, num_shards, num_processes))


def write_text_atomically(path: Path, text: str, tmp_suffix: str = "") -> Path:
    """Write ``text`` to ``path`` under a temporary name first: a file that exists is a complete one."""
    tmp = path.with_name(path.name + ".tmp" + tmp_suffix)
    with writing(path, path.name):
        tmp.write_text(text)
        tmp.replace(path)
    return path
