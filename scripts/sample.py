"""Sample with a trained ControlNet: python scripts/sample.py CONFIG.yaml [more.yaml ...] [key=value ...]

The command lives in ``lumen_train.commands.sample`` (also installed as ``lumen-sample``).
"""

from lumen_train.commands.sample import cli

if __name__ == "__main__":
    cli()
