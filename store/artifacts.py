"""Content-addressed artifact objects: files named by their sha256.

An object lives at ``objects/ab/cd/abcd…`` (two levels of sharding keep directories small on
parallel filesystems). Objects are written to a temporary file in the same filesystem, fsynced
and renamed into place (and the directory fsynced), so neither a killed writer nor a power cut
leaves a partial object under a valid name, and writing an object twice is harmless. An object
whose bytes went bad is replaced when the same content is stored again.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["ArtifactStore", "ObjectStatus", "ObjectTooLarge", "StoreWriteError", "sha256_file"]

CHUNK = 1 << 20


class StoreWriteError(OSError):
    """The artifact store could not be written (disk full, permissions, I/O error).

    The fault lies with the store, not with what was being stored: callers keep the source
    and try again later.
    """


class ObjectTooLarge(ValueError):
    """The source holds more bytes than the caller allows."""


@contextlib.contextmanager
def _store_write(what: str) -> Iterator[None]:
    try:
        yield
    except StoreWriteError:
        raise
    except OSError as error:
        raise StoreWriteError(error.errno, f"artifact store: cannot {what}: {error.strerror}",
                              error.filename) from error


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    def put_file(
        self, source: str | Path | BinaryIO, *, max_bytes: int | None = None
    ) -> tuple[str, int]:
        """Copy ``source`` (a path, or a file open for binary reading) into the store; returns
        (sha256, size in bytes).

        The hash is computed from the bytes actually copied, not trusted from elsewhere. The
        object is written durably: temporary file, fsync, rename, fsync of its directory. An
        object already present is kept only if its bytes still hash to its name; a corrupt one
        is replaced by the new copy.

        Raises
        ------
        StoreWriteError
            Writing the store failed (disk full, permissions): not the source's fault.
        ObjectTooLarge
            ``source`` holds more than ``max_bytes`` bytes.
        OSError
            Reading ``source`` failed.
        """
        if isinstance(source, (str, Path)):
            with open(source, "rb") as handle:
                return self._put(handle, max_bytes)
        return self._put(source, max_bytes)

    def _put(self, handle: BinaryIO, max_bytes: int | None) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with _store_write("create a temporary object"):
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := handle.read(CHUNK):
                    size += len(block)
                    if max_bytes is not None and size > max_bytes:
                        raise ObjectTooLarge(f"more than {max_bytes} bytes")
                    digest.update(block)
                    with _store_write("write an object"):
                        out.write(block)
                with _store_write("write an object"):
                    out.flush()
                    os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            target = self.path(sha256)
            if target.is_file() and self.verify(sha256) == ObjectStatus.OK:
                os.unlink(tmp)
                # Freshen the existing object's mtime: `matdx store gc` spares objects written
                # recently, so one that is about to be referenced again is never collected
                # between this write and the commit of the record that references it.
                with contextlib.suppress(PermissionError):  # another user's object
                    os.utime(target)
            else:
                # New, or present with bytes that no longer hash to its name: (re)place it.
                with _store_write("store an object"):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.chmod(tmp, 0o444)
                    os.replace(tmp, target)
                    _fsync_directory(target.parent)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return sha256, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; returns (sha256, size in bytes)."""
        return self._put(io.BytesIO(data), None)

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

