"""Build a tiny Stable Diffusion from the real diffusers / transformers classes and save it in diffusers format.

    lumen make-tiny-sd OUT_DIR [--seed 0] [--vae-train-steps N] [--unet-train-steps N]
                                   [--weights-dtype float16] [--overwrite]

Without training steps the weights are random (seeded): what the tests use. The model shipped in models/tiny-sd
was made by this command with the step counts recorded in its lumen_tiny_sd.json (see the README). The result
loads with StableDiffusionPipeline.from_pretrained(OUT_DIR), and in Lumen through the same path as SD 1.5's
weights (model.pretrained=OUT_DIR). The same arguments, torch version and thread count give the same weights.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from lumen.errors import LumenError
from lumen.testing.tiny_sd import TINY_WEIGHT_DTYPES, save_tiny_sd

PROG = "lumen make-tiny-sd"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the training (default 0)")
    parser.add_argument("--vae-train-steps", type=int, default=0,
                        help="first fit the VAE to synthetic scenes for this many steps (~0.3 s each on two cores)")
    parser.add_argument("--unet-train-steps", type=int, default=0,
                        help="then train the UNet and text encoder on captioned scenes (~0.35 s a step)")
    parser.add_argument("--weights-dtype", choices=sorted(TINY_WEIGHT_DTYPES), default="float32",
                        help="dtype of the saved weight files (float16 halves them; default float32)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    args = parser.parse_args(argv)
    for name in ("seed", "vae_train_steps", "unet_train_steps"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    start = time.perf_counter()
    try:
        out = save_tiny_sd(args.out_dir, seed=args.seed, vae_train_steps=args.vae_train_steps,
                           unet_train_steps=args.unet_train_steps, weights_dtype=args.weights_dtype,
                           overwrite=args.overwrite,
                           command=shlex.join(["lumen", "make-tiny-sd", *argv]))
    except FileExistsError as err:
        raise LumenError(str(err)) from None
    print(f"tiny Stable Diffusion (seed {args.seed}) written to {out} in {time.perf_counter() - start:.0f} s")
    return 0
