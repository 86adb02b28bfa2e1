"""Correspondence pairs from your own images: python scripts/make_warp_pairs.py IMAGES_DIR OUT_DIR [options]

The command lives in ``lumen_train.commands.make_warp_pairs`` (also installed as ``lumen-make-warp-pairs``).
"""

from lumen_train.commands.make_warp_pairs import cli

if __name__ == "__main__":
    cli()
