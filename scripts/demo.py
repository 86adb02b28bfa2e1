"""The main job on the embedded default: python scripts/demo.py [CONFIG.yaml ...] [key=value ...]

The command lives in ``lumen_train.commands.demo`` (also installed as ``lumen-demo``).
"""

from lumen_train.commands.demo import cli

if __name__ == "__main__":
    cli()
