"""Fit the layout PCA: python scripts/fit_pca.py CONFIG.yaml [more.yaml ...] [key=value ...]

The command lives in ``lumen_train.commands.fit_pca`` (also installed as ``lumen-fit-pca``).
"""

from lumen_train.commands.fit_pca import cli

if __name__ == "__main__":
    cli()
