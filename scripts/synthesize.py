"""Synthetic training data from layouts: python scripts/synthesize.py CONFIG.yaml [more.yaml ...] [key=value ...]

The command lives in ``lumen_train.commands.synthesize`` (also installed as ``lumen-synthesize``).
"""

from lumen_train.commands.synthesize import cli

if __name__ == "__main__":
    cli()
