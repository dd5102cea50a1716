"""Run directories: everything one job attempt needs, and what it leaves behind.

A run directory holds ``job.json`` (the fully resolved inputs), the code's inputs and outputs,
and ``result.json``, written last and durably (a temporary file, fsynced, renamed into place,
then the directory fsynced), so a reader sees either no result or a whole one, also after a
power cut. Compute nodes only ever touch run directories; the tick reads results from them.

A run directory is written by a machine the store does not control, so the tick reads it as
untrusted input (:func:`open_in_run_dir`, :func:`read_result`): a file that is not a regular
file, lies outside the run directory, is larger than the campaign allows or does not parse is
refused with :class:`UntrustedRunDir`, which harvest turns into that job's failure.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from matdx.hpc.durable import fsync_many
from matdx.safety.text import first_unsafe
from matdx.workflows.files import iter_artifacts
from matdx.workflows.protocol import ResultFile
from matdx.workflows.serialization import JSON, sha256_json

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "JOB_FILE",
    "RESULT_FILE",
    "UntrustedRunDir",
    "check_artifact_name",
    "fsync_directory",
    "fsync_many",
    "input_hash",
    "open_in_run_dir",
    "read_json",
    "read_limited",
    "read_result",
    "relative_to_run_dir",
    "write_json_atomic",
]

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
#: Largest output file (and ``result.json``) harvest takes, unless the campaign's
#: ``executor.max_output_mb`` says otherwise: 64 GiB.
DEFAULT_MAX_OUTPUT_BYTES = 64 << 30
_MAX_NAME = 255  # characters of an artifact name


class UntrustedRunDir(ValueError):
    """A run directory's content that harvest refuses (the job's failure, with this reason)."""


def fsync_directory(directory: str | Path) -> None:
    """Make a rename or a new file in ``directory`` survive a crash of the machine."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(
    path: str | Path, data: Any, *, allow_nan: bool = False, durable: bool = True
) -> None:
    """Write ``data`` as JSON to ``path`` so that readers never see a partial file.

    Temporary file in the same directory, fsync, rename, fsync of the directory. With
    ``durable=False`` the two fsyncs are left to the caller, who makes many files durable at
    once with :func:`fsync_many` before anyone relies on them surviving a crash.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            # dumps, not dump: json.dump encodes in Python, chunk by chunk (3x the CPU)
            handle.write(json.dumps(data, allow_nan=allow_nan, separators=(",", ":")))
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_directory(path.parent)


def read_json(path: str | Path) -> Any:
    with open(path) as handle:
        return json.load(handle)


def check_artifact_name(name: Any) -> str:
    """Return ``name`` if it may name an artifact: relative ``/``-separated parts, none of them
    empty, ``.`` or ``..``, no backslash, no control character, at most 255 characters.

    Raises
    ------
    UntrustedRunDir
        Naming the name and the reason.
    """
    if not isinstance(name, str) or not name:
        raise UntrustedRunDir(f"artifact name {name!r}: not a non-empty string")
    if len(name) > _MAX_NAME:
        raise UntrustedRunDir(f"artifact name {name[:40]!r}...: longer than {_MAX_NAME} characters")
    unsafe = first_unsafe(name)
    if unsafe is not None or "\t" in name:
        what = unsafe[1] if unsafe else "a tab"
        raise UntrustedRunDir(f"artifact name {name!r}: contains {what}")
    if "\\" in name or name.startswith("/"):
        raise UntrustedRunDir(f"artifact name {name!r}: must be a relative path with '/' only")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UntrustedRunDir(f"artifact name {name!r}: has an empty, '.' or '..' part")
    return name


def relative_to_run_dir(run_dir: str | Path, path: Any) -> str:
    """``path`` (relative to ``run_dir``, or absolute inside it) as a relative path.

    Raises
    ------
    UntrustedRunDir
        If the path is not a string, lies outside the run directory or has unsafe characters.
    """
    if not isinstance(path, str) or not path:
        raise UntrustedRunDir(f"output path {path!r}: not a non-empty string")
    if first_unsafe(path) is not None:
        raise UntrustedRunDir(f"output path {path!r}: contains a control character")
    if os.path.isabs(path):
        root = os.path.normpath(os.path.abspath(run_dir))
        normal = os.path.normpath(path)
        if os.path.commonpath([root, normal]) != root or normal == root:
            raise UntrustedRunDir(f"output path {path!r}: outside the run directory {root}")
        path = os.path.relpath(normal, root)
    if any(part in ("..",) for part in Path(path).parts):
        raise UntrustedRunDir(f"output path {path!r}: leaves the run directory ('..')")
    return path


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return name
    return "special file"


def open_in_run_dir(run_dir: str | Path, relative: str, max_bytes: int) -> BinaryIO:
    """Open a file of a run directory for reading, refusing anything but a regular file
    inside it.

    Every part of ``relative`` is opened relative to its parent without following symbolic
    links, and the file is checked with ``lstat`` before it is opened (never a FIFO or a
    device, so opening cannot block or touch hardware) and with ``fstat`` after.

    Parameters
    ----------
    relative
        Path inside ``run_dir`` (see :func:`relative_to_run_dir`).
    max_bytes
        Largest size accepted, bytes.

    Raises
    ------
    UntrustedRunDir
        The file is missing, not a regular file, reached through a symbolic link, or larger
        than ``max_bytes``.
    """
    parts = [p for p in Path(relative).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UntrustedRunDir(f"{relative!r}: not a file inside the run directory")
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    directory = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=directory)
            except OSError as error:
                reason = (
                    "a symbolic link or not a directory"
                    if error.errno in (errno.ELOOP, errno.ENOTDIR)
                    else error.strerror
                )
                raise UntrustedRunDir(f"{relative}: {part!r} is {reason}") from error
            os.close(directory)
            directory = inner
        name = parts[-1]
        try:
            before = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError as error:
            raise UntrustedRunDir(f"{relative}: no such file in the run directory") from error
        if not stat.S_ISREG(before.st_mode):
            raise UntrustedRunDir(
                f"{relative}: is a {_kind(before.st_mode)}, not a regular file"
            )
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | nofollow, dir_fd=directory)
    finally:
        os.close(directory)
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode) or after.st_ino != before.st_ino:
            raise UntrustedRunDir(f"{relative}: replaced while it was being opened")
        if after.st_size > max_bytes:
            raise UntrustedRunDir(
                f"{relative}: {after.st_size} bytes, over the campaign's limit of "
                f"{max_bytes} bytes (executor.max_output_mb)"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(handle: BinaryIO, max_bytes: int) -> bytes | None:
    """All bytes of ``handle``, or None if there are more than ``max_bytes``."""
    blocks, size = [], 0
    while block := handle.read(1 << 20):
        size += len(block)
        if size > max_bytes:
            return None
        blocks.append(block)
    return b"".join(blocks)


def read_result(run_dir: str | Path, max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES) -> ResultFile:
    """Read and validate the ``result.json`` of a run directory.

    Raises
    ------
    UntrustedRunDir
        The file is not a regular file, too large, torn, not JSON, or does not match
        :class:`~matdx.workflows.protocol.ResultFile`; the message says which.
    """
    with open_in_run_dir(run_dir, RESULT_FILE, max_bytes) as handle:
        data = read_limited(handle, max_bytes)
    if data is None:
        raise UntrustedRunDir(f"{RESULT_FILE}: grew over {max_bytes} bytes while it was read")
    if not data.strip():
        raise UntrustedRunDir(f"{RESULT_FILE}: empty")
    try:
        return ResultFile.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(file)"
        kind = "not valid JSON (torn or truncated?)" if first["type"] == "json_invalid" else None
        reason = kind or f"{where}: {first['msg']}"
        more = f" (and {error.error_count() - 1} more errors)" if error.error_count() > 1 else ""
        raise UntrustedRunDir(f"{RESULT_FILE}: {reason}{more}") from error


def input_hash(function: str, inputs: JSON) -> str:
    """The de-duplication key of a job: its function and resolved inputs.

    Artifacts count by content (sha256), not by where a copy of them lies.
    """
    inputs = copy.deepcopy(inputs)
    for artifact in iter_artifacts(inputs):
        artifact.pop("path", None)
    return sha256_json({"function": function, "inputs": inputs})
