"""The documentation cannot go stale: every module, command, config section and registry entry is mentioned
in it, and every path it (or a docstring) points at exists."""

import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from lumen.backbones import BACKBONES
from lumen.config import LumenConfig
from lumen.data.sources import DATA_SOURCES
from lumen.evaluation.metrics import METRICS
from lumen_train.cli import COMMANDS

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", REPO / "data" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOCS = "\n".join(page.read_text() for page in PAGES)
MODULES = sorted(p.relative_to(REPO).as_posix() for folder in ("lumen", "lumen_train")
                 for p in (REPO / folder).rglob("*.py") if p.name != "__init__.py")


def page(name: str) -> str:
    return (REPO / "docs" / name).read_text()


@pytest.mark.parametrize("module", MODULES)
def test_every_module_is_in_the_architecture_page(module):
    assert f"`{module}`" in page("architecture.md"), f"{module} is missing from docs/architecture.md"


def test_every_command_and_config_section_is_documented():
    readme = (REPO / "README.md").read_text()
    assert [name for name in COMMANDS if f"`lumen {name}`" not in readme] == []
    sections = [f.name for f in fields(LumenConfig) if is_dataclass(f.type) or f.name in (
        "model", "data", "synthetic", "layout", "pca", "encode", "train", "validation", "sample", "synthesize",
        "evaluate", "compare", "corr")]
    assert [s for s in sections if f"| `{s}` |" not in page("configuration.md")] == []


def test_every_registry_entry_is_documented():
    assert [b for b in BACKBONES if f"| `{b}` |" not in page("layouts.md")] == []
    assert [s for s in DATA_SOURCES if f"data.source={s}" not in (REPO / "data" / "README.md").read_text()] == []
    assert [m for m in METRICS if f"| `{m}` |" not in page("sampling-and-evaluation.md")] == []


# A path into the repository's code, configs or docs (a file with its extension, or a code folder): it must exist.
# Folders a user makes (data/coco-stuff, outputs) and placeholders (<name>, *, {split}) are not pointers.
PATH = re.compile(r"(?<![\w./-])((?:lumen|lumen_train|scripts|configs|tests|train|docs|models|data)/[\w./-]*\w)")
CODE_FOLDERS = ("lumen/", "lumen_train/", "configs/", "docs/", "tests/")


def mentioned_paths(text: str) -> set[str]:
    return {m for m in PATH.findall(text) if not any(c in m for c in "*<{")
            and (Path(m).suffix in (".py", ".md", ".yaml", ".sh", ".sbatch", ".toml", ".txt", ".json")
                 or m.startswith(CODE_FOLDERS))}


@pytest.mark.parametrize("source", [p.relative_to(REPO).as_posix() for p in PAGES]
                         + sorted(p.relative_to(REPO).as_posix() for folder in ("lumen", "lumen_train", "configs")
                                  for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".yaml")))
def test_every_path_a_page_or_docstring_points_at_exists(source):
    base = (REPO / source).parent
    missing = [path for path in mentioned_paths((REPO / source).read_text())
               if not (REPO / path).exists() and not (base / path).exists()]
    assert missing == [], f"{source} points at paths that do not exist: {missing}"
