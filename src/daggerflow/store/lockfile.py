"""The lock file that keeps a second worker out of a store (SQLite file or RocksDB directory),
and the private directories stores are created in."""

from __future__ import annotations

import fcntl
import os

from ..errors import StoreError


class LockFile:
    """An exclusive ``flock`` on ``{path}.lock``, held while the store is open. The kernel
    drops it when the process dies, so a crashed worker never leaves a stale lock.

    ``path`` is resolved first (``os.path.realpath``: symlinks, ``..``, the working
    directory), so two workers that name one database differently take the same lock."""

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path.rstrip("/") or "/") + ".lock"
        self._fd: int | None = None

    def acquire(self, store: str) -> None:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{store} is in use by another daggerflow worker (lock {self.path} is held)") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def private_dirs(path: str | os.PathLike[str]) -> None:
    """Create the directory ``path`` and its missing parents readable by this user only
    (0700, whatever the umask): they hold workflow state, which may hold personal data.
    Directories that exist keep their mode: the operator chose it."""
    missing: list[str] = []
    current = os.path.abspath(os.fspath(path))
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # made meanwhile by another process: its mode is its maker's
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
