"""The base of the errors Lumen raises for bad input, and how entry points report them."""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence


class LumenError(Exception):
    """Bad input or a mismatch a user can fix; its message says what was expected, found, and what to do."""


def run_cli(main: Callable[[Optional[Sequence[str]]], int], prog: str) -> int:
    """Run an entry point's ``main``; a ``LumenError`` becomes a message on stderr and exit code 2
    instead of a traceback (other exceptions are bugs and keep theirs)."""
    try:
        return main(None)
    except LumenError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
