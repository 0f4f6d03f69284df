"""The run list over a large SQLite store: how long a page, its totals and the inspector's list take.

    .venv/bin/python benchmarks/listing.py [--runs 100000] [--rounds 15]

Makes a store of ``--runs`` rows in SQL from one real run (statuses, agents, tokens and costs
varied by formula, as ``tests/test_ui_listing.py`` does), then times, as medians over the rounds:
``store.page()`` first and last page, filtered pages, the cheap ``fingerprint`` the pages poll,
the list page served over HTTP (first and last), and — for comparison — ``store.list()``, which
reads every row. Wall times on a shared machine: compare rows with each other, not as absolutes.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_ui_listing import big_store

from agentfsm.observe.ui.server import UIServer
from agentfsm.observe.ui.sources import open_source
from agentfsm.stores.listing import RunFilter
from agentfsm.stores.sqlite import SQLiteStore


def median_ms(call: Callable[[], Any], rounds: int) -> float:
    call()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    n = args.runs
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.db"
        t0 = time.perf_counter()
        big_store(path, n)
        print(f"{n:,} runs made in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
        server = UIServer(open_source(f"sqlite:///{path}"), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        def get(url: str) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port)
            conn.request("GET", url)
            response = conn.getresponse()
            assert response.status == 200, response.status
            response.read()
            conn.close()

        with SQLiteStore(path) as store:
            rows: list[tuple[str, Callable[[], Any]]] = [
                ("store.page() first 100", lambda: store.page(limit=100)),
                ("store.page() last 100", lambda: store.page(offset=n - 100, limit=100)),
                ("store.page(state=waiting)", lambda: store.page(RunFilter(state="waiting"))),
                (
                    "store.page(state, agent, id prefix), page 4",
                    lambda: store.page(
                        RunFilter(state="waiting", agent="shop:Refunds", id_prefix="run-09"), offset=300
                    ),
                ),
                ("store.fingerprint() (the pages' poll)", store.fingerprint),
                ("GET / (the list page)", lambda: get("/")),
                (f"GET /?offset={n - 100}", lambda: get(f"/?offset={n - 100}")),
                ("GET /api/signature", lambda: get("/api/signature")),
                ("store.list() (every row, for comparison)", store.list),
            ]
            width = max(len(name) for name, _ in rows)
            print(f"{'':{width}}  median ms ({args.rounds} rounds)")
            for name, call in rows:
                print(f"{name:{width}}  {median_ms(call, args.rounds):10.1f}")
        server.shutdown()
        server.close()


if __name__ == "__main__":
    main()
