"""The ``lumen`` command: ``lumen <command> CONFIG.yaml [more.yaml ...] [key=value ...]``.

``lumen`` alone lists the commands; ``lumen <command> --help`` shows a command's purpose and the config sections
it reads. ``lumen launch [accelerate launch options] <command> ...`` starts a command on several processes
(accelerate's launcher, with Lumen's exit codes); ``accelerate launch -m lumen_train <command> ...`` does too,
with accelerate's own reporting. ``python -m lumen_train`` is the same tool.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from lumen.errors import run_cli


@dataclass(frozen=True)
class Command:
    """One command: its name, the module whose ``main(argv)`` runs it, and what it does in one line."""

    name: str
    module: str
    summary: str


COMMANDS = {c.name: c for c in (
    Command("demo", "lumen_train.commands.demo", "the main job on the embedded default, every stage, in minutes"),
    Command("doctor", "lumen_train.commands.doctor", "check a data set before any GPU time is spent"),
    Command("fit-pca", "lumen_train.commands.fit_pca", "fit the layout PCA on a backbone's features"),
    Command("encode-layouts", "lumen_train.commands.encode_layouts", "cache every image's layout and VAE latents"),
    Command("train", "lumen_train.commands.train_controlnet", "train the ControlNet on the layouts"),
    Command("sample", "lumen_train.commands.sample", "sample with prompt edits or a sweep of layout components"),
    Command("synthesize", "lumen_train.commands.synthesize", "generate a data set from a split's layouts"),
    Command("evaluate", "lumen_train.commands.evaluate", "measure a sample set: fidelity, diversity, mIoU"),
    Command("compare-backbones", "lumen_train.commands.compare_backbones",
            "LUMEN's backbone comparison: one ControlNet per backbone, one judge"),
    Command("correspond", "lumen_train.commands.correspond", "semantic correspondence: matches, joint PCA, PCK"),
    Command("make-warp-pairs", "lumen_train.commands.make_warp_pairs",
            "a correspondence benchmark from any images by known warps"),
    Command("convert-data", "lumen_train.commands.convert_data",
            "write captioned images in a data source's layout"),
    Command("make-tiny-sd", "lumen_train.commands.make_tiny_sd", "build a tiny Stable Diffusion (random or trained)"),
    Command("launch", "lumen_train.launch",
            "start a command on several processes: lumen launch [accelerate launch options] <command> ..."),
)}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: lumen <command> CONFIG.yaml [more.yaml ...] [key=value ...]", "", "commands:"]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS.values()]
    lines += ["", "lumen <command> --help: what the command does and the config keys it reads (docs/index.md)."]
    return "\n".join(lines)


def run_command(name: str, argv: Optional[Sequence[str]] = None) -> int:
    """Run command ``name`` with ``argv``: its message and exit code 2 on a user's mistake (``run_cli``)."""
    module = importlib.import_module(COMMANDS[name].module)
    if name == "launch":  # accelerate's options and the launched command's arguments, not a config
        return module.main(argv)
    return run_cli(module.main, f"lumen {name}", argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(args[0], COMMANDS, n=1)
        print(f"lumen: unknown command '{args[0]}'" + (f"; did you mean '{close[0]}'?" if close else "") + "\n\n"
              + usage(), file=sys.stderr)
        return 2
    return run_command(args[0], args[1:])


def cli() -> None:
    """The ``lumen`` console script and ``python -m lumen_train``."""
    sys.exit(main())
