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

    def check(self, atoms: Any) -> None:
        """Raise ``ValueError`` if this recipe cannot run on ``atoms`` with these settings."""

    def make(self, atoms: Any) -> Flow:
        """The flow of jobs for one structure."""
        raise NotImplementedError(f"{type(self).__name__} must define make()")
