"""The store's access matrix repeated over HTTP: anonymous, alice (project A, the owner),
bob (project B), carol (project A) and an administrator × private / group / embargoed /
public / export-controlled records × list, get, query, artifact download, OPTIMADE, export.
Every cell is compared with the design (store/access.py's table) and the matrix is printed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from ase.build import bulk

from matdx.store.models import utcnow
from tests.store.factory import artifact, document, insert_documents

ACTIONS = ("list", "get", "query", "artifact", "optimade", "export")
LEVELS = {  # level -> (element of its structure, governance)
    "private": ("Fe", {"access": "private"}),
    "group": ("Cu", {"access": "group"}),
    "embargoed": ("Ni", {"access": "embargoed"}),
    "public": ("Al", {"access": "public"}),
    "export-controlled": ("Pt", {"access": "public", "export_control": True}),
}
ALL, NONE = set(ACTIONS), set()
READ = {"list", "get", "query"}
# The design: who may do what with alice's record at each level.
EXPECTED = {
    "private": {"anonymous": NONE, "alice": ALL, "bob": NONE, "carol": NONE, "admin": ALL},
    "group": {"anonymous": NONE, "alice": ALL, "bob": NONE, "carol": ALL, "admin": ALL},
    # Before its embargo ends, outsiders see a record's discovery metadata only: it is listed,
    # fetched and found, but its artifacts, OPTIMADE entry and exports stay with the project.
    "embargoed": {
        "anonymous": READ,
        "alice": ALL,
        "bob": READ,
        "carol": ALL,
        "admin": ALL,
    },
    "public": {"anonymous": ALL, "alice": ALL, "bob": ALL, "carol": ALL, "admin": ALL},
    "export-controlled": {
        "anonymous": NONE,
        "alice": READ | {"artifact"},
        "bob": NONE,
        "carol": READ | {"artifact"},
        "admin": READ | {"artifact"},
    },
}


@pytest.mark.postgres  # tokens of several people: PostgreSQL's
def test_access_matrix_over_http(http, store, token_of):
    blob = artifact(store, b"bytes of an output file", name="out.txt")
    ids = {}
    for level, (element, governance) in LEVELS.items():
        if level == "embargoed":
            governance = {**governance, "embargo_until": utcnow() + timedelta(days=30)}
        made = document(
            bulk(element, "fcc", a=3.9), owner="alice", project="A", artifacts=[blob], **governance
        )
        insert_documents(store, made)
        ids[level] = made["record_id"]
    who = {
        "anonymous": {},
        "alice": token_of("alice", {"A"}),
        "bob": token_of("bob", {"B"}),
        "carol": token_of("carol", {"A"}),
        "admin": token_of("admin", admin=True),
    }
    seen: dict[str, dict[str, set[str]]] = {}
    with_results: set[tuple[str, str]] = set()
    for person, headers in who.items():
        listed = {
            i["record_id"] for i in http.get("/records?limit=100", headers=headers).json()["items"]
        }
        optimade = {
            e["id"]
            for e in http.get("/optimade/v1/structures?page_limit=100", headers=headers).json()[
                "data"
            ]
        }
        lines = http.get("/exports/optimade-jsonl", headers=headers).text.splitlines()[2:]
        exported = {json.loads(line)["id"] for line in lines}
        for level, record_id in ids.items():
            element = LEVELS[level][0]
            queried = {
                i["record_id"]
                for i in http.get("/records", params={"elements": element}, headers=headers).json()[
                    "items"
                ]
            }
            got = http.get(f"/records/{record_id}", headers=headers)
            if got.status_code == 200 and "results" in got.json():
                with_results.add((level, person))
            cell = {
                "list": record_id in listed,
                "get": got.status_code == 200,
                "query": record_id in queried,
                "artifact": http.get(
                    f"/records/{record_id}/artifacts/output/out.txt", headers=headers
                ).status_code
                == 200,
                "optimade": record_id in optimade,
                "export": record_id in exported,
            }
            seen.setdefault(level, {})[person] = {a for a, ok in cell.items() if ok}
    width = max(len(level) for level in LEVELS)
    print(
        "\naccess matrix over HTTP (L list, G get, Q query, A artifact, O OPTIMADE, "
        "E export; '-' refused)"
    )
    print(" " * width + "  " + "".join(f"{p:>11}" for p in who))
    for level in LEVELS:
        row = "".join(
            f"{''.join(a[0].upper() if a in seen[level][p] else '-' for a in ACTIONS):>11}"
            for p in who
        )
        print(f"{level:<{width}}  {row}")
    assert seen == EXPECTED
    # A record fetched under a running embargo shows outsiders no results.
    assert ("embargoed", "bob") not in with_results
    assert ("embargoed", "anonymous") not in with_results
    assert {("embargoed", "alice"), ("embargoed", "carol"), ("public", "bob")} <= with_results
