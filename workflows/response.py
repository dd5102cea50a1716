"""Responses: how a running job changes the graph it belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matdx.workflows.flow import Flow, as_flow
from matdx.workflows.job import Job
from matdx.workflows.serialization import JSON, encode

__all__ = ["Response"]

Graph = Job | Flow | list[Job | Flow]


@dataclass
class Response:
    """What a job may return instead of a plain output.

    Attributes
    ----------
    output
        The job's own output, as a plain return value would be.
    addition
        Jobs to add to the workflow; they do not hold back the job's children.
    detour
        Jobs to run before the job's children: every child waits for them.
    replace
        Jobs that take over this job's output: references to this job resolve to the output of
        the replacement flow (its ``output``, by default its last job's), and children wait.
    stop_children
        Cancel the job's children and everything below them.
    """

    output: Any = None
    addition: Graph | None = None
    detour: Graph | None = None
    replace: Graph | None = None
    stop_children: bool = False

    @property
    def holds_children(self) -> bool:
        """Whether the job's children must wait for the engine to apply this response."""
        return bool(self.detour or self.replace or self.stop_children)

    def to_dict(self) -> dict[str, JSON]:
        """Encoded form written into ``result.json``."""
        out: dict[str, JSON] = {"stop_children": self.stop_children}
        for field in ("addition", "detour", "replace"):
            graph = getattr(self, field)
            out[field] = None if graph is None else as_flow(graph).to_dict()
        return out

    def encoded_output(self) -> JSON:
        return encode(self.output, path="output")
