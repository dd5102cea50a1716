"""The result protocol between the job runner and harvest: ``result.json``, typed and versioned.

The job runner (:mod:`matdx.workflows.run`, on a compute node) writes one :class:`ResultFile`
per attempt; harvest (on the login node) reads it back through the same model. A run directory
is written by a machine the store does not control, so harvest validates every field before
any of it reaches a record: a file that does not match this schema is that job's failure, never
the tick's.

Version history: 1, the first typed version (files without ``schema_version`` are read as 1).

Examples
--------
>>> ResultFile(job_id="j", attempt=1, status="completed", output=3).schema_version
1
>>> ResultFile.model_validate({"job_id": "j", "attempt": 2, "status": "failed"}).error is None
True
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RESULT_SCHEMA_VERSION", "JobError", "ResultFile"]

RESULT_SCHEMA_VERSION = 1

_TEXT = 1 << 20  # characters: an error message or traceback longer than this is not a message


class JobError(BaseModel):
    """Why an attempt failed, with the correction the code's error handlers proposed."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(max_length=500)
    message: str = Field(default="", max_length=_TEXT)
    traceback: str = Field(default="", max_length=_TEXT)
    last_line: str = Field(default="", max_length=10_000)
    # The failure kind (matdx.workflows.failures names them); "infrastructure" spends no retry.
    kind: str = Field(default="program", max_length=40, pattern=r"^[a-z_]+$")
    correction: dict[str, Any] | None = None


class ResultFile(BaseModel):
    """The content of ``result.json``.

    Attributes
    ----------
    started_at, finished_at
        Seconds since the epoch (UTC) on the compute node.
    output
        The job's return value, encoded (:mod:`matdx.workflows.serialization`).
    response
        A :class:`~matdx.workflows.response.Response` as a dict, when the job returned one.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = RESULT_SCHEMA_VERSION
    job_id: str = Field(min_length=1, max_length=100)
    attempt: int = Field(ge=1)
    status: Literal["completed", "failed"]
    input_hash: str | None = Field(default=None, max_length=200)
    host: str = Field(default="", max_length=255)
    pid: int | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    response: dict[str, Any] | None = None
    error: JobError | None = None
