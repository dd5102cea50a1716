"""REST over HTTP: a campaign submitted over HTTP and ticked by ``matdx tick`` completes, and
its numbers read over /records and OPTIMADE equal those ``matdx results`` prints; records,
provenance, artifacts (with ranges, embargo withheld, ``../`` refused), exports; hostile
requests get 4xx and write nothing."""

from __future__ import annotations

import getpass
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from matdx.store.identity import os_account
from matdx.store.models import Campaign, Record, utcnow
from tests.conftest import matdx_cli
from tests.store.factory import artifact, crystal, document, insert_documents

CAMPAIGN = """
name: http-eos
executor: {type: local, workers: 2}
studies:
  - recipe: eos
    code: emt
    structures:
      - bulk: [Cu, Al]
    settings: {points: 7, volume_range: 0.06}
"""


def _count(store, model) -> int:
    with store.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.mark.slow
def test_a_campaign_submitted_over_http_completes_and_reads_the_same(
    http, home, store, service_store, token_of, store_backend
):
    # The submitter: alice on PostgreSQL, where the CLI acts as her by name; a SQLite store is
    # one OS account's, and its CLI cannot claim another identity, so that account submits.
    owner = "alice" if store_backend == "postgresql" else getpass.getuser()
    as_alice = {"MATDX_USER": "alice"} if store_backend == "postgresql" else {}
    alice = token_of(owner)
    if store_backend == "postgresql":  # the service acts as each request's role
        from matdx.store.identity import connected_role
        from matdx.store.roles import AUTHENTICATOR_ROLE

        assert connected_role(service_store.engine).name == AUTHENTICATOR_ROLE
    assert http.post("/campaigns", content=CAMPAIGN).status_code == 401  # anonymous
    submitted = http.post("/campaigns", content=CAMPAIGN, headers=alice)
    assert submitted.status_code == 201, submitted.text
    campaign_id = submitted.json()["id"]
    assert submitted.json()["owner"] == owner
    for _ in range(60):
        matdx_cli("tick", "--wait", "30", check=True, env=as_alice)
        status = http.get(f"/campaigns/{campaign_id}", headers=alice).json()
        if status["done"]:
            break
    assert status["done"] and status["counts"] == {"COMPLETED": status["total"]}
    cli = matdx_cli("results", "http-eos", "--format", "json", env=as_alice)
    assert cli.returncode == 0, cli.stderr
    printed = {row["formula"]: row for row in json.loads(cli.stdout)}
    fits = http.get(
        "/records", params={"calculation": "eos-fit", "fields": "document"}, headers=alice
    ).json()["items"]
    assert {f["system"]["chemical_formula_reduced"] for f in fits} == {"Cu", "Al"}
    for fit in fits:
        row = printed[fit["system"]["chemical_formula_reduced"]]
        assert fit["record_id"].startswith(row["record"])
        over_optimade = http.get(
            f"/optimade/v1/structures/{fit['record_id']}", headers=alice
        ).json()["data"]["attributes"]
        for key in ("V0_per_atom", "E0_per_atom", "B0_GPa", "B0_prime"):
            assert fit["results"]["properties"][key] == row[key], key
            assert over_optimade["_matdx_properties"][key] == row[key], key
            print(
                f"{store_backend} {row['formula']} {key}: CLI {row[key]!r} "
                f"HTTP {fit['results']['properties'][key]!r} "
                f"OPTIMADE {over_optimade['_matdx_properties'][key]!r}"
            )
    statics = http.get(
        "/records",
        params={"calculation": "static", "elements": "Cu", "only_elements": "Cu", "limit": 100},
        headers=alice,
    ).json()["items"]
    optimade = http.get(
        "/optimade/v1/structures",
        headers=alice,
        params={
            "filter": 'elements HAS ONLY "Cu" AND _matdx_calculation = "static"',
            "page_limit": 100,
            "response_fields": "_matdx_energy_per_atom",
        },
    ).json()["data"]
    assert len(statics) == len(optimade) == 7
    by_id = {e["id"]: e["attributes"]["_matdx_energy_per_atom"] for e in optimade}
    for item in statics:
        assert by_id[item["record_id"]] == item["energy_per_atom"]
    if store_backend == "sqlite":
        return  # one person's store; bob's view is checked on PostgreSQL
    # bob (another project) sees none of alice's private campaign
    bob = token_of("bob")
    assert http.get(f"/campaigns/{campaign_id}", headers=bob).status_code == 404
    assert http.get("/records", headers=bob).json()["items"] == []
    assert http.post(f"/campaigns/{campaign_id}/rerun", headers=bob).status_code == 404


def test_bad_campaign_files_are_refused_and_nothing_is_written(http, store, token_of):
    alice = token_of(os_account())  # the store's own account: a SQLite store is one person's
    bad = {
        "not yaml": "name: [unclosed",
        "unknown recipe": CAMPAIGN.replace("recipe: eos", "recipe: nonsense"),
        "bad field": CAMPAIGN.replace("points: 7", "points: -7"),
        "file on the server": CAMPAIGN.replace("- bulk: [Cu, Al]", "- /etc/passwd"),
        "other owner": "owner: bob\n" + CAMPAIGN,
    }
    for label, text in bad.items():
        answer = http.post("/campaigns", content=text, headers=alice)
        assert 400 <= answer.status_code < 500, label
        assert answer.json()["detail"], label
    huge = http.post("/campaigns", content=b"x" * (100 << 20), headers=alice)
    assert huge.status_code == 413 and "limit" in huge.json()["detail"]
    assert _count(store, Campaign) == 0


@pytest.fixture
def stored(store):
    blob = artifact(store, b"0123456789" * 100, name="log.txt")
    docs = {
        "public": document(crystal("Cu"), owner="alice", access="public", artifacts=[blob]),
        "private": document(crystal("Al"), owner="alice", access="private", artifacts=[blob]),
        "embargoed": document(
            crystal("Ni"),
            owner="alice",
            access="embargoed",
            embargo_until=utcnow() + timedelta(days=9),
            artifacts=[blob],
        ),
        "controlled": document(
            crystal("MgO"), owner="alice", project="A", access="public", export_control=True
        ),
    }
    insert_documents(store, *docs.values())
    return {k: d["record_id"] for k, d in docs.items()}


@pytest.mark.postgres  # tokens of several people: PostgreSQL's
def test_artifacts_ranges_embargo_and_names(http, stored, token_of):
    public = stored["public"]
    url = f"/records/{public}/artifacts/output/log.txt"
    assert http.get(url).content == b"0123456789" * 100
    part = http.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == b"0123456789"
    embargoed = f"/records/{stored['embargoed']}/artifacts/output/log.txt"
    assert http.get(embargoed).status_code == 403
    assert http.get(embargoed, headers=token_of("alice")).status_code == 200
    private = f"/records/{stored['private']}/artifacts/output/log.txt"
    assert http.get(private).status_code == 404
    # (httpx itself folds a literal "/.." away, so the names arrive encoded)
    for name in ("..%2F..%2Fstore.sqlite", "..%5C..%5Cstore.sqlite", "%2E%2E"):
        answer = http.get(f"/records/{public}/artifacts/output/{name}")
        assert answer.status_code in (400, 404), name
    assert http.get(f"/records/{public}/artifacts/../../healthz").status_code == 404


@pytest.mark.postgres  # tokens of several people: PostgreSQL's
def test_records_query_fields_and_cursor(http, stored, token_of):
    alice = token_of("alice")
    first = http.get(
        "/records", params={"limit": 1, "fields": "formula,access"}, headers=alice
    ).json()
    assert set(first["items"][0]) == {"record_id", "formula", "access"}
    seen = [first["items"][0]["record_id"]]
    url = first["next"]
    while url:
        page = http.get(url, headers=alice).json()
        seen += [i["record_id"] for i in page["items"]]
        url = page["next"]
    assert sorted(seen) == sorted(stored.values()) and len(set(seen)) == len(seen)
    anonymous = {i["record_id"] for i in http.get("/records").json()["items"]}
    assert anonymous == {stored["public"], stored["embargoed"]}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"elements": "Xx"}, "not a chemical symbol"),
        ({"fields": "password"}, "fields: unknown"),
        ({"limit": 10**9}, "limit"),
        ({"property": "band_gap; DROP TABLE records"}, "expected name=min:max"),
        ({"formula": "Cu' OR 1=1 --"}, "chemical formula"),
        ({"nsites": "1:x"}, "range"),
    ],
)
def test_hostile_record_queries(http, store, stored, params, message):
    before = _count(store, Record)
    answer = http.get("/records", params=params)
    assert answer.status_code == 400 and message in answer.json()["detail"]
    assert _count(store, Record) == before


@pytest.mark.postgres  # tokens of several people: PostgreSQL's
def test_exports_leave_export_controlled_records_behind(http, stored, token_of):
    lines = http.get("/exports/optimade-jsonl", headers=token_of("alice")).text.splitlines()
    ids = {json.loads(line).get("id") for line in lines[2:]}
    assert stored["public"] in ids and stored["private"] in ids
    assert stored["controlled"] not in ids
    parquet = http.get("/exports/parquet")
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"
    assert http.get("/exports/xlsx").status_code == 400


@pytest.mark.postgres  # tokens of several people: PostgreSQL's
def test_rate_limit_per_token(make_app, token_of):
    limited = make_app(rate_per_minute=3)
    alice = token_of("alice")
    codes = [limited.get("/records", headers=alice).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert limited.get("/records", headers=token_of("bob")).status_code == 200


def test_anonymous_pages_counts_and_prefixes(http, stored):
    """Anonymous readers page through public records and embargoed ones' discovery metadata
    (on PostgreSQL the embargoed row comes from the view ``record_discovery``, as the
    anonymous role's row-level security hides it in ``records``)."""
    seen, url = [], "/records?limit=1&count=true"
    while url:
        page = http.get(url).json()
        assert page["count"] == 2
        seen += page["items"]
        url = page["next"]
    assert [i["record_id"] for i in seen] == sorted([stored["public"], stored["embargoed"]])
    embargoed = next(i for i in seen if i["record_id"] == stored["embargoed"])
    assert embargoed["formula"] == "Ni" and embargoed["elements"] == ["Ni"]
    assert embargoed["code"] is None and embargoed["properties"] == {}
    found = http.get("/records", params={"elements": "Ni", "count": "true"}).json()
    assert [i["record_id"] for i in found["items"]] == [stored["embargoed"]]
    assert found["count"] == 1
    document = http.get(f"/records/{stored['embargoed']}").json()
    assert document["embargoed"] is True and "results" not in document
    assert document["system"]["chemical_formula_reduced"] == "Ni"
    public = stored["public"]
    assert http.get(f"/records/resolve/{public[:8]}").json() == {"record_id": public}
    assert http.get(f"/records/resolve/{stored['private'][:8]}").status_code == 404
    assert http.get("/records/resolve/abc").status_code == 400
