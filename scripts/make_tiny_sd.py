"""Build the tiny random-weight Stable Diffusion and save it in diffusers format.

The command lives in ``lumen_train.commands.make_tiny_sd`` (also installed as ``lumen-make-tiny-sd``).
"""

from lumen_train.commands.make_tiny_sd import cli

if __name__ == "__main__":
    cli()
