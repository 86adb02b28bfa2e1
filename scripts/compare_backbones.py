"""Compare layout backbones: python scripts/compare_backbones.py CONFIG.yaml [more.yaml ...] [key=value ...]

The command lives in ``lumen_train.commands.compare_backbones`` (also installed as ``lumen-compare-backbones``).
"""

from lumen_train.commands.compare_backbones import cli

if __name__ == "__main__":
    cli()
