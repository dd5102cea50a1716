"""Files that jobs produce or consume: stored as content-addressed artifacts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matdx.store.artifacts import sha256_file
from matdx.workflows.serialization import JSON, register_tag

__all__ = ["ARTIFACT_TAG", "ArtifactFile", "iter_artifacts"]

ARTIFACT_TAG = "@artifact"


@dataclass(frozen=True)
class ArtifactFile:
    """A file a job returns (kept as an artifact) or receives from a parent job.

    Return one inside a job's output to keep the file: ``{"trajectory": ArtifactFile("md.h5",
    media_type="application/x-h5md")}``. A job that receives it gets an ``ArtifactFile`` whose
    ``path`` is a copy inside its own run directory.

    Attributes
    ----------
    path
        Where the file is, relative to the job's run directory or absolute; None when the
        object has not been copied anywhere (e.g. when read back from the store).
    media_type
        IANA media type, e.g. ``application/x-h5md``.
    name
        Name of the file among the job's artifacts (unique per job); defaults to ``path``
        relative to the run directory.
    sha256, size
        Content hash and size in bytes; computed from the file when encoded.
    """

    path: str | Path | None
    media_type: str = "application/octet-stream"
    name: str | None = None
    sha256: str | None = None
    size: int | None = None

    def __matdx_json__(self) -> JSON:
        sha256, size = self.sha256, self.size
        if sha256 is None:
            if self.path is None:
                raise ValueError("ArtifactFile: neither a path nor a sha256")
            sha256, size = sha256_file(self.path)
        payload: dict[str, Any] = {
            "name": self.name or _default_name(self.path),
            "media_type": self.media_type,
            "sha256": sha256,
            "size": size,
        }
        if self.path is not None:
            payload["path"] = str(self.path)
        return {ARTIFACT_TAG: payload}


def _default_name(path: str | Path | None) -> str:
    """The path relative to the run directory (``scf/pw.out``), or the file name of an
    absolute path: names must tell apart the files of one job."""
    path = Path(str(path))
    return path.name if path.is_absolute() else path.as_posix()


register_tag(
    ARTIFACT_TAG,
    lambda p: ArtifactFile(p.get("path"), p["media_type"], p["name"], p["sha256"], p["size"]),
)


def iter_artifacts(data: JSON) -> Iterator[dict[str, Any]]:
    """The payload of every encoded artifact inside ``data`` (mutable, in place)."""
    if isinstance(data, dict):
        if len(data) == 1 and ARTIFACT_TAG in data:
            yield data[ARTIFACT_TAG]
        else:
            for value in data.values():
                yield from iter_artifacts(value)
    elif isinstance(data, list):
        for value in data:
            yield from iter_artifacts(value)
