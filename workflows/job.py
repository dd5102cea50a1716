"""Jobs: delayed calls of plain functions.

Decorating a function with :func:`job` makes calling it return a :class:`Job` instead of
running it. A job is named by the import path of its function (``matdx.recipes.eos:fit``),
so any machine with matdx installed can run it from a run directory. Arguments may be anything
:mod:`matdx.workflows.serialization` encodes, including references to other jobs' outputs;
those references define the dependencies.

Examples
--------
>>> @job
... def add(a, b):
...     return a + b
>>> first = add(1, 2)
>>> second = add(first.output, 10)   # depends on ``first``
>>> second.parents == {first.id}
True
"""

from __future__ import annotations

import functools
import importlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from matdx.workflows.reference import OutputReference, iter_reference_ids
from matdx.workflows.serialization import JSON, decode, encode, register_tag

__all__ = ["Job", "JobFunction", "job", "load_function"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_RETRIES = 2


class Job:
    """One delayed function call.

    Parameters
    ----------
    function
        Import path ``"package.module:qualname"`` of the undecorated function.
    args, kwargs
        Arguments, encoded on construction (so a job holds no live objects).
    name
        Short human name; defaults to the function's name.
    retries
        How many times a failed attempt is retried before the job is FAILED.
    resources
        What one attempt needs, e.g. ``{"cores": 4, "walltime_s": 3600}``.
    job_id
        A UUID; a new one by default.
    """

    __slots__ = ("function", "id", "inputs", "name", "resources", "retries")

    def __init__(
        self,
        function: str,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        retries: int = DEFAULT_RETRIES,
        resources: Mapping[str, Any] | None = None,
        job_id: str | None = None,
    ) -> None:
        self.id = job_id or str(uuid.uuid4())
        self.function = function
        self.name = name or function.rsplit(":", 1)[-1]
        self.inputs: JSON = encode(
            {"args": list(args), "kwargs": dict(kwargs or {})}, path=f"{self.name}"
        )
        self.retries = _check_retries(retries)
        self.resources = dict(resources or {})

    @property
    def output(self) -> OutputReference:
        """Reference to this job's output; index it for items: ``job.output["energy"]``."""
        return OutputReference(self.id)

    @property
    def parents(self) -> set[str]:
        """Ids of the jobs whose outputs this job's inputs reference."""
        return set(iter_reference_ids(self.inputs)) - {self.id}

    def configure(
        self,
        *,
        name: str | None = None,
        retries: int | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> Job:
        """Change the name, retry limit or resources in place; returns the job."""
        if name is not None:
            self.name = name
        if retries is not None:
            self.retries = _check_retries(retries)
        if resources is not None:
            self.resources.update(resources)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "function": self.function,
            "inputs": self.inputs,
            "retries": self.retries,
            "resources": self.resources,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        new = cls.__new__(cls)
        new.id = data["id"]
        new.name = data["name"]
        new.function = data["function"]
        new.inputs = data["inputs"]
        new.retries = data.get("retries", DEFAULT_RETRIES)
        new.resources = dict(data.get("resources") or {})
        return new

    def __matdx_json__(self) -> JSON:
        return {"@job": self.to_dict()}

    def __repr__(self) -> str:
        return f"Job({self.name!r}, id={self.id[:8]}, function={self.function!r})"


register_tag("@job", Job.from_dict)


def _check_retries(retries: int) -> int:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries: must be a non-negative integer, got {retries!r}")
    return retries


class JobFunction:
    """A function decorated with :func:`job`: calling it returns a :class:`Job`.

    The undecorated function stays available as :attr:`original`.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        retries: int = DEFAULT_RETRIES,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        if function.__module__ == "__main__" or "<locals>" in function.__qualname__:
            raise ValueError(
                f"job: {function.__qualname__} must be a module-level function of an importable "
                "module, so that a run directory can name it"
            )
        functools.update_wrapper(self, function)
        self.original = function
        self.path = f"{function.__module__}:{function.__qualname__}"
        self.name = name or function.__name__
        self.retries = _check_retries(retries)
        self.resources = dict(resources or {})

    def __call__(self, *args: Any, **kwargs: Any) -> Job:
        return Job(
            self.path, args, kwargs, name=self.name, retries=self.retries, resources=self.resources
        )

    def __repr__(self) -> str:
        return f"<job {self.path}>"


def job(
    function: Callable[P, R] | None = None,
    *,
    name: str | None = None,
    retries: int = DEFAULT_RETRIES,
    resources: Mapping[str, Any] | None = None,
) -> Any:
    """Make calls of ``function`` return :class:`Job` objects instead of running.

    Usable bare (``@job``) or with options (``@job(retries=0, resources={"cores": 4})``).
    """
    if function is None:
        return functools.partial(job, name=name, retries=retries, resources=resources)
    return JobFunction(function, name=name, retries=retries, resources=resources)


def load_function(path: str) -> Callable[..., Any]:
    """Import ``"package.module:qualname"`` and return the undecorated callable.

    Raises
    ------
    ImportError
        If the module or the attribute does not exist.
    """
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ImportError(f"function: expected 'module:qualname', got {path!r}")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as err:
            raise ImportError(f"function: {module_name} has no attribute {qualname!r}") from err
    return getattr(target, "original", target)


def decode_inputs(inputs: JSON) -> tuple[list[Any], dict[str, Any]]:
    """Decode a job's resolved inputs into positional and keyword arguments."""
    decoded = decode(inputs)
    return decoded["args"], decoded["kwargs"]
