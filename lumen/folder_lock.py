"""An exclusive lock on an output folder for the lifetime of the command that writes it.

Two trainers (or two encodings) writing one folder would interleave their checkpoints and logs; the second
one stops at once instead, naming the first. The lock is ``fcntl.flock`` on ``<folder>/<name>``: the
operating system releases it when its process ends in any way (kill -9 included), so the lock of a dead
process never blocks a restart. The file itself stays, holding who took the lock last (host, pid, command,
time), which is what the refusal quotes. Under several processes only the main process takes it, for all.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from lumen.errors import LumenError, writing

try:
    import fcntl
except ImportError:  # not on Windows: no locking there
    fcntl = None


class FolderInUseError(LumenError, RuntimeError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """Args:
        folder: the folder to lock (made if missing).
        command: what takes the lock, for the message another command gets (e.g. "lumen train").
        name: the lock file's name inside ``folder``.
    """

    def __init__(self, folder: str | Path, command: str, name: str = ".lumen.lock") -> None:
        self.folder = Path(folder)
        self.command = command
        self.path = self.folder / name
        self._handle = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise ``FolderInUseError`` naming the holder."""
        if fcntl is None:
            return self
        with writing(self.folder, "the folder's lock file"):
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise FolderInUseError(
                f"{self.folder} is in use by another run ({holder}); two runs writing one folder would mix their "
                f"files. Wait for it to end (or stop it), or choose another folder (output_dir=...)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        info: Optional[dict] = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        return "holder unknown"
    return (f"{info.get('command', '?')} on host {info.get('host', '?')}, pid {info.get('pid', '?')}, "
            f"since {info.get('since', '?')}")
