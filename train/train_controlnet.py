"""Train a ControlNet on neural layouts: the trainer as a script, for ``accelerate launch train/train_controlnet.py
CONFIG.yaml [...] [key=value ...]``. It is ``lumen train`` (lumen_train/commands/train_controlnet.py); ``lumen
launch [accelerate launch options] train CONFIG.yaml ...`` starts it on many processes with Lumen's exit codes.
"""

import sys

from lumen_train.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train"))
