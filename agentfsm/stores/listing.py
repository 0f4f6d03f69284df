"""Listing runs a page at a time: filtered by state, agent and id prefix, newest first, with totals.

``Store.list()`` returns every conversation; an inspector over 100,000 runs must not. A store
that can do better has ``page(filter, offset=, limit=)`` (``SQLiteStore`` and ``PostgresStore``
in SQL, ``MemoryStore`` in Python); ``list_page(store, ...)`` uses it, and falls back to
``list()`` and ``load()`` for a store that has not (one written before this API).

A run's **status** is what the filter's ``state`` means: a final state (``done``, ``failed``, …)
once finished, ``waiting`` while it waits for a decision, else ``unfinished`` (running, or its
process died). The SQL stores keep what the list shows in columns of their own, written with
every save (``listing_values``): the status's parts, the reason, the tokens and cost (summed
by SQL for the totals), the wall time and the usage. A row written by an agentfsm that did not
write them (an older process still running against the same store) has a ``listed_revision``
behind its ``revision``; a page fills those rows in from their JSON before it counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentfsm.stores.base import RunSummary, Snapshot, Store

#: The filter's ``state`` of a row, in SQL over the listing columns (the same rule as ``status_of``).
STATUS_SQL = "CASE WHEN finished THEN state WHEN waiting IS NOT NULL THEN 'waiting' ELSE 'unfinished' END"
#: The largest page a store hands out.
MAX_LIMIT = 1000


class RunFilter(BaseModel):
    """Which runs to list; every field None lists them all."""

    model_config = ConfigDict(frozen=True)

    #: A final state (``done``, ``truncated``, ``refused``, ``failed``, …), ``waiting`` or ``unfinished``.
    state: str | None = None
    #: The Agent class, ``module:QualName``, as stored.
    agent: str | None = None
    #: The start of the conversation ids wanted (case-sensitive).
    id_prefix: str | None = None
    #: One conversation id exactly.
    id: str | None = None

    def matches(self, summary: RunSummary, *, state: bool = True) -> bool:
        if state and self.state is not None and summary.status != self.state:
            return False
        if self.agent is not None and summary.agent != self.agent:
            return False
        if self.id is not None and summary.conversation_id != self.id:
            return False
        return not self.id_prefix or summary.conversation_id.startswith(self.id_prefix)


class RunTotals(BaseModel):
    """Sums over every run a filter matches (all its pages)."""

    runs: int = 0
    tokens: int = 0
    #: The cost of the runs whose cost is known; ``unpriced`` runs have none (a model with no price).
    cost_usd: float = 0.0
    unpriced: int = 0


class RunPage(BaseModel):
    """One page of runs, newest first, and what the whole filtered set adds up to."""

    runs: list[RunSummary]
    offset: int
    limit: int
    #: Totals of every run the filter matches.
    total: RunTotals = Field(default_factory=RunTotals)
    #: Runs by status, of those the filter's agent and id prefix match (its state aside): the state choices.
    by_state: dict[str, int] = Field(default_factory=dict)
    #: Every agent the store holds runs of: the agent choices.
    agents: list[str] = Field(default_factory=list)


def status_of(finished: bool, state: str, waiting: str | None) -> str:
    """A run's status: its final state once finished, ``waiting``, or ``unfinished``."""
    if finished:
        return state
    return "waiting" if waiting is not None else "unfinished"


def listing_values(snapshot: Snapshot) -> tuple[str | None, str | None, int, float | None, float, str]:
    """What the SQL stores keep beside a snapshot for listing it: waiting, reason, tokens, cost, wall time, usage."""
    usage = snapshot.usage
    return (
        snapshot.waiting,
        snapshot.reason,
        usage.total_tokens,
        snapshot.cost_usd,
        snapshot.elapsed_s,
        usage.model_dump_json(),
    )


def listing_from_json(text: str | bytes) -> tuple[str | None, str | None, int, float | None, float, str] | None:
    """``listing_values`` read straight from a stored row's JSON (a row an older agentfsm wrote); None when
    the row is not a snapshot this can read (it is listed with its problem instead)."""
    from agentfsm.wire.usage import Usage

    try:
        data = json.loads(text)
        usage = Usage.model_validate(data.get("usage") or {})
        cost = data.get("cost_usd", 0.0)
        return (
            data.get("waiting"),
            data.get("reason"),
            usage.total_tokens,
            None if cost is None else float(cost),
            float(data.get("elapsed_s") or 0.0),
            usage.model_dump_json(),
        )
    except Exception:
        return None


def check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ValueError(f"offset must be 0 or more, not {offset}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")


def where(run_filter: RunFilter, mark: str, *, state: bool = True) -> tuple[str, list[Any]]:
    """The SQL ``WHERE`` of a filter over the listing columns (``mark`` is the driver's placeholder)."""
    clauses: list[str] = []
    params: list[Any] = []
    if state and run_filter.state is not None:
        clauses.append(f"{STATUS_SQL} = {mark}")
        params.append(run_filter.state)
    if run_filter.agent is not None:
        clauses.append(f"agent = {mark}")
        params.append(run_filter.agent)
    if run_filter.id is not None:
        clauses.append(f"id = {mark}")
        params.append(run_filter.id)
    if run_filter.id_prefix:
        clauses.append(f"substr(id, 1, {mark}) = {mark}")
        params += [len(run_filter.id_prefix), run_filter.id_prefix]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def grouped(rows: Iterable[Any]) -> list[tuple[str, int, int, float, int]]:
    """Rows grouped by ``(finished, state, waiting)`` with their ``(runs, tokens, cost, unpriced)``, regrouped by
    status (grouping by the plain columns lets a store read them in index order, with no sort)."""
    out: dict[str, list[float]] = {}
    for finished, state, waiting, runs, tokens, cost, unpriced in rows:
        sums = out.setdefault(status_of(bool(finished), state, waiting), [0, 0, 0.0, 0])
        sums[0] += int(runs)
        sums[1] += int(tokens or 0)
        sums[2] += float(cost or 0.0)
        sums[3] += int(unpriced or 0)
    return [(status, int(a), int(b), c, int(d)) for status, (a, b, c, d) in out.items()]


def totals(groups: Iterable[Any], state: str | None) -> RunTotals:
    """The totals of a filter from its rows grouped by status: ``(status, runs, tokens, cost, unpriced)``."""
    total = RunTotals()
    for status, runs, tokens, cost, unpriced in groups:
        if state is None or status == state:
            total.runs += int(runs)
            total.tokens += int(tokens or 0)
            total.cost_usd += float(cost or 0.0)
            total.unpriced += int(unpriced or 0)
    return total


def page_of(
    summaries: Iterable[RunSummary], run_filter: RunFilter | None = None, *, offset: int = 0, limit: int = 100
) -> RunPage:
    """A page of ``summaries`` (which carry their listing fields) in Python: for stores without SQL."""
    check_page(offset, limit)
    run_filter = run_filter or RunFilter()
    rows = list(summaries)
    by_state: dict[str, int] = {}
    agents = sorted({s.agent for s in rows})
    total = RunTotals()
    matched: list[RunSummary] = []
    for summary in rows:
        if not run_filter.matches(summary, state=False):
            continue
        by_state[summary.status] = by_state.get(summary.status, 0) + 1
        if run_filter.state is not None and summary.status != run_filter.state:
            continue
        matched.append(summary)
        total.runs += 1
        total.tokens += summary.tokens or 0
        if summary.cost_usd is None:
            total.unpriced += 1
        else:
            total.cost_usd += summary.cost_usd
    matched.sort(key=lambda s: (s.created_at or s.updated_at, s.conversation_id), reverse=True)
    return RunPage(
        runs=matched[offset : offset + limit],
        offset=offset,
        limit=limit,
        total=total,
        by_state=by_state,
        agents=agents,
    )


def with_listing(summary: RunSummary, load: Callable[[str], Snapshot]) -> RunSummary:
    """``summary`` with its listing fields, from the snapshot (for a store that does not keep them)."""
    if summary.problem is not None:
        return summary
    try:
        snap = load(summary.conversation_id)
    except KeyError:
        return summary.model_copy(update={"problem": "no longer in the store"})
    except Exception as exc:
        return summary.model_copy(update={"problem": str(exc)})
    waiting, reason, tokens, cost, elapsed, _ = listing_values(snap)
    return summary.model_copy(
        update={
            "waiting": waiting,
            "reason": reason,
            "tokens": tokens,
            "cost_usd": cost,
            "elapsed_s": elapsed,
            "usage": snap.usage,
        }
    )


def list_page(store: Store, run_filter: RunFilter | None = None, *, offset: int = 0, limit: int = 100) -> RunPage:
    """A page of ``store``'s runs: through its own ``page`` when it has one, else every row listed and loaded
    (a store of another author's, written before this API)."""
    paged = getattr(store, "page", None)
    if callable(paged):
        result: RunPage = paged(run_filter or RunFilter(), offset=offset, limit=limit)
        return result
    return page_of((with_listing(s, store.load) for s in store.list()), run_filter, offset=offset, limit=limit)


def summary_of(store: Store, conversation_id: str) -> RunSummary | None:
    """One run's line of the list (None if there is no such run): through the store's own ``summary`` when it
    has one (one row read), else from ``list()``."""
    own = getattr(store, "summary", None)
    if callable(own):
        found: RunSummary | None = own(conversation_id)
        return found
    return next((s for s in store.list() if s.conversation_id == conversation_id), None)


def fingerprint(store: Store, conversation_id: str | None = None) -> str:
    """A text that changes when any run (or, with an id, that run) is saved, added or removed: through the
    store's own ``fingerprint`` when it has one (one small query), else from ``list()``."""
    own = getattr(store, "fingerprint", None)
    if callable(own):
        return str(own(conversation_id))
    import hashlib

    parts = [
        f"{s.conversation_id}\t{s.updated_at!r}\t{s.state}"
        for s in store.list()
        if conversation_id is None or s.conversation_id == conversation_id
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
