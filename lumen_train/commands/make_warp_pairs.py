"""Correspondence pairs from your own images: lumen make-warp-pairs IMAGES_DIR OUT_DIR [options]

Writes a benchmark in SPair-71k's layout (OUT_DIR/JPEGImages/<warp>/, OUT_DIR/PairAnnotation/test/*.json) by
warping each image with known transforms (horizontal flip, scale + crop, rotation, perspective) and mapping
keypoints drawn in the source exactly. lumen correspond CONFIG corr.benchmark=OUT_DIR then reports PCK
per warp. It measures how well features follow the same image under geometric change, not matching across
different instances of a class (that needs annotated benchmarks such as SPair-71k).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lumen.correspondence.warp_pairs import WARPS, write_warp_pairs
from lumen.errors import LumenError

PROG = "lumen make-warp-pairs"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("images_dir", type=Path, help="a folder of images (searched recursively)")
    parser.add_argument("out_dir", type=Path, help="the benchmark folder to write (must not exist)")
    parser.add_argument("--points", type=int, default=20, help="keypoints drawn per source image")
    parser.add_argument("--limit", type=int, default=None, help="use the first N images (sorted by path)")
    parser.add_argument("--warps", nargs="+", choices=WARPS, default=list(WARPS))
    parser.add_argument("--max-side", type=int, default=512, help="images larger than this are scaled down")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("points", "limit", "max_side"):
        value = getattr(args, name)
        if value is not None and value < (3 if name == "points" else 1):
            raise LumenError(f"--{name.replace('_', '-')} must be at least {3 if name == 'points' else 1}, "
                             f"found {value}")
    if not args.images_dir.is_dir():
        raise LumenError(f"no folder {args.images_dir}")
    images = sorted(p for p in args.images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:args.limit]
    if not images:
        raise LumenError(f"no .jpg, .jpeg or .png images in {args.images_dir}")
    if args.out_dir.exists():
        raise LumenError(f"{args.out_dir} exists: choose a new folder (nothing there is replaced)")
    summary = write_warp_pairs(images, args.out_dir, tuple(args.warps), args.points, args.seed, args.max_side)
    for line in summary["unreadable"]:
        print(f"skipped {line}", file=sys.stderr)
    print(f"{sum(summary['pairs'].values())} pairs ({', '.join(f'{w} {n}' for w, n in summary['pairs'].items())}), "
          f"{summary['keypoints']} keypoints: {args.out_dir}")
    return 0
