"""References to the outputs of other jobs.

``relax.output["structure"]`` is an :class:`OutputReference`: a job id and a path into that
job's output. Passing a reference as an argument makes the referencing job depend on the
referenced one; the engine (or the task farm, inside an allocation) replaces the reference by
the value once the referenced job has completed.

Resolution works on encoded JSON, so outputs never need decoding to be passed on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from matdx.workflows.serialization import JSON, register_tag

__all__ = [
    "OutputReference",
    "ReferenceError",
    "iter_reference_ids",
    "resolve_references",
]

REF_TAG = "@ref"


class ReferenceError(LookupError):
    """A reference points at a job or an output key that does not exist."""


@dataclass(frozen=True)
class OutputReference:
    """The output of job ``job_id``, or the item at ``path`` inside it."""

    job_id: str
    path: tuple[str | int, ...] = ()

    def __getitem__(self, key: str | int) -> OutputReference:
        if not isinstance(key, str | int):
            raise TypeError(f"output references take str or int keys, got {key!r}")
        return OutputReference(self.job_id, (*self.path, key))

    def __matdx_json__(self) -> JSON:
        return {REF_TAG: {"job": self.job_id, "path": list(self.path)}}

    def __repr__(self) -> str:
        keys = "".join(f"[{key!r}]" for key in self.path)
        return f"OutputReference({self.job_id[:8]}){keys}"


register_tag(REF_TAG, lambda p: OutputReference(p["job"], tuple(p["path"])))


def _reference(data: Any) -> Mapping[str, Any] | None:
    if isinstance(data, dict) and len(data) == 1 and REF_TAG in data:
        return data[REF_TAG]
    return None


def iter_reference_ids(data: JSON) -> Iterator[str]:
    """Job ids referenced anywhere inside encoded ``data``."""
    ref = _reference(data)
    if ref is not None:
        yield ref["job"]
    elif isinstance(data, dict):
        for value in data.values():
            yield from iter_reference_ids(value)
    elif isinstance(data, list):
        for value in data:
            yield from iter_reference_ids(value)


def resolve_references(data: JSON, outputs: Mapping[str, JSON], *, partial: bool = False) -> JSON:
    """Replace every reference in encoded ``data`` by the referenced encoded value.

    Parameters
    ----------
    data
        Encoded JSON, e.g. a job's inputs.
    outputs
        Encoded output of each referenced job, by job id.
    partial
        Leave references to jobs missing from ``outputs`` in place instead of raising.

    Raises
    ------
    ReferenceError
        If a referenced job is missing from ``outputs`` or its output lacks a key on the path.
    """
    ref = _reference(data)
    if ref is not None:
        job_id = ref["job"]
        if job_id not in outputs:
            if partial:
                return data
            raise ReferenceError(f"no output of job {job_id} to resolve a reference with")
        value = outputs[job_id]
        for step, key in enumerate(ref["path"]):
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError) as err:
                where = "".join(f"[{k!r}]" for k in ref["path"][: step + 1])
                raise ReferenceError(f"output of job {job_id} has no item {where}") from err
        return value
    if isinstance(data, dict):
        return {
            key: resolve_references(value, outputs, partial=partial) for key, value in data.items()
        }
    if isinstance(data, list):
        return [resolve_references(value, outputs, partial=partial) for value in data]
    return data
