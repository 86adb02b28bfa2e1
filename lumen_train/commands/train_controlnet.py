"""Train a ControlNet on neural layouts: python train/train_controlnet.py CONFIG.yaml [...] [key=value ...]

On many processes: python train/launch.py [accelerate launch options] train/train_controlnet.py ...
Needs the PCA (scripts/fit_pca.py) and, with
train.use_cache=true (the default), the layout cache (scripts/encode_layouts.py). Writes checkpoints
(output_dir/checkpoint-<step>/), validation grids (output_dir/validation/), logs (output_dir/logs/) and the
final ControlNet in diffusers format with its lumen.json (output_dir/controlnet/). Exit codes: 0 finished,
2 a setting or input to fix (one message), 3 stopped by Ctrl-C / SIGTERM after saving a checkpoint (resume
with train.resume_from_checkpoint=latest).
"""

from __future__ import annotations

import sys

from lumen.config import config_from_argv
from lumen.errors import EXIT_STOPPED, run_cli
from lumen_train.trainer import Trainer


def main(argv=None) -> int:
    cfg = config_from_argv(argv, "train_controlnet.py", __doc__.splitlines()[0])
    with Trainer(cfg) as trainer:
        finished = trainer.train()
    return 0 if finished else EXIT_STOPPED


def cli() -> None:
    """``train/train_controlnet.py`` and ``lumen-train``."""
    sys.exit(run_cli(main, "train_controlnet.py"))


if __name__ == "__main__":
    cli()
