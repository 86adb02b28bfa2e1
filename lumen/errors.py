"""The base of the errors Lumen raises for bad input, how entry points report them, and their exit codes.

Exit codes of every entry point:
  0  done;
  1  a bug in Lumen (the traceback is printed);
  2  a mistake a user can fix (bad value, missing or damaged file, full disk, read-only folder): one message;
  3  stopped on request (Ctrl-C / SIGTERM) after saving a checkpoint: run the same command again to resume.
"""

from __future__ import annotations

import errno
import json
import os
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

    label = "error"  # what the one-line report calls it: "<prog>: <label>: <message>"


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


# Set by Lumen's launcher (lumen_train.launch) for the processes it starts: a folder where each process records
# how it ended, so the launcher can report one exit code and each distinct message once.
LAUNCH_REPORTS_ENV = "LUMEN_LAUNCH_REPORTS"


class LaunchReport:
    """How this process ended, as ``<folder>/rank-<RANK>.json``: ``{"code": null}`` from its start (a process that
    never replaces it was killed), then ``{"code": int, "message": str | null}``."""

    def __init__(self, folder: str) -> None:
        self.path = Path(folder) / f"rank-{os.environ.get('RANK', '0')}.json"

    @classmethod
    def from_environment(cls) -> Optional[LaunchReport]:
        folder = os.environ.get(LAUNCH_REPORTS_ENV)
        return cls(folder) if folder and Path(folder).is_dir() else None

    def write(self, code: Optional[int], message: Optional[str] = None) -> bool:
        """Record the outcome; False when it could not be written (the caller then prints the message)."""
        try:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"code": code, "message": message}))
            tmp.replace(self.path)
            return True
        except OSError:
            return False


def user_error_message(err: BaseException, prog: str) -> Optional[str]:
    """The one line a user's mistake ends with (None when ``err`` is a bug in Lumen)."""
    if isinstance(err, LumenError):
        return f"{prog}: {err.label}: {err}"
    if isinstance(err, OSError):
        # A full disk or a forbidden folder met outside a `writing` block: the file is all we know.
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            where = err.filename or "."
            return (f"{prog}: error: the disk is full ({free_space(where)} free at {where}); free some space and run "
                    f"it again")
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return (f"{prog}: error: {err.strerror}: {err.filename}; choose a folder this user can write to (e.g. "
                    f"output_dir=...) or fix its permissions")
    return None


def run_cli(main: Callable[[Optional[Sequence[str]]], int], prog: str,
            argv: Optional[Sequence[str]] = None) -> int:
    """Run an entry point's ``main``; a ``LumenError`` (or a full disk / read-only folder met anywhere)
    becomes one message on stderr and exit code 2 instead of a traceback (other exceptions are bugs and keep
    theirs). Under Lumen's launcher the outcome is also recorded for it (``LaunchReport``), and a user's mistake
    is printed by the launcher, once for all processes."""
    report = LaunchReport.from_environment()
    if report is not None:
        report.write(None)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, its message printed)
        if report is not None:
            report.write(exit_.code if isinstance(exit_.code, int) else 1)
        raise
    except Exception as err:
        message = user_error_message(err, prog)
        if message is None:
            if report is not None:
                report.write(1)
            raise
        if report is None or not report.write(EXIT_USER_ERROR, message):
            print(message, file=sys.stderr)
        return EXIT_USER_ERROR
    if report is not None:
        report.write(code)
    return code
