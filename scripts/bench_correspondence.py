"""Matching cost: python scripts/bench_correspondence.py [--channels 768] [--grids 30 60 90] [--repeats 5]

Pairs per second of nearest-neighbour matching (with the mutual check) between two random feature maps of
SPair-like size: 20 keypoints per pair (SPair-71k has up to 20), and the dense case (every source cell). Then
the peak memory a dense match adds (to the process's peak resident size so far; Linux), each in a fresh
process, with the similarity computed --chunk target cells
at a time (flat in the grid size) and all at once (growing with its square). Features are random: the cost
does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch
from benchmarking import timed

from lumen.correspondence.matching import cell_centres, match_points

MEASURE = """
import json, resource, sys, torch
from lumen.correspondence.matching import cell_centres, match_points
grid, channels, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
a, b = torch.randn(channels, grid, grid, generator=g), torch.randn(channels, grid, grid, generator=g)
points = cell_centres((grid, grid), (8 * grid, 8 * grid))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the peak so far, KB -> MB
match_points(a, b, points, (8 * grid, 8 * grid), (8 * grid, 8 * grid), chunk=chunk)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"added_mb": after - before}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_correspondence.py", description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=768, help="feature channels (DINOv2-B: 768)")
    parser.add_argument("--grids", type=int, nargs="+", default=[30, 60, 90, 120])
    parser.add_argument("--keypoints", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.channels} channels, "
          f"chunk {args.chunk}; medians of {args.repeats}")
    print("\n| grid | keypoints: pairs/s | dense (every cell): pairs/s | dense, chunked: added peak MB | "
          "dense, all at once: added peak MB |")
    print("|---|---|---|---|---|")
    for grid in args.grids:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(args.channels, grid, grid, generator=g), torch.randn(args.channels, grid, grid, generator=g)
        size = (14 * grid, 14 * grid)  # e.g. DINOv2's 14 px patches
        cells = cell_centres((grid, grid), size)
        keypoints = cells[torch.randperm(len(cells), generator=g)[:args.keypoints]]
        rates = {}
        for name, points in (("keypoints", keypoints), ("dense", cells)):
            def run(a=a, b=b, points=points, size=size):
                return match_points(a, b, points, size, size, chunk=args.chunk)

            run()  # warm-up
            rates[name] = 1 / statistics.median(timed(run) for _ in range(args.repeats))
        memory = {}
        for name, chunk in (("chunked", args.chunk), ("all", grid * grid)):
            done = subprocess.run([sys.executable, "-c", MEASURE, str(grid), str(args.channels), str(chunk)],
                                  capture_output=True, text=True, check=True)
            memory[name] = json.loads(done.stdout.strip().splitlines()[-1])["added_mb"]
        print(f"| {grid} x {grid} | {rates['keypoints']:.1f} | {rates['dense']:.2f} | {memory['chunked']:.0f} | "
              f"{memory['all']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
