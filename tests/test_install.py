"""Reproducible installs: scripts/setup.sh installs the versions of scripts/constraints.txt, which pins every
dependency the project declares."""

import os
import re
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "scripts" / "constraints.txt"


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            found[normalise(name)] = version.strip()
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """Every dependency pyproject.toml names (extras included), torch aside: setup.sh pins it by its build."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    names = {normalise(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in requirements}
    return names - {"torch", "xformers"}  # xformers: a CUDA-only extra, installed by hand on GPUs


def test_every_declared_dependency_is_pinned():
    assert CONSTRAINTS.is_file(), "scripts/constraints.txt is missing: bash scripts/update_constraints.sh makes it"
    missing = sorted(declared() - set(pins()))
    assert not missing, f"not pinned in {CONSTRAINTS.name}: {missing} (bash scripts/update_constraints.sh)"
    assert not {"torch", "triton"} & set(pins()) and not any(name.startswith("nvidia-") for name in pins())


@pytest.mark.skipif(os.environ.get("LUMEN_LATEST") == "1", reason="LUMEN_LATEST=1: the newest versions were "
                    "installed on purpose, not the pinned ones")
def test_the_environment_has_the_pinned_versions():
    """What setup.sh installed is what the constraints say (packages of extras not installed here aside)."""
    installed = {normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {name: (installed[name], version) for name, version in pins().items()
              if name in installed and installed[name] != version}
    assert not differ, f"installed vs pinned: {differ}; run bash scripts/setup.sh"
    assert declared() - {"deepspeed"} <= set(installed)
