"""Makers: the settings of a recipe, and how they turn a structure into a flow."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from matdx.workflows.flow import Flow

__all__ = ["Maker"]


class Maker(BaseModel):
    """Base class of recipes' makers.

    A maker holds every setting of a recipe as a validated field (campaign files fill them
    from a study's ``settings``); :meth:`make` takes only the structure. Unknown settings are
    errors, so a typo never silently falls back to a default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    description: ClassVar[str] = ""
    # Output keys of the final job that `matdx results` shows as columns.
    summary: ClassVar[tuple[str, ...]] = ()
    # The flow's output holds a "structure" another recipe of a chain can start from.
    returns_structure: ClassVar[bool] = True

    def check(self, atoms: Any, *, local: bool = True) -> None:
        """Raise ``ValueError`` if this recipe cannot run on ``atoms`` with these settings
        (``local``: the jobs run on this machine, so its programs must be installed)."""

    def make(self, atoms: Any, start: Any = None) -> Flow:
        """The flow of jobs for one structure.

        ``start``, when given, is what the jobs start from instead of ``atoms`` (a reference to
        the structure an earlier recipe of a chain returns); ``atoms`` still names the flow.
        """
        raise NotImplementedError(f"{type(self).__name__} must define make()")
