"""Cache layouts and VAE latents: python scripts/encode_layouts.py CONFIG.yaml [more.yaml ...] [key=value ...]

The command lives in ``lumen_train.commands.encode_layouts`` (also installed as ``lumen-encode-layouts``).
"""

from lumen_train.commands.encode_layouts import cli

if __name__ == "__main__":
    cli()
