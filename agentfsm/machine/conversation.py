"""Conversation: one run of an agent — what hooks, guards and actions see, and what a caller steps.

A conversation is the agent (what does not change during a run: model, tools,
policy, table) and one ``RunState`` (``conv.runstate``: what does — the state,
the history, the counters, usage, the trace), declared once in
``agentfsm.machine.state``. Its public face is reading (``state``, ``messages``,
``reply``, ``pending_tool_calls``, ``input``, ``counters``, ``usage``,
``trace``...), deciding a waiting run (``decide``) and stepping it (``step``,
``run``, ``stream`` and their async twins). How a step is planned and completed
is ``agentfsm.machine.core``; the loop every runner interprets is
``agentfsm.machine.loop``; saving, the lease and the exactly-once tool ledger
are ``agentfsm.machine.persistence``. A hook that wants to steer the run
returns a trigger (or ``Wait``); it never drives the conversation itself.

A run may also stop without finishing: in a ``Wait`` state, or where a hook
returned ``Wait``, it is ``waiting`` (saved, holding no lease) until ``decide``
(``Agent.resume(..., trigger=...)``) says which way it goes, with an optional
``input`` for the hook and the action.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from agentfsm import clock as clocks
from agentfsm.errors import (
    ConfigurationError,
    IncompatibleAgentError,
    InvalidTransitionError,
    require_conversation_id,
)
from agentfsm.machine import core, decisions, drivers, output, serverside
from agentfsm.machine.persistence import Persistence
from agentfsm.machine.plan import Plan
from agentfsm.machine.state import Counters, PendingDecision, RunState, StoredGraph, TraceLog
from agentfsm.machine.streaming import StreamEvent, stream_event_for
from agentfsm.machine.table import AWAITING_APPROVAL
from agentfsm.observe.events import EventLog, Level, aobserved, observed, observer_for
from agentfsm.result import RunResult, TraceStep
from agentfsm.stores.base import SCHEMA_VERSION, Snapshot, Store, stored_request
from agentfsm.tools.approval import read_decision
from agentfsm.tools.calls import ToolCall, ToolResult, ToolResults
from agentfsm.wire import api, caching, models
from agentfsm.wire.messages import Message, blocks, is_tool_result_message, text_of, tool_result_ids
from agentfsm.wire.usage import Usage

if TYPE_CHECKING:
    from agentfsm.agent import Agent
    from agentfsm.machine.table import Table
    from agentfsm.policy import Policy

_NO_SCOPE = contextlib.nullcontext()  # no tracing: stepping needs no scope

#: How deep ``resume(..., input=...)`` may nest lists and dicts: far beyond any decision's data, and well inside
#: what every JSON reader of a stored row (Python's, PostgreSQL's) reads back.
MAX_INPUT_DEPTH = 100


def json_input(value: Any) -> Any:
    """``value`` as the JSON a decision's ``input`` is stored as, or ``ConfigurationError`` saying why it is not.

    What a live hook reads is what a resumed one reads from the store: the value after a JSON round trip
    (a tuple is a list there, a key is a string). NaN and Infinity are refused rather than stored as null;
    the depth is checked without recursion, so no input can overflow the stack.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list | tuple) else None
        if children is None:
            continue
        if depth >= MAX_INPUT_DEPTH:
            raise ConfigurationError(
                f"input is nested more than {MAX_INPUT_DEPTH} lists or dicts deep (or holds itself): it is stored "
                "with the conversation as JSON; give the decision flatter data"
            )
        stack.extend((child, depth + 1) for child in children)
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise ConfigurationError(f"input must be JSON: {exc}") from None
        raise ConfigurationError(
            "input must be JSON, and NaN and Infinity are not (stored, they would come back as null, so a resumed "
            "hook would read other input than the live one): send them as strings or leave them out"
        ) from None
    except TypeError as exc:
        raise ConfigurationError(
            f"input must be JSON (dicts, lists, strings, numbers, booleans, None): it is stored with the "
            f"conversation; {exc}"
        ) from None
    return json.loads(text)


class Conversation:
    """One run of an agent. Made by ``Agent.start`` (or ``Agent.load``, from a snapshot)."""

    # Slots keep ten thousand live conversations small; ``__dict__`` stays so that a subclass's
    # hooks and actions can still keep their own values on the conversation.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_calls",
        "_clock",
        "_compaction_seen",
        "_elapsed_before",
        "_marks",
        "_outbox",
        "_output_check",
        "_performed",
        "_persistence",
        "_retry_stopped_by",
        "_started",
        "_tool_results",
        "agent",
        "id",
        "log",
        "policy",
        "runstate",
        "table",
    )

    def __init__(
        self,
        agent: Agent,
        messages: list[Message] | None = None,
        conversation_id: str | None = None,
        *,
        store: Store | None = None,
        state: RunState | None = None,
        announce: bool = True,
    ) -> None:
        """A new conversation from ``messages``, or, given ``state`` (a ``Snapshot``'s), one carried on from it."""
        self.agent = agent
        self.policy: Policy = agent.policy
        self.table: Table = agent.table()
        if conversation_id is not None:
            require_conversation_id(conversation_id, "Conversation")
        self.id = conversation_id if conversation_id is not None else f"conv_{uuid.uuid4().hex[:16]}"
        if state is None:
            history = messages or []
            # auto: prefill only where the model's request rules accept it (agentfsm.wire.models), never a 400 first
            auto_prompt = self.policy.continuation == "auto" and not models.prefill_allowed(agent.model, by=agent)
            state = RunState.model_construct(
                messages=history,
                model=agent.model,
                max_tokens=self.policy.max_tokens,
                continuation_mode="prompt" if self.policy.continuation == "prompt" or auto_prompt else "prefill",
            )
            if history and history[-1].get("role") == "assistant":
                state.pending_kind = "caller_prefill"
                state.answer = text_of(blocks(history[-1]))
        self.runstate = state
        self._elapsed_before = state.elapsed_s  # wall time spent in earlier processes (a resumed conversation)
        self._clock = clocks.current()  # wall time and resend backoff: real, unless a test put its own in
        self._started = self._clock.now()
        self._tool_results: list[ToolResult] = ToolResults.of(())
        self._persistence = Persistence(store)
        self.log = EventLog(self.id, agent.logger, agent.secrets(), observer_for(self))
        # What the core keeps between calls (transient: never stored).
        self._performed: Any = None  # a subclass action an async runner has already awaited
        self._retry_stopped_by: str | None = None  # the limit that kept a broken stream from being sent again
        self._outbox: list[StreamEvent] | None = None  # set while a streaming driver runs
        #: What serverside.carries_compaction last saw: (the history list, its length then, found).
        self._compaction_seen: tuple[list[Message], int, bool] | None = None
        self._calls: tuple[api.Reply, list[ToolCall]] | None = None  # the reply's client calls, read once
        self._output_check: tuple[api.Reply, str, output.Check | None] | None = None  # output.check, per reply
        self._marks = caching.MarkCounter()  # the caller's cache marks in the history, counted once per message
        if announce:
            self.emit("run.started", agent=type(agent).qualified_name(), model=state.model, messages=len(history))
            self._persistence.save(self)

    @classmethod
    def restore(cls, agent: Agent, snap: Snapshot, store: Store | None = None) -> Conversation:
        """Rebuild a conversation from its last snapshot, to carry on where it stopped.

        Raises ``IncompatibleAgentError`` when ``agent``'s class has no state of the snapshot's name
        (the conversation was stored by another Agent class, one that added states).
        """
        if snap.state not in agent.table().states:
            raise IncompatibleAgentError(snap.conversation_id, snap.agent, type(agent).qualified_name(), snap.state)
        state = RunState.model_construct(**{name: getattr(snap, name) for name in RunState.model_fields})
        state.messages, state.trace, state.replaced_messages = (
            list(snap.messages),
            TraceLog(snap.trace),
            list(snap.replaced_messages),
        )
        state.usage = snap.usage.model_copy()
        state.tool_results, state.tools_started, state.tool_ms = (
            dict(snap.tool_results),
            list(snap.tools_started),
            dict(snap.tool_ms),
        )
        conv = cls(agent, conversation_id=snap.conversation_id, store=store, state=state, announce=False)
        conv.emit(
            "run.resumed",
            agent=snap.agent,
            at_state=snap.state,
            turns=snap.counters.turns,
            committed_tool_results=len(snap.tool_results),
            interrupted_tool_calls=len([t for t in snap.tools_started if t not in snap.tool_results]),
        )
        return conv

    def snapshot(self) -> Snapshot:
        """The conversation as stored after a transition: its ``RunState`` (a shallow copy) in an envelope."""
        fields = dict(self.runstate)
        fields["elapsed_s"] = self.elapsed_s
        fields["finished"] = self.finished
        fields["pending_decision"] = self.pending_decision()
        fields["request"] = stored_request(self.agent.static_params(), self.agent.secrets())
        fields["graph"] = StoredGraph.of(self.table)  # so showing the run never imports its class
        return Snapshot.model_construct(
            conversation_id=self.id, agent=type(self.agent).qualified_name(), schema_version=SCHEMA_VERSION, **fields
        )

    # --- reading ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The state the machine is in (the ``transitions`` Machine sets it as a transition fires)."""
        return self.runstate.state

    @state.setter
    def state(self, value: str) -> None:
        self.runstate.state = value

    @property
    def messages(self) -> list[Message]:
        """The history: a list of message dicts. Change it through an action (``agentfsm.actions``)."""
        return self.runstate.messages

    @messages.setter
    def messages(self, value: list[Message]) -> None:
        if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
            raise TypeError(
                f"conv.messages takes a list of message dicts ({{'role': ..., 'content': ...}}), got "
                f"{type(value).__name__}; to add to the history use actions.add_user_message(...) or "
                "actions.answer_with(...)"
            )
        self.runstate.messages = value

    @property
    def reply(self) -> api.Reply | None:
        """The latest reply, as the API sent it."""
        return self.runstate.reply

    @property
    def model(self) -> str:
        """The model the next request goes to."""
        return self.runstate.model

    @property
    def answer(self) -> str:
        """The answer text so far (continuations stitched)."""
        return self.runstate.answer

    @property
    def input(self) -> Any:
        """What the latest ``resume(..., input=...)`` gave: JSON, for the waiting state's hook and action."""
        return self.runstate.input

    @property
    def waiting(self) -> str | None:
        """The state the run stopped in to wait for a decision from outside (None while it runs or once finished)."""
        return self.runstate.waiting

    @property
    def counters(self) -> Counters:
        """The numbers the guards read: turns, continuations, pause_resumes, empty_retries, rung, ..."""
        return self.runstate.counters

    @property
    def turns(self) -> int:
        """Requests sent so far (``counters.turns``)."""
        return self.runstate.counters.turns

    @property
    def usage(self) -> Usage:
        """Tokens summed over every request so far."""
        return self.runstate.usage

    @property
    def cost_usd(self) -> float | None:
        """What the run has cost so far, or None when a reply's model has no known price."""
        return self.runstate.cost_usd

    @property
    def trace(self) -> TraceLog:
        """The transitions taken so far (a sequence of ``TraceStep``)."""
        return self.runstate.trace

    @property
    def elapsed_s(self) -> float:
        """Wall time this conversation has run, across processes."""
        return self._elapsed_before + self._clock.now() - self._started

    @property
    def finished(self) -> bool:
        return self.runstate.state in self.table.terminal

    @property
    def stopped(self) -> bool:
        """Finished, or waiting for a decision from outside: a runner runs until this is true."""
        run = self.runstate
        return run.waiting is not None or run.state in self.table.terminal

    @property
    def tool_results(self) -> list[ToolResult]:
        """The results of the tool calls just run (for the action of a ``runs_tools`` transition)."""
        return self._tool_results

    @tool_results.setter
    def tool_results(self, value: Iterable[ToolResult]) -> None:
        self._tool_results = value if type(value) is ToolResults else ToolResults.of(value)

    @property
    def reply_kept(self) -> bool:
        """Whether the reply is in the history already (``actions.keep_reply`` put it there)."""
        return self.runstate.reply_kept

    @property
    def pending_tool_calls(self) -> list[ToolCall]:
        """The reply's client tool calls that the history does not answer yet (what a waiting run asks about).

        In ``awaiting_tool_approval``, the calls awaiting approval: those whose results the tool ledger does
        not hold (the reply's other calls ran before the run stopped to wait)."""
        calls = self.reply_calls()
        run = self.runstate
        messages = run.messages
        if calls and run.reply_kept and messages and is_tool_result_message(messages[-1]):
            answered = set(tool_result_ids(messages[-1]))
            calls = [c for c in calls if c.id not in answered]
        if run.state == AWAITING_APPROVAL and run.tool_results:
            calls = [c for c in calls if c.id not in run.tool_results]
        return calls

    def reply_calls(self) -> list[ToolCall]:
        """The reply's client tool calls (answered or not), in call order: read off the reply once, since the
        machine asks for them several times a turn (a new list each time; the calls are frozen)."""
        reply = self.runstate.reply
        if reply is None:
            return []
        cached = self._calls
        if cached is None or cached[0] is not reply:
            calls = [ToolCall.from_block(b) for b in reply.content if b.get("type") == "tool_use"]
            cached = self._calls = (reply, calls)
        return list(cached[1])

    @property
    def pending(self) -> Plan | None:
        """What the next step will do: the request to send, the tool calls to run, or the transition to fire
        (None once finished or waiting)."""
        return None if self.stopped else core.plan(self)

    def require_reply(self) -> api.Reply:
        reply = self.runstate.reply
        if reply is None:
            raise InvalidTransitionError(f"state {self.runstate.state!r} needs a reply and there is none")
        return reply

    def spent_budget(self) -> str | None:
        """The name of the first budget of the policy that is spent, or None."""
        return core.spent_budget(self)

    # --- deciding a waiting run -------------------------------------------------------------

    def pending_decision(self) -> PendingDecision | None:
        """What the run waits for, as stored with it (None unless waiting): worked out from the table now, so
        that showing a stored waiting run never needs to import its Agent class."""
        waiting = self.runstate.waiting
        if waiting is None:
            return None
        table = self.table
        # The triggers resume() will take: those leaving the state whose guards pass. Guards see what decide()
        # will show them (the conversation as stored, input cleared), so this is the list its error would give.
        can = [t for t in table.triggers(waiting) if table.first_allowed(self, t) is not None]
        why = None
        into = next((s for s in reversed(self.trace) if s.dest == waiting), None)
        if into is not None:  # the guards of the transition taken into the wait say why it was taken
            edge = (into.source, into.trigger, into.dest)
            why = next((t.condition for t in table.transitions if (t.source, t.trigger, t.dest) == edge), None)
        return PendingDecision(state=waiting, triggers=can, tool_calls=self.pending_tool_calls, why=why or None)

    def decide(self, trigger: str | None = None, *, input: Any = None) -> None:
        """Carry a waiting conversation on: along ``trigger`` (one that leaves the waiting state), or,
        without one, by asking the state's hook again. ``input`` (JSON) reaches the hook and the action
        as ``conv.input`` and is stored with the conversation.

        A wait is decided once: a conversation with no store refuses a second decision of the same wait
        (``AlreadyDecidedError``: say from another copy of its waiting result), in this process; with a
        store, the store's lease and revision fence refuse it (``agentfsm.machine.decisions``).
        """
        run, table = self.runstate, self.table
        if run.waiting is None and not (run.state in table.waits and run.decision is None):
            if run.decision is not None:
                raise InvalidTransitionError(
                    f"conversation {self.id!r} is not waiting: it is carrying out {run.decision!r} already "
                    "(its run stopped before finishing); resume it without trigger= or input="
                )
            where = "finished" if self.finished else "running"
            raise InvalidTransitionError(
                f"conversation {self.id!r} is not waiting ({where}, at state {run.state!r}): trigger= and "
                "input= are for a conversation that stopped to wait; resume it without them"
            )
        persistence = self._persistence
        # Without a store, this process holds and remembers the waits it decides; with one, the store holds
        # them (its lease, its revision fence) and this process only remembers the ones it decided.
        token = run.wait_token if run.waiting is not None else None
        mine = token is not None and persistence.store is None
        if token is not None and mine:
            decisions.check(self.id, run.state, token, self)  # first: nothing else matters then
        input = json_input(input)
        if trigger is not None:
            leaving = table.triggers(run.state)
            if trigger not in leaving or table.first_allowed(self, trigger) is None:
                can = [t for t in leaving if table.first_allowed(self, t) is not None]
                why = "does not leave" if trigger not in leaving else "cannot leave (its guards do not pass)"
                raise InvalidTransitionError(
                    f"trigger {trigger!r} {why} the waiting state {run.state!r}; the triggers that can: "
                    f"{', '.join(can) or 'none'}"
                )
        if run.state == AWAITING_APPROVAL and trigger == "run_tools":  # every call approved or denied, or nothing
            input = read_decision(self.pending_tool_calls, input)
        held = None
        if token is not None:
            held = decisions.hold(self, token, trigger) if mine else decisions.Held(token, trigger, holding=False)
        try:
            persistence.claim(self)
        except BaseException:
            if held is not None:
                held.give_back()
            raise
        persistence.decision = held
        run.waiting, run.decision, run.input = None, trigger, input
        kind = sorted(input) if isinstance(input, dict) else type(input).__name__
        self.emit("wait.decided", trigger=trigger, input=kind)

    def _new_wait_token(self) -> str:
        """A name for the wait the run stops in now (``RunState.wait_token``): new each time."""
        return uuid.uuid4().hex

    # --- stepping: each hands the conversation to a driver (agentfsm.machine.drivers) ----------------

    # With tracing on (``agentfsm.otel``), each runs inside its observer's scope: a stream step by step.

    def step(self) -> TraceStep | None:
        """Advance exactly one transition (doing its I/O); None once the run is finished or waiting."""
        with self._scope():
            return drivers.step(self)

    def run(self) -> RunResult:
        """Step until a final state and return the result. Bounded: every loop is counted by the policy."""
        with self._scope():
            return drivers.run(self)

    def stream(self) -> Iterator[StreamEvent]:
        """Run to a final state over streamed requests, yielding text, transitions and tool calls as they
        happen; the last event is a ``ResultEvent``."""
        obs = self.log.observer
        return drivers.stream(self) if obs is None else observed(drivers.stream(self), obs)

    async def astep(self) -> TraceStep | None:
        """``step`` for an ``AsyncAnthropic`` client."""
        with self._scope():
            return await drivers.astep(self)

    async def arun(self) -> RunResult:
        """``run`` for an ``AsyncAnthropic`` client. Cancelling it leaves the conversation consistent:
        history only changes inside a transition, never across an ``await``."""
        with self._scope():
            return await drivers.arun(self)

    def astream(self) -> AsyncIterator[StreamEvent]:
        """``stream`` for an ``AsyncAnthropic`` client."""
        obs = self.log.observer
        return drivers.astream(self) if obs is None else aobserved(drivers.astream(self), obs)

    def release(self) -> None:
        """Give up this worker's lease on the stored conversation (``run`` and the other drivers do it when they
        return; after stepping by hand with ``step``, do it when you stop)."""
        self._persistence.release(self)

    def _scope(self) -> AbstractContextManager[object]:
        obs = self.log.observer
        return _NO_SCOPE if obs is None else obs.scope()

    # --- events ---------------------------------------------------------------------------------

    def emit(self, name: str, *, level: Level = "info", **data: Any) -> None:
        """Record one event of this run (its name must be in ``agentfsm.observe.events.EVENT_NAMES``)."""
        run = self.runstate
        clean = self.log.record(name, level, run.counters.turns, run.state, data)
        if self._outbox is not None:
            mirrored = stream_event_for(name, run.counters.turns, clean)
            if mirrored is not None:
                self._outbox.append(mirrored)

    # --- the outcome ----------------------------------------------------------------------

    def result(self) -> RunResult:
        run = self.runstate
        reply = run.reply
        result = RunResult(
            conversation_id=self.id,
            final_state="waiting" if run.waiting is not None else run.state,
            waiting=run.waiting,
            pending_tool_calls=self.pending_tool_calls if run.waiting is not None else [],
            reason=run.reason,
            stop_reason=reply.stop_reason if reply else None,
            stop_sequence=reply.stop_sequence if reply else None,
            stop_details=reply.stop_details if reply else None,
            text=run.answer,
            output=output.result_value(self),
            error=run.error,
            messages=run.messages,
            replaced_messages=run.replaced_messages,
            usage=run.usage,
            trace=list(run.trace),
            model=run.model,
            turns=run.counters.turns,
            agent=type(self.agent).qualified_name(),
            cost_usd=run.cost_usd,
            answered_by=serverside.served_by(reply) if reply else None,
            turn_models=run.turn_models,
            usage_by_model=run.usage_by_model,
            cost_by_model=run.cost_by_model,
            batched=run.batched,
        )
        result.attach_events(self.log.raw)
        if run.waiting is not None:  # what agent.resume(result, ...) carries on, with no store
            result.attach_snapshot(self.snapshot().model_copy(deep=True))
        return result

    def graph(self, format: str = "mermaid") -> str:
        """The agent's graph with the path so far and the current state highlighted: ``mermaid``, ``dot`` or ``svg``."""
        from agentfsm.observe.graph import conversation_graph

        return conversation_graph(self, format)
