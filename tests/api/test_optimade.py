"""OPTIMADE at /optimade/v1 over records of the store: the filter grammar against the store's
indexes, pagination, response fields, and the access filter (the public API shows what the
export filter lets out; results under a running embargo are withheld)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ase import Atoms
from ase.build import bulk, molecule

from matdx.store.models import utcnow
from tests.store.factory import crystal, document, insert_documents

FORMULAS = ("Cu", "Al", "Ni", "NaCl", "MgO", "CuO")


@pytest.fixture
def records(store):
    """Six public crystals, plus one of each restricted kind."""
    public = [
        document(
            crystal(f), access="public", owner="alice", seed=i, band_gap=0.5 * i, energy=-1.0 - i
        )
        for i, f in enumerate(FORMULAS)
    ]
    for i, made in enumerate(public):
        made["results"]["converged"] = i % 2 == 0  # Cu, Ni, MgO
    hidden = {
        "private": document(bulk("Fe", "bcc", a=2.87), owner="alice", access="private"),
        "controlled": document(
            bulk("Ti", "hcp", a=2.95, c=4.68), owner="alice", access="public", export_control=True
        ),
        "embargoed": document(
            bulk("Pt", "fcc", a=3.92),
            owner="alice",
            access="embargoed",
            embargo_until=utcnow() + timedelta(days=30),
            energy=-7.0,
        ),
        "no-structure": document(molecule("H2O"), owner="alice", access="public"),
    }
    insert_documents(store, *public, *hidden.values())
    return {"public": {d["record_id"]: d for d in public}, **hidden}


def _ids(http, query: str, headers=None) -> list[str]:
    answer = http.get(f"/optimade/v1/structures?{query}", headers=headers)
    assert answer.status_code == 200, answer.text
    return [entry["id"] for entry in answer.json()["data"]]


def _formulas(http, filter_text: str) -> set[str]:
    answer = http.get("/optimade/v1/structures", params={"filter": filter_text, "page_limit": 100})
    assert answer.status_code == 200, answer.text
    return {e["attributes"]["chemical_formula_reduced"] for e in answer.json()["data"]}


def test_anonymous_sees_public_structures_only(http, records):
    # An OPTIMADE structure carries positions and cell, which an embargo keeps with the
    # project until its end (outsiders may find the record's discovery metadata in /records).
    answer = http.get("/optimade/v1/structures?page_limit=100").json()
    seen = {entry["id"]: entry["attributes"] for entry in answer["data"]}
    assert set(records["public"]) <= set(seen)
    for kind in ("embargoed", "private", "controlled"):
        assert records[kind]["record_id"] not in seen
    assert answer["meta"]["data_returned"] == answer["meta"]["data_available"] == len(seen)
    # H2O is a molecule in a box: it has a structure too; every entry is an OPTIMADE structure
    assert all(attrs["structure_features"] == [] for attrs in seen.values())


@pytest.mark.postgres  # tokens of several people: PostgreSQL's
def test_the_owner_sees_private_records_but_never_export_controlled_ones(http, records, token_of):
    ids = _ids(http, "page_limit=100", headers=token_of("alice"))
    assert records["private"]["record_id"] in ids
    assert records["controlled"]["record_id"] not in ids


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ('elements HAS "Cu"', {"Cu", "CuO"}),
        ('elements HAS ALL "Cu","O"', {"CuO"}),
        ('elements HAS ANY "Na","Mg"', {"ClNa", "MgO"}),
        ('elements HAS ONLY "Cu","O","Al"', {"Cu", "Al", "CuO"}),
        ('elements LENGTH 2 AND NOT elements HAS "O"', {"ClNa"}),
        ('nelements = 1 AND chemical_formula_reduced STARTS "N"', {"Ni"}),
        ('chemical_formula_reduced CONTAINS "u"', {"Cu", "CuO"}),
        ('chemical_formula_reduced ENDS WITH "O"', {"MgO", "CuO"}),
        ('chemical_formula_reduced CONTAINS "cu"', set()),  # case-sensitive
        ('chemical_formula_anonymous = "AB" AND NOT elements HAS "Cl"', {"MgO", "CuO"}),
        ("2 <= nsites AND nsites < 3 AND nperiodic_dimensions = 3", {"ClNa", "MgO", "CuO"}),
        ('_matdx_band_gap >= 2 OR chemical_formula_reduced = "Al"', {"Al", "MgO", "CuO"}),
        ("_matdx_energy < -5.5", {"CuO"}),  # the embargoed Pt (-7 eV) is withheld
        ('_matdx_code = "emt" AND _matdx_calculation != "relax"', set(FORMULAS) | {"ClNa"}),
        ("_other_provider_field = 3", set()),
        ('NOT _other_provider_field = 3 AND elements HAS "Al"', {"Al"}),
        ("_other_provider_field IS UNKNOWN AND nsites > 1 AND nelements = 1", set()),
        ('structure_features LENGTH 0 AND elements HAS "Ni"', {"Ni"}),
        ('species_at_sites HAS "Mg"', {"MgO"}),
        ("space_group_it_number = 225", set()),  # standard, not held: unknown
        ("_matdx_converged = TRUE", {"Cu", "Ni", "MgO"}),  # boolean literals
        ("_matdx_converged = FALSE", {"Al", "NaCl", "CuO"}),
        ('_matdx_converged != TRUE AND elements HAS "O"', {"CuO"}),
    ],
)
def test_filters(http, records, filter_text, expected):
    found = _formulas(http, filter_text) - {"Pt", "H2O"}
    expected = {"ClNa" if f == "NaCl" else f for f in expected}
    assert found == expected


def test_last_modified_compares_to_the_second(http, records):
    entry = http.get("/optimade/v1/structures?page_limit=1").json()["data"][0]
    stamp = entry["attributes"]["last_modified"]
    assert entry["id"] in _ids(http, f'filter=last_modified="{stamp}"&page_limit=100')
    assert entry["id"] not in _ids(http, f'filter=last_modified>"{stamp}"&page_limit=100')


@pytest.mark.parametrize("query", ["", "&filter=nsites >= 2", "&sort=-nsites&filter=nsites < 9"])
def test_cursor_pages_cover_every_entry_once(http, records, query):
    seen, counts = [], set()
    url = f"/optimade/v1/structures?page_limit=2&response_fields=nsites{query}"
    while url:
        page = http.get(url).json()
        assert len(page["data"]) <= 2
        assert all(set(e["attributes"]) == {"nsites"} for e in page["data"])
        seen += [e["id"] for e in page["data"]]
        counts.add(page["meta"]["data_returned"])  # counted for the first page, then carried
        url = page["links"]["next"]
        assert page["meta"]["more_data_available"] == (url is not None)
    everything = _ids(http, f"page_limit=100{query}")
    assert sorted(seen) == sorted(everything) and len(set(seen)) == len(seen)
    assert counts == {len(everything)}
    if "sort" not in query:
        assert seen == everything


def test_sorted_pages(http, records):
    seen, url = [], "/optimade/v1/structures?page_limit=3&sort=-nsites,chemical_formula_reduced"
    while url:
        page = http.get(url).json()
        seen += [
            (e["attributes"]["nsites"], e["attributes"]["chemical_formula_reduced"])
            for e in page["data"]
        ]
        url = page["links"]["next"]
    assert seen == sorted(seen, key=lambda x: (-x[0], x[1]))


@pytest.mark.postgres  # tokens of several people: PostgreSQL's
def test_single_entry_and_access(http, records, token_of):
    public_id = next(iter(records["public"]))
    entry = http.get(f"/optimade/v1/structures/{public_id}").json()["data"]
    assert entry["attributes"]["_matdx_energy_per_atom"] < 0
    private_id = records["private"]["record_id"]
    assert http.get(f"/optimade/v1/structures/{private_id}").status_code == 404
    mine = http.get(f"/optimade/v1/structures/{private_id}", headers=token_of("alice"))
    assert mine.status_code == 200
    assert (
        http.get(f"/optimade/v1/structures/{private_id}", headers=token_of("bob")).status_code
        == 404
    )


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("filter=nsites = 1 AND", 400, "Unexpected end-of-input"),
        ("filter=crazyfield = 2", 400, "not a known or searchable field"),
        ('filter=nsites = "2"', 400, "cannot be compared"),
        ('filter=chemical_formula_reduced = "Cu\'; DROP TABLE records; --"', 200, ""),
        ("filter=nsites = 1; DELETE FROM records", 400, "filter"),
        ("page_limit=1000000000", 403, "exceeds the maximum"),
        ("page_limit=-1", 400, "must be positive"),
        ("page_limit=abc", 400, "not an integer"),
        ("page_cursor=bm90IGEgY3Vyc29y", 400, "page_cursor"),
        ("sort=lattice_vectors", 400, "not sortable"),
        ("response_fields=nonsense", 400, "not a field"),
        ("response_format=xml", 400, "response_format"),
        ("filter=lattice_vectors HAS 1", 501, "its members are 3-vectors"),
    ],
)
def test_hostile_requests_get_clear_errors_and_write_nothing(
    http, store, records, query, status, message
):
    from sqlalchemy import func, select

    from matdx.store.models import Record

    with store.transaction() as session:
        before = session.scalar(select(func.count()).select_from(Record))
    answer = http.get(f"/optimade/v1/structures?{query}")
    assert answer.status_code == status, answer.text
    if status != 200:
        error = answer.json()["errors"][0]
        assert error["status"] == str(status) and message in error["detail"]
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Record)) == before


def test_info_and_versions(http):
    info = http.get("/optimade/v1/info").json()["data"]["attributes"]
    assert info["api_version"] == "1.2.0" and "structures" in info["available_endpoints"]
    properties = http.get("/optimade/v1/info/structures").json()["data"]["properties"]
    assert properties["_matdx_energy"]["unit"] == "eV"
    assert properties["nsites"]["sortable"] and not properties["species"]["sortable"]
    versions = http.get("/optimade/versions")
    assert versions.text.splitlines() == ["version", "1"]
    assert http.get("/optimade/v2/info").status_code == 553


def _ordered_alloy(minority: str, majority: str) -> Atoms:
    """An L1₂ crystal: ``minority`` at the cube corner, ``majority`` at the face centres."""
    return Atoms(
        minority + majority * 3,
        scaled_positions=[(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)],
        cell=[3.75] * 3,
        pbc=True,
    )


@pytest.fixture
def alloys(store):
    """Four public records with lists and strings to filter on: AuCu3 and Au3Cu (ratios 1/4 and
    3/4), Si by pw.x (PBE, moderate, one pseudopotential), Fe by LAMMPS (EAM, magnetic)."""
    made = {
        "AuCu3": document(_ordered_alloy("Au", "Cu"), access="public", owner="alice"),
        "Au3Cu": document(_ordered_alloy("Cu", "Au"), access="public", owner="alice", seed=1),
        "Si": document(bulk("Si"), access="public", owner="alice", code="espresso", seed=2),
        "Fe": document(bulk("Fe"), access="public", owner="alice", code="lammps", seed=3),
    }
    made["AuCu3"]["results"]["magnetic_moments"] = [0.1, 0.1, 0.1, 0.0]
    made["AuCu3"]["results"]["properties"] = {"B0_GPa": 140.0}
    made["Fe"]["results"]["magnetic_moments"] = [2.2]
    made["Fe"]["method"]["potential"] = "eam/alloy: Fe.eam.alloy"
    made["Si"]["method"].update(
        functional="PBE",
        protocol="moderate",
        pseudopotentials=[{"element": "Si", "name": "Si.pbe-n-rrkjus_psl.1.0.0.UPF"}],
    )
    insert_documents(store, *made.values())
    return made


# The whole grammar of OPTIMADE v1.2 that an entry's fields allow, on the alloys' store: filter,
# the formulas it finds.
GRAMMAR = {
    # correlated lists: one position of both lists
    'elements:elements_ratios HAS "Cu":>0.5': {"AuCu3"},
    'elements:elements_ratios HAS "Au":>0.5': {"Au3Cu"},
    'elements:elements_ratios HAS ALL "Au":<0.5, "Cu":>0.5': {"AuCu3"},
    'elements:elements_ratios HAS ANY "Si":1.0, "Fe":1': {"Si", "Fe"},
    'elements:elements_ratios HAS ONLY "Au":>0.1, "Cu":>0.1': {"AuCu3", "Au3Cu"},
    'elements:elements_ratios HAS ONLY "Au":0.25, "Cu":>0.1': {"AuCu3"},
    'NOT elements:elements_ratios HAS "Cu":<0.5': {"AuCu3", "Si", "Fe"},
    'species_at_sites:elements HAS "Si":"Si"': {"Si"},
    '_other_x:elements HAS 1:"Si"': set(),
    # operators inside HAS lists
    "elements_ratios HAS < 0.3": {"AuCu3", "Au3Cu"},
    "elements_ratios HAS ALL > 0.5, < 0.3": {"AuCu3", "Au3Cu"},
    "elements_ratios HAS ONLY 1": {"Si", "Fe"},
    'elements HAS ANY < "B"': {"AuCu3", "Au3Cu"},
    'elements HAS ONLY >= "F"': {"Si", "Fe"},
    'elements HAS > "R"': {"Si"},
    'elements HAS ALL "Au", != "Au"': {"AuCu3", "Au3Cu"},
    'species_at_sites HAS ANY "Fe", > "Ra"': {"Si", "Fe"},
    "dimension_types HAS ONLY 1": {"AuCu3", "Au3Cu", "Si", "Fe"},
    "dimension_types HAS 0": set(),
    "_matdx_magnetic_moments HAS > 1": {"Fe"},
    "_matdx_magnetic_moments HAS ONLY < 0.5": {"AuCu3"},
    # LENGTH with operators, on every list
    "species_at_sites LENGTH 4": {"AuCu3", "Au3Cu"},
    "cartesian_site_positions LENGTH < 2": {"Fe"},
    "lattice_vectors LENGTH 3 AND dimension_types LENGTH >= 3": {"AuCu3", "Au3Cu", "Si", "Fe"},
    "_matdx_forces LENGTH >= 2": {"AuCu3", "Au3Cu", "Si"},
    "_matdx_magnetic_moments LENGTH > 1": {"AuCu3"},
    "NOT _matdx_magnetic_moments LENGTH > 1": {"Au3Cu", "Si", "Fe"},
    "_matdx_pseudopotentials LENGTH 1": {"Si"},
    "species LENGTH 2": {"AuCu3", "Au3Cu"},
    # IS KNOWN / IS UNKNOWN on lists, dictionaries, nested and scalar fields
    "_matdx_magnetic_moments IS KNOWN": {"AuCu3", "Fe"},
    "_matdx_magnetic_moments IS UNKNOWN": {"Au3Cu", "Si"},
    "_matdx_pseudopotentials IS KNOWN": {"Si"},
    "_matdx_properties IS KNOWN": {"AuCu3"},
    "_matdx_properties.b0_gpa > 100": {"AuCu3"},
    "_matdx_properties.b0_gpa IS UNKNOWN": {"Au3Cu", "Si", "Fe"},
    "_matdx_properties.b0.x IS UNKNOWN": {"AuCu3", "Au3Cu", "Si", "Fe"},
    "_matdx_protocol IS KNOWN": {"Si"},
    "_matdx_potential IS UNKNOWN": {"AuCu3", "Au3Cu", "Si"},
    "_other_x.y IS UNKNOWN AND nelements IS KNOWN": {"AuCu3", "Au3Cu", "Si", "Fe"},
    # string operators on every string field
    '_matdx_protocol STARTS "mod"': {"Si"},
    '_matdx_functional ENDS WITH "BE"': {"Si"},
    '_matdx_method = "espresso | PBE | moderate"': {"Si"},
    '_matdx_method CONTAINS "PBE"': {"Si"},
    '_matdx_method ENDS "Fe.eam.alloy"': {"Fe"},
    '_matdx_potential STARTS WITH "eam/"': {"Fe"},
    '_matdx_code CONTAINS "spres"': {"Si"},
    'chemical_formula_hill CONTAINS "Au3"': {"Au3Cu"},
    'chemical_formula_anonymous ENDS "3B"': {"AuCu3", "Au3Cu"},
    'type CONTAINS "struct" AND elements HAS "Fe"': {"Fe"},
    'type STARTS "x"': set(),
    '_matdx_calculation STARTS WITH "stat"': {"AuCu3", "Au3Cu", "Si", "Fe"},
}


def test_the_full_filter_grammar(http, alloys):
    found = {text: _formulas(http, text) for text in GRAMMAR}
    wrong = {text: found[text] for text, expected in GRAMMAR.items() if found[text] != expected}
    assert not wrong


def test_string_operators_on_ids(http, alloys):
    record_id = alloys["Si"]["record_id"]
    for text in (
        f'id STARTS "{record_id[:8]}"',
        f'immutable_id ENDS WITH "{record_id[-6:]}"',
        f'_matdx_input_hash CONTAINS "{alloys["Si"]["input_hash"][5:20]}"',
        f'_matdx_structure_hash STARTS "{alloys["Si"]["system"]["structure_hash"][:10]}"',
    ):
        assert _formulas(http, text) == {"Si"}, text


@pytest.mark.parametrize(
    ("filter_text", "status", "message"),
    [
        ('species.name HAS "Si"', 501, "members of the dictionaries in the list species"),
        ("cartesian_site_positions HAS 1", 501, "its members are 3-vectors"),
        ('elements:_matdx_forces HAS "Si":1', 501, "its members are 3-vectors"),
        ('_matdx_pseudopotentials HAS "x"', 501, "its members are dictionaries"),
        ("nsites = nelements", 501, "comparing two properties"),
        ('elements:elements_ratios HAS "Si"', 400, "filter"),
        ('elements:elements_ratios HAS "Si":"x"', 400, "its members are floats"),
        ('elements:elements_ratios HAS "Si":1:2', 400, "give 2 values per tuple"),
        ("elements HAS 1", 400, "its members are strings"),
        ("nsites.x = 1", 400, "nsites (integer) has no members"),
        ("_matdx_properties LENGTH 1", 400, "LENGTH applies to list fields only"),
        ("nsites HAS 1", 400, "HAS applies to list fields only"),
        ('_matdx_pseudopotentials CONTAINS "x"', 400, "applies to string fields only"),
    ],
)
def test_filters_this_service_does_not_evaluate_say_why(http, alloys, filter_text, status, message):
    answer = http.get("/optimade/v1/structures", params={"filter": filter_text})
    assert answer.status_code == status, answer.text
    assert message in answer.json()["errors"][0]["detail"]


def test_data_returned_under_page_offset(http, records):
    query = "/optimade/v1/structures?filter=nsites >= 1&response_fields=nsites&page_limit=2"
    total = len(_ids(http, "filter=nsites >= 1&page_limit=100"))
    for offset in (0, 2, total - 1, total + 5):
        meta = http.get(f"{query}&page_offset={offset}").json()["meta"]
        assert meta["data_returned"] == total, offset
        assert meta["more_data_available"] == (offset + 2 < total)
