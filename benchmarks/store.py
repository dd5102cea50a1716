"""Store scale: bulk insert and typical record queries on SQLite and PostgreSQL.

A script, not a test. It writes synthetic calculation records (random crystals of 1 to 4
elements and 1 to 16 sites, with forces, stress, energies, band gaps for half of them, bulk
moduli for a tenth, tags, codes, owners and access levels) through the store's real write path
(``session.execute(insert(Record), rows)``: each document validated, its search columns and
index rows derived), then times typical queries through :func:`matdx.store.search
.search_records` (the first page of 100 records, with the access filter of a user in a group)
and :func:`count_records`.

    python benchmarks/store.py                       # 100,000 records, both backends
    python benchmarks/store.py --records 1000000     # the 1M opt-in run (~15 min per backend)
    python benchmarks/store.py --backends sqlite --records 20000
    python benchmarks/store.py --rls                 # row-level security: role vs table owner

PostgreSQL runs in a throwaway server started from the installed binaries with its default
durability (fsync on); SQLite runs in WAL mode with synchronous=NORMAL, as matdx uses them.
Targets with 100,000 records: elements "has all" and band-gap range queries under 100 ms,
bulk insert over 2,000 records/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 2000
REPEATS = 7
# Element pool with weights loosely like a materials database (oxygen in about a third).
POOL = {
    "O": 30, "Li": 6, "Na": 4, "K": 3, "Mg": 5, "Ca": 4, "Sr": 2, "Ba": 2, "Al": 5, "Si": 6,
    "Ti": 4, "V": 3, "Cr": 3, "Mn": 5, "Fe": 6, "Co": 4, "Ni": 4, "Cu": 4, "Zn": 3, "Ga": 2,
    "Ge": 2, "Zr": 2, "Nb": 2, "Mo": 2, "Ag": 2, "Sn": 2, "Sb": 2, "La": 2, "W": 2, "Pt": 1,
    "Au": 1, "Pb": 1, "Bi": 1, "N": 6, "C": 4, "H": 4, "F": 5, "S": 6, "Cl": 3, "P": 4,
}  # fmt: skip
TAGS = ("screening", "batteries", "catalysis", "alloys", "2d", "magnets")
CODES = ("vasp", "espresso", "cp2k", "lammps", "emt")
CALCULATIONS = ("static", "relax", "md", "eos-fit")
OWNERS = ("ada", "bob", "carl", "dora")
ACCESS = ("private", "group", "public", "public")


def synthetic_documents(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` valid record documents (current schema), deterministic for a seed."""
    from matdx.store.records import CalculationRecord, Governance, Method, Results, Run, System
    from matdx.store.system import optimade_structure

    rng = np.random.default_rng(seed)
    symbols = np.array(list(POOL))
    weights = np.array(list(POOL.values()), dtype=float)
    weights /= weights.sum()
    for _ in range(n):
        k = int(rng.integers(1, 5))
        chosen = rng.choice(symbols, size=k, replace=False, p=weights)
        nsites = int(rng.integers(k, 17))
        species = list(chosen) + list(rng.choice(chosen, size=nsites - k))
        a = float(rng.uniform(3, 8))
        cell = np.diag([a, a * rng.uniform(0.9, 1.1), a * rng.uniform(0.9, 1.1)])
        positions = rng.uniform(0, 1, size=(nsites, 3)) @ cell
        energy = float(rng.normal(-5, 1.5) * nsites)
        properties: dict[str, float] = {}
        if rng.random() < 0.1:
            properties["B0_GPa"] = float(rng.uniform(10, 300))
        stress = rng.normal(scale=0.01, size=(3, 3))
        owner = OWNERS[int(rng.integers(len(OWNERS)))]
        record = CalculationRecord(
            record_id=str(uuid.UUID(int=int(rng.integers(2**62)) << 64 | int(rng.integers(2**62)))),
            input_hash=f"{int(rng.integers(2**62)):064x}",
            campaign_id=f"c{int(rng.integers(200)):035d}",
            workflow_id=str(uuid.uuid4()),
            job_id=str(uuid.uuid4()),
            job_name="static",
            function="matdx.recipes.static:static",
            attempt=1,
            tags=list(rng.choice(TAGS, size=int(rng.integers(0, 3)), replace=False)),
            system=System(**optimade_structure(cell, positions, species, (True, True, True))),
            method=Method(
                code=CODES[int(rng.integers(len(CODES)))],
                calculation=CALCULATIONS[int(rng.integers(len(CALCULATIONS)))],
                functional="PBE",
            ),
            results=Results(
                energy=energy,
                energy_per_atom=energy / nsites,
                forces=rng.normal(scale=0.1, size=(nsites, 3)).tolist(),
                stress=((stress + stress.T) / 2).tolist(),
                band_gap=float(rng.exponential(1.5)) if rng.random() < 0.5 else None,
                properties=properties,
            ),
            run=Run(status="completed", matdx_version="benchmark", host="bench"),
            governance=Governance(
                owner=owner,
                project="alloys" if owner in ("ada", "carl") else "oxides",
                access=ACCESS[int(rng.integers(len(ACCESS)))],
                license="CC-BY-4.0",
            ),
        )
        yield record.model_dump(mode="json")


def bulk_insert(store: Any, n: int, seed: int) -> tuple[float, int]:
    """Insert ``n`` records in transactions of BATCH; returns (seconds inserting, bytes of
    documents). Generating the documents is not timed; validating and indexing them is."""
    import json

    from sqlalchemy import insert

    from matdx.store.models import Record

    documents = synthetic_documents(n, seed)
    spent, size, done = 0.0, 0, 0
    while done < n:
        batch = [
            {"document": doc, "output": None}
            for _, doc in zip(range(min(BATCH, n - done)), documents, strict=False)
        ]
        size += sum(len(json.dumps(row["document"])) for row in batch[:10]) * len(batch) // 10
        started = time.perf_counter()
        with store.transaction() as session:
            session.execute(insert(Record), batch)
        spent += time.perf_counter() - started
        done += len(batch)
        print(
            f"\r  inserted {done:,}/{n:,} ({done / spent:,.0f} records/s)", end="", file=sys.stderr
        )
    print(file=sys.stderr)
    return spent, size


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """Median wall time (ms) over REPEATS calls after one warm-up call, and the last result."""
    result = call()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


QUERIES: dict[str, dict[str, Any]] = {
    'elements has all ["Fe", "O"]': {"elements": ["Fe", "O"]},
    "band gap 1.0-2.0 eV": {"properties": {"band_gap": {"min": 1.0, "max": 2.0}}},
    'elements has any ["Li", "Na", "K"]': {"any_elements": ["Li", "Na", "K"]},
    'elements has only ["Li", "Fe", "P", "O"]': {"only_elements": ["Li", "Fe", "P", "O"]},
    "formula SiO2": {"formula": "SiO2"},
    "nsites 8-12, code vasp, relax": {
        "nsites": {"min": 8, "max": 12},
        "code": ["vasp"],
        "calculation": ["relax"],
    },
    'tag "batteries" + elements has all ["Li", "O"]': {
        "tags": ["batteries"],
        "elements": ["Li", "O"],
    },
    "bulk modulus 100-200 GPa": {"properties": {"B0_GPa": {"min": 100, "max": 200}}},
    "energy per atom < -7 eV + band gap > 3 eV": {
        "properties": {"energy_per_atom": {"max": -7}, "band_gap": {"min": 3}}
    },
}


def run_queries(store: Any) -> list[tuple[str, float, float, int]]:
    """(query, ms for the first page of 100, ms to count all matches, matches)."""
    from matdx.store.access import Requester
    from matdx.store.search import RecordQuery, count_records, search_records

    requester = Requester("ada", frozenset({"alloys"}))
    rows = []
    for label, criteria in QUERIES.items():
        query = RecordQuery.parse(limit=100, **criteria)
        with store.transaction() as session:
            page_ms, _ = timed(lambda q=query, s=session: search_records(s, q, requester))
            count_ms, matches = timed(lambda q=query, s=session: count_records(s, q, requester))
        rows.append((label, page_ms, count_ms, matches))
    with store.transaction() as session:  # a page deep into an unfiltered listing
        after = None
        for _ in range(200):
            after = search_records(
                session, RecordQuery.parse(limit=100, after=after), requester
            ).next_after
        deep = RecordQuery.parse(limit=100, after=after)
        page_ms, _ = timed(lambda: search_records(session, deep, requester))
    rows.append(("page 201 of the whole store (cursor)", page_ms, float("nan"), 100))
    return rows


PLANNED = ('elements has all ["Fe", "O"]', "formula SiO2", "band gap 1.0-2.0 eV")


def query_plans(store: Any) -> list[str]:
    """The database's plan of the first page and the count of a few queries: ``EXPLAIN
    ANALYZE`` on PostgreSQL (with the real timings), ``EXPLAIN QUERY PLAN`` on SQLite."""
    from matdx.store.access import Requester
    from matdx.store.search import RecordQuery, count_statement, page_statement

    requester = Requester("ada", frozenset({"alloys"}))
    lines = []
    with store.engine.connect() as connection:
        dialect = connection.dialect
        explain = ("EXPLAIN ANALYZE " if dialect.name == "postgresql"
                   else "EXPLAIN QUERY PLAN ")
        for label in PLANNED:
            query = RecordQuery.parse(limit=100, **QUERIES[label])
            for what, statement in (("first page", page_statement(query, requester)),
                                    ("count", count_statement(query, requester))):
                compiled = statement.compile(
                    dialect=dialect, compile_kwargs={"render_postcompile": True}
                )
                params = (tuple(compiled.params[name] for name in compiled.positiontup)
                          if compiled.positional else compiled.params)
                plan = connection.exec_driver_sql(explain + str(compiled), params).all()
                lines.append(f"-- {dialect.name}: {label}, {what}")
                lines += ["   " + " ".join(str(cell) for cell in row) for row in plan]
    return lines


def analyze(store: Any) -> float:
    """Refresh the planner statistics after the bulk load (as after any bulk load)."""
    from sqlalchemy import text

    started = time.perf_counter()
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))
    return time.perf_counter() - started


def bench(backend: str, n: int, seed: int, directory: Path) -> dict[str, Any]:
    from matdx.store.store import Store

    server = None
    if backend == "postgresql":
        from matdx.store.pgserver import TemporaryPostgres

        server = TemporaryPostgres(durable=True).start()
        url = server.create_database("bench")
    else:
        url = f"sqlite:///{directory / 'store.sqlite'}"
    try:
        store = Store(directory, url)
        print(f"{backend}: inserting {n:,} records", file=sys.stderr)
        seconds, size = bulk_insert(store, n, seed)
        analyze_s = analyze(store)
        queries = run_queries(store)
        plans = query_plans(store)
        store.dispose()
        return {
            "backend": backend,
            "records": n,
            "insert_s": seconds,
            "rate": n / seconds,
            "document_kb": size / n / 1024,
            "analyze_s": analyze_s,
            "queries": queries,
            "plans": plans,
        }
    finally:
        if server is not None:
            server.stop()


def timed_pair(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[float, float, Any]:
    """Median wall times (ms) of two calls timed alternately, REPEATS times each after one
    warm-up each (so that the other work on a shared machine slows both alike), and the
    second call's last result."""
    first()
    result = second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(REPEATS):
        for call, spent in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            result = call()
            spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[0]), statistics.median(times[1]), result


def compare_roles(owner: Any, role: Any) -> list[tuple[str, float, float, float, float, int]]:
    """(query, owner page ms, role page ms, owner count ms, role count ms, matches): each
    query as the table owner and as the role, timed alternately."""
    from matdx.store.access import Requester
    from matdx.store.search import RecordQuery, count_records, search_records

    requester = Requester("ada", frozenset({"alloys"}))
    rows = []
    with owner.transaction() as as_owner, role.transaction() as as_role:
        both = (as_owner, as_role)
        for label, criteria in QUERIES.items():
            query = RecordQuery.parse(limit=100, **criteria)
            page = [lambda s=s, q=query: search_records(s, q, requester) for s in both]
            count = [lambda s=s, q=query: count_records(s, q, requester) for s in both]
            owner_page, role_page, _ = timed_pair(*page)
            owner_count, role_count, matches = timed_pair(*count)
            if count[0]() != matches:  # the same application filter: the same records
                raise RuntimeError(f"{label}: {count[0]()} matches as owner, {matches} as role")
            rows.append((label, owner_page, role_page, owner_count, role_count, matches))
        after = None
        for _ in range(200):  # a page deep into an unfiltered listing
            after = search_records(
                as_role, RecordQuery.parse(limit=100, after=after), requester
            ).next_after
        deep = RecordQuery.parse(limit=100, after=after)
        owner_page, role_page, _ = timed_pair(
            *[lambda s=s: search_records(s, deep, requester) for s in (as_owner, as_role)]
        )
        nan = float("nan")
        rows.append(("page 201 of the whole store (cursor)", owner_page, role_page, nan, nan, 100))
    return rows


def bench_row_security(
    n: int, seed: int, directory: Path
) -> tuple[list[tuple[str, float, float, float, float, int]], float, list[str]]:
    """Row-level security (migrations 0006, 0007): the same queries on PostgreSQL as the
    person's own role (``ada``, member of project ``alloys``, row-level security on) and as
    the table owner (not subject to it), with the same application-side access filter.
    Returns the rows of :func:`compare_roles`, the insert rate (records/s, as the table owner
    through the store's batched write path, write_log trigger on) and the role's plans."""
    from sqlalchemy import make_url

    from matdx.store.pgserver import TemporaryPostgres
    from matdx.store.roles import add_member, add_user
    from matdx.store.store import Store

    server = TemporaryPostgres(durable=True).start()
    try:
        url = server.create_database("bench")
        owner = Store(directory, url)
        print(f"postgresql (row-level security): inserting {n:,} records", file=sys.stderr)
        seconds, _ = bulk_insert(owner, n, seed)
        analyze(owner)
        add_user(owner.engine, "ada")
        add_member(owner.engine, "alloys", "ada")
        ada = Store(directory, make_url(url).set(username="ada").render_as_string(False))
        rows = compare_roles(owner, ada)
        plans = query_plans(ada)  # EXPLAIN ANALYZE run by the role
        owner.dispose()
        ada.dispose()
    finally:
        server.stop()
    return rows, n / seconds, plans


def report_row_security(
    rows: list[tuple[str, float, float, float, float, int]], n: int, rate: float
) -> str:
    lines = [
        f"row-level security, {n:,} records (inserted at {rate:,.0f} records/s), median of "
        f"{REPEATS}, owner and role timed alternately:",
        "| query | owner page | ada page (RLS) | ratio | owner count | ada count (RLS) | ratio "
        "| matches |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for label, owner_page, role_page, owner_count, role_count, matches in rows:
        page_ratio = role_page / owner_page
        ratios.append(page_ratio)
        if owner_count == owner_count:  # not NaN
            count_ratio = role_count / owner_count
            ratios.append(count_ratio)
            count = f"{owner_count:.1f} ms | {role_count:.1f} ms | {count_ratio:.2f}"
        else:
            count = " | | "
        lines.append(
            f"| {label} | {owner_page:.1f} ms | {role_page:.1f} ms | {page_ratio:.2f} "
            f"| {count} | {matches:,} |"
        )
    lines.append(f"worst ratio {max(ratios):.2f} (target within 1.5)")
    return "\n".join(lines)


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | records | bulk insert | records/s | ANALYZE |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['records']:,} | {r['insert_s']:.1f} s | {r['rate']:,.0f} "
            f"| {r['analyze_s']:.1f} s |"
        )
    lines += ["", "| query (first page of 100 / count of all) | "
              + " | ".join(f"{r['backend']} page | count | matches" for r in results) + " |",
              "|---|" + "---:|---:|---:|" * len(results)]  # fmt: skip
    for i, (label, *_rest) in enumerate(results[0]["queries"]):
        cells = []
        for r in results:
            _, page_ms, count_ms, matches = r["queries"][i]
            count = "" if count_ms != count_ms else f"{count_ms:.1f} ms"
            cells.append(f"{page_ms:.1f} ms | {count} | {matches:,}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])  # fmt: skip
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--rls", action="store_true",
                        help="PostgreSQL only: the queries as a user role (row-level security) "
                        "and as the table owner")  # fmt: skip
    args = parser.parse_args()
    if args.rls:
        with tempfile.TemporaryDirectory(prefix="matdx-bench-rls-") as directory:
            rows, rate, plans = bench_row_security(args.records, args.seed, Path(directory))
        print(report_row_security(rows, args.records, rate))
        print("\n".join(plans))
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        return
    results = []
    for backend in args.backends:
        with tempfile.TemporaryDirectory(prefix=f"matdx-bench-{backend}-") as directory:
            results.append(bench(backend, args.records, args.seed, Path(directory)))
    print(report(results))
    for r in results:
        print("\n".join(r["plans"]))
    # The targets are on what a query returns: its first page (the count is reported too).
    failed = [
        f"{r['backend']}: {label} {page_ms:.0f} ms"
        for r in results
        for label, page_ms, _count_ms, _ in r["queries"][:2]
        if page_ms >= 100
    ] + [f"{r['backend']}: insert {r['rate']:,.0f}/s" for r in results if r["rate"] <= 2000]
    print(
        f"\nload average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} "
        "cores (other work on the machine slows every number)"
    )
    if args.records == 100_000:
        print(
            "targets (100k: has-all and band-gap first page < 100 ms, insert > 2,000/s): "
            + ("met" if not failed else "MISSED: " + "; ".join(failed))
        )


if __name__ == "__main__":
    main()
