"""The tick lock: one tick per store at a time."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["StoreBusy", "file_lock"]


class StoreBusy(RuntimeError):
    """Another process holds the store's tick lock."""


@contextmanager
def file_lock(path: str | Path, wait_s: float = 0.0, poll_s: float = 0.05) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the duration of the block.

    The kernel releases the lock when the holder dies, so a killed tick never leaves a stale
    lock behind.

    Parameters
    ----------
    path
        Lock file, created if missing (its content is the holder's pid, for humans).
    wait_s
        How long to wait for the lock, in seconds, before raising.

    Raises
    ------
    StoreBusy
        If the lock is still held by another process after ``wait_s`` seconds.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text().strip() or "another process"
                    raise StoreBusy(
                        f"another tick (pid {holder}) is working on this store"
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)
