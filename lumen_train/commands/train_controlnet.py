"""Train a ControlNet on neural layouts: lumen train CONFIG.yaml [...] [key=value ...]

On many processes: lumen launch [accelerate launch options] train CONFIG.yaml ... (or accelerate launch
train/train_controlnet.py CONFIG.yaml ..., with accelerate's own reporting). Needs the PCA (lumen fit-pca) and,
with train.use_cache=true (the default), the layout cache (lumen encode-layouts). Writes checkpoints
(output_dir/checkpoint-<step>/), validation grids (output_dir/validation/), logs (output_dir/logs/) and the
final ControlNet in diffusers format with its lumen.json (output_dir/controlnet/). Exit codes: 0 finished,
2 a setting or input to fix (one message), 3 stopped by Ctrl-C / SIGTERM after saving a checkpoint (resume
with train.resume_from_checkpoint=latest).
"""

from __future__ import annotations

from lumen.config import config_from_argv
from lumen.errors import EXIT_STOPPED
from lumen_train.trainer import Trainer

PROG = "lumen train"
# The config sections it reads (its --help lists only these and the top-level keys).
SECTIONS = ("model", "data", "layout", "train", "validation")


def main(argv=None) -> int:
    cfg = config_from_argv(argv, PROG, __doc__, SECTIONS)
    with Trainer(cfg) as trainer:
        finished = trainer.train()
    return 0 if finished else EXIT_STOPPED
