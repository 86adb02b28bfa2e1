"""Write captioned images as an image folder, a Hugging Face dataset or tar shards: python scripts/convert_data.py ...

The command lives in ``lumen_train.commands.convert_data`` (also installed as ``lumen-convert-data``).
"""

from lumen_train.commands.convert_data import cli

if __name__ == "__main__":
    cli()
