"""The run list a page at a time: filtered by state, agent and id prefix, with totals, over 100,000 runs.

The stores' ``page`` is checked against the runs themselves (real runs on the simulator, saved by
each store: SQLite, PostgreSQL, memory); the inspector's list is read over HTTP. The large store is
100,000 rows made in SQL from one real snapshot; that a page reads only its own rows is checked by
the memory a page allocates (``tracemalloc``), which stays the same for a store 100 times larger
and for the last page as for the first — never by wall time (``benchmarks/listing.py`` times it).
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from test_ui import WRITER_SCRIPT, dom, has_class, serve, writer_agent
from test_ui_decisions import waiting_run

from agentfsm import Agent, MemoryStore
from agentfsm.observe.ui.sources import open_source
from agentfsm.sim import KNOWN_MODELS, Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import RunSummary, Store
from agentfsm.stores.listing import RunFilter, list_page
from agentfsm.stores.sqlite import SQLiteStore

AGENT = "agentfsm.agent:Agent"


class Other(Agent):
    """A second agent class, for the agent filter."""


def fill(store: Store) -> dict[str, str]:
    """Real runs of every status, two agents, ids with shared prefixes; returns id -> status."""
    statuses: dict[str, str] = {}
    for n in range(3):
        Agent(client=Simulator([r.text(f"Hello {n}.")]).client(max_retries=0), logger=None).run(
            "Hi", store=store, conversation_id=f"alpha-{n}"
        )
        statuses[f"alpha-{n}"] = "done"
    Other(client=Simulator([r.server_error()]).client(max_retries=0), logger=None).run(
        "Hi", store=store, conversation_id="beta-1"
    )
    statuses["beta-1"] = "failed"
    Other(client=Simulator([r.max_tokens("cut")]).client(max_retries=0), model="claude-nobody-1", logger=None).start(
        "Hi", store=store, conversation_id="beta-2"
    )  # saved, never run: unfinished
    statuses["beta-2"] = "unfinished"
    unpriced = Simulator([r.text("Hi.")], models=[*KNOWN_MODELS, "claude-nobody-1"])
    Other(client=unpriced.client(max_retries=0), model="claude-nobody-1", logger=None).run(
        "Hi", store=store, conversation_id="beta-3"
    )  # answered by a model with no price: its cost is unknown
    statuses["beta-3"] = "done"
    writer_agent(Simulator(WRITER_SCRIPT)).run("1 + 2?", store=store, conversation_id="alpha-writer")
    statuses["alpha-writer"] = "done"
    return statuses


# PostgreSQL runs a server process: its runs are in the slow tier.
@pytest.fixture(params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.slow)])
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, dict[str, str]]]:
    if request.param == "sqlite":
        store: Any = SQLiteStore(tmp_path / "runs.db")
    elif request.param == "memory":
        store = MemoryStore()
    else:
        from agentfsm.stores.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("postgres_database"))
    statuses = fill(store)
    if isinstance(store, SQLiteStore):
        waiting_run(store, "gamma-wait")
        statuses["gamma-wait"] = "waiting"
    yield store, statuses
    if hasattr(store, "close"):
        store.close()


def expected(store: Store, statuses: dict[str, str], run_filter: RunFilter) -> list[str]:
    ids = [
        cid
        for cid, status in statuses.items()
        if (run_filter.state is None or status == run_filter.state)
        and (run_filter.agent is None or store.load(cid).agent == run_filter.agent)
        and cid.startswith(run_filter.id_prefix or "")
    ]
    return list(reversed(ids))  # newest first: the runs were made in this order


def test_a_page_filters_orders_and_totals_in_every_store(filled: tuple[Store, dict[str, str]]) -> None:
    store, statuses = filled
    other = f"{__name__}:Other"
    for run_filter in (
        RunFilter(),
        RunFilter(state="done"),
        RunFilter(state="failed"),
        RunFilter(state="unfinished"),
        RunFilter(state="waiting"),
        RunFilter(agent=other),
        RunFilter(agent=AGENT, state="done"),
        RunFilter(id_prefix="alpha-"),
        RunFilter(id_prefix="beta", state="failed"),
        RunFilter(id_prefix="nobody"),
    ):
        page = store.page(run_filter)  # type: ignore[attr-defined]
        want = expected(store, statuses, run_filter)
        assert [s.conversation_id for s in page.runs] == want, run_filter
        snaps = [store.load(cid) for cid in want]
        assert page.total.runs == len(want)
        assert page.total.tokens == sum(s.usage.total_tokens for s in snaps)
        assert page.total.cost_usd == pytest.approx(sum(s.cost_usd or 0.0 for s in snaps))
        assert page.total.unpriced == sum(1 for s in snaps if s.cost_usd is None)
        loose = RunFilter(agent=run_filter.agent, id_prefix=run_filter.id_prefix)
        by_state: dict[str, int] = {}
        for cid in expected(store, statuses, loose):
            by_state[statuses[cid]] = by_state.get(statuses[cid], 0) + 1
        assert page.by_state == by_state, run_filter
        assert page.agents == sorted({store.load(cid).agent for cid in statuses})
        for summary in page.runs:
            snap = store.load(summary.conversation_id)
            assert summary.status == statuses[summary.conversation_id]
            assert (summary.tokens, summary.cost_usd, summary.reason) == (
                snap.usage.total_tokens,
                snap.cost_usd,
                snap.reason,
            )
            assert (
                summary.usage == snap.usage and summary.waiting == snap.waiting and summary.turns == snap.counters.turns
            )
    assert any(s.cost_usd is None for s in map(store.load, statuses))  # an unpriced run is counted apart
    one = store.summary("alpha-writer")  # type: ignore[attr-defined]
    snap = store.load("alpha-writer")
    assert (one.conversation_id, one.tokens, one.turns, one.status) == (
        "alpha-writer",
        snap.usage.total_tokens,
        snap.counters.turns,
        "done",
    )
    assert store.summary("nobody") is None  # type: ignore[attr-defined]
    two = store.page(RunFilter(), offset=1, limit=2)  # type: ignore[attr-defined]
    assert [s.conversation_id for s in two.runs] == expected(store, statuses, RunFilter())[1:3]
    assert two.total.runs == len(statuses)
    with pytest.raises(ValueError, match="limit must be between"):
        store.page(RunFilter(), limit=0)  # type: ignore[attr-defined]


def test_a_store_without_page_is_listed_from_list_and_load(tmp_path: Path) -> None:
    class Plain:
        """A store of someone else's, written before ``page``: the Store protocol only."""

        def __init__(self) -> None:
            self.inner = MemoryStore()

        def save(self, snapshot: Any) -> None:
            self.inner.save(snapshot)

        def load(self, conversation_id: str) -> Any:
            return self.inner.load(conversation_id)

        def list(self) -> list[RunSummary]:
            return [
                RunSummary(
                    **s.model_dump(
                        include=set(RunSummary.model_fields)
                        - {"waiting", "reason", "tokens", "cost_usd", "elapsed_s", "usage", "created_at"}
                    )
                )
                for s in self.inner.list()
            ]

        def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool:
            return self.inner.acquire(conversation_id, owner, lease_s)

        def release(self, conversation_id: str, owner: str) -> None:
            self.inner.release(conversation_id, owner)

    store = Plain()
    statuses = fill(store)  # type: ignore[arg-type]
    page = list_page(store, RunFilter(state="done"))  # type: ignore[arg-type]
    assert {s.conversation_id for s in page.runs} == {cid for cid, st in statuses.items() if st == "done"}
    assert page.total.tokens == sum(store.load(s.conversation_id).usage.total_tokens for s in page.runs)


def test_rows_an_older_agentfsm_wrote_are_filled_in_when_listed(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with SQLiteStore(path) as store:
        statuses = fill(store)
        done = store.load("alpha-0")
    with closing(sqlite3.connect(path)) as conn, conn:
        # An older agentfsm names the layout-1 columns only: a new row, and an update of another, leave
        # the listing columns behind.
        conn.execute(
            "INSERT INTO agentfsm_conversations (id, snapshot, schema_version, revision, agent, state, turns, "
            "finished, created_at, updated_at) VALUES (?, ?, 1, 1, ?, 'done', 1, 1, 9e9, 9e9)",
            ("old-row", done.model_copy(update={"conversation_id": "old-row"}).model_dump_json(), AGENT),
        )
        failed = store.load("beta-1")
        conn.execute(
            "UPDATE agentfsm_conversations SET snapshot = ?, revision = revision + 1, state = 'done', finished = 1 "
            "WHERE id = 'beta-1'",
            (failed.model_copy(update={"state": "done", "finished": True, "reason": "end_turn"}).model_dump_json(),),
        )
        conn.execute(
            "INSERT INTO agentfsm_conversations (id, snapshot, schema_version, revision, agent, state, "
            "turns, finished, created_at, updated_at) VALUES ('broken', '{not json', 1, 1, ?, 'done', 0, 1, 9e9, 9e9)",
            (AGENT,),
        )
    with SQLiteStore(path) as store:
        page = store.page(RunFilter(state="done"))
        listed = {s.conversation_id: s for s in page.runs}
        assert listed["old-row"].tokens == done.usage.total_tokens and listed["old-row"].reason == done.reason
        assert listed["beta-1"].reason == "end_turn"
        assert listed["broken"].problem == "the stored row is not valid JSON" and listed["broken"].tokens is None
        assert page.total.runs == 1 + sum(1 for s in statuses.values() if s == "done") + 2


# --- 100,000 runs -----------------------------------------------------------------------------------------------

BIG = 100_000


def big_store(path: Path, rows: int) -> None:
    """``rows`` runs in SQL, from one real run: statuses, agents, tokens and costs by formula (see ``truth``)."""
    with SQLiteStore(path, synchronous="NORMAL") as store:
        Agent(client=Simulator([r.text("Hello.")]).client(max_retries=0), logger=None).run(
            "Hi", store=store, conversation_id="template"
        )
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1)
            INSERT INTO agentfsm_conversations
                (id, snapshot, schema_version, revision, agent, state, turns, finished, created_at, updated_at,
                 waiting, reason, tokens, cost_usd, elapsed_s, usage, listed_revision)
            SELECT printf('run-%06d', i), t.snapshot, 1, 1,
                   CASE WHEN i % 3 = 0 THEN 'shop:Refunds' ELSE 'agentfsm.agent:Agent' END,
                   CASE WHEN i % 10 = 0 THEN 'failed' WHEN i % 10 = 1 THEN 'awaiting_approval' ELSE 'done' END,
                   2, i % 10 <> 1, 1000.0 + i, 1001.0 + i,
                   CASE WHEN i % 10 = 1 THEN 'awaiting_approval' END, 'end_turn', i % 50,
                   CASE WHEN i % 7 = 0 THEN NULL ELSE 0.001 END, 1.0, t.usage, 1
            FROM n, (SELECT snapshot, usage FROM agentfsm_conversations WHERE id = 'template') AS t
            """,
            (rows,),
        )
        conn.execute("DELETE FROM agentfsm_conversations WHERE id = 'template'")


def truth(rows: int, keep: Any) -> tuple[int, int, float, int]:
    """(runs, tokens, cost, unpriced) of the big store's rows ``keep(i)`` selects."""
    picked = [i for i in range(rows) if keep(i)]
    unpriced = sum(1 for i in picked if i % 7 == 0)
    return len(picked), sum(i % 50 for i in picked), 0.001 * (len(picked) - unpriced), unpriced


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "runs.db"
    big_store(path, BIG)
    return path


def allocated(call: Any) -> tuple[Any, int]:
    """What ``call()`` returns, and the most memory it had allocated at once."""
    tracemalloc.start()
    try:
        value = call()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # 100,000 rows
def test_100000_runs_a_page_at_a_time(big: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.db"
    big_store(small, 1_000)
    with SQLiteStore(big) as store, SQLiteStore(small) as little:
        store.page(limit=100), little.page(limit=100)  # warm: the connections and statements
        first, first_peak = allocated(lambda: store.page(limit=100))
        deep, deep_peak = allocated(lambda: store.page(offset=BIG - 100, limit=100))
        filtered, filtered_peak = allocated(
            lambda: store.page(RunFilter(state="waiting", agent="shop:Refunds", id_prefix="run-09"), offset=300)
        )
        _, small_peak = allocated(lambda: little.page(limit=100))
        everything, list_peak = allocated(store.list)
    assert [s.conversation_id for s in first.runs] == [f"run-{i:06d}" for i in range(BIG - 1, BIG - 101, -1)]
    assert [s.conversation_id for s in deep.runs] == [f"run-{i:06d}" for i in range(99, -1, -1)]
    runs, tokens, cost, unpriced = truth(BIG, lambda i: True)
    assert (first.total.runs, first.total.tokens, first.total.unpriced) == (runs, tokens, unpriced)
    assert first.total.cost_usd == pytest.approx(cost)
    assert first.by_state == {"done": 80_000, "failed": 10_000, "waiting": 10_000}
    assert first.agents == ["agentfsm.agent:Agent", "shop:Refunds"]
    keep = lambda i: i % 10 == 1 and i % 3 == 0 and f"run-{i:06d}".startswith("run-09")  # noqa: E731
    runs, tokens, cost, unpriced = truth(BIG, keep)
    assert (filtered.total.runs, filtered.total.tokens, filtered.total.unpriced) == (runs, tokens, unpriced)
    picked = [i for i in range(BIG - 1, -1, -1) if keep(i)]
    assert [s.conversation_id for s in filtered.runs] == [f"run-{i:06d}" for i in picked[300:400]]
    assert all(s.status == "waiting" and s.waiting == "awaiting_approval" for s in filtered.runs)
    # Flat: a page of a store 100 times larger, the last page, a filtered one, allocate what a page of the small
    # one does (its 100 rows), not what listing every row does.
    assert len(everything) == BIG and list_peak > 20 * first_peak
    for peak in (first_peak, deep_peak, filtered_peak):
        assert peak < 2 * small_peak + 64_000, (peak, small_peak)


@pytest.mark.slow  # 100,000 rows
def test_the_run_list_over_100000_runs(big: Path) -> None:
    served = serve(open_source(f"sqlite:///{big}"))
    try:
        page = dom(served.html("/"))
        rows = page.one(has_class("runs", "table")).all(lambda n: n.tag == "tr" and "data-run" in n.attrs)
        assert len(rows) == 100 and rows[0].attrs["data-run"] == f"run-{BIG - 1:06d}"
        totals = page.one(has_class("totals"))
        assert totals.attrs["data-runs"] == str(BIG) and "100,000" in totals.text()
        pager = page.one(has_class("pager", "nav"))
        assert "runs 1–100 of 100,000" in pager.text()
        assert pager.one(has_class("last", "a")).attrs["href"] == f"/?offset={BIG - 100}"
        last = dom(served.html(f"/?offset={BIG - 100}"))
        assert "runs 99,901–100,000 of 100,000" in last.one(has_class("pager", "nav")).text()
        assert last.all(lambda n: n.tag == "tr" and "data-run" in n.attrs)[-1].attrs["data-run"] == "run-000000"
        waiting = dom(served.html("/?state=waiting&agent=shop%3ARefunds&q=run-0999"))
        listed = [n.attrs["data-run"] for n in waiting.all(lambda n: n.tag == "tr" and "data-run" in n.attrs)]
        assert listed == [f"run-{i:06d}" for i in range(99999, 99899, -1) if i % 10 == 1 and i % 3 == 0]
        assert all("waiting" in n.classes for n in waiting.all(lambda n: n.tag == "tr" and "data-run" in n.attrs))
        form = waiting.one(has_class("filter", "form"))
        chosen = {
            n.parent.attrs["name"]: n.attrs["value"]
            for n in form.all(lambda n: n.tag == "option" and "selected" in n.attrs)
        }  # type: ignore[union-attr]
        assert chosen == {"state": "waiting", "agent": "shop:Refunds"}
        assert form.one(lambda n: n.attrs.get("name") == "q").attrs["value"] == "run-0999"
        body = served.json("/api/runs?state=failed&limit=5&offset=10")
        assert [row["id"] for row in body["runs"]] == [f"run-{i:06d}" for i in range(99890, 99840, -10)]
        assert body["total"]["runs"] == 10_000 and body["by_state"]["failed"] == 10_000
        assert served.get("/api/runs?limit=5000")[0] == 400
        assert served.get("/?offset=-1")[0] == 400
        # A run's page among them reads that run's row, not the list's totals.
        with SQLiteStore(big) as store:
            Agent(client=Simulator([r.text("Hi.")]).client(max_retries=0), logger=None).run(
                "Hi", store=store, conversation_id="run-real"
            )
            updated = store.summary("run-real").updated_at  # type: ignore[union-attr]
        run = served.json("/api/runs/run-real")["run"]
        assert run["state"] == "done" and run["updated"] == updated and run["turns"] == 1
    finally:
        served.stop()


def test_the_run_list_filters_a_small_store(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "runs.db") as store:
        fill(store)
        waiting_run(store, "gamma-wait")
    served = serve(open_source(str(tmp_path / "runs.db")))
    try:
        page = dom(served.html("/?state=waiting"))
        (row,) = page.all(lambda n: n.tag == "tr" and "data-run" in n.attrs)
        assert row.attrs["data-run"] == "gamma-wait" and "waiting" in row.classes
        assert "every state" in page.one(has_class("filter", "form")).text()
        assert dom(served.html("/?q=zzz")).one(has_class("empty")).text() == "No run matches."
        assert {n.attrs["data-state"] for n in page.all(has_class("by-state"))} == {
            "done",
            "failed",
            "unfinished",
            "waiting",
        }
    finally:
        served.stop()
