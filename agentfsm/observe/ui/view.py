"""A run made ready to show: its steps, the history at each, its tool calls, and its graph.

Steps are numbered from 1: step ``k`` is the run after its ``k``-th
transition. Everything a page shows for a step (the history then, what that
step added, the graph with the path so far, the events and tool calls up to
it) is decided here, once, for both the HTML pages and the JSON API.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from agentfsm.machine.state import StoredGraph
from agentfsm.machine.table import REQUESTING, Table
from agentfsm.observe.events import Event
from agentfsm.observe.graph import Graph, build, short_name, stored_table
from agentfsm.observe.ui.history import Growth, growth
from agentfsm.observe.ui.sources import RunData
from agentfsm.result import TraceStep
from agentfsm.wire.messages import blocks

#: Server tools' call blocks, and the suffix of their result blocks (``web_search_tool_result`` …).
SERVER_CALLS = frozenset({"server_tool_use", "mcp_tool_use"})


@dataclass
class ToolCallView:
    """One tool call: what was asked, what came back, how long it took, and when."""

    id: str
    name: str
    kind: str  # "client" or "server"
    #: The step whose reply made the call, and the step that put its result in the history.
    called_at: int | None = None
    answered_at: int | None = None
    input: Any = None
    result: Any = None
    is_error: bool | None = None
    duration_ms: float | None = None
    #: "answered", "committed" (a result saved, not in the history yet), "running" (at the last save),
    #: "unanswered"; for events files "finished" or "started".
    status: str = "answered"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "called_at": self.called_at,
            "answered_at": self.answered_at,
            "input": self.input,
            "result": self.result,
            "is_error": self.is_error,
            "duration_ms": self.duration_ms,
            "status": self.status,
        }


@dataclass
class StepView:
    index: int
    step: TraceStep
    #: What this step did to the history, in words ("" when nothing).
    change: str = ""
    #: The events of this step: those after the previous transition, up to and including its own.
    events: list[Event] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.index,
            "source": self.step.source,
            "dest": self.step.dest,
            "trigger": self.step.trigger,
            "turn": self.step.turn,
            "history_size": list(self.step.history_size) if self.step.history_size else None,
            "change": self.change,
            "events": [e.event for e in self.events],
        }


@dataclass
class RunView:
    data: RunData
    steps: list[StepView]
    graph: Graph
    #: What the graph is drawn on: the table stored with the run, else the base Agent's.
    table: Table | StoredGraph
    #: The Agent class the graph is drawn on (``module:QualName``), and whether it is the run's own: False when
    #: the source holds no graph of the run's class (an events file, a row an earlier agentfsm stored).
    drawn_on: str
    own_graph: bool
    tool_calls: list[ToolCallView]
    #: When each piece of the history appeared; None when the source has no history (events files).
    growth: Growth | None

    @property
    def last(self) -> int:
        return len(self.steps)

    def clamp(self, step: int | None) -> int:
        """A step number that exists (the last one for None or past the end; 1 before the start)."""
        if not self.steps:
            return 0
        if step is None or step > self.last:
            return self.last
        return max(step, 1)

    def path_until(self, step: int) -> list[str]:
        trace = [s.step for s in self.steps[:step]]
        return [trace[0].source, *(s.dest for s in trace)] if trace else []

    def state_at(self, step: int) -> str:
        return self.steps[step - 1].step.dest if step else self.data.row.state

    def drawn(self, path_only: bool = False) -> Graph:
        """The graph to draw: the whole of it, or (``path_only``) what the run went through."""
        return folded(self.graph) if path_only else self.graph

    def graph_at(self, step: int) -> Graph:
        """The graph with the path as it was after ``step`` (the whole path at the last step)."""
        if step >= self.last:
            return self.graph
        trace = [s.step for s in self.steps[:step]]
        return build(self.table, title=self.graph.title, trace=trace, current=self.state_at(step))


def folded(graph: Graph) -> Graph:
    """``graph`` with the states the run never visited folded away: its path's states, the one it is at,
    and the transitions it took (the "path only" view)."""
    keep = set(graph.path) | ({graph.current} if graph.current is not None else set())
    if not keep:
        return graph
    states = tuple(s for s in graph.states if s in keep)
    edges = tuple(e for e in graph.edges if e.count and e.source in keep and e.dest in keep)
    return dataclasses.replace(
        graph,
        states=states,
        edges=edges,
        initial=graph.initial if graph.initial in keep else states[0],
        terminal=graph.terminal & keep,
        waits=graph.waits & keep,
    )


def build_view(data: RunData) -> RunView:
    trace = data.trace
    steps = [StepView(index=k, step=s) for k, s in enumerate(trace, start=1)]
    grown = growth(data.messages, [s.history_size for s in trace]) if data.messages is not None else None
    _describe_changes(steps)
    _place_events(steps, data.events)
    # Drawn on the graph stored with the run, never on its class: importing the module a row names runs code.
    from agentfsm.agent import Agent

    base = Agent.qualified_name()
    own = data.graph is not None or data.row.agent in (None, base)
    drawn_on = (data.row.agent or base) if data.graph is not None else base
    name = short_name(drawn_on)
    title = f"{name} ({data.row.state})" if data.row.finished else f"{name} (at {data.row.state})"
    table = stored_table(data.graph)
    graph = build(table, title=title, trace=trace, current=data.row.state)
    if data.messages is not None and grown is not None:
        calls = _calls_from_history(data, grown)
    else:
        calls = _calls_from_events(data, steps)
    return RunView(
        data=data,
        steps=steps,
        graph=graph,
        table=table,
        drawn_on=drawn_on,
        own_graph=own,
        tool_calls=calls,
        growth=grown,
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _describe_changes(steps: list[StepView]) -> None:
    before: tuple[int, int, int] | None = None
    for view in steps:
        size = view.step.history_size
        if size is None:
            continue
        if before is None:
            view.change = f"history: {_plural(size[0], 'message')}"
        elif size[0] > before[0]:
            view.change = f"+{_plural(size[0] - before[0], 'message')}"
        elif size[0] == before[0] and size[1] > before[1]:
            view.change = f"+{_plural(size[1] - before[1], 'block')} in message {size[0]}"
        elif size[:2] == before[:2] and size[2] > before[2]:
            view.change = f"+{_plural(size[2] - before[2], 'character')} in message {size[0]}"
        elif size < before:
            view.change = "history rewritten"
        before = size


def _place_events(steps: list[StepView], events: list[Event]) -> None:
    """Each event goes to the step its transition closes (later ones, such as run.finished, to the last)."""
    if not steps:
        return
    k = 0
    for event in events:
        steps[min(k, len(steps) - 1)].events.append(event)
        if event.event == "transition":
            k += 1


def _calls_from_history(data: RunData, grown: Growth) -> list[ToolCallView]:
    assert data.messages is not None
    calls: dict[str, ToolCallView] = {}
    for i, message in enumerate(data.messages):
        for j, block in enumerate(blocks(message)):
            kind = block.get("type")
            at = grown.blocks[i][j] if data.trace else None
            if kind == "tool_use" or kind in SERVER_CALLS:
                tid = str(block.get("id"))
                calls[tid] = ToolCallView(
                    id=tid,
                    name=str(block.get("name")),
                    kind="client" if kind == "tool_use" else "server",
                    called_at=_arrival(data.trace, at),
                    input=block.get("input"),
                    duration_ms=data.tool_ms.get(tid),
                    status="unanswered",
                )
            elif isinstance(kind, str) and kind.endswith("tool_result") and "tool_use_id" in block:
                call = calls.get(str(block["tool_use_id"]))
                if call is not None:
                    call.answered_at = at
                    call.result = block.get("content")
                    call.is_error = bool(block.get("is_error")) or _server_error(block)
                    call.status = "answered"
    if not data.row.finished:  # the calls of a reply not in the history yet: being run when the run stopped
        arrived = _arrival(data.trace, len(data.trace))
        for block in data.reply:
            tid = str(block.get("id"))
            if block.get("type") == "tool_use" and tid not in calls:
                calls[tid] = ToolCallView(
                    id=tid,
                    name=str(block.get("name")),
                    kind="client",
                    called_at=arrived,
                    input=block.get("input"),
                    status="unanswered",
                )
    for tid, committed in data.committed.items():
        call = calls.get(tid)
        if call is not None and call.status == "unanswered":
            call.status, call.result = "committed", committed.get("content")
            call.is_error, call.duration_ms = bool(committed.get("is_error")), committed.get("duration_ms")
    for tid in data.running:
        call = calls.get(tid)
        if call is not None and call.status == "unanswered":
            call.status = "running"
    return list(calls.values())


def _arrival(trace: list[TraceStep], at: int | None) -> int | None:
    """The step at which the reply holding a block arrived: the last one out of ``requesting`` by ``at``.

    (A reply joins the history one step later, with the transition that acts on it.)
    """
    if at is None:
        return None
    for k in range(min(at, len(trace)), 0, -1):
        if trace[k - 1].source == REQUESTING:
            return k
    return at


def _server_error(block: dict[str, Any]) -> bool:
    content = block.get("content")
    return isinstance(content, dict) and str(content.get("type", "")).endswith("_error")


def _calls_from_events(data: RunData, steps: list[StepView]) -> list[ToolCallView]:
    started: dict[str, int] = {}
    finished: dict[str, int] = {}
    for view in steps:
        for event in view.events:
            tid = str(event.data.get("tool_use_id"))
            if event.event == "tool.started":
                started.setdefault(tid, view.index)
            elif event.event in ("tool.finished", "tool.interrupted"):
                finished.setdefault(tid, view.index)
    return [
        ToolCallView(
            id=record.id,
            name=record.name,
            kind="client",
            called_at=started.get(record.id, finished.get(record.id)),
            answered_at=finished.get(record.id),
            is_error=record.is_error,
            duration_ms=record.duration_ms,
            status="finished" if record.id in finished else "started",
        )
        for record in data.tool_records
    ]


def step_json(view: RunView, step: int) -> dict[str, Any]:
    """``/api/runs/<id>/steps/<n>``: the step, the history as it stood after it, and what it added."""
    from agentfsm.observe.ui.history import added, history_at

    this = view.steps[step - 1]
    body: dict[str, Any] = {"run": view.data.row.id, **this.as_json()}
    body["path"] = view.path_until(step)
    messages = view.data.messages
    if messages is None or view.growth is None:
        body.update(messages=None, added=None, exact=False, note="an events file holds no message content")
        return body
    grown = view.growth
    body["exact"] = grown.exact
    if not grown.exact:
        body.update(messages=messages, added=[], note=grown.problem)
        return body
    body["messages"] = history_at(messages, this.step.history_size)
    body["added"] = added(grown, messages, step) if step > 1 else []
    last = len(body["messages"]) - 1
    body["extended_later"] = last >= 0 and any(
        at > step
        for at in [*grown.blocks[last], *(a for (i, _), cuts in grown.cuts.items() if i == last for _, a in cuts)]
    )
    return body
