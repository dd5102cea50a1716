"""Record queries: every criterion, pagination, counting, malformed queries, the CLI."""

from __future__ import annotations

import json

import pytest
from ase.build import bulk, molecule

from matdx.store.access import Requester
from matdx.store.search import (
    QueryError,
    RecordQuery,
    count_records,
    reduced_formula,
    search_records,
)
from tests.conftest import cli_user, matdx_cli
from tests.store.factory import crystal, document, insert_documents

ADA = Requester("ada")


@pytest.fixture
def records(store):
    """Eight records of ada's with known elements, gaps, tags, codes and campaigns."""
    specs = {
        "Cu": dict(atoms=crystal("Cu"), energy=-4.0, tags=["metal"]),
        "Cu4": dict(atoms=bulk("Cu", cubic=True), energy=-16.0, tags=["metal", "big"]),
        "NaCl": dict(atoms=crystal("NaCl"), band_gap=5.0, code="espresso", tags=["salt"]),
        "MgO": dict(atoms=crystal("MgO"), band_gap=7.8, code="espresso", calculation="relax"),
        "CuO": dict(atoms=bulk("CuO", "rocksalt", a=4.2), band_gap=1.2, code="vasp"),
        "Cu2O": dict(
            atoms=bulk("Cu", cubic=True)[[0, 1]] + bulk("O", "sc", a=4.2)[[0]],
            band_gap=2.1,
            code="vasp",
            campaign_id="c1111111-1111-1111-1111-111111111111",
        ),
        "H2O": dict(atoms=molecule("H2O"), energy=-14.2, calculation="relax"),
        "Al": dict(atoms=crystal("Al", 4.05), properties={"B0_GPa": 76.0}, calculation="eos-fit"),
    }
    ids = {}
    for i, (name, spec) in enumerate(specs.items()):
        doc = document(seed=i, **spec)
        ids[name] = doc["record_id"]
        insert_documents(store, doc)
    return ids


def names(store, records, **criteria) -> set[str]:
    by_id = {v: k for k, v in records.items()}
    query = RecordQuery.parse(**criteria)
    with store.transaction() as session:
        page = search_records(session, query, ADA)
        assert count_records(session, query, ADA) == len(page.items)
    return {by_id[item["record_id"]] for item in page.items}


def test_elements_has_all_any_only(store, records):
    assert names(store, records, elements=["Cu"]) == {"Cu", "Cu4", "CuO", "Cu2O"}
    assert names(store, records, elements=["Cu", "O"]) == {"CuO", "Cu2O"}
    assert names(store, records, any_elements=["Na", "Mg"]) == {"NaCl", "MgO"}
    assert names(store, records, only_elements=["Cu", "O"]) == {"Cu", "Cu4", "CuO", "Cu2O"}
    assert names(store, records, only_elements=["O", "H", "Mg"]) == {"H2O", "MgO"}
    assert names(store, records, elements=["O"], only_elements=["Cu", "O"]) == {"CuO", "Cu2O"}


def test_formula_sites_code_calculation_tags_campaign(store, records):
    assert names(store, records, formula="OCu2") == {"Cu2O"}
    assert names(store, records, formula="Cu4") == {"Cu", "Cu4"}  # reduced: Cu
    assert names(store, records, nsites={"min": 3}) == {"Cu4", "Cu2O", "H2O"}
    assert names(store, records, nsites={"max": 1}) == {"Cu", "Al"}
    assert names(store, records, code=["vasp", "espresso"]) == {"NaCl", "MgO", "CuO", "Cu2O"}
    assert names(store, records, calculation=["relax"]) == {"MgO", "H2O"}
    assert names(store, records, tags=["metal"]) == {"Cu", "Cu4"}
    assert names(store, records, tags=["metal", "big"]) == {"Cu4"}
    assert names(store, records, campaign_ids=["c1111111-1111-1111-1111-111111111111"]) == {"Cu2O"}


def test_property_ranges(store, records):
    assert names(store, records, properties={"band_gap": {"min": 1.0, "max": 5.0}}) == {
        "NaCl",
        "CuO",
        "Cu2O",
    }
    assert names(store, records, properties={"band_gap": {"min": 6}}) == {"MgO"}
    assert names(store, records, properties={"energy_per_atom": {"max": -4.0}}) == {
        "Cu",
        "Cu4",
        "H2O",
    }
    assert names(store, records, properties={"B0_GPa": {"min": 50, "max": 100}}) == {"Al"}
    both = {"band_gap": {"min": 1}, "energy_per_atom": {"max": -0.3}}
    assert names(store, records, elements=["O"], properties=both) == {"CuO", "Cu2O", "MgO"}


def test_pages_follow_the_cursor_without_gaps_or_repeats(store, records):
    seen, after = [], None
    with store.transaction() as session:
        while True:
            page = search_records(session, RecordQuery.parse(limit=3, after=after), ADA)
            seen += [item["record_id"] for item in page.items]
            if page.next_after is None:
                break
            after = page.next_after
    assert seen == sorted(records.values())
    with store.transaction() as session:
        page = search_records(
            session, RecordQuery.parse(formula="NaCl"), ADA, documents=True, show=()
        )
    assert page.items[0]["results"]["band_gap"] == 5.0


def test_summaries_carry_the_properties_asked_for(store, records):
    with store.transaction() as session:
        page = search_records(session, RecordQuery.parse(properties={"B0_GPa": {"min": 1}}), ADA)
    [item] = page.items
    assert item["formula"] == "Al" and item["elements"] == ["Al"] and item["nsites"] == 1
    assert item["properties"] == {"B0_GPa": 76.0}


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ({"elements": ["Cu", "Xx"]}, "elements: Value error, 'Xx' is not a chemical symbol"),
        ({"formula": "Cu2O!"}, "is not a chemical formula"),
        ({"properties": {"band_gap": {"min": 3, "max": 1}}}, "minimum 3.0 is above maximum 1.0"),
        ({"properties": {"band gap": {"min": 1}}}, "is not a property name"),
        ({"access": ["secret"]}, "access[0]: Input should be"),
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_malformed_queries_name_the_field(criteria, message):
    with pytest.raises(QueryError) as caught:
        RecordQuery.parse(**criteria)
    assert message in str(caught.value)


def test_reduced_formula():
    assert reduced_formula("O2Cu4") == "Cu2O"
    assert reduced_formula("NaCl") == "ClNa"
    with pytest.raises(ValueError, match="not a chemical symbol"):
        reduced_formula("Qq2")


def test_query_on_the_command_line(home, store, records, monkeypatch):
    from matdx.store.access import Requester
    from matdx.store.governance import GovernanceChange, set_governance

    with store.transaction() as session:  # ada's records, for everyone to find
        set_governance(session, Requester("ada"), GovernanceChange(access="public"),
                       record_ids=records.values())  # fmt: skip
    cli_user(monkeypatch, "ada")
    found = matdx_cli(
        "query", "-e", "Cu,O", "--range", "band_gap=1:3", "--format", "json", "--count"
    )
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert {r["record_id"] for r in result["records"]} == {records["CuO"], records["Cu2O"]}
    assert result["count"] == 2 and result["next_after"] is None
    table = matdx_cli("query", "--formula", "ClNa")
    assert "ClNa" in table.stdout and "espresso" in table.stdout
    paged = matdx_cli("query", "--limit", "2")
    assert "more: add --after" in paged.stdout
    bad = matdx_cli("query", "-e", "Xx")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "'Xx'" in bad.stderr
    bad = matdx_cli("query", "--range", "band_gap")
    assert bad.returncode == 2 and "expected NAME=min:max" in bad.stderr
