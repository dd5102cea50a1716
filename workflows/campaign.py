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

import functools
import itertools
import math
import os
from collections.abc import Mapping
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)

from matdx.store.fieldpath import field_path
from matdx.workflows.executors.spec import (
    BatchExecutorSpec,
    DaskExecutorSpec,
    LocalExecutorSpec,
    validate_executor,
)
from matdx.workflows.flow import Flow
from matdx.workflows.limits import MAX_SWEEP_POINTS, MAX_WORKFLOWS, setting_problem
from matdx.workflows.maker import Maker
from matdx.workflows.reference import OutputReference
from matdx.workflows.serialization import encode
from matdx.workflows.structures import MAX_ATOMS, StructureError, build_structures
from matdx.workflows.submit import CampaignGraph
from matdx.workflows.yaml_reader import YAMLFileError, load_yaml

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


# The ``executor`` section: one validated model per executor type (local, slurm / pbs / lsf /
# sge, dask), chosen by ``type``; errors name the field inside the section
# (``executor.resources.walltime: ...``). See matdx.workflows.executors.spec.
ExecutorSpec = Annotated[
    LocalExecutorSpec | BatchExecutorSpec | DaskExecutorSpec,
    PlainValidator(validate_executor),
    PlainSerializer(lambda spec: spec.model_dump(mode="json"), return_type=dict),
]


class Study(BaseModel):
    """One recipe (or a chain of recipes) applied to structures.

    A chain ``recipe: [relax, static, bands, eos]`` runs the recipes one after the other, each
    starting from the structure the previous one returned; its ``settings`` then map each
    recipe name to that recipe's settings, and its ``sweep`` keys are ``recipe.setting``.
    """

    model_config = ConfigDict(extra="forbid")

    recipe: str | list[str]
    code: str = "emt"
    protocol: Literal["fast", "moderate", "precise"] = "moderate"
    structures: list[Any] = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)

    @property
    def chain(self) -> list[str]:
        return [self.recipe] if isinstance(self.recipe, str) else list(self.recipe)


class CampaignFile(BaseModel):
    """The validated content of a campaign file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    description: str = ""
    executor: ExecutorSpec = Field(default_factory=LocalExecutorSpec)
    tags: list[str] = Field(default_factory=list)
    retries: int | None = Field(None, ge=0, le=100)
    owner: str = ""  # empty: whoever submits (set by matdx.workflows.submit)
    project: str = ""
    access: Literal["private", "group", "embargoed", "public"] = "private"
    embargo_until: datetime | None = None
    license: str | None = None  # SPDX licence expression of the records
    export_control: bool = False
    studies: list[Study] = Field(min_length=1)

    @model_validator(mode="after")
    def _governance(self) -> CampaignFile:
        """The records' governance defaults, checked as every record will be."""
        from matdx.store.records import Governance

        try:
            checked = Governance(owner=self.owner, project=self.project, access=self.access,
                                 embargo_until=self.embargo_until, license=self.license,
                                 export_control=self.export_control)
        except ValidationError as err:
            problem = err.errors()[0]
            field = field_path(problem["loc"]) or ("embargo_until" if "embargo" in problem["msg"]
                                               else "access")
            raise ValueError(f"{field}: {problem['msg'].removeprefix('Value error, ')}") from err
        self.license, self.embargo_until = checked.license, checked.embargo_until
        return self

    @model_validator(mode="before")
    @classmethod
    def _single_study(cls, data: Any) -> Any:
        """Accept ``recipe``/``structures``/... at the top level as the only study."""
        if isinstance(data, dict) and "studies" not in data and "recipe" in data:
            keys = set(Study.model_fields)
            study = {k: v for k, v in data.items() if k in keys}
            data = {k: v for k, v in data.items() if k not in keys} | {"studies": [study]}
        return data


def _errors(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for problem in err.errors():
        where = field_path(problem["loc"])
        field = f"{prefix}.{where}" if prefix and where else prefix or where or "campaign"
        lines.append(f"{field}: {problem['msg']}")
    return "\n".join(lines)


@functools.cache
def _recipe_entry_points() -> tuple[Any, ...]:
    """The ``matdx.recipes`` entry points, looked up once per process (scanning every
    installed distribution's metadata takes ~0.1 s)."""
    return tuple(entry_points(group=RECIPE_GROUP))


def available_recipes() -> dict[str, type[Maker]]:
    """Recipes installed under the ``matdx.recipes`` entry-point group, by name."""
    return {point.name: point.load() for point in _recipe_entry_points()}


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
            data = load_yaml(path)
        except YAMLFileError as err:
            raise CampaignError(f"campaign file {path.name}: {err}") from err
    if not isinstance(data, dict):
        raise CampaignError("campaign file: expected a mapping of fields at the top level")
    try:
        return CampaignFile.model_validate(data)
    except ValidationError as err:
        raise CampaignError(_errors(err)) from err
    except RecursionError as err:
        raise CampaignError("campaign file: nested too deeply") from err


def _sweep_points(study: Study, field: str, force_large: bool = False) -> list[dict[str, Any]]:
    for key, values in study.sweep.items():
        if not values:
            raise CampaignError(f"{field}.sweep.{key}: needs at least one value")
        if key in study.settings:
            raise CampaignError(f"{field}.sweep.{key}: also set in settings; set it once")
    size = math.prod(len(values) for values in study.sweep.values())
    if size > MAX_SWEEP_POINTS and not force_large:
        shape = " × ".join(f"{len(v):,}" for v in study.sweep.values())
        raise CampaignError(f"{field}.sweep: {shape} = {size:,} combinations, more than the "
                            f"limit of {MAX_SWEEP_POINTS:,} per study; sweep fewer values, or "
                            "submit with --force-large if you mean it")
    keys = list(study.sweep)
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(study.sweep[k] for k in keys))
    ]


def _maker(recipe: type[Maker], study: Study, name: str, point: dict[str, Any],
           field: str) -> Maker:
    """The maker of recipe ``name`` in a study, for one point of its sweep."""
    chained = isinstance(study.recipe, list)
    settings = study.settings.get(name, {}) if chained else study.settings
    settings_field = f"{field}.settings.{name}" if chained else f"{field}.settings"
    if not isinstance(settings, dict):
        raise CampaignError(f"{settings_field}: expected a mapping of settings")
    swept = {key.split(".", 1)[1] if chained else key: value for key, value in point.items()
             if not chained or key.startswith(f"{name}.")}
    values = {**settings, **swept, "code": study.code}
    if "protocol" in recipe.model_fields:
        values["protocol"] = study.protocol
    if study.parameters:
        values["parameters"] = study.parameters
    checked = [
        {"loc": (key,), "msg": reason}
        for key, value in values.items()
        if key in recipe.model_fields
        and (reason := setting_problem(key, value, recipe.model_fields[key].annotation))
    ]
    cause: ValidationError | None = None
    if not checked:
        try:
            return recipe.model_validate(values)
        except ValidationError as err:
            checked, cause = err.errors(), err
    problems = []
    for problem in checked:
        key = problem["loc"][0] if problem["loc"] else ""
        sweep_key = f"{name}.{key}" if chained else key
        if sweep_key in point:
            index = study.sweep[sweep_key].index(point[sweep_key])
            where = f"{field}.sweep.{sweep_key}[{index}]"
        elif key in ("code", "parameters", "protocol"):
            where = f"{field}.{field_path(problem['loc'])}"
        else:
            where = f"{settings_field}.{field_path(problem['loc'])}"
        problems.append(f"{where}: {problem['msg']}")
    raise CampaignError("\n".join(problems)) from cause


def _check_chain(study: Study, recipes: Mapping[str, type[Maker]], field: str) -> list[str]:
    chain = study.chain
    if not chain:
        raise CampaignError(f"{field}.recipe: name at least one recipe")
    for k, name in enumerate(chain):
        if name not in recipes:
            where = f"{field}.recipe" + (f"[{k}]" if isinstance(study.recipe, list) else "")
            raise CampaignError(f"{where}: unknown recipe {name!r}; available: "
                                f"{', '.join(sorted(recipes))}")
    if isinstance(study.recipe, list):
        for key in study.settings:
            if key not in chain:
                raise CampaignError(f"{field}.settings.{key}: not a recipe of this chain "
                                    f"({', '.join(chain)}); chain settings are per recipe")
        for key in study.sweep:
            if key.split(".", 1)[0] not in chain or "." not in key:
                raise CampaignError(f"{field}.sweep.{key}: in a chain, sweep keys are "
                                    "'recipe.setting'")
    return chain


def _structure_of(flow: Flow, maker: Maker, field: str) -> OutputReference:
    """A reference to the structure a flow returns, for the next recipe of a chain."""
    output, name = flow.output, maker.name
    if not maker.returns_structure or not (isinstance(output, dict) and set(output) == {"@ref"}):
        raise CampaignError(f"{field}.recipe: {name!r} returns no single structure and cannot "
                            "be followed by another recipe")
    ref = output["@ref"]
    return OutputReference(ref["job"], (*ref["path"], "structure"))


def _check_workers(campaign: CampaignFile) -> None:
    workers = getattr(campaign.executor, "workers", None)
    cpus = os.cpu_count() or 1
    if getattr(campaign.executor, "type", "local") == "local" and workers and workers > cpus:
        raise CampaignError(f"executor.workers: {workers} worker processes on a machine with "
                            f"{cpus} CPU(s); at most {cpus}")


def _check_workflow_count(count: int, field: str, force_large: bool) -> None:
    if count > MAX_WORKFLOWS and not force_large:
        raise CampaignError(f"{field}: the campaign would have at least {count:,} workflows, "
                            f"more than the limit of {MAX_WORKFLOWS:,}; split it, or submit "
                            "with --force-large if you mean it")


def plan_campaign(
    campaign: CampaignFile,
    base: str | Path = ".",
    recipes: Mapping[str, type[Maker]] | None = None,
    *,
    force_large: bool = False,
) -> CampaignGraph:
    """Build every workflow of a campaign, checking recipes, settings and structures.

    Parameters
    ----------
    base
        Directory that structure file paths are relative to.
    force_large
        Accept more than the limits on sweep points, workflows and atoms per structure
        (:mod:`matdx.workflows.limits`).

    Raises
    ------
    CampaignError
        At the first study that cannot be built; nothing has been written.
    """
    recipes = dict(recipes or available_recipes())
    local = getattr(campaign.executor, "type", "local") == "local"
    _check_workers(campaign)
    sweeps, least = [], 0
    for i, study in enumerate(campaign.studies):  # sizes first, before anything is built
        field = f"studies[{i}]"
        sweeps.append(_sweep_points(study, field, force_large))
        least += len(sweeps[-1]) * sum(
            len(s["bulk"]) if isinstance(s, dict) and isinstance(s.get("bulk"), list) else 1
            for s in study.structures)
        _check_workflow_count(least, field, force_large)
    workflows: list[tuple[str, Flow]] = []
    for i, study in enumerate(campaign.studies):
        field = f"studies[{i}]"
        chain = _check_chain(study, recipes, field)
        label_of_chain = "+".join(chain)
        sweep = sweeps[i]
        points = [[_maker(recipes[name], study, name, point, field) for name in chain]
                  for point in sweep]
        try:
            structures = build_structures(study.structures, f"{field}.structures", Path(base),
                                          None if force_large else MAX_ATOMS)
        except StructureError as err:
            raise CampaignError(str(err)) from err
        _check_workflow_count(len(workflows) + len(structures) * len(sweep), field,
                              force_large)
        for label, atoms in structures:
            for makers in points:
                flows, start = [], None
                for maker in makers:
                    try:
                        maker.check(atoms, local=local)
                    except ValueError as err:
                        raise CampaignError(f"{label}: {err}") from err
                    flow = maker.make(atoms, start)
                    flows.append(flow)
                    if maker is not makers[-1]:
                        start = _structure_of(flow, maker, field)
                workflow = flows[0] if len(flows) == 1 else Flow(
                    flows, output=flows[-1].output,
                    name=f"{label_of_chain} {atoms.get_chemical_formula()}")
                if campaign.retries is not None:
                    for one in workflow.jobs:
                        one.configure(retries=campaign.retries)
                workflows.append((label_of_chain, workflow))
    return CampaignGraph(
        name=campaign.name,
        workflows=workflows,
        executor=campaign.executor.model_dump(),
        spec=campaign.model_dump(mode="json", fallback=encode),  # Atoms given from Python
        tags=campaign.tags,
        owner=campaign.owner,
        project=campaign.project,
        access=campaign.access,
        license=campaign.license,
        embargo_until=campaign.embargo_until,
        export_control=campaign.export_control,
    )


def load_campaign(path: str | Path, *, force_large: bool = False) -> CampaignGraph:
    """Read, validate and plan a campaign file (structure paths relative to its folder)."""
    campaign = read_campaign(path)
    return plan_campaign(campaign, Path(path).parent, force_large=force_large)
