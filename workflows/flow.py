"""Flows: groups of jobs and flows that run as one workflow."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from matdx.workflows.job import Job
from matdx.workflows.serialization import JSON, encode, register_tag

__all__ = ["Flow", "as_flow"]


class Flow:
    """An ordered group of jobs and flows.

    Dependencies come from the output references inside the jobs' inputs, not from the order.

    Parameters
    ----------
    jobs
        Jobs and nested flows.
    output
        What the flow as a whole returns, usually references to some of its jobs' outputs.
        When the flow replaces a job (``Response(replace=flow)``), this becomes that job's
        output; it defaults to the output of the last job.
    name
        Human name, e.g. ``"eos Cu"``.

    Raises
    ------
    ValueError
        If the same job appears twice.
    """

    def __init__(self, jobs: Sequence[Job | Flow], output: Any = None, name: str = "") -> None:
        self.items = list(jobs)
        self.name = name
        self._output = None if output is None else encode(output, path=f"{name or 'flow'}.output")
        seen: set[str] = set()
        for one in self.jobs:
            if one.id in seen:
                raise ValueError(f"flow {name!r}: job {one.id} appears twice")
            seen.add(one.id)

    @property
    def jobs(self) -> Iterator[Job]:
        """All jobs, nested flows flattened, in order."""
        for item in self.items:
            if isinstance(item, Flow):
                yield from item.jobs
            elif isinstance(item, Job):
                yield item
            else:
                raise TypeError(f"flow {self.name!r}: expected Job or Flow, got {item!r}")

    @property
    def output(self) -> JSON:
        """Encoded output of the flow (references into its jobs)."""
        if self._output is not None:
            return self._output
        jobs = list(self.jobs)
        return jobs[-1].output.__matdx_json__() if jobs else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "jobs": [j.to_dict() for j in self.jobs], "output": self.output}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Flow:
        flow = cls([Job.from_dict(j) for j in data["jobs"]], name=data.get("name", ""))
        flow._output = data.get("output")
        return flow

    def __matdx_json__(self) -> JSON:
        return {"@flow": self.to_dict()}

    def __len__(self) -> int:
        return sum(1 for _ in self.jobs)

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, {len(self)} jobs)"


register_tag("@flow", Flow.from_dict)


def as_flow(graph: Job | Flow | Iterable[Job | Flow], name: str = "") -> Flow:
    """Wrap a job, a flow or a list of them into one flow."""
    if isinstance(graph, Flow):
        return graph
    if isinstance(graph, Job):
        return Flow([graph], name=name)
    return Flow(list(graph), name=name)
