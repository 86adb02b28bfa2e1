"""Train a ControlNet on neural layouts: python train/train_controlnet.py CONFIG.yaml [...] [key=value ...]

The command lives in ``lumen_train.commands.train_controlnet`` (also installed as ``lumen-train``).
"""

from lumen_train.commands.train_controlnet import cli

if __name__ == "__main__":
    cli()
