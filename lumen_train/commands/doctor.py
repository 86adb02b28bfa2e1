"""Preflight a data set before training: lumen doctor CONFIG.yaml [more.yaml ...] [key=value ...]

Checks the train and val splits named by the config (data.train_split, data.val_split) and prints a report.
Exit code 0 when every split is usable, 1 when a split has more unusable images than data.max_bad_fraction
(or its folders or caption file are missing).
"""

from __future__ import annotations

from lumen.config import config_from_argv
from lumen.data.doctor import run_doctor

PROG = "lumen doctor"
# The config sections it reads (its --help lists only these and the top-level keys).
SECTIONS = ("data",)


def main(argv=None) -> int:
    cfg = config_from_argv(argv, PROG, __doc__, SECTIONS)
    print(f"data root: {cfg.data.root}")
    passed, text = run_doctor(cfg.data)
    print(text)
    return 0 if passed else 1
