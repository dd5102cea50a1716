"""Web-service throughput: a record query and an OPTIMADE filter against ``matdx serve``.

A script, not a test. It fills a store with synthetic records through the store's write path
(:mod:`benchmarks.store`'s generator: random crystals of 1 to 4 elements, owners, access
levels), starts ``matdx serve`` (uvicorn, one process) on it, and for each request type runs
16 concurrent clients, each with its own HTTP connection and a token (on PostgreSQL ada's,
in group alloys; on SQLite the OS account's, the one user such a store serves), for a fixed
time; it prints requests per second, the p50 / p99 latency and the machine's load beside them
(other work on the machine slows the service: quote the load with the numbers).

    python benchmarks/api.py                          # 100,000 records, SQLite
    python benchmarks/api.py --backend postgresql
    python benchmarks/api.py --records 20000 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

REQUESTS = {
    "record query (elements O+Fe, band gap ≥ 1 eV, 100 per page)": (
        "/records",
        {"elements": "O,Fe", "property": "band_gap=1:", "limit": "100"},
    ),
    "OPTIMADE filter (elements HAS ALL O,Fe AND nsites < 8, 100 per page)": (
        "/optimade/v1/structures",
        {"filter": 'elements HAS ALL "O","Fe" AND nsites < 8', "page_limit": "100"},
    ),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fill(directory: Path, url: str, n: int, seed: int) -> str:
    """Insert ``n`` synthetic records; returns a token of ada (group alloys) on PostgreSQL,
    of the OS account on SQLite (whose service serves that account only)."""
    from matdx.store.access import Requester
    from matdx.store.identity import os_account
    from matdx.store.store import Store
    from matdx.store.tokens import issue_token
    from store import analyze, bulk_insert  # benchmarks/store.py

    store = Store(directory, url)
    bulk_insert(store, n, seed)
    analyze(store)
    who = Requester("ada", frozenset({"alloys"}))
    if store.backend == "sqlite":
        who = Requester(os_account())
    with store.transaction() as session:
        token = issue_token(session, who, name="bench")
    store.dispose()
    return token.text


def load(
    base: str, path: str, params: dict[str, str], token: str, clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` threads, each a keep-alive connection, requesting for ``seconds``."""
    import httpx

    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    window = {"start": 0.0, "deadline": 0.0}

    def open_window() -> None:  # once every client holds its connection
        window["start"] = time.perf_counter()
        window["deadline"] = window["start"] + seconds

    ready = threading.Barrier(clients, action=open_window)

    def client() -> None:
        nonlocal errors
        mine: list[float] = []
        failed = 0
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as http:
            ready.wait()
            while time.perf_counter() < window["deadline"]:
                started = time.perf_counter()
                answer = http.get(path, params=params)
                mine.append(time.perf_counter() - started)
                failed += answer.status_code != 200
        with lock:
            latencies.extend(mine)
            errors += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - window["start"]
    latencies.sort()
    return {
        "requests": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "errors": errors,
    }


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="matdx-bench-api-") as scratch:
        directory = Path(scratch)
        server_pg = None
        if args.backend == "postgresql":
            from matdx.store.pgserver import TemporaryPostgres

            server_pg = TemporaryPostgres(durable=True).start()
            url = server_pg.create_database("bench")
        else:
            url = f"sqlite:///{directory / 'store.sqlite'}"
        try:
            print(f"{args.backend}: inserting {args.records:,} records", file=sys.stderr)
            token = fill(directory, url, args.records, args.seed)
            port = _free_port()
            base = f"http://127.0.0.1:{port}"
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "matdx.cli.main",
                    "serve",
                    "--home",
                    str(directory),
                    "--port",
                    str(port),
                    "--rate",
                    "0",
                ],
                env={**os.environ, "MATDX_STORE": url},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                for _ in range(600):
                    try:
                        if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.2)
                print(
                    f"\nmatdx serve, {args.backend}, {args.records:,} records, "
                    f"{args.clients} concurrent clients, {args.seconds:.0f} s per request type"
                )
                print(
                    f"{'request':<72} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
                    f" {'load before/after (1 min)':>26}"
                )
                for label, (path, params) in REQUESTS.items():
                    load(base, path, params, token, 2, 2.0)  # warm-up
                    before = os.getloadavg()[0]
                    result = load(base, path, params, token, args.clients, args.seconds)
                    after = os.getloadavg()[0]
                    print(
                        f"{label:<72} {result['rate']:>8.1f} {result['p50_ms']:>8.1f} "
                        f"{result['p99_ms']:>8.1f} {result['errors']:>7} "
                        f"{before:>12.1f} / {after:<11.1f}"
                    )
                print(f"machine: {os.cpu_count()} cores; load averages now "
                      f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min)")
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
        finally:
            if server_pg is not None:
                server_pg.stop()


if __name__ == "__main__":
    main()
