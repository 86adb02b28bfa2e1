"""Semantic correspondence: python scripts/correspond.py CONFIG.yaml corr.source=IMG corr.target=IMG [key=value ...]

The command lives in ``lumen_train.commands.correspond`` (also installed as ``lumen-correspond``).
"""

from lumen_train.commands.correspond import cli

if __name__ == "__main__":
    cli()
