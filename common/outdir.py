"""An output folder one run owns: checked before anything starts, locked while in use.

Two runs writing one folder overwrite each other's video and interleave their
events.jsonl lines; a folder that cannot be written should stop a run before four
processes start, with one line that says why. :class:`OutDirLock` does both:

* it creates the folder (and its parents) and the lock file ``.agegender.lock`` in it,
  which proves the folder can be written (a path through a file, a read-only file
  system, a missing permission: :class:`OutDirError` naming the folder and the cause);
* it takes an exclusive ``flock`` on the lock file, atomically: a second owner is
  refused (:class:`OutDirBusy`) with the first one's pid, host, start time and command,
  which the lock file holds as JSON. The kernel releases the lock when its process dies
  (kill -9 included), so the lock of a dead run is simply taken over (logged, naming the
  dead pid); no stale-pid guessing is needed.

The lock is released, and the file removed, by :meth:`OutDirLock.release`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: The lock file's name inside the output folder.
LOCK_NAME = ".agegender.lock"


class OutDirError(OSError):
    """The output folder cannot be created or written; the message says which and why."""


class OutDirBusy(OutDirError):
    """Another process owns the output folder; the message names it."""


def _describe(owner: dict) -> str:
    when = owner.get("started")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) \
        if isinstance(when, (int, float)) else "?"
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {started} "
            f"({owner.get('command', '?')})")


def _cause(exc: OSError, path: Path) -> str:
    """The reason of ``exc`` in words, with the part of ``path`` that is a file when a
    parent is not a folder."""
    why = exc.strerror or str(exc)
    if exc.errno == errno.ENOTDIR:
        for parent in [path, *path.parents]:
            if parent.exists() and not parent.is_dir():
                return f"{why}: {parent} is a file"
    return why


class OutDirLock:
    """Ownership of an output folder (see the module docstring).

    Args:
        out_dir: the folder (created with its parents).
        command: what owns it, shown to a second owner (default: this process's
            command line).
    """

    def __init__(self, out_dir: Path, command: str | None = None):
        self.out_dir = Path(out_dir).absolute()
        self.path = self.out_dir / LOCK_NAME
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> "OutDirLock":
        """Create the folder and take its lock; returns ``self``.

        Raises:
            OutDirError: the folder or the lock file cannot be created or written.
            OutDirBusy: another live process holds the lock.
        """
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutDirError(exc.errno, f"cannot create the output folder {self.out_dir}: "
                              f"{_cause(exc, self.out_dir)}") from None
        if not self.out_dir.is_dir():
            raise OutDirError(errno.ENOTDIR, f"the output folder {self.out_dir} is a file")
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutDirError(exc.errno, f"cannot write in the output folder "
                                  f"{self.out_dir}: {_cause(exc, self.path)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = self._read(fd)
                os.close(fd)
                raise OutDirBusy(errno.EBUSY, f"the output folder {self.out_dir} is in use "
                                 f"by another run: {_describe(owner)}; wait for it to end "
                                 f"or choose another --out") from None
            # The owner before us may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else will open; start again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read(fd)
        if previous.get("pid") is not None:
            log.warning("took over the output folder %s from a run that is gone (%s)",
                        self.out_dir, _describe(previous))
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                 "command": self.command}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        except OSError as exc:  # a full disk refuses even this
            os.close(fd)
            raise OutDirError(exc.errno, f"cannot write in the output folder "
                              f"{self.out_dir}: {_cause(exc, self.path)}") from None
        self._fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s: %s", self.path, exc)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
