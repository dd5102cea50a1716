"""Durable files in bulk: many fsyncs committed together.

An fsync costs one journal commit (4 ms on this machine's ext4 when idle, 40 ms under load);
fsyncs issued at once from several threads share commits. Writers that produce many files
(launch: one ``job.json`` per job; the task farm: ``result.json`` of the tasks that ended
together) write them all first and make them durable here in one pass.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["fsync_many"]

THREADS = 32  # fsyncs in flight at once
# One pool of threads per process, started on first use and kept: starting threads for every
# call cost more CPU than the fsyncs of a small group. Forked children make their own.
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(THREADS, thread_name_prefix="fsync"))
        return _pool[1]


def fsync_many(paths: Iterable[str | Path]) -> None:
    """Make many files, and the entries naming them, survive a crash of the machine.

    The files are fsynced from a pool of threads, so that the file system commits them in a
    few journal commits instead of one per file (about 0.5 ms a file instead of 4-40 ms on
    ext4 here), then each distinct parent directory is fsynced. A file that no longer exists
    is skipped (a later attempt removed it; nothing is left to make durable).
    """
    files = list(dict.fromkeys(Path(p) for p in paths))
    if not files:
        return

    def sync(path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)  # a directory too
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    directories = list(dict.fromkeys(p.parent for p in files))
    for group in (files, directories):
        if len(group) == 1:
            sync(group[0])
            continue
        list(_threads().map(sync, group))
