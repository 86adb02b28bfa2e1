"""Evaluate generated images: python scripts/evaluate.py CONFIG.yaml [more.yaml ...] [key=value ...]

The command lives in ``lumen_train.commands.evaluate`` (also installed as ``lumen-evaluate``).
"""

from lumen_train.commands.evaluate import cli

if __name__ == "__main__":
    cli()
