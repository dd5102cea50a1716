"""Campaign files: a recipe applied to structures with settings, validated before anything
is written.

A campaign file (YAML) holds one study, or several under ``studies``::

    name: metals-eos
    executor: {type: local, workers: 2}
    tags: [demo]
    studies:
      - recipe: eos                 # a recipe name (see `matdx recipes`)
        code: emt
        structures:
          - bulk: [Cu, Al, Ni]
        settings: {points: 7, volume_range: 0.08}
      - recipe: md
        structures: [{bulk: [Cu], cubic: true, repeat: [4, 4, 4]}]
        settings: {steps: 1000, timestep_fs: 4}
        sweep: {temperature_K: [300, 1000]}   # one workflow per value (cartesian product)

Every problem is reported as ``field: reason`` with the field's path in the file, e.g.
``studies[1].settings.temperature_K: Input should be greater than 0``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from matdx.workflows.maker import Maker
from matdx.workflows.structures import StructureError, build_structures
from matdx.workflows.submit import CampaignGraph

__all__ = [
    "CampaignError",
    "CampaignFile",
    "available_recipes",
    "load_campaign",
    "plan_campaign",
    "read_campaign",
]

RECIPE_GROUP = "matdx.recipes"


class CampaignError(ValueError):
    """A campaign file is invalid. The message names the field(s) and the reason."""


class ExecutorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["local"] = "local"
    workers: PositiveInt | None = None


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str
    code: str = "emt"
    structures: list[Any] = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


class CampaignFile(BaseModel):
    """The validated content of a campaign file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    description: str = ""
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    tags: list[str] = Field(default_factory=list)
    retries: int | None = Field(None, ge=0, le=100)
    owner: str = ""
    project: str = ""
    access: Literal["private", "group", "embargoed", "public"] = "private"
    license: str = ""
    studies: list[Study] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _single_study(cls, data: Any) -> Any:
        """Accept ``recipe``/``structures``/... at the top level as the only study."""
        if isinstance(data, dict) and "studies" not in data and "recipe" in data:
            keys = set(Study.model_fields)
            study = {k: v for k, v in data.items() if k in keys}
            data = {k: v for k, v in data.items() if k not in keys} | {"studies": [study]}
        return data


def _where(location: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location).lstrip(".")


def _errors(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for problem in err.errors():
        where = _where(problem["loc"])
        field = f"{prefix}.{where}" if prefix and where else prefix or where or "campaign"
        lines.append(f"{field}: {problem['msg']}")
    return "\n".join(lines)


def available_recipes() -> dict[str, type[Maker]]:
    """Recipes installed under the ``matdx.recipes`` entry-point group, by name."""
    return {point.name: point.load() for point in entry_points(group=RECIPE_GROUP)}


def read_campaign(source: str | Path | Mapping[str, Any]) -> CampaignFile:
    """Parse and validate a campaign file (or an already-loaded mapping).

    Raises
    ------
    CampaignError
        For a missing file, malformed YAML or invalid fields.
    """
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise CampaignError(f"campaign file: no such file {str(path)!r}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise CampaignError(
                f"campaign file: malformed YAML{where}: {getattr(err, 'problem', err)}"
            ) from err
    if not isinstance(data, dict):
        raise CampaignError("campaign file: expected a mapping of fields at the top level")
    try:
        return CampaignFile.model_validate(data)
    except ValidationError as err:
        raise CampaignError(_errors(err)) from err


def _sweep_points(study: Study, field: str) -> list[dict[str, Any]]:
    for key, values in study.sweep.items():
        if not values:
            raise CampaignError(f"{field}.sweep.{key}: needs at least one value")
        if key in study.settings:
            raise CampaignError(f"{field}.sweep.{key}: also set in settings; set it once")
    keys = list(study.sweep)
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(study.sweep[k] for k in keys))
    ]


def _maker(recipe: type[Maker], study: Study, point: dict[str, Any], field: str) -> Maker:
    values = {**study.settings, **point, "code": study.code}
    if study.parameters:
        values["parameters"] = study.parameters
    try:
        return recipe.model_validate(values)
    except ValidationError as err:
        problems = []
        for problem in err.errors():
            key = problem["loc"][0] if problem["loc"] else ""
            if key in point:
                where = f"{field}.sweep.{key}[{study.sweep[key].index(point[key])}]"
            elif key in ("code", "parameters"):
                where = f"{field}.{_where(problem['loc'])}"
            else:
                where = f"{field}.settings.{_where(problem['loc'])}"
            problems.append(f"{where}: {problem['msg']}")
        raise CampaignError("\n".join(problems)) from err


def plan_campaign(
    campaign: CampaignFile, base: str | Path = ".", recipes: Mapping[str, type[Maker]] | None = None
) -> CampaignGraph:
    """Build every workflow of a campaign, checking recipes, settings and structures.

    Parameters
    ----------
    base
        Directory that structure file paths are relative to.

    Raises
    ------
    CampaignError
        At the first study that cannot be built; nothing has been written.
    """
    recipes = dict(recipes or available_recipes())
    workflows = []
    for i, study in enumerate(campaign.studies):
        field = f"studies[{i}]"
        if study.recipe not in recipes:
            raise CampaignError(
                f"{field}.recipe: unknown recipe {study.recipe!r}; available: "
                f"{', '.join(sorted(recipes))}"
            )
        makers = [
            _maker(recipes[study.recipe], study, point, field)
            for point in _sweep_points(study, field)
        ]
        try:
            structures = build_structures(study.structures, f"{field}.structures", Path(base))
        except StructureError as err:
            raise CampaignError(str(err)) from err
        for label, atoms in structures:
            for maker in makers:
                try:
                    maker.check(atoms)
                except ValueError as err:
                    raise CampaignError(f"{label}: {err}") from err
                flow = maker.make(atoms)
                if campaign.retries is not None:
                    for one in flow.jobs:
                        one.configure(retries=campaign.retries)
                workflows.append((study.recipe, flow))
    return CampaignGraph(
        name=campaign.name,
        workflows=workflows,
        executor=campaign.executor.model_dump(),
        spec=campaign.model_dump(mode="json"),
        tags=campaign.tags,
        owner=campaign.owner,
        project=campaign.project,
        access=campaign.access,
        license=campaign.license,
    )


def load_campaign(path: str | Path) -> CampaignGraph:
    """Read, validate and plan a campaign file (structure paths relative to its folder)."""
    campaign = read_campaign(path)
    return plan_campaign(campaign, Path(path).parent)
