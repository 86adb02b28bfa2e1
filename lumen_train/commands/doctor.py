"""Preflight a data set before training: python scripts/doctor.py CONFIG.yaml [more.yaml ...] [key=value ...]

Checks the train and val splits named by the config (data.train_split, data.val_split) and prints a report.
Exit code 0 when every split is usable, 1 when a split has more unusable images than data.max_bad_fraction
(or its folders or caption file are missing).
"""

from __future__ import annotations

import sys

from lumen.config import config_from_argv
from lumen.data.doctor import run_doctor
from lumen.errors import run_cli


def main(argv=None) -> int:
    cfg = config_from_argv(argv, "doctor.py", __doc__.splitlines()[0])
    print(f"data root: {cfg.data.root}")
    passed, text = run_doctor(cfg.data)
    print(text)
    return 0 if passed else 1


def cli() -> None:
    """``scripts/doctor.py`` and ``lumen-doctor``."""
    sys.exit(run_cli(main, "doctor.py"))


if __name__ == "__main__":
    cli()
