"""What the durable engines share: a conversation as a workflow, written once over the conversation's step API.

A workflow engine (DBOS, Temporal) records the outcome of each *durable step*
and, after a crash, runs the workflow function again from the top: finished
steps return their recorded outcome instead of running. So the workflow body
(``run_conversation``) is the drivers' loop with the two kinds of I/O made
durable steps and everything else plain code that replays:

* the workflow body interprets the one loop (``agentfsm.machine.loop``), as
  the drivers do; its planning is pure, hooks and guards included, so a
  replay plans the same;
* one API request is one step (``perform_request``); a stream that broke is
  resent when the loop decides so (``core.resend``, in the replayed code), and
  each attempt is its own step;
* each tool call of a reply is a durable step of its own (``perform_tools``
  with one call), the calls' steps run concurrently: the engine's journal
  holds each result as soon as its call finished, and a replay gives back the
  finished ones. The engine records that a call *started* before it runs; a
  step run again after a crash knows an earlier attempt started, so the
  exactly-once rule (``persistence.settle``) answers a non-idempotent call
  with the is_error "interrupted" result instead of running it twice — or,
  if its tool has a ``reconcile`` check, asks it first — and runs an
  ``@tool(idempotent=True)`` call again;
* transitions without I/O fire in the replayed code.

Replay must decide as the first run did, so nothing the workflow reads may
change between runs: wall time is read inside the steps (a budget on
``max_wall_seconds`` sees the recorded times), and what the agent learned of
models that reject prefill (which grows as other conversations run) is not
consulted: prefill or prompt is the model's request rules' (``wire.models``).
Events are not emitted twice: while the engine replays, events are
kept for the result but not logged nor streamed (``Steps.replaying``).

A conversation that stops to wait for a decision from outside (a ``Wait``
state) ends the workflow with its ``RunResult`` in that state, rather than
hanging; the engines do not yet carry a decision into a waiting workflow.
``async def`` hooks and actions are plain code here too: they replay.

Given a ``StoreMirror`` (a worker started with a store), the conversation also
saves its snapshot into that agentfsm store after every transition, as a
conversation run with ``store=`` does, so ``agentfsm runs`` and ``agentfsm ui``
show it (``agentfsm.engines.mirror``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from agentfsm.errors import ConfigurationError, require_conversation_id
from agentfsm.machine import loop
from agentfsm.machine.conversation import Conversation
from agentfsm.machine.drivers import perform_async
from agentfsm.machine.persistence import Persistence, apply_checks, settle
from agentfsm.machine.plan import AwaitAction, AwaitHook, Reconcile, RunTools, SendRequest
from agentfsm.observe.events import EventLog, Level
from agentfsm.redaction import redact
from agentfsm.result import RunResult
from agentfsm.tools.calls import ToolCall, ToolResult, for_history
from agentfsm.tools.reconcile import acheck_all
from agentfsm.wire import api, models

if TYPE_CHECKING:
    from agentfsm.agent import Agent
    from agentfsm.engines.mirror import StoreMirror
    from agentfsm.stores.base import Store

log = logging.getLogger("agentfsm.worker")

_NEVER_RAN = api.RequestFailure(type="no_outcome", message="stream never ran")


def dumps(value: Any) -> str:
    """JSON as an engine stores it: compact, and in the order the API sent it (an engine's own JSON may sort
    keys, which would change a tool_use input the model reads back, and the bytes a prompt cache matches)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> Any:
    return json.loads(text)


# --- the workflow's input and output -------------------------------------------------------------


class StartInput(BaseModel):
    """A durable conversation's workflow input: which agent, the first messages, its id."""

    agent: str
    messages: list[dict[str, Any]]
    conversation_id: str
    #: Stream text and transitions to clients that read the conversation's stream (engines that have streams).
    stream: bool = False
    #: Made once, where the conversation is started: the names of its waits derive from it, so a replay names a
    #: wait as the first run did, and a later workflow under the same id names its own. None in older inputs.
    nonce: str | None = None


def agent_spec(agent: str | type[Agent]) -> str:
    """The ``MODULE:CLASS`` name a worker serves an agent class under."""
    if isinstance(agent, str):
        if ":" not in agent:
            raise ConfigurationError(
                f"agent {agent!r} names no class: give MODULE:CLASS (as the worker's --agent), or the class itself"
            )
        return agent
    return agent.qualified_name()


def start_input(
    agent: str | type[Agent], prompt: str | Sequence[Mapping[str, Any]], conversation_id: str | None
) -> StartInput:
    """Validate a prompt and an id on the client, before anything is enqueued (an invalid history or an empty id
    raises here)."""
    from agentfsm.agent import Agent

    if conversation_id is not None:
        require_conversation_id(conversation_id, "engine.start")
    messages = Agent._initial_messages(prompt)  # type: ignore[arg-type]
    return StartInput(
        agent=agent_spec(agent),
        messages=messages,
        conversation_id=conversation_id if conversation_id is not None else f"conv_{uuid.uuid4().hex[:16]}",
        nonce=uuid.uuid4().hex,
    )


def result_to_json(result: RunResult) -> dict[str, Any]:
    """A run's result as plain JSON, its events included, and a waiting run's snapshot (which
    ``agent.resume(result, trigger=...)`` carries on, in the caller's process)."""
    data = result.model_dump(mode="json")
    if result.snapshot is not None:
        data["snapshot"] = result.snapshot.model_dump(mode="json")
    return data


def result_from_json(data: Mapping[str, Any]) -> RunResult:
    """The ``RunResult`` a worker returned, events (and a waiting run's snapshot) attached again."""
    result = RunResult.model_validate({k: v for k, v in data.items() if k not in ("events", "snapshot")})
    if data.get("snapshot") is not None:
        from agentfsm.stores.base import Snapshot

        result.attach_snapshot(Snapshot.model_validate(data["snapshot"]))
    result.attach_events(
        [
            (e["event"], e["level"], e["turn"], e["state"], e["timestamp"], e.get("data") or {})
            for e in data.get("events") or ()
        ]
    )
    return result


# --- what a step returns -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request attempt's outcome and when it ran (wall-clock seconds, read inside the step)."""

    outcome: api.Reply | api.RequestFailure
    latency_ms: float
    started_at: float
    ended_at: float

    def to_json(self) -> dict[str, Any]:
        kind = "reply" if isinstance(self.outcome, api.Reply) else "failure"
        return {
            kind: self.outcome.model_dump(mode="json", exclude_unset=kind == "reply"),
            "latency_ms": self.latency_ms,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RequestRecord:
        outcome: api.Reply | api.RequestFailure = (
            api.Reply.model_validate(data["reply"])
            if "reply" in data
            else api.RequestFailure.model_validate(data["failure"])
        )
        return cls(outcome, float(data["latency_ms"]), float(data["started_at"]), float(data["ended_at"]))


@dataclass(frozen=True)
class ToolsRecord:
    """One batch's results (as they enter the history), the calls answered "interrupted", and when it ran."""

    results: list[ToolResult]
    interrupted: list[str] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0
    #: The reconcile checks' outcomes of the calls in doubt (by tool_use_id): "happened", "not_happened" or
    #: "unknown" (``agentfsm.tools.reconcile``).
    reconciled: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [r.model_dump(mode="json") for r in self.results],
            "interrupted": self.interrupted,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "reconciled": self.reconciled,
        }

    @classmethod
    def merged(cls, records: Sequence[ToolsRecord]) -> ToolsRecord:
        """The record of a reply's calls run one durable step each (in call order): as one batch's."""
        return cls(
            [r for record in records for r in record.results],
            [i for record in records for i in record.interrupted],
            min((r.started_at for r in records), default=0.0),
            max((r.ended_at for r in records), default=0.0),
            {i: said for record in records for i, said in record.reconciled.items()},
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToolsRecord:
        return cls(
            [ToolResult.model_validate(r) for r in data["results"]],
            list(data.get("interrupted") or ()),
            float(data.get("started_at") or 0.0),
            float(data.get("ended_at") or 0.0),
            dict(data.get("reconciled") or {}),
        )


# --- the step bodies: the only code that does I/O, run inside an engine's step ----------------------


OnDelta = Callable[[str], Awaitable[None]]


async def perform_request(
    agent: Agent,
    params: dict[str, Any],
    timeout: float | None,
    delay: float = 0.0,
    *,
    betas: Sequence[str] = (),
    on_delta: OnDelta | None = None,
) -> RequestRecord:
    """Send one request (after ``delay`` seconds: the backoff before a resend), through the beta API when
    ``betas`` (the plan's) are given; streamed if ``on_delta`` is given.

    Never raises for API or transport errors (they are the outcome). A failure's message is
    scrubbed of the client's credentials here, since the engine stores what a step returns.
    """
    if delay > 0:
        await asyncio.sleep(delay)
    started_at, t0 = time.time(), time.perf_counter()
    outcome: api.Reply | api.RequestFailure
    if on_delta is None:
        outcome = await api.asend(agent.aclient, params, betas=betas, timeout=timeout)
    else:
        call = api.StreamCall(agent.aclient, params, betas=betas, timeout=timeout)
        async for delta in call:
            await on_delta(delta)
        outcome = call.outcome or _NEVER_RAN
    latency_ms = (time.perf_counter() - t0) * 1000
    if isinstance(outcome, api.RequestFailure):
        outcome = outcome.model_copy(update={"message": redact(outcome.message, agent.secrets())})
    return RequestRecord(outcome, latency_ms, started_at, time.time())


async def perform_tools(
    agent: Agent, calls: Sequence[ToolCall], *, earlier_attempt: bool, attempt: int | None = None
) -> ToolsRecord:
    """Run one reply's tool calls with the agent's executor.

    ``earlier_attempt``: the engine recorded that this batch started before (the worker running it
    died, or the step is run again): a call that is not idempotent may have run, so it is answered
    with the is_error "interrupted" result, as ``Agent.resume`` does from a store; an idempotent one
    runs again, its ``ToolContext.attempt`` ``attempt`` (the engine's count of this step's attempts,
    where it keeps one) or else 2. The calls carry their contexts (``core.begin_tools``; their keys do
    not depend on the attempt). Results are returned as they enter the history (cut, credentials
    redacted), since the engine stores them.
    """
    started_at = time.time()
    tools = agent.tool_map
    started = [c.id for c in calls] if earlier_attempt else []
    settled = settle(calls, committed={}, started=started, tools=tools)
    timeout = agent.policy.tool_timeout or math.inf
    limit, secrets = agent.policy.max_tool_result_chars, agent.secrets()
    reconciled: dict[str, str] = {}
    if settled.to_check:  # in doubt, and the tool can say whether the effect happened: asked first, in the step
        checked = await acheck_all(settled.to_check, tools, timeout)
        reconciled = {c.tool_use_id: c.outcome for c in checked}
        apply_checks(settled, checked, limit=limit, secrets=secrets)
    if earlier_attempt:
        settled.to_run = [_nth_attempt(call, max(2, attempt or 2)) for call in settled.to_run]
    ran = await agent.executor.aexecute(settled.to_run, tools, timeout) if settled.to_run else []
    results = [for_history(r, limit=limit, secrets=secrets) for r in [*settled.results.values(), *ran]]
    return ToolsRecord(results, [c.id for c in settled.interrupted], started_at, time.time(), reconciled)


def _nth_attempt(call: ToolCall, attempt: int) -> ToolCall:
    """``call`` with its context's attempt raised to ``attempt``."""
    context = call.context
    if context is None or context.attempt >= attempt:
        return call
    return call.with_context(context.model_copy(update={"attempt": attempt}))


# --- the workflow body ---------------------------------------------------------------------------------------


class Steps(Protocol):
    """An engine's durable steps, as the workflow body sees them."""

    @property
    def replaying(self) -> bool:
        """True while the engine re-runs recorded history (events are then kept, not logged or streamed)."""
        ...

    async def request(self, conv: DurableConversation, plan: SendRequest, attempt: int, delay: float) -> RequestRecord:
        """One attempt of ``plan``'s request as a durable step (``perform_request``)."""
        ...

    async def tools(self, conv: DurableConversation, calls: list[ToolCall]) -> ToolsRecord:
        """A reply's tool calls, each a durable step that knows whether an earlier attempt started it."""
        ...

    async def end(self, conv: DurableConversation) -> None:
        """The run is over (or stopped): flush what the engine streams to clients."""
        ...


class _Mirrored(Persistence):
    """A durable conversation's persistence: the engine journals its steps, so there is no store to lease or
    commit to; with a mirror, each save copies the snapshot into an agentfsm store, for ``runs`` and ``ui``.

    A replay makes the same snapshots, revision for revision, as the run it replays: the store's fence
    refuses those it has. The last one (finished or waiting) is waited for, briefly.
    """

    __slots__ = ("mirror",)

    def __init__(self, mirror: StoreMirror | None) -> None:
        super().__init__(None)
        self.mirror = mirror

    def save(self, conv: Conversation) -> None:
        if self.mirror is None:
            return
        conv.runstate.revision += 1
        stopped = conv.stopped
        self.mirror.put(conv.snapshot(), wait=self.mirror.final_wait if stopped else None)


class DurableConversation(Conversation):
    """A conversation run as a workflow: the engine is its store, wall time comes from the steps' records.

    With a ``mirror``, its snapshots are also copied into an agentfsm store, for ``runs`` and ``ui``.
    """

    def __init__(self, agent: Agent, start: StartInput, steps: Steps, mirror: StoreMirror | None = None) -> None:
        super().__init__(agent, list(start.messages), start.conversation_id, announce=False)
        self.steps = steps
        self._persistence = _Mirrored(mirror)
        if start.stream:
            self._outbox = []  # stream events, drained by the engine's steps
        # While the engine replays, events go to the result only (through a log that shares its record):
        # they were logged, observed and streamed when they happened.
        self._replayed = EventLog(self.id, None, agent.secrets())
        self._replayed.raw = self.log.raw
        # Prefill or prompt from the policy and the model's request rules alone: what an agent learned of models
        # that reject prefill differs between workers and grows over time, and a replay must start as the first
        # run did.
        if self.policy.continuation == "auto":
            allowed = models.prefill_allowed(self.model)
            self.runstate.continuation_mode = "prefill" if allowed else "prompt"
        self._first_at: float | None = None
        self._last_at = 0.0
        self._nonce = start.nonce or start.conversation_id
        self.emit("run.started", agent=type(agent).qualified_name(), model=self.model, messages=len(self.messages))
        self._persistence.save(self)  # seen in the store from its start

    @property
    def elapsed_s(self) -> float:
        """Wall time from the first step's start to the last step's end, as the steps recorded it."""
        return 0.0 if self._first_at is None else self._last_at - self._first_at

    def clock(self, started_at: float, ended_at: float) -> None:
        """Advance the conversation's wall clock to a step's recorded times."""
        if self._first_at is None:
            self._first_at = started_at
        self._last_at = max(self._last_at, ended_at)

    def _new_wait_token(self) -> str:
        """The same on a replay as on the run it replays (the workflow's input and its steps decide it), so the
        waiting result the engine returns and the snapshot a worker copied to a store before a crash agree."""
        seed = f"{self._nonce}:{len(self.trace)}:{self.counters.turns}"
        return hashlib.sha256(seed.encode()).hexdigest()[:32]

    def emit(self, name: str, *, level: Level = "info", **data: Any) -> None:
        if self.steps.replaying:
            self._replayed.emit(name, turn=self.counters.turns, state=self.state, level=level, **data)
        else:
            super().emit(name, level=level, **data)


async def run_conversation(
    agent: Agent, start: StartInput, steps: Steps, mirror: StoreMirror | None = None
) -> RunResult:
    """The workflow: an interpreter of the one loop (``agentfsm.machine.loop``) whose two kinds of I/O are
    durable steps; it ends when the conversation is finished or waiting for a decision from outside. With a
    ``mirror``, every snapshot is copied into an agentfsm store as well."""
    conv = DurableConversation(agent, start, steps, mirror)
    log.info("conversation %s %s (%s)", conv.id, "resumed" if steps.replaying else "started", start.agent)
    running = loop.steps(conv)
    outcome: Any = None
    while True:
        try:
            effect = running.send(outcome)
        except StopIteration:
            break
        if isinstance(effect, SendRequest):
            record = await steps.request(conv, effect, effect.attempt, effect.delay)
            conv.clock(record.started_at, record.ended_at)
            outcome = (record.outcome, record.latency_ms)
        elif isinstance(effect, RunTools):
            batch = await steps.tools(conv, effect.calls)
            conv.clock(batch.started_at, batch.ended_at)
            names = {c.id: c.name for c in effect.calls}
            for call_id, said in batch.reconciled.items():
                level: Level = "warning" if said == "unknown" else "info"
                name = names.get(call_id, "?")
                conv.emit("tool.reconciled", level=level, tool=name, tool_use_id=call_id, outcome=said)
            for call_id in batch.interrupted:
                conv.emit("tool.interrupted", level="warning", tool=names.get(call_id, "?"), tool_use_id=call_id)
            outcome = batch.results
        elif isinstance(effect, AwaitHook | AwaitAction):  # plain code here, replayed like the rest
            outcome = await perform_async(conv, effect)
        elif isinstance(effect, Reconcile):  # never from the engine's own ledger (its tool step reconciles)
            outcome = await acheck_all(effect.calls, agent.tool_map, effect.timeout)
        else:  # ToolsDue: ready now
            outcome = None
    await steps.end(conv)
    if not steps.replaying:
        log.info("conversation %s finished: %s after %d requests", conv.id, conv.state, conv.counters.turns)
    return conv.result()


@dataclass(frozen=True)
class RateLimit:
    """A limit on API requests shared by the workers of an engine (give every worker the same).

    At most ``requests`` requests start in any ``period`` seconds, and at most ``max_in_flight``
    are outstanding at once; None leaves that bound off. On DBOS both bounds hold across all
    workers; on Temporal the rate does, and ``max_in_flight`` holds per worker.
    """

    requests: int | None = None
    period: float = 60.0
    max_in_flight: int | None = None

    @classmethod
    def parse(cls, text: str, max_in_flight: int | None = None) -> RateLimit:
        """``"N/SECONDS"`` (e.g. ``"50/60"``: 50 requests a minute), as the workers' ``--rate-limit`` takes it."""
        count, _, period = text.partition("/")
        try:
            requests, seconds = int(count), float(period or 1)
        except ValueError:
            raise ConfigurationError(f"rate limit {text!r}: write REQUESTS/SECONDS, e.g. 50/60") from None
        if requests < 1 or seconds <= 0:
            raise ConfigurationError(f"rate limit {text!r}: both numbers must be positive")
        return cls(requests, seconds, max_in_flight)


# --- the agents a worker serves -------------------------------------------------------------------------------


class AgentRegistry:
    """The agent instances one worker process serves, by the ``MODULE:CLASS`` names clients start them under."""

    def __init__(self) -> None:
        self._agents: dict[str, Agent] = {}

    def add(self, agent: Agent, *aliases: str) -> list[str]:
        """Serve ``agent`` under its class's ``module:QualName`` and each alias (e.g. the spec given to the CLI)."""
        names = list(dict.fromkeys([type(agent).qualified_name(), *aliases]))
        for name in names:
            self._agents[name] = agent
        return names

    def get(self, spec: str) -> Agent:
        try:
            return self._agents[spec]
        except KeyError:
            raise ConfigurationError(
                f"this worker does not serve agent {spec!r} (it serves {sorted(self._agents) or 'none'}): "
                f"start a worker with --agent {spec}"
            ) from None

    @property
    def names(self) -> list[str]:
        return list(self._agents)


def build_agents(specs: Iterable[str | type[Agent] | Agent]) -> list[tuple[Agent, list[str]]]:
    """Agent instances for a worker: a class or ``MODULE:CLASS`` is built with no arguments (its client then
    comes from ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``)."""
    from agentfsm.agent import Agent

    built: list[tuple[Agent, list[str]]] = []
    for spec in specs:
        if isinstance(spec, Agent):
            built.append((spec, []))
        elif isinstance(spec, str):
            from agentfsm.loading import load_agent_class

            built.append((load_agent_class(spec)(), [spec]))
        else:
            built.append((spec(), []))
    return built


def mirror_for(store: Store | str | None, *, final_wait: float | None = None) -> StoreMirror | None:
    """The mirror a worker copies its conversations' snapshots with: for a store, or a store URL (a SQLite path,
    ``sqlite:///PATH``, ``postgresql://...``, as ``agentfsm runs --store`` takes); None for none."""
    if store is None:
        return None
    from agentfsm.engines.mirror import FINAL_WAIT, StoreMirror
    from agentfsm.stores.location import open_store

    wait = FINAL_WAIT if final_wait is None else final_wait
    if isinstance(store, str):
        return StoreMirror(open_store(store, create=True), owns_store=True, final_wait=wait)
    return StoreMirror(store, final_wait=wait)


def executor_identity(prefix: str = "agentfsm") -> str:
    """A worker's identity, unique per process: host, pid and a random suffix."""
    host = socket.gethostname().replace(":", "-")
    return f"{prefix}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def every(seconds: float, beat: Callable[[], object]) -> AsyncIterator[None]:
    """Call ``beat`` every ``seconds`` while the block runs (an activity's heartbeat)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(seconds)
            beat()

    task = asyncio.ensure_future(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
