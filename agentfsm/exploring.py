"""``explore``: drive an agent through every sequence of replies up to a depth, and check every path.

The machine is a table, so what it can do next depends on a small part of its state. ``explore`` runs
the agent, on the simulator (the real client over the simulator's HTTP transport), through every
sequence of replies drawn from a reply *alphabet* — each stop reason, each client tool called with
valid input, and (``faults=True``) malformed replies, HTTP 429/500/529 and broken streams — up to
``depth`` requests; at a waiting state it takes every way out (every trigger; approve all, deny all);
with ``crashes=True`` the process "dies" before every save the path makes (``Crash``), and a fresh
agent carries the conversation on from the store (``agent.load`` + the driver), once per path.

Checked on every path:

* it ends (no exception) in a terminal state or a wait, within its budgets: turns, continuations,
  pause resumes and empty retries within the policy's limits (a path cut at ``depth`` is answered
  with plain ``end_turn`` replies, at most ``CLOSING``, and must end on them);
* the simulator rejected none of its requests (the simulator validates each request as the API does,
  ``agentfsm.sim.validation``: a 400 there is a request the real API would refuse);
* no tool that is not ``idempotent`` ran twice for one ``tool_use`` id (real executions, counted
  around the agent's executor);
* the final history keeps the wire rules (``agentfsm.wire.messages.history_problems``).

**Merging.** Replies are answered in order, so a path is a prefix tree. Where a path asks for its next
reply (or stops to wait), its future depends only on what steers the table, and what is sent: the
state, the ``RunState`` fields guards and actions read (counters, continuation mode, pending kind,
model, ``max_tokens``, the compaction and fallback flags, the wait), the *shape* of the history (each
message's role and block types — not the text, which no guard reads), requests sent since the last
save (a broken stream's resend), and the depth left. Two paths at equal keys have the same futures, so
the second is *merged*: counted, checked up to there, not explored further. A path that crashed is not
crashed again (one crash per path), and merges into an uncrashed path at the same key, which explores
every crash of the future. A custom guard that reads message text breaks the equivalence; pass
``merge=False`` to explore every path (slower, exponentially).

Every counterexample comes with a Python script (``Counterexample.script``): pasted into a file, it
builds the same ``Simulator([...])``, the agent (``Class(client=..., logger=None)``), the store and the
crash, and reproduces the failure. ``agentfsm explore MODULE:Class --depth 4`` prints the same.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agentfsm.clock import use as use_clock
from agentfsm.errors import ConfigurationError, InvalidTransitionError
from agentfsm.machine.table import AWAITING_APPROVAL, TERMINAL_STATES
from agentfsm.result import RunResult
from agentfsm.sim import ErrorReply, ScriptedReply, SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.validation import PREFILL_NOT_SUPPORTED
from agentfsm.stores.memory import MemoryStore
from agentfsm.wire.messages import history_problems

if TYPE_CHECKING:
    import anthropic

    from agentfsm.agent import Agent
    from agentfsm.stores.base import Snapshot
    from agentfsm.tools.calls import ToolCall, ToolResult
    from agentfsm.tools.definition import Tool

__all__ = [
    "CLOSING",
    "Counterexample",
    "Crash",
    "CrashingStore",
    "Exploration",
    "Letter",
    "agent_with_client",
    "carry_on",
    "explore",
]

#: Plain ``end_turn`` replies a path cut at ``depth`` gets to end on.
CLOSING = 3
PROMPT = "Explore."
CONVERSATION = "explored"
Driver = Literal["run", "arun", "stream", "astream"]


class Crash(BaseException):
    """The process "died" (raised by ``CrashingStore`` before a save). A ``BaseException``: nothing catches it."""


class CrashingStore:
    """A store that raises ``Crash`` just before its ``crash_before_save``-th save (None: never), once.

    Everything else goes to ``inner``; ``saves`` counts the saves asked for, crashed or not.
    """

    def __init__(self, inner: Any, crash_before_save: int | None = None) -> None:
        self.inner = inner
        self.crash_before_save = crash_before_save
        self.saves = 0

    def save(self, snapshot: Snapshot) -> None:
        self.saves += 1
        if self.saves == self.crash_before_save:
            raise Crash(f"crashed before save {self.saves}")
        self.inner.save(snapshot)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def carry_on(
    agent: Agent,
    driver: Driver,
    store: Any,
    *,
    prompt: str | None = None,
    conversation_id: str = CONVERSATION,
    trigger: str | None = None,
    approve: bool | None = None,
    deny: Sequence[str] | None = None,
) -> RunResult:
    """Start (``prompt``) or carry on (after a crash, or deciding a wait) the stored conversation, under ``driver``.

    What ``agent.run``/``agent.resume`` do, for any of the four drivers: a counterexample's script calls it.
    """
    asynchronous = driver.startswith("a")
    if prompt is not None:
        conv = agent.start(prompt, conversation_id=conversation_id, store=store, asynchronous=asynchronous)
    else:
        conv = agent.load(
            conversation_id, store=store, trigger=trigger, approve=approve, deny=deny, asynchronous=asynchronous
        )
        if conv.waiting is not None:
            conv.decide()
    if driver == "run":
        return conv.run()
    if driver == "arun":
        return asyncio.run(conv.arun())
    if driver == "stream":
        events = list(conv.stream())
    else:

        async def collect() -> list[Any]:
            return [event async for event in conv.astream()]

        events = asyncio.run(collect())
    result = getattr(events[-1], "result", None)
    if not isinstance(result, RunResult):  # every stream ends with its ResultEvent
        raise AssertionError(f"a stream ends with its ResultEvent; this one ended with {events[-1]!r}")
    return result


def agent_with_client(agent: Agent, client: anthropic.Anthropic | anthropic.AsyncAnthropic) -> Agent:
    """A new agent of ``agent``'s class and settings (tools, policy, executor, ...) on ``client``, as a new process
    would make it: nothing it learnt while running (which models take no prefill) is carried over."""
    import anthropic

    made = type(agent).__new__(type(agent))
    made.__dict__.update(agent.__dict__)
    made._client, made._aclient = None, None
    if isinstance(client, anthropic.AsyncAnthropic):
        made._aclient = client
    else:
        made._client = client
    return made


# --- the reply alphabet ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letter:
    """One reply of the alphabet: its name, the reply, and the Python source that builds it."""

    name: str
    reply: ScriptedReply | ErrorReply
    source: str
    fault: bool = False


def _example(schema: Mapping[str, Any], depth: int = 0) -> Any:
    """A small value valid under a JSON schema (the tool input schemas ``@tool`` writes)."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _example(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: _example(props.get(k, {}), depth + 1) for k in schema.get("required", []) if depth < 8}
    if kind == "array":
        return [_example(schema.get("items", {}), depth + 1)] * int(schema.get("minItems", 0) or 0)
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength", 1)))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x"


def alphabet(agent: Agent, *, faults: bool = True) -> list[Letter]:
    """The replies ``explore`` draws from for ``agent``: every stop reason, its tools, and (``faults``) failures."""
    tools: dict[str, Tool] = agent.tool_map
    letters = [Letter("end_turn", r.text("Done."), 'r.text("Done.")')]
    for name, t in tools.items():
        args = _example(t.input_schema)
        letters.append(Letter(f"tool_use:{name}", r.tool_use(name, args), f"r.tool_use({name!r}, {args!r})"))
    letters += [
        Letter("max_tokens", r.max_tokens("A long answer, cut"), 'r.max_tokens("A long answer, cut")'),
        Letter("pause_turn", r.pause_turn(), "r.pause_turn()"),
        Letter("refusal", r.refusal(), "r.refusal()"),
        Letter("stop_sequence", r.stop_sequence("Done", "END"), 'r.stop_sequence("Done", "END")'),
        Letter("empty_end_turn", r.empty_end_turn(), "r.empty_end_turn()"),
        Letter("context_window", r.context_window_exceeded("Long"), 'r.context_window_exceeded("Long")'),
    ]
    if tools:
        name = next(iter(tools))
        letters.append(
            Letter("max_tokens_tool_use", r.truncated_tool_use(name, '{"'), f"r.truncated_tool_use({name!r}, '{{\"')")
        )
    if agent.policy.compact_at_input_tokens is not None:
        letters.append(Letter("compaction", r.compaction(), "r.compaction()"))
    if not faults:
        return letters
    letters += [
        Letter("unknown_stop_reason", r.unknown("mystery"), 'r.unknown("mystery")', True),
        Letter("null_stop_reason", r.unknown(None), "r.unknown(None)", True),
        Letter("unknown_tool", r.tool_use("no_such_tool", {}), 'r.tool_use("no_such_tool", {})', True),
        Letter("http_429", r.rate_limited(), "r.rate_limited()", True),
        Letter("http_500", r.server_error(), "r.server_error()", True),
        Letter("http_529", r.overloaded(), "r.overloaded()", True),
    ]
    if tools:
        name = next(iter(tools))
        bad = {"__not_an_argument__": [1]}
        letters.append(Letter("bad_tool_input", r.tool_use(name, bad), f"r.tool_use({name!r}, {bad!r})", True))
    for fault in ("drop", "error_event", "no_message_delta"):
        letters.append(
            Letter(
                f"stream_{fault}",
                r.with_fault(r.text("Done."), fault),
                f'r.with_fault(r.text("Done."), {fault!r})',
                True,
            )
        )
    return letters


_CLOSER = Letter("closing", r.text("Done."), 'r.text("Done.")')

# --- paths, and replaying one -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A way out of a wait: a trigger, or approving (or denying) every call awaiting approval."""

    trigger: str | None = None
    approve: bool | None = None
    deny: tuple[str, ...] | None = None

    def kwargs(self) -> dict[str, Any]:
        if self.approve:
            return {"approve": True}
        if self.deny is not None:
            return {"deny": list(self.deny)}
        return {"trigger": self.trigger}

    def label(self) -> str:
        return "approve all" if self.approve else "deny all" if self.deny is not None else f"trigger {self.trigger}"


@dataclass(frozen=True)
class Path:
    letters: tuple[Letter, ...] = ()
    decisions: tuple[Decision, ...] = ()
    crash_before_save: int | None = None

    def describe(self) -> str:
        parts = [letter.name for letter in self.letters]
        parts += [d.label() for d in self.decisions]
        if self.crash_before_save is not None:
            parts.append(f"crash before save {self.crash_before_save}")
        return ", ".join(parts) or "(no reply)"


class _NeedReply(BaseException):
    """Raised by the simulator's last script item: the path asks for a reply it does not hold yet."""


@dataclass
class _Run:
    """What replaying one path found."""

    calls: list[tuple[dict[str, Any], bool]] = field(default_factory=list)  # carry_on's kwargs; crashed?
    problems: list[str] = field(default_factory=list)
    result: RunResult | None = None
    key: tuple[Any, ...] | None = None  # where it stopped to ask for a reply or a decision
    asks: Literal["reply", "decision", "end", "skip"] = "end"
    waiting_calls: tuple[str, ...] = ()
    saves: int = 0
    segment_start: int = 0  # saves made before the path's last letter was asked for
    segment_end: int = 0  # and before it asked beyond its letters (the closing replies' saves are not crashed)


class _Counting:
    """Around the agent's executor: counts the real executions of each ``tool_use`` id."""

    def __init__(self, inner: Any, counts: dict[str, int]) -> None:
        self.inner = inner
        self.counts = counts

    def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        for call in calls:
            self.counts[call.id] = self.counts.get(call.id, 0) + 1
        results: list[ToolResult] = self.inner.execute(calls, tools, timeout)
        return results

    async def aexecute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        for call in calls:
            self.counts[call.id] = self.counts.get(call.id, 0) + 1
        results: list[ToolResult] = await self.inner.aexecute(calls, tools, timeout)
        return results


_STEERING_SKIP = {
    "messages", "request", "reply", "answer", "reason", "error", "usage", "cost_usd", "trace", "tool_results",
    "tools_started", "tool_ms", "elapsed_s", "revision", "wait_token", "pending_decision", "input",
    "replaced_messages", "graph", "schema_version", "conversation_id", "agent", "container", "credit_token",
    "compaction_requested_at", "compaction_applied_at",
}  # fmt: skip


def _shape(messages: Sequence[Mapping[str, Any]]) -> tuple[Any, ...]:
    out = []
    for m in messages:
        content = m.get("content")
        kinds = ("str",) if isinstance(content, str) else tuple(str(b.get("type")) for b in content or ())
        out.append((m.get("role"), kinds))
    return tuple(out)


def _steering(snap: Snapshot | None) -> tuple[Any, ...]:
    if snap is None:
        return ()
    fields = snap.model_dump(mode="json", exclude=_STEERING_SKIP)
    flags = (snap.container is not None, snap.credit_token is not None, snap.compaction_requested_at is not None)
    return (json.dumps(fields, sort_keys=True), flags, _shape(snap.messages))


@dataclass
class Counterexample:
    """A path that broke a check: what broke, the path, and a script that reproduces it."""

    problems: list[str]
    path: str
    script: str


@dataclass
class Exploration:
    """What ``explore`` found: counts, time, and every counterexample (``ok`` when there is none)."""

    agent: str
    depth: int
    paths: int = 0
    merged: int = 0
    ended: int = 0
    crashes: int = 0
    decisions: int = 0
    seconds: float = 0.0
    letters: list[str] = field(default_factory=list)
    counterexamples: list[Counterexample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.counterexamples

    def summary(self) -> str:
        """One paragraph: the counts, then each counterexample with its script."""
        lines = [
            f"explored {self.agent} to depth {self.depth}: {self.paths} paths run ({self.ended} ended, "
            f"{self.merged} merged into an equivalent one, {self.crashes} with a crash and resume, "
            f"{self.decisions} deciding a wait) "
            f"over {len(self.letters)} replies in {self.seconds:.1f} s; "
            f"{len(self.counterexamples)} counterexample(s)"
        ]
        for i, c in enumerate(self.counterexamples, 1):
            lines += ["", f"counterexample {i}: {c.path}", *(f"  - {p}" for p in c.problems), "", c.script]
        return "\n".join(lines)


class _Explorer:
    def __init__(
        self, agent: Agent, depth: int, faults: bool, crashes: bool, driver: Driver, merge: bool, limit: int
    ) -> None:
        self.agent = agent
        self.cls = type(agent)
        self.depth = depth
        self.crashes = crashes
        self.driver = driver
        self.merge = merge
        self.limit = limit
        self.letters = alphabet(agent, faults=faults)
        self.table = self.cls.table()
        self.idempotent = {name: t.idempotent for name, t in agent.tool_map.items()}
        self.seen: set[tuple[Any, ...]] = set()
        self.found = Exploration(agent=self.cls.__qualname__, depth=depth, letters=[x.name for x in self.letters])
        self.reported: set[tuple[str, ...]] = set()

    # -- one path ---------------------------------------------------------------------------------------

    def fresh(self, sim: Simulator, counts: dict[str, int]) -> Agent:
        """A new agent, as a new process would make it: same settings, a client of the simulator."""
        client = sim.async_client(max_retries=0) if self.driver.startswith("a") else sim.client(max_retries=0)
        agent = agent_with_client(self.agent, client)
        agent.logger = None
        agent.executor = _Counting(self.agent.executor, counts)
        return agent

    def replay(self, path: Path, closing: bool) -> _Run:
        run = _Run()
        asked: list[SimRequest] = []
        saves_then: list[int] = []  # saves made before each request the script answered (or asked for)
        store = CrashingStore(MemoryStore(), path.crash_before_save)

        def answer(reply: ScriptedReply | ErrorReply) -> Any:
            def item(request: SimRequest) -> ScriptedReply | ErrorReply:
                saves_then.append(store.saves)
                return reply

            return item

        snaps: list[Snapshot | None] = []  # the stored state where the path asked beyond its letters

        def ask(request: SimRequest) -> ScriptedReply:
            asked.append(request)
            saves_then.append(store.saves)
            snaps.append(_load(store.inner))
            raise _NeedReply

        def close(request: SimRequest) -> ScriptedReply | ErrorReply:  # at the depth: where it asked; a closing reply
            asked.append(request)
            saves_then.append(store.saves)
            snaps.append(_load(store.inner))
            return _CLOSER.reply

        tail: list[Any] = [close, *[_CLOSER.reply] * (CLOSING - 1)] if closing else [ask]
        sim = Simulator([*(answer(x.reply) for x in path.letters), *tail], auto_compact=True)
        counts: dict[str, int] = {}
        decisions = list(path.decisions)
        kwargs: dict[str, Any] = {"prompt": PROMPT}
        for _ in range(2 * self.depth + 2 * CLOSING + 4):  # every call decides a wait or carries on a crash
            crashed = False
            try:
                run.result = carry_on(self.fresh(sim, counts), self.driver, store, **kwargs)
            except Crash:
                crashed = True
            except _NeedReply:
                run.asks = "reply"
            except (InvalidTransitionError, ConfigurationError) as exc:
                if "prompt" in kwargs:
                    run.problems.append(f"the run raised {type(exc).__name__}: {exc}")
                else:  # a trigger whose guards do not pass here: not a way out of this wait
                    run.asks = "skip"
                    return run
            except Exception as exc:
                run.problems.append(f"the run raised {type(exc).__name__}: {exc}")
            run.calls.append(({k: v for k, v in kwargs.items() if v is not None}, crashed))
            if crashed:
                kwargs = {}
                continue
            if run.result is not None and run.result.final_state == "waiting" and decisions:
                kwargs = decisions.pop(0).kwargs()
                run.result = None
                continue
            break
        else:
            run.problems.append("the path did not end: too many resumes")
        run.saves = store.saves
        self.check(run, sim, counts, store)
        left = self.depth - len(path.letters)
        n = len(path.letters)
        run.segment_start = saves_then[n - 1] if 0 < n <= len(saves_then) else 0
        run.segment_end = saves_then[n] if closing and len(saves_then) > n else store.saves
        if run.problems:
            return run
        if run.result is not None and run.result.final_state == "waiting":
            run.asks = "decision"
            run.waiting_calls = tuple(c.id for c in run.result.pending_tool_calls)
            run.key = ("decision", _steering(_load(store.inner)), left, len(path.decisions))
        elif asked:  # it asked for a reply beyond its letters (and, at the depth, was answered by the closing ones)
            # requests sent since the last save: a broken stream's resend is not a transition
            since = sum(1 for k in saves_then if k == saves_then[-1])
            run.key = ("reply", _steering(snaps[-1]), _shape(asked[-1].messages), asked[-1].max_tokens, since, left)
        return run

    def check(self, run: _Run, sim: Simulator, counts: dict[str, int], store: CrashingStore) -> None:
        for q in sim.requests:
            if q.status != 400 or q.error == PREFILL_NOT_SUPPORTED:
                continue  # a refused prefill is how the machine learns a model takes none: it then asks without
            if not (q.error or "").startswith("simulator script exhausted"):
                run.problems.append(f"request #{q.n} was refused by the API's rules (HTTP 400): {q.error}")
            else:
                run.problems.append(
                    f"the run did not end on {CLOSING} plain end_turn replies after depth {self.depth}: it sent "
                    f"request #{q.n}"
                )
        names = {
            b.get("id"): b.get("name")
            for q in sim.requests
            for m in q.messages
            if isinstance(m.get("content"), list)
            for b in m["content"]
            if isinstance(b, dict) and b.get("type") == "tool_use"
        }
        result = run.result
        if result is not None:
            for m in result.messages:
                content = m.get("content")
                for b in content if isinstance(content, list) else ():
                    if isinstance(b, dict) and b.get("type") == "tool_use":
                        names[b.get("id")] = b.get("name")
        for tool_id, n in counts.items():
            if n > 1 and not self.idempotent.get(str(names.get(tool_id)), False):
                run.problems.append(f"tool {names.get(tool_id)!r} (not idempotent) ran {n} times for {tool_id}")
        if result is None:
            return
        if result.final_state not in (*TERMINAL_STATES, "waiting"):
            run.problems.append(f"the run ended in {result.final_state!r}, neither terminal nor waiting")
        policy = self.agent.policy
        limits = {"turns": policy.max_turns, "continuations": policy.max_continuations}
        limits |= {"pause_resumes": policy.max_pause_resumes, "empty_retries": policy.max_empty_retries}
        snap = _load(store.inner)
        if snap is not None:
            for name, limit in limits.items():
                if getattr(snap.counters, name) > limit:
                    run.problems.append(f"{name} went to {getattr(snap.counters, name)}, over the policy's {limit}")
        problems = history_problems(result.messages, sending=False)
        run.problems += [f"the final history breaks a wire rule: {p} ({rule})" for p, rule in problems]

    # -- the search -------------------------------------------------------------------------------------

    def search(self) -> Exploration:
        start = time.perf_counter()
        frontier: list[tuple[Path, bool]] = [(Path(), self.crashes)]  # (path, may crash below it)
        from agentfsm.testing import FakeClock  # testing re-exports explore: imported here, not at the top

        with use_clock(FakeClock()):  # a broken stream's backoff moves a clock, it does not sleep
            while frontier and self.found.paths < self.limit:
                level, frontier = frontier, []
                for path, may_crash in level:
                    frontier += self.expand(path, may_crash)
        self.found.seconds = time.perf_counter() - start
        return self.found

    def expand(self, path: Path, may_crash: bool) -> list[tuple[Path, bool]]:
        run = self.visit(path)
        if run is None:
            return []
        children: list[tuple[Path, bool]] = []
        if may_crash:
            for n in range(max(run.segment_start, 1) + 1, run.segment_end + 1):
                crashed = Path(path.letters, path.decisions, n)
                self.found.crashes += 1
                again = self.visit(crashed)
                if again is not None:
                    children += self.children(crashed, again, False)
        return self.children(path, run, may_crash) + children

    def children(self, path: Path, run: _Run, may_crash: bool) -> list[tuple[Path, bool]]:
        if run.asks == "reply":
            return [(Path((*path.letters, x), path.decisions, path.crash_before_save), may_crash) for x in self.letters]
        if run.asks == "decision" and run.result is not None and len(path.decisions) < self.depth:
            state = run.result.waiting or ""
            ways: list[Decision] = []
            if state == AWAITING_APPROVAL:
                ways = [Decision(approve=True), Decision(deny=run.waiting_calls)]
            else:
                ways = [Decision(trigger=t) for t in self.table.triggers(state)]
            self.found.decisions += len(ways)
            return [(Path(path.letters, (*path.decisions, d), path.crash_before_save), may_crash) for d in ways]
        return []

    def visit(self, path: Path) -> _Run | None:
        """Replay ``path``: None when it is merged, broken (reported) or ended; else where it asks to go on."""
        self.found.paths += 1
        run = self.replay(path, closing=len(path.letters) >= self.depth)
        if run.problems:
            self.report(path, run)
            return None
        if run.asks == "end":
            self.found.ended += 1
        if run.key is None:  # ended before it asked for more: only its crashes are left to try
            return run if path.crash_before_save is None and self.crashes else None
        if self.merge and run.key in self.seen:
            self.found.merged += 1
            return None
        self.seen.add(run.key)
        return run

    def report(self, path: Path, run: _Run) -> None:
        signature = tuple(sorted({re.sub(r"[0-9]+|toolu_\w+", "N", p.split(":")[0]) for p in run.problems}))
        if signature in self.reported:
            return  # one script per kind of failure: the shortest (the search goes breadth first)
        self.reported.add(signature)
        self.found.counterexamples.append(
            Counterexample(problems=run.problems, path=path.describe(), script=self.script(path, run))
        )

    def script(self, path: Path, run: _Run) -> str:
        module = self.cls.__module__
        letters = [x.source for x in path.letters]
        if len(path.letters) >= self.depth:  # the closing replies
            letters += [_CLOSER.source] * CLOSING
        crash = path.crash_before_save
        client = "async_client" if self.driver.startswith("a") else "client"
        crashed = any(c for _, c in run.calls)
        lines = [
            f"# {run.problems[0]}",
            "import contextlib" if crashed else "",
            "from agentfsm import MemoryStore",
            f"from agentfsm.exploring import {'Crash, ' if crashed else ''}CrashingStore, carry_on",
            "from agentfsm.sim import Simulator, replies as r",
            f"from {module} import {self.cls.__qualname__}",
            "",
            f"sim = Simulator([{', '.join(letters)}], auto_compact=True)  # the model, scripted",
            f"store = CrashingStore(MemoryStore(), crash_before_save={crash})",
            "",
            "",
            "def agent():  # a fresh process's agent",
            f"    return {self.cls.__qualname__}(client=sim.{client}(max_retries=0), logger=None)",
            "",
            "",
        ]
        for kwargs, crashed in run.calls:
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            call = f"carry_on(agent(), {self.driver!r}, store{', ' if args else ''}{args})"
            lines.append(f"with contextlib.suppress(Crash):\n    {call}" if crashed else f"result = {call}")
        lines.append("print(result.final_state, result.reason)")
        return "\n".join(line for i, line in enumerate(lines) if line or i > 5)


def _load(store: MemoryStore) -> Snapshot | None:
    try:
        return store.load(CONVERSATION)
    except KeyError:
        return None


def explore(
    agent: Agent | type[Agent],
    depth: int = 4,
    *,
    faults: bool = True,
    crashes: bool = True,
    driver: Driver = "run",
    merge: bool = True,
    limit: int = 1_000_000,
) -> Exploration:
    """Drive ``agent`` through every sequence of replies up to ``depth`` requests and check every path.

    ``agent`` is an Agent (its settings are kept; its client is replaced by the simulator's) or an Agent
    class (made as ``Class()``). ``faults``: malformed replies, HTTP 429/500/529 and broken streams too;
    ``crashes``: a crash before every save of every path, carried on by a fresh agent from the store;
    ``driver``: which of the four drivers runs each path; ``merge=False``: no merging of equivalent paths;
    ``limit``: stop after that many paths. Returns the counts and every counterexample, each with a
    script that reproduces it. The module docstring says what is checked and what is merged.
    """
    if depth < 1:
        raise ConfigurationError(f"explore: depth must be at least 1, got {depth}")
    if isinstance(agent, type):
        agent = agent()
    return _Explorer(agent, depth, faults, crashes, driver, merge, limit).search()
