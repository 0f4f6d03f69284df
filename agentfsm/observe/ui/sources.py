"""Where the inspector's runs come from: a store (SQLite or PostgreSQL), or a recorded events file.

A source lists runs (``RunRow``: what the list page shows) and reads one
(``RunData``: everything the run page shows). The two kinds carry different
things, and the pages say which:

* A **store** keeps each conversation's latest snapshot: its history, usage,
  cost, trace (with the history's size at each step) and the durations of the
  tool calls it answered — but not its events.
* An **events file** (JSON lines, as ``agentfsm run --events`` or
  ``EventsWriter`` write them) keeps every event — requests, replies with
  their usage and latency, transitions, tool calls with durations, timestamps
  — but no message content and no tool inputs or results.

Sources are read afresh on every call (a store row, or the file when it has
changed), so a run that is going on shows its latest state; ``signature``
is a cheap fingerprint the pages poll to know when to refresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from agentfsm.errors import ConfigurationError, EventsFileError
from agentfsm.machine.state import ForkedFrom, StoredGraph
from agentfsm.observe.events import Event
from agentfsm.redaction import REDACTED, redact, redact_text, redaction_spans
from agentfsm.result import TraceStep
from agentfsm.stores.base import RunSummary, Snapshot, Store
from agentfsm.stores.listing import RunFilter, RunTotals, fingerprint, list_page, status_of, summary_of
from agentfsm.stores.location import open_store, store_label
from agentfsm.wire.usage import Usage


@dataclass(frozen=True)
class RunRow:
    """One line of the run list."""

    id: str
    agent: str | None
    state: str
    finished: bool
    reason: str | None = None
    turns: int = 0
    usage: Usage | None = None
    cost_usd: float | None = None
    #: Unix times; None when the source cannot tell.
    started: float | None = None
    updated: float | None = None
    #: Why the run cannot be read (a corrupt row, a newer agentfsm); None when it can.
    problem: str | None = None
    #: The state it stopped in to wait for a decision from outside (``final_state == "waiting"``); None otherwise.
    waiting: str | None = None

    @property
    def tokens(self) -> int | None:
        return None if self.usage is None else self.usage.total_tokens

    @property
    def status(self) -> str:
        """What the list's state filter matches: the final state, ``waiting`` or ``unfinished``."""
        return status_of(self.finished, self.state, self.waiting)


@dataclass
class RunsPage:
    """A page of the run list, newest first, and what the filtered set adds up to (``agentfsm.stores.listing``)."""

    rows: list[RunRow]
    offset: int
    limit: int
    total: RunTotals
    #: Runs by status, of those the filter's agent and id prefix match: the state filter's choices.
    by_state: dict[str, int]
    #: Every agent with runs here: the agent filter's choices.
    agents: list[str]


@dataclass(frozen=True)
class ToolRecord:
    """A tool call as an events file records it (no input or result: events do not carry them)."""

    id: str
    name: str
    is_error: bool | None = None
    duration_ms: float | None = None


@dataclass(frozen=True)
class PendingCall:
    """A client tool call a waiting run holds back until someone decides (its input is None in an events file)."""

    id: str
    name: str
    input: Any = None


@dataclass(frozen=True)
class Waiting:
    """What a waiting run waits for: the triggers that can decide it and the calls held back.

    ``triggers_known`` is False when the source does not record the waiting state's triggers (a row an
    earlier agentfsm stored): ``triggers`` are then only those the run was seen to leave that state by.
    The Agent class is never imported to find them: viewing a run runs no code of the run's.
    """

    state: str
    triggers: list[str]
    triggers_known: bool
    calls: list[PendingCall]
    #: Why it waits: the guards of the transition that led into the wait, when the source records them.
    why: str | None = None


@dataclass
class RunData:
    """One run, as the run page shows it."""

    kind: Literal["store", "events"]
    row: RunRow
    trace: list[TraceStep]
    model: str | None = None
    stop_reason: str | None = None
    error: str | None = None
    elapsed_s: float | None = None
    #: The history (the latest stored one); None for an events file, which holds no message content.
    messages: list[dict[str, Any]] | None = None
    #: tool_use_id → duration_ms of the tool calls the history answers (store runs).
    tool_ms: dict[str, float | None] = field(default_factory=dict)
    #: The content of the reply being acted on, which joins the history with the next transition (store runs).
    reply: list[dict[str, Any]] = field(default_factory=list)
    #: Tool calls committed but not in the history yet, and calls that were running at the last save.
    committed: dict[str, Any] = field(default_factory=dict)
    running: list[str] = field(default_factory=list)
    #: Every event (events files); empty for a store.
    events: list[Event] = field(default_factory=list)
    #: Tool calls as the events record them (events files).
    tool_records: list[ToolRecord] = field(default_factory=list)
    #: What it waits for, when it stopped to wait (``row.waiting``); None otherwise.
    waiting: Waiting | None = None
    #: The max_tokens of its last request (the ladder may have raised it).
    max_tokens: int | None = None
    #: What every request is sent with besides messages, model and max_tokens (system prompt, tools, ...), as
    #: the snapshot stored it; None when the source does not hold it (an events file, an older row).
    request: dict[str, Any] | None = None
    #: The Agent class's states and transitions as the snapshot stored them (``Snapshot.graph``): what the run
    #: is drawn on, with no class imported. None when the source does not hold them (an events file, an older row).
    graph: StoredGraph | None = None
    #: The run it was forked from, and the step (``agent.fork``); None for any other run and for events files.
    forked_from: ForkedFrom | None = None


class Source(Protocol):
    """Runs to inspect."""

    #: What is being read, for the page header (a PostgreSQL URL without its password).
    label: str

    def page(self, run_filter: RunFilter, offset: int = 0, limit: int = 100) -> RunsPage:
        """A page of the runs ``run_filter`` matches, newest first (never all of them at once)."""
        ...

    def run(self, run_id: str) -> RunData:
        """The run ``run_id``; ``KeyError`` if there is none."""
        ...

    def signature(self, run_id: str | None = None) -> str:
        """A fingerprint that changes when the run (or, with no id, any run) changes."""
        ...

    def close(self) -> None: ...


# --- opening ----------------------------------------------------------------------------------------


def open_source(store: str | Store | None = None, *, events: str | os.PathLike[str] | None = None) -> Source:
    """A source for a store (a ``Store``, ``sqlite:///PATH``, a SQLite file path, or ``postgresql://...``),
    or for an events file. Problems (an unknown URL scheme, a missing file, a server that cannot be reached)
    raise ``ConfigurationError``, ``StoreError`` or ``EventsFileError`` with one clear line."""
    if (store is None) == (events is None):
        raise ConfigurationError("give a store or an events file to inspect (one of them)")
    if events is not None:
        source: Source = EventsSource(events)
    elif isinstance(store, str):
        source = StoreSource(open_store(store), label=store_label(store))
    else:
        assert store is not None
        source = StoreSource(store, label=repr(store))
    source.page(RunFilter(), 0, 1)  # fail now, with the real reason, rather than on the first page
    return source


class StoreSource:
    """The conversations a store holds, a page at a time (``Store.page``, SQL in the SQL stores)."""

    def __init__(self, store: Store, *, label: str) -> None:
        self.store = store
        self.label = label

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if callable(close):
            close()

    def page(self, run_filter: RunFilter, offset: int = 0, limit: int = 100) -> RunsPage:
        found = list_page(self.store, run_filter, offset=offset, limit=limit)
        return RunsPage(
            rows=[_summary_row(s) for s in found.runs],
            offset=found.offset,
            limit=found.limit,
            total=found.total,
            by_state=found.by_state,
            agents=found.agents,
        )

    def run(self, run_id: str) -> RunData:
        snap = self.store.load(run_id)
        listed = summary_of(self.store, run_id)
        row = _snapshot_row(snap, listed.updated_at if listed else None)
        return RunData(
            kind="store",
            row=row,
            trace=list(snap.trace),
            model=snap.model,
            stop_reason=snap.reply.stop_reason if snap.reply else None,
            error=f"{snap.error.type}: {snap.error.message}" if snap.error else None,
            elapsed_s=snap.elapsed_s,
            messages=list(snap.messages),
            tool_ms=dict(snap.tool_ms),
            reply=list(snap.reply.content) if snap.reply else [],
            committed={k: v.model_dump(mode="json") for k, v in snap.tool_results.items()},
            running=[t for t in snap.tools_started if t not in snap.tool_results],
            waiting=stored_waiting(snap),
            max_tokens=snap.max_tokens,
            request=getattr(snap, "request", None),
            graph=snap.graph,
            forked_from=snap.forked_from,
        )

    def signature(self, run_id: str | None = None) -> str:
        return hashlib.sha256(fingerprint(self.store, run_id).encode()).hexdigest()[:16]


def stored_waiting(snap: Snapshot) -> Waiting | None:
    """What a stored waiting run waits for, read from the snapshot alone (no Agent class is imported).

    The snapshot's ``pending_decision`` (the waiting state's triggers and held-back calls, written when
    it stopped) is used when the row has one. A row without it (an earlier agentfsm) still shows the
    calls its last reply holds that the history does not answer, and the triggers the trace was seen
    to leave the waiting state by, marked as not the whole list.
    """
    if snap.waiting is None:
        return None
    decision: Any = getattr(snap, "pending_decision", None)  # by name: rows of an earlier agentfsm lack it
    if decision is not None:
        return Waiting(
            state=str(getattr(decision, "state", snap.waiting)),
            triggers=[str(t) for t in decision.triggers],
            triggers_known=True,
            calls=[PendingCall(str(c.id), str(c.name), c.input) for c in decision.tool_calls],
            why=getattr(decision, "why", None),
        )
    seen = list(dict.fromkeys(s.trigger for s in snap.trace if s.source == snap.waiting))
    return Waiting(state=snap.waiting, triggers=seen, triggers_known=False, calls=_unanswered(snap))


def _unanswered(snap: Snapshot) -> list[PendingCall]:
    """The client tool calls of the snapshot's reply that its history does not answer."""
    from agentfsm.wire.messages import blocks

    content = snap.reply.content if snap.reply is not None else []
    answered: set[str] = set()
    if snap.reply_kept and snap.messages:
        answered = {str(b.get("tool_use_id")) for b in blocks(snap.messages[-1]) if b.get("type") == "tool_result"}
    return [
        PendingCall(str(b.get("id")), str(b.get("name")), b.get("input"))
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_use" and str(b.get("id")) not in answered
    ]


def _summary_row(summary: RunSummary) -> RunRow:
    """A list row from what the store lists: no snapshot is read."""
    elapsed = summary.elapsed_s
    return RunRow(
        id=summary.conversation_id,
        agent=summary.agent,
        state=summary.state,
        finished=summary.finished,
        reason=summary.reason,
        turns=summary.turns,
        usage=summary.usage,
        cost_usd=summary.cost_usd,
        # The wall time it ran, counted back from its last save (across processes, for a resumed run).
        started=summary.updated_at - elapsed if elapsed is not None else summary.created_at,
        updated=summary.updated_at,
        problem=summary.problem,
        waiting=summary.waiting,
    )


def _snapshot_row(snap: Snapshot, updated: float | None) -> RunRow:
    return RunRow(
        id=snap.conversation_id,
        agent=snap.agent,
        state=snap.state,
        finished=snap.finished,
        reason=snap.reason,
        turns=snap.counters.turns,
        usage=snap.usage,
        cost_usd=snap.cost_usd,
        # The wall time it ran, counted back from its last save (across processes, for a resumed run).
        started=None if updated is None else updated - snap.elapsed_s,
        updated=updated,
        waiting=snap.waiting,
    )


# --- an events file -----------------------------------------------------------------------------------


class EventsSource:
    """The runs an events file records (read again whenever the file changes, so a run being written shows)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.label = str(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._runs: dict[str, RunData] = {}

    def close(self) -> None:
        pass

    def _stat(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise EventsFileError("no such file", self.label) from None
        except OSError as exc:
            raise EventsFileError(f"cannot be read ({exc.strerror})", self.label) from None
        if not self.path.is_file():
            raise EventsFileError("is not a file", self.label)
        return (st.st_mtime_ns, st.st_size)

    def _load(self) -> dict[str, RunData]:
        stamp = self._stat()
        with self._lock:
            if stamp == self._stamp:
                return self._runs
        from agentfsm.observe.replay import replay

        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise EventsFileError(f"not UTF-8 text ({exc.reason})", self.label) from None
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # a line still being written
        runs = {
            r.conversation_id: _events_run(r.conversation_id, r.trace, r.events) for r in replay(lines, name=self.label)
        }
        with self._lock:
            self._stamp, self._runs = stamp, runs
        return runs

    def page(self, run_filter: RunFilter, offset: int = 0, limit: int = 100) -> RunsPage:
        return page_rows([data.row for data in self._load().values()], run_filter, offset, limit)

    def run(self, run_id: str) -> RunData:
        return self._load()[run_id]

    def signature(self, run_id: str | None = None) -> str:
        stamp = self._stat()
        return hashlib.sha256(f"{stamp}".encode()).hexdigest()[:16]


def page_rows(rows: list[RunRow], run_filter: RunFilter, offset: int, limit: int) -> RunsPage:
    """A page of rows already in memory (an events file), filtered and totalled as a store's page is."""
    by_state: dict[str, int] = {}
    total = RunTotals()
    matched: list[RunRow] = []
    for row in rows:
        if run_filter.agent is not None and row.agent != run_filter.agent:
            continue
        if (run_filter.id is not None and row.id != run_filter.id) or not row.id.startswith(run_filter.id_prefix or ""):
            continue
        by_state[row.status] = by_state.get(row.status, 0) + 1
        if run_filter.state is not None and row.status != run_filter.state:
            continue
        matched.append(row)
        total.runs += 1
        total.tokens += row.tokens or 0
        if row.cost_usd is None:
            total.unpriced += 1
        else:
            total.cost_usd += row.cost_usd
    matched.sort(key=lambda r: (r.started is None, -(r.started or 0.0), r.id))
    agents = sorted({r.agent for r in rows if r.agent})
    return RunsPage(matched[offset : offset + limit], offset, limit, total, by_state, agents)


def _events_run(conversation_id: str, trace: list[TraceStep], events: Sequence[Event]) -> RunData:
    started = next((e for e in events if e.event == "run.started"), None)
    finished = next((e for e in reversed(events) if e.event == "run.finished"), None)
    fin = finished.data if finished else {}
    usage = Usage()
    if finished is not None and isinstance(fin.get("usage"), dict):
        usage = Usage.model_validate(fin["usage"])
    else:
        for e in events:
            if e.event == "response.received":
                usage.add(e.data.get("usage") if isinstance(e.data.get("usage"), dict) else None)
    failed = [e for e in events if e.event == "request.failed"]
    cost = fin.get("cost_usd")
    state = str(fin.get("final_state")) if finished else (trace[-1].dest if trace else events[-1].state)
    tools: dict[str, ToolRecord] = {}
    for e in events:
        if e.event in ("tool.started", "tool.finished", "tool.interrupted"):
            tid = str(e.data.get("tool_use_id"))
            was = tools.get(tid)
            ms = e.data.get("duration_ms")
            tools[tid] = ToolRecord(
                id=tid,
                name=str(e.data.get("tool", was.name if was else "?")),
                is_error=bool(e.data.get("is_error"))
                if e.event == "tool.finished"
                else (was.is_error if was else None),
                duration_ms=float(ms) if isinstance(ms, int | float) else (was.duration_ms if was else None),
            )
    waiting = _events_waiting(events) if finished is None else None
    model = started.data.get("model") if started else None
    sent = next((e for e in reversed(events) if e.event == "request.sent"), None)
    max_tokens = sent.data.get("max_tokens") if sent else None
    stop_reason = fin.get("stop_reason")
    reason = fin.get("reason")
    cost_usd = float(cost) if isinstance(cost, int | float) else None
    row = RunRow(
        id=conversation_id,
        agent=str(started.data["agent"]) if started and started.data.get("agent") else None,
        state=state,
        finished=finished is not None,
        reason=reason if isinstance(reason, str) else None,
        turns=int(fin["turns"]) if isinstance(fin.get("turns"), int) else max((e.turn for e in events), default=0),
        usage=usage,
        cost_usd=cost_usd,
        started=events[0].timestamp if events else None,
        updated=events[-1].timestamp if events else None,
        waiting=waiting.state if waiting else None,
    )
    return RunData(
        kind="events",
        row=row,
        trace=trace,
        model=str(model) if model else None,
        stop_reason=stop_reason if isinstance(stop_reason, str) else None,
        error=(
            f"{failed[-1].data.get('error_type')}: {failed[-1].data.get('message')}"
            if failed and state == "failed"
            else None
        ),
        elapsed_s=(events[-1].timestamp - events[0].timestamp) if len(events) > 1 else None,
        events=list(events),
        tool_records=list(tools.values()),
        waiting=waiting,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )


def _events_waiting(events: Sequence[Event]) -> Waiting | None:
    """The wait a run's events leave it in: a ``run.waiting`` that no ``wait.decided`` or resume followed."""
    last = next((e for e in reversed(events) if e.event in ("run.waiting", "wait.decided", "run.resumed")), None)
    if last is None or last.event != "run.waiting":
        return None
    triggers = last.data.get("triggers")
    names = last.data.get("pending_tool_calls")
    return Waiting(
        state=str(last.data.get("waiting") or last.state),
        triggers=[str(t) for t in triggers] if isinstance(triggers, list) else [],
        triggers_known=isinstance(triggers, list),
        calls=[PendingCall("", str(n)) for n in names] if isinstance(names, list) else [],
    )


# --- what is shown: credentials redacted on the way out ------------------------------------------------


def shown_run(data: RunData, secrets: Sequence[str] = ()) -> RunData:
    """``data`` as the pages and the JSON API may show it: ``secrets`` and anything shaped like an Anthropic
    key replaced by ``[REDACTED]`` in every text it holds, the conversation included.

    A store is data, not a promise: a row an earlier agentfsm wrote kept a tool's credential verbatim, a
    hand-written row or events file holds anything, and the conversation is stored as sent (a key in the
    prompt, or one the model repeats, stays in the history). Whatever the row holds, the inspector shows
    none of it. A text block's redacted length differs from the one each step recorded, so the steps' sizes
    are mapped through the redaction: the history after every step is still the one that step left, and a
    key a continuation's seam cut in two appears whole at the step that completed it, never in part.
    Names the pages link by (run ids, state names, triggers) are left alone here; the server also scrubs
    every body it sends of the key shape (``server.Handler._send``).
    """
    found = tuple(s for s in secrets if s)
    trace = data.trace
    messages = data.messages
    if messages is not None:
        messages, spans = _shown_messages(messages, found)
        if spans:
            trace = [_shown_size(step, spans) for step in trace]
    waiting = data.waiting
    if waiting is not None:
        waiting = dataclasses.replace(
            waiting,
            calls=[dataclasses.replace(c, input=redact(c.input, found)) for c in waiting.calls],
            why=None if waiting.why is None else redact_text(waiting.why, found),
        )
    return dataclasses.replace(
        data,
        row=shown_row(data.row, found),
        trace=trace,
        model=_text(data.model, found),
        stop_reason=_text(data.stop_reason, found),
        error=_text(data.error, found),
        messages=messages,
        reply=redact(data.reply, found),
        committed=redact(data.committed, found),
        events=[e if (d := redact(e.data, found)) is e.data else e.model_copy(update={"data": d}) for e in data.events],
        tool_records=[dataclasses.replace(t, name=redact_text(t.name, found)) for t in data.tool_records],
        waiting=waiting,
        request=redact(data.request, found),
    )


def shown_row(row: RunRow, secrets: Sequence[str] = ()) -> RunRow:
    """A list row with its free texts (agent, reason, problem) redacted as ``shown_run`` redacts a run."""
    return dataclasses.replace(
        row, agent=_text(row.agent, secrets), reason=_text(row.reason, secrets), problem=_text(row.problem, secrets)
    )


def shown_page(page: RunsPage, secrets: Sequence[str] = ()) -> RunsPage:
    """A page of the run list as it may be shown (``shown_row`` on each row, the agent filter's names)."""
    return dataclasses.replace(
        page, rows=[shown_row(r, secrets) for r in page.rows], agents=[redact_text(a, secrets) for a in page.agents]
    )


def _text(value: str | None, secrets: Sequence[str]) -> str | None:
    return None if value is None else redact_text(value, secrets)


Spans = dict[tuple[int, int], list[tuple[int, int]]]


def _shown_messages(messages: list[dict[str, Any]], secrets: Sequence[str]) -> tuple[list[dict[str, Any]], Spans]:
    """The history redacted, and where each text block was redacted ((message, block) → spans of the original)."""
    out: list[dict[str, Any]] = []
    spans: Spans = {}
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str):  # one text block to the API, and to the recorded sizes
            content = _shown_text(content, secrets, spans, (i, 0))
        elif isinstance(content, list):
            blocks: list[Any] = []
            for j, block in enumerate(content):
                if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                    block = {**block, "text": _shown_text(block["text"], secrets, spans, (i, j))}
                blocks.append(redact(block, secrets))
            content = blocks
        else:
            content = redact(content, secrets)
        out.append({**redact({k: v for k, v in message.items() if k != "content"}, secrets), "content": content})
    return out, spans


def _shown_text(text: str, secrets: Sequence[str], spans: Spans, at: tuple[int, int]) -> str:
    found = redaction_spans(text, secrets)
    if not found:
        return text
    spans[at] = found
    return redact_text(text, secrets)


def _shown_size(step: TraceStep, spans: Spans) -> TraceStep:
    """``step`` with the length of its last text block mapped from the stored text to the redacted one."""
    size = step.history_size
    if size is None:
        return step
    count, nblocks, chars = size
    cut = spans.get((count - 1, nblocks - 1))
    if not cut:
        return step
    moved = 0
    for start, end in cut:
        if end <= chars:  # wholly before the cut: the marker stands in for it
            moved += len(REDACTED) - (end - start)
        elif start < chars:  # the cut falls inside it: the step ends before the credential
            return step.model_copy(update={"history_size": (count, nblocks, start + moved)})
        else:
            break
    return step.model_copy(update={"history_size": (count, nblocks, chars + moved)})
