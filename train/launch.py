"""accelerate launch, with Lumen's exit codes: python train/launch.py [accelerate launch options] SCRIPT [args]

The command lives in ``lumen_train.launch`` (also installed as ``lumen-launch``).
"""

from lumen_train.launch import cli

if __name__ == "__main__":
    cli()
