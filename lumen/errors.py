"""The base of the errors Lumen raises for bad input, how entry points report them, and their exit codes.

Exit codes of every entry point:
  0  done;
  1  a bug in Lumen (the traceback is printed);
  2  a mistake a user can fix (bad value, missing or damaged file, full disk, read-only folder): one message;
  3  stopped on request (Ctrl-C / SIGTERM) after saving a checkpoint: run the same command again to resume.
"""

from __future__ import annotations

import errno
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

EXIT_USER_ERROR = 2
EXIT_STOPPED = 3


class LumenError(Exception):
    """Bad input or a mismatch a user can fix; its message says what was expected, found, and what to do."""


class MissingDependencyError(LumenError, ImportError):
    """An optional package a setting asks for is not installed."""


class StorageError(LumenError, OSError):
    """A write that failed for a reason outside Lumen: a full disk, a read-only or forbidden folder."""


# Writers that report a full disk without an errno: torch's zip writer (RuntimeError) and safetensors (its own
# error type, naming the OS error in its message).
_DISK_FULL_MESSAGES = ("file write failed", "unexpected pos", "PytorchStreamWriter failed", "No space left on device",
                       "os error 28", "Disk quota exceeded", "os error 122")


def free_space(path: str | Path) -> str:
    """Free space on the file system of ``path`` (or of its nearest existing parent), e.g. '1.2 GB'."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"


def explain_write_failure(err: BaseException, path: str | Path, what: str) -> Optional[str]:
    """A one-paragraph explanation of why writing ``what`` to ``path`` failed, or None when the failure is
    not one a user can fix (then it is a bug and keeps its traceback)."""
    code = getattr(err, "errno", None)
    if code is None and any(s in str(err) for s in _DISK_FULL_MESSAGES):
        code = errno.ENOSPC  # the only cause of a short write here that a user meets
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk is full: writing {what} to {path} failed ({free_space(path)} free). "
                f"Free some space (or point the output somewhere larger) and run the command again")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        place = getattr(err, "filename", None) or path
        return (f"cannot write {what}: {place} is read-only or not writable by this user "
                f"({type(err).__name__}: {getattr(err, 'strerror', None) or err}). Choose a writable folder "
                f"(e.g. output_dir=...) or fix its permissions")
    return None


@contextmanager
def writing(path: str | Path, what: str) -> Iterator[None]:
    """Turn a full disk or a read-only folder met while writing ``what`` into a ``StorageError``."""
    try:
        yield
    except Exception as err:  # writers report failures with their own exception types (see above)
        if isinstance(err, LumenError):
            raise
        message = explain_write_failure(err, path, what)
        if message is None:
            raise
        raise StorageError(message) from None


def run_cli(main: Callable[[Optional[Sequence[str]]], int], prog: str,
            argv: Optional[Sequence[str]] = None) -> int:
    """Run an entry point's ``main``; a ``LumenError`` (or a full disk / read-only folder met anywhere)
    becomes one message on stderr and exit code 2 instead of a traceback (other exceptions are bugs and keep
    theirs)."""
    try:
        return main(argv)
    except LumenError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        # A full disk or a forbidden folder met outside a `writing` block: the file is all we know.
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            where = err.filename or "."
            message = f"the disk is full ({free_space(where)} free at {where}); free some space and run it again"
        elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            message = (f"{err.strerror}: {err.filename}; choose a folder this user can write to (e.g. "
                       f"output_dir=...) or fix its permissions")
        else:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
