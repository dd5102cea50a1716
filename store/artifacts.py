"""Content-addressed artifact objects: files named by their sha256.

An object lives at ``objects/ab/cd/abcd…`` (two levels of sharding keep directories small on
parallel filesystems). Objects are written to a temporary file in the same filesystem and
renamed into place, so a killed writer never leaves a partial object under a valid name, and
writing an object twice is harmless.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ArtifactStore", "ObjectStatus", "sha256_file"]

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> tuple[str, int]:
    """Hex sha256 and size in bytes of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


class ObjectStatus(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    CORRUPT = "corrupt"


class ArtifactStore:
    """A directory of content-addressed objects.

    Parameters
    ----------
    root
        The ``objects/`` directory; created when needed.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"sha256: expected 64 lowercase hex digits, got {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put_file(self, source: str | Path) -> tuple[str, int]:
        """Copy ``source`` into the store; returns (sha256, size in bytes).

        The hash is computed from the bytes actually copied, not trusted from elsewhere.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as handle:
                while block := handle.read(CHUNK):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
            sha256 = digest.hexdigest()
            target = self.path(sha256)
            if target.is_file() and target.stat().st_size == size:
                os.unlink(tmp)
                # Freshen the existing object's mtime: `matdx store gc` spares objects written
                # recently, so one that is about to be referenced again is never collected
                # between this write and the commit of the record that references it.
                with contextlib.suppress(PermissionError):  # another user's object
                    os.utime(target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return sha256, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; returns (sha256, size in bytes)."""
        with tempfile.NamedTemporaryFile(
            dir=self._scratch(), prefix=".incoming-", delete=False
        ) as handle:
            handle.write(data)
        try:
            return self.put_file(handle.name)
        finally:
            os.unlink(handle.name)

    def materialize(self, sha256: str, destination: str | Path) -> Path:
        """Copy the object to ``destination`` (a copy, so a job that edits its input file
        cannot alter the stored object).

        Raises
        ------
        FileNotFoundError
            If the object is not in the store.
        """
        source = self.path(sha256)
        if not source.is_file():
            raise FileNotFoundError(f"artifact {sha256} is missing from {self.root}")
        destination = Path(destination)
        if destination.is_file():
            return destination
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.partial")
        shutil.copyfile(source, partial)
        os.replace(partial, destination)
        return destination

    def verify(self, sha256: str) -> ObjectStatus:
        """Re-hash one object."""
        path = self.path(sha256)
        if not path.is_file():
            return ObjectStatus.MISSING
        return ObjectStatus.OK if sha256_file(path)[0] == sha256 else ObjectStatus.CORRUPT

    def incoming(self) -> Iterator[Path]:
        """Temporary files of writes in progress (or of writers that were killed)."""
        if self.root.is_dir():
            yield from self.root.glob(".incoming-*")

    def __iter__(self) -> Iterator[str]:
        """The sha256 of every object present."""
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.glob("??/??/*")):
            if shard.is_file() and len(shard.name) == 64:
                yield shard.name

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def _scratch(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root
