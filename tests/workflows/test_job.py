import pytest

from matdx.workflows import Flow, Job, OutputReference, Response, job
from matdx.workflows.job import load_function
from matdx.workflows.reference import ReferenceError, resolve_references
from matdx.workflows.serialization import decode, encode
from tests.workflows import jobs


def test_calling_a_job_function_returns_a_job_without_running_it():
    made = jobs.fail()  # would raise if it ran
    assert isinstance(made, Job)
    assert made.function == "tests.workflows.jobs:fail"
    assert made.retries == 1
    assert load_function(made.function) is jobs.fail.original


def test_dependencies_come_from_output_references():
    first = jobs.add(1, 2)
    second = jobs.add(first.output, 3)
    third = jobs.total([first.output, second.output["missing"], 7])
    assert first.parents == set()
    assert second.parents == {first.id}
    assert third.parents == {first.id, second.id}
    assert second.output["a"][0] == OutputReference(second.id, ("a", 0))


def test_references_resolve_against_outputs():
    first = jobs.add(1, 2)
    second = jobs.total([first.output["x"], first.output["y"][1]])
    resolved = resolve_references(second.inputs, {first.id: {"x": 5, "y": [0, 6]}})
    assert decode(resolved) == {"args": [[5, 6]], "kwargs": {}}
    with pytest.raises(ReferenceError, match=r"has no item \['x'\]"):
        resolve_references(second.inputs, {first.id: {"y": [0, 6]}})
    partial = resolve_references(second.inputs, {}, partial=True)
    assert partial == second.inputs


def test_job_round_trips_through_json():
    original = jobs.add(jobs.add(1, 2).output, 4).configure(
        name="plus", retries=5, resources={"cores": 2}
    )
    back = decode(encode(original))
    assert back.to_dict() == original.to_dict()


def test_flow_flattens_nested_flows_and_rejects_duplicates():
    a, b, c = jobs.add(1, 1), jobs.add(2, 2), jobs.add(3, 3)
    flow = Flow([a, Flow([b, c], name="inner")], name="outer")
    assert [j.id for j in flow.jobs] == [a.id, b.id, c.id]
    assert flow.output == c.output.__matdx_json__()
    with pytest.raises(ValueError, match="appears twice"):
        Flow([a, Flow([a])])


def test_response_encodes_graph_changes():
    follow = jobs.add(1, 2)
    response = Response(output={"v": 1}, detour=follow, stop_children=False)
    data = response.to_dict()
    assert data["detour"]["jobs"][0]["id"] == follow.id
    assert data["replace"] is None and data["addition"] is None
    assert response.holds_children
    assert not Response(output=1, addition=follow).holds_children


def test_local_functions_cannot_be_jobs():
    def inner():
        return 1

    with pytest.raises(ValueError, match="module-level function"):
        job(inner)


def test_retries_must_be_a_non_negative_integer():
    with pytest.raises(ValueError, match="retries"):
        jobs.add(1, 2).configure(retries=-1)
