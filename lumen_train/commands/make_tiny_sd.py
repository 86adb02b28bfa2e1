"""Build the tiny random-weight Stable Diffusion and save it in diffusers format.

    python scripts/make_tiny_sd.py OUT_DIR [--seed 0]

StableDiffusionPipeline.from_pretrained(OUT_DIR) loads the result; so does Lumen, through the same path as
real SD 1.5 weights (model.pretrained=OUT_DIR). The same seed gives the same weights.
"""

from __future__ import annotations

import argparse
import sys

from lumen.errors import run_cli
from lumen.tiny_sd import save_tiny_sd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make_tiny_sd.py", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write (replaced if it exists)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--vae-train-steps", type=int, default=0,
                        help="first fit the VAE to synthetic scenes for this many steps (~0.3 s each on a CPU)")
    parser.add_argument("--unet-train-steps", type=int, default=0,
                        help="then train the UNet to generate such scenes for this many steps")
    args = parser.parse_args(argv)
    out = save_tiny_sd(args.out_dir, seed=args.seed, vae_train_steps=args.vae_train_steps,
                       unet_train_steps=args.unet_train_steps)
    print(f"tiny Stable Diffusion (seed {args.seed}) written to {out}")
    return 0


def cli() -> None:
    """``scripts/make_tiny_sd.py`` and ``lumen-make-tiny-sd``."""
    sys.exit(run_cli(main, "make_tiny_sd.py"))


if __name__ == "__main__":
    cli()
