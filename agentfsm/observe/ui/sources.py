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

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from agentfsm.errors import ConfigurationError, EventsFileError, StoreError
from agentfsm.observe.events import Event
from agentfsm.result import TraceStep
from agentfsm.stores.base import RunSummary, Snapshot, Store
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

    @property
    def tokens(self) -> int | None:
        return None if self.usage is None else self.usage.total_tokens


@dataclass(frozen=True)
class ToolRecord:
    """A tool call as an events file records it (no input or result: events do not carry them)."""

    id: str
    name: str
    is_error: bool | None = None
    duration_ms: float | None = None


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


class Source(Protocol):
    """Runs to inspect."""

    #: What is being read, for the page header (a PostgreSQL URL without its password).
    label: str

    def runs(self) -> list[RunRow]: ...

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
    source.runs()  # fail now, with the real reason, rather than on the first page
    return source


class StoreSource:
    """The conversations a store holds."""

    def __init__(self, store: Store, *, label: str) -> None:
        self.store = store
        self.label = label
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[float, RunRow]] = {}  # id → (updated_at, row): a row is parsed once per save

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if callable(close):
            close()

    def runs(self) -> list[RunRow]:
        rows: list[RunRow] = []
        for summary in self.store.list():
            with self._lock:
                cached = self._rows.get(summary.conversation_id)
            if cached is not None and cached[0] == summary.updated_at:
                rows.append(cached[1])
                continue
            row = self._row(summary)
            with self._lock:
                self._rows[summary.conversation_id] = (summary.updated_at, row)
            rows.append(row)
        return rows

    def _row(self, summary: RunSummary) -> RunRow:
        if summary.problem is not None:
            return _summary_row(summary, summary.problem)
        try:
            snap = self.store.load(summary.conversation_id)
        except KeyError:  # deleted since it was listed
            return _summary_row(summary, "no longer in the store")
        except StoreError:
            raise
        except Exception as exc:  # a row that cannot be read is listed, with why
            return _summary_row(summary, str(exc))
        return _snapshot_row(snap, summary.updated_at)

    def run(self, run_id: str) -> RunData:
        snap = self.store.load(run_id)
        updated = next((s.updated_at for s in self.store.list() if s.conversation_id == run_id), None)
        row = _snapshot_row(snap, updated)
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
        )

    def signature(self, run_id: str | None = None) -> str:
        parts = [
            f"{s.conversation_id}\t{s.updated_at!r}\t{s.state}"
            for s in self.store.list()
            if run_id is None or s.conversation_id == run_id
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _summary_row(summary: RunSummary, problem: str) -> RunRow:
    return RunRow(
        id=summary.conversation_id,
        agent=summary.agent,
        state=summary.state,
        finished=summary.finished,
        turns=summary.turns,
        updated=summary.updated_at,
        problem=problem,
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

    def runs(self) -> list[RunRow]:
        return [data.row for data in self._load().values()]

    def run(self, run_id: str) -> RunData:
        return self._load()[run_id]

    def signature(self, run_id: str | None = None) -> str:
        stamp = self._stat()
        return hashlib.sha256(f"{stamp}".encode()).hexdigest()[:16]


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
    model = started.data.get("model") if started else None
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
    )
