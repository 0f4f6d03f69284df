"""Replay: a run's recorded events, read back offline into its transition trace.

A run's events, written as JSON lines (``agentfsm run --events run.jsonl``,
``agentfsm demo --json``, the ``EventsWriter`` structlog processor, or
``write_events(result.events, path)``), hold every transition with its turn.
Reading them back gives the same trace the run had, with no API call, so a
run can be drawn on its graph and compared with a golden trace long after it
happened. Both the flat structlog form (``{"event": ..., "source": ...}``) and
the nested ``Event`` form (``{"event": ..., "data": {...}}``) are read; lines
of other loggers in the same file are skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, MutableMapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, cast

from pydantic import BaseModel

from agentfsm.errors import EventsFileError
from agentfsm.machine.table import REQUESTING
from agentfsm.observe.events import EVENT_NAMES, Event, Level
from agentfsm.redaction import redact
from agentfsm.result import TraceStep

if TYPE_CHECKING:
    from agentfsm.agent import Agent

_HEADER_KEYS = ("event", "level", "conversation_id", "turn", "state", "timestamp")
_LEVELS: dict[str, Level] = {
    "debug": "debug",
    "info": "info",
    "msg": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "exception": "error",
    "critical": "error",
    "fatal": "error",
}

EventSource = str | Path | IO[str] | Iterable[str]


class ReplayedRun(BaseModel):
    """One conversation read back from its events."""

    conversation_id: str
    trace: list[TraceStep]
    #: From ``run.finished``; None when the file ends before the run did.
    final_state: str | None = None
    reason: str | None = None
    stop_reason: str | None = None
    turns: int = 0
    #: The Agent class that ran, as ``module:QualName`` (from ``run.started``), when recorded.
    agent: str | None = None
    events: list[Event]

    @property
    def path(self) -> list[str]:
        """The states visited, in order (as ``RunResult.path``)."""
        if not self.trace:
            return []
        return [self.trace[0].source, *(step.dest for step in self.trace)]

    @property
    def state(self) -> str:
        """Where the run ended, or got to when the events stop."""
        if self.final_state is not None:
            return self.final_state
        return self.trace[-1].dest if self.trace else REQUESTING

    def graph(self, format: str = "mermaid", *, agent: type[Agent] | None = None) -> str:
        """The path drawn on ``agent``'s graph (an Agent class; by default the class that ran when this process
        has imported it already, else the base Agent's: the name an events file records is never imported)."""
        from agentfsm.observe.graph import path_graph

        return path_graph(self.trace, self.state, format, agent=agent or self.agent)


# --- reading ------------------------------------------------------------------------------------------


def read_events(source: EventSource, *, name: str | None = None) -> list[Event]:
    """The agentfsm events in ``source``: a path, an open text file, or lines of JSON."""
    return [event for _, event in _numbered_events(source, name)]


def _numbered_events(source: EventSource, name: str | None) -> Iterator[tuple[int, Event]]:
    if isinstance(source, str | Path):
        path = Path(source)
        label = name or str(path)
        try:
            with path.open(encoding="utf-8") as fh:
                yield from _parse_lines(fh, label)
        except FileNotFoundError as exc:
            raise EventsFileError("no such file", label) from exc
        except UnicodeDecodeError as exc:
            raise EventsFileError(f"not UTF-8 text ({exc.reason})", label) from exc
        except IsADirectoryError as exc:
            raise EventsFileError("is a directory, not an events file", label) from exc
        return
    yield from _parse_lines(source, name or "events")


def _parse_lines(lines: Iterable[str], label: str) -> Iterator[tuple[int, Event]]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise EventsFileError(f"not a JSON line ({exc})", label, n) from exc
        if not isinstance(obj, dict):
            raise EventsFileError(f"expected a JSON object, got {type(obj).__name__}", label, n)
        event = parse_event(obj, label, n)
        if event is not None:
            yield n, event


def parse_event(obj: dict[str, Any], label: str = "events", line: int | None = None) -> Event | None:
    """One JSON object as an ``Event``; None when it is not one of agentfsm's events (another logger's line)."""
    name = obj.get("event")
    if not isinstance(name, str) or name not in EVENT_NAMES:
        return None
    conversation_id, turn, state = obj.get("conversation_id"), obj.get("turn"), obj.get("state")
    if not isinstance(conversation_id, str) or not isinstance(state, str):
        raise EventsFileError(f"event {name!r} lacks its conversation_id or state", label, line)
    if not isinstance(turn, int) or isinstance(turn, bool):
        raise EventsFileError(f"event {name!r} has no integer turn", label, line)
    nested = obj.get("data")
    if isinstance(nested, dict) and set(obj) <= {*_HEADER_KEYS, "data"}:
        data: dict[str, Any] = nested
    else:
        data = {k: v for k, v in obj.items() if k not in _HEADER_KEYS}
    level = _LEVELS.get(str(obj.get("level", "info")).lower(), "info")
    return Event(
        event=name,
        level=level,
        conversation_id=conversation_id,
        turn=turn,
        state=state,
        timestamp=_timestamp(obj.get("timestamp")),
        data=data,
    )


def _timestamp(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


# --- replaying ----------------------------------------------------------------------------------------


def replay(source: EventSource | Iterable[Event], *, name: str | None = None) -> list[ReplayedRun]:
    """Every conversation in ``source`` (a file, lines, or ``Event`` models), in order of first appearance."""
    if isinstance(source, str | Path):
        numbered: Iterable[tuple[int | None, Event]] = _numbered_events(source, name)
        label = name or str(source)
    else:
        items = list(cast(Iterable[Any], source))
        label = name or "events"
        if all(isinstance(item, Event) for item in items):
            numbered = [(None, item) for item in items]
        else:
            numbered = _numbered_events(cast(Iterable[str], items), label)
    runs: dict[str, _Builder] = {}
    for line, event in numbered:
        builder = runs.setdefault(event.conversation_id, _Builder(event.conversation_id, label))
        builder.add(event, line)
    if not runs:
        raise EventsFileError("holds no agentfsm events", label)
    return [b.done() for b in runs.values()]


def replay_one(source: EventSource | Iterable[Event], conversation_id: str | None = None) -> ReplayedRun:
    """The one conversation in ``source`` (or the one named ``conversation_id``)."""
    runs = replay(source)
    label = str(source) if isinstance(source, str | Path) else "events"
    if conversation_id is not None:
        for run in runs:
            if run.conversation_id == conversation_id:
                return run
        known = ", ".join(r.conversation_id for r in runs)
        raise EventsFileError(f"no conversation {conversation_id!r}; it holds: {known}", label)
    if len(runs) > 1:
        known = ", ".join(r.conversation_id for r in runs)
        raise EventsFileError(f"holds {len(runs)} conversations ({known}); choose one by its id", label)
    return runs[0]


class _Builder:
    def __init__(self, conversation_id: str, label: str) -> None:
        self.conversation_id = conversation_id
        self.label = label
        self.trace: list[TraceStep] = []
        self.events: list[Event] = []
        self.finished: Event | None = None

    def add(self, event: Event, line: int | None) -> None:
        self.events.append(event)
        if event.event == "transition":
            source, dest, trigger = (event.data.get(k) for k in ("source", "dest", "trigger"))
            if not (isinstance(source, str) and isinstance(dest, str) and isinstance(trigger, str)):
                raise EventsFileError("a transition event needs string source, dest and trigger", self.label, line)
            if self.trace and self.trace[-1].dest != source:
                raise EventsFileError(
                    f"conversation {self.conversation_id}: a transition leaves {source!r} but the previous one "
                    f"ended in {self.trace[-1].dest!r} (events missing or out of order)",
                    self.label,
                    line,
                )
            size: Any = event.data.get("history_size")
            valid = isinstance(size, list | tuple) and len(size) == 3 and all(type(n) is int for n in size)
            self.trace.append(
                TraceStep(
                    source=source,
                    dest=dest,
                    trigger=trigger,
                    turn=event.turn,
                    history_size=(size[0], size[1], size[2]) if valid else None,
                )
            )
        elif event.event == "run.finished":
            final = event.data.get("final_state")
            if self.trace and final != self.trace[-1].dest:
                raise EventsFileError(
                    f"conversation {self.conversation_id}: run.finished says {final!r} but the last transition "
                    f"went to {self.trace[-1].dest!r}",
                    self.label,
                    line,
                )
            self.finished = event

    def done(self) -> ReplayedRun:
        fin = self.finished.data if self.finished else {}
        final_state, reason, stop_reason = fin.get("final_state"), fin.get("reason"), fin.get("stop_reason")
        turns = fin.get("turns")
        return ReplayedRun(
            conversation_id=self.conversation_id,
            trace=self.trace,
            final_state=final_state if isinstance(final_state, str) else None,
            reason=reason if isinstance(reason, str) else None,
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            turns=turns if isinstance(turns, int) else max((e.turn for e in self.events), default=0),
            agent=next(
                (str(e.data["agent"]) for e in self.events if e.event == "run.started" and e.data.get("agent")), None
            ),
            events=self.events,
        )


# --- writing ------------------------------------------------------------------------------------------


def event_record(event: Event) -> dict[str, Any]:
    """An ``Event`` in the flat form structlog's JSONRenderer writes (and ``replay`` reads)."""
    return {
        "event": event.event,
        "level": event.level,
        "conversation_id": event.conversation_id,
        "turn": event.turn,
        "state": event.state,
        "timestamp": event.timestamp,
        **event.data,
    }


def write_events(events: Iterable[Event], target: str | Path | IO[str]) -> None:
    """Write events (e.g. ``result.events``) as JSON lines that ``agentfsm replay`` reads."""
    with EventsWriter(target) as writer:
        for event in events:
            writer.write(event_record(event))


class EventsWriter:
    """A structlog processor that writes agentfsm's events to a file as JSON lines, for replay.

    Add it to your structlog configuration (before the renderer)::

        structlog.configure(processors=[EventsWriter("run.jsonl"), structlog.dev.ConsoleRenderer()])

    Only agentfsm's events are written (other log lines pass through
    untouched), and API keys are scrubbed. The event dict is passed on
    unchanged, so the rest of the chain renders it as usual.
    """

    def __init__(self, target: str | Path | IO[str], *, append: bool = False) -> None:
        if isinstance(target, str | Path):
            self._file: IO[str] = Path(target).open("a" if append else "w", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        else:
            self._file = target
            self._owned = False

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event_dict.get("event") in EVENT_NAMES and "conversation_id" in event_dict:
            record = {"event": event_dict["event"], **event_dict}
            record.setdefault("level", _LEVELS.get(method_name, "info"))
            record.setdefault("timestamp", time.time())
            self.write(record)
        return event_dict

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(redact(record), default=str, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._owned and not self._file.closed:
            self._file.close()

    def __enter__(self) -> EventsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
