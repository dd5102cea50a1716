"""Jobs, flows and the engine that runs them (see ARCHITECTURE.md).

The job model (:func:`job`, :class:`Job`, :class:`Flow`, :class:`Response`,
:class:`ArtifactFile`) is importable from here; the engine lives in
:mod:`matdx.workflows.engine`.
"""

from matdx.workflows.files import ArtifactFile
from matdx.workflows.flow import Flow
from matdx.workflows.job import Job, job
from matdx.workflows.reference import OutputReference
from matdx.workflows.response import Response

__all__ = ["ArtifactFile", "Flow", "Job", "OutputReference", "Response", "job"]
