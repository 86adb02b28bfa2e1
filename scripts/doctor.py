"""Preflight a data set before training: python scripts/doctor.py CONFIG.yaml [more.yaml ...] [key=value ...]

The command lives in ``lumen_train.commands.doctor`` (also installed as ``lumen-doctor``).
"""

from lumen_train.commands.doctor import cli

if __name__ == "__main__":
    cli()
