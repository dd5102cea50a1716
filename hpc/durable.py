"""Durable files in bulk: many fsyncs committed together.

An fsync costs one journal commit (4 ms on this machine's ext4 when idle, 40 ms under load);
fsyncs issued at once from several threads share commits. Writers that produce many files
(launch: one ``job.json`` per job; the task farm: ``result.json`` of the tasks that ended
together) write them all first and make them durable here in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["fsync_many"]


def fsync_many(paths: Iterable[str | Path], *, threads: int = 32) -> None:
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
            fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
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
        with ThreadPoolExecutor(max_workers=min(threads, len(group))) as pool:
            list(pool.map(sync, group))
