"""Conversation: one run of an agent, the model of its state machine.

It carries everything that changes during a run — the state, the message
history, the counters the guards read, usage, the trace — and nothing that
does not (that is the ``Agent``). ``step()`` advances exactly one transition,
so a debugger can stop between any two; ``run()`` steps to a final state.

Each step is planned (which transition, and what I/O it needs), performed
(the request or the tool calls), and completed (the transition fires). Only
the middle part touches the network or runs tools, which is what lets other
drivers (async, streaming) reuse the plan and the completion unchanged.

A run may also stop without finishing: in a ``Wait`` state, or where a hook
returned ``Wait``, it is ``waiting`` (saved, holding no lease) until ``decide``
(``Agent.resume(..., trigger=...)``) says which way it goes, with an optional
``input`` for the hook and the action.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Literal

from agentfsm.errors import (
    ConfigurationError,
    ConversationLockedError,
    IncompatibleAgentError,
    InvalidActionError,
    InvalidTransitionError,
    StaleConversationError,
    ToolInterruptedError,
)
from agentfsm.machine import drivers, serverside
from agentfsm.machine.actions import history_problems
from agentfsm.machine.history import Message, blocks, is_tool_result_message, size_of, text_of, tool_result_ids
from agentfsm.machine.plan import AwaitHook, Fire, Plan, RunTools, SendRequest, Suspend
from agentfsm.machine.streaming import StreamEvent, stream_event_for
from agentfsm.machine.table import (
    API_ERROR,
    RECOVERABLE_FAILURES,
    REQUESTING,
    STOP_REASONS,
    UNKNOWN_STOP_REASON,
    Transition,
    Wait,
)
from agentfsm.observe.events import EventLog, Level, aobserved, observed, observer_for
from agentfsm.observe.redaction import redact_error
from agentfsm.result import RunError, RunResult, TraceStep, Usage
from agentfsm.stores.base import Counters, PendingDecision, Snapshot, Store, stored_request
from agentfsm.tools.calls import ToolCall, ToolResult, ToolResults, error_result, for_history
from agentfsm.wire import api, caching
from agentfsm.wire.pricing import price_for

if TYPE_CHECKING:
    from agentfsm.agent import Agent

#: What the pending request is, which decides how its reply joins the history ("compaction": a compaction
#: request; "compacted": the first request after one, continuing from the compaction block).
PendingKind = Literal["prefill", "prompt", "pause", "caller_prefill", "compaction", "compacted"]

_ASK: Any = object()  # plan(): no choice given, ask the hook
_NO_SCOPE = contextlib.nullcontext()  # no tracing: stepping needs no scope


class Conversation:
    """The state, history and counters of one run. Made by ``Agent.start``."""

    # Slots keep ten thousand live conversations small; ``__dict__`` stays so that a subclass's
    # hooks and actions can still keep their own values on the conversation.
    __slots__ = (
        "__dict__",
        "_calls",
        "_compaction_seen",
        "_elapsed_before",
        "_kept_reply",
        "_leased",
        "_marks",
        "_messages",
        "_outbox",
        "_performed",
        "_retry_stopped_by",
        "_started",
        "_tool_results",
        "agent",
        "answer",
        "batched",
        "committed",
        "compaction_applied_at",
        "compaction_off",
        "compaction_requested_at",
        "compactions",
        "container",
        "continuation_mode",
        "continuations",
        "cost_usd",
        "credit_token",
        "decision",
        "discards",
        "empty_retries",
        "error",
        "fallback_used",
        "id",
        "input",
        "log",
        "max_tokens",
        "model",
        "owner",
        "pause_resumes",
        "pending_kind",
        "policy",
        "prefill_was_rejected",
        "reason",
        "replaced_messages",
        "reply",
        "revision",
        "rung",
        "state",
        "store",
        "table",
        "tool_ms",
        "tools_started",
        "trace",
        "turns",
        "usage",
        "waiting",
    )

    def __init__(
        self,
        agent: Agent,
        messages: list[Message],
        conversation_id: str | None = None,
        *,
        store: Store | None = None,
        announce: bool = True,
    ) -> None:
        self.agent = agent
        self.policy = agent.policy
        self.table = agent.table()
        self.id = conversation_id or f"conv_{uuid.uuid4().hex[:16]}"
        self.state: str = REQUESTING
        self.messages = messages
        self.model: str = agent.model
        self.max_tokens: int = self.policy.max_tokens
        # Counters read by the guards; each bounds one loop of the machine.
        self.turns = 0
        self.continuations = 0
        self.pause_resumes = 0
        self.empty_retries = 0
        self.rung = 0
        self.fallback_used = False
        # Compaction (Policy.compact_at_input_tokens) and the refusal's credit token for the fallback retry.
        self.compactions = 0
        self.compaction_requested_at: int | None = None  # turn of the last compaction request
        self.compaction_applied_at: int | None = None  # turn of the last compaction that replaced the history
        self.compaction_off = False  # compacting at the threshold stopped for this run (it did not help)
        self.replaced_messages: list[Message] = []  # what compactions took out of the history, oldest first
        self.credit_token: str | None = None  # goes on the next request only
        # Continuation strategy in force: "auto" starts as prefill unless the model is known to refuse it.
        self.continuation_mode: Literal["prefill", "prompt"] = (
            "prompt"
            if self.policy.continuation == "prompt"
            or (self.policy.continuation == "auto" and agent.prefill_unsupported(self.model))
            else "prefill"
        )
        # The request in flight and its outcome.
        self.pending_kind: PendingKind | None = None
        self.reply: api.Reply | None = None
        self._kept_reply: api.Reply | None = None  # the reply last put into the history (see reply_kept)
        self.prefill_was_rejected = False
        self.tool_results = []
        # Waiting: the state the run stopped in (None while it runs), the trigger decided from outside
        # and not yet fired, and what the latest resume gave (for the hook and the action).
        self.waiting: str | None = None
        self.decision: str | None = None
        self.input: Any = None
        self._performed: Transition | None = None  # a subclass action the async driver has already awaited
        # The code-execution container the replies ran in: later requests must name it (a programmatic
        # tool call waits in it for its result).
        self.container: str | None = None
        self.discards = 0  # replies dropped so far (a streamed view must not show their text twice)
        self._retry_stopped_by: str | None = None  # the limit that kept a broken stream from being sent again
        self._outbox: list[StreamEvent] | None = None  # set while a streaming driver runs
        # The outcome so far.
        self.answer = ""
        self.reason: str | None = None
        self.error: RunError | None = None
        self.usage = Usage()
        self.cost_usd: float | None = 0.0  # None once a reply's model has no known price
        self.trace: list[TraceStep] = []
        self.log = EventLog(self.id, agent.logger, agent.secrets(), observer_for(self))
        self._started = time.perf_counter()
        self._elapsed_before = 0.0  # wall time spent in earlier processes (a resumed conversation)
        # Persistence: the store, the results committed for the tool calls being answered, and the
        # calls handed to the executor but not committed (running, if the process dies now).
        self.store = store
        self.committed: dict[str, ToolResult] = {}
        self.tools_started: list[str] = []
        self.tool_ms: dict[str, float | None] = {}  # how long each answered tool call took (tool_use_id → ms)
        # host:pid:nonce — a store may free the lease of a dead process on its own host (see SQLiteStore).
        # Who holds the lease: host and pid let a store see that a crashed holder is gone.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}" if store is not None else ""
        self.revision = 0  # saves so far, stored with each snapshot
        #: What serverside.carries_compaction last saw: (the history list, its length then, found).
        self._compaction_seen: tuple[list[Message], int, bool] | None = None
        self._calls: tuple[api.Reply, list[ToolCall]] | None = None  # the reply's client calls, read once
        self._marks = caching.MarkCounter()  # the caller's cache marks in the history, counted once per message
        self.batched = False  # its requests go through the Message Batches API (agentfsm.batch)
        self._leased = False  # this worker holds the store's lease (checked fresh when first taken)
        if messages and messages[-1].get("role") == "assistant":
            self.pending_kind = "caller_prefill"
            self.answer = text_of(blocks(messages[-1]))
        if announce:
            self.emit("run.started", agent=type(agent).qualified_name(), model=self.model, messages=len(messages))
            self._save()

    # --- persistence -------------------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        """Wall time this conversation has run, across processes."""
        return self._elapsed_before + time.perf_counter() - self._started

    def snapshot(self) -> Snapshot:
        """The conversation as stored after a transition."""
        return Snapshot(
            conversation_id=self.id,
            agent=type(self.agent).qualified_name(),
            state=self.state,
            messages=self.messages,
            model=self.model,
            max_tokens=self.max_tokens,
            request=stored_request(self.agent.static_params(), self.agent.secrets()),
            counters=Counters(
                turns=self.turns,
                continuations=self.continuations,
                pause_resumes=self.pause_resumes,
                empty_retries=self.empty_retries,
                rung=self.rung,
                fallback_used=self.fallback_used,
                discards=self.discards,
                compactions=self.compactions,
            ),
            continuation_mode=self.continuation_mode,
            pending_kind=self.pending_kind,
            prefill_was_rejected=self.prefill_was_rejected,
            container=self.container,
            compaction_requested_at=self.compaction_requested_at,
            compaction_applied_at=self.compaction_applied_at,
            compaction_off=self.compaction_off,
            replaced_messages=self.replaced_messages,
            credit_token=self.credit_token,
            reply=self.reply.model_dump(mode="json", exclude_unset=True) if self.reply else None,
            answer=self.answer,
            reason=self.reason,
            error=self.error,
            usage=self.usage,
            cost_usd=self.cost_usd,
            trace=self.trace,
            tool_results=self.committed,
            tools_started=self.tools_started,
            tool_ms=self.tool_ms,
            elapsed_s=self.elapsed_s,
            finished=self.finished,
            revision=self.revision,
            waiting=self.waiting,
            pending_decision=self.pending_decision(),
            decision=self.decision,
            input=self.input,
            reply_kept=self.reply_kept,
            batched=self.batched,
        )

    @classmethod
    def restore(cls, agent: Agent, snap: Snapshot, store: Store | None = None) -> Conversation:
        """Rebuild a conversation from its last snapshot, to carry on where it stopped.

        Raises ``IncompatibleAgentError`` when ``agent``'s class has no state of the snapshot's name
        (the conversation was stored by another Agent class, one that added states).
        """
        table = agent.table()
        if snap.state not in table.states:
            raise IncompatibleAgentError(snap.conversation_id, snap.agent, type(agent).qualified_name(), snap.state)
        conv = cls(agent, list(snap.messages), snap.conversation_id, store=store, announce=False)
        conv.state = snap.state
        conv.model, conv.max_tokens = snap.model, snap.max_tokens
        c = snap.counters
        conv.turns, conv.continuations, conv.pause_resumes = c.turns, c.continuations, c.pause_resumes
        conv.empty_retries, conv.rung, conv.fallback_used, conv.discards = (
            c.empty_retries,
            c.rung,
            c.fallback_used,
            c.discards,
        )
        conv.continuation_mode, conv.pending_kind = snap.continuation_mode, snap.pending_kind
        conv.compactions = c.compactions
        conv.compaction_requested_at, conv.compaction_applied_at = (
            snap.compaction_requested_at,
            snap.compaction_applied_at,
        )
        conv.compaction_off, conv.credit_token = snap.compaction_off, snap.credit_token
        conv.replaced_messages = list(snap.replaced_messages)
        conv.prefill_was_rejected, conv.container = snap.prefill_was_rejected, snap.container
        conv.reply = api.Reply.model_validate(snap.reply) if snap.reply is not None else None
        conv.answer, conv.reason, conv.error = snap.answer, snap.reason, snap.error
        conv.usage, conv.cost_usd = snap.usage.model_copy(), snap.cost_usd
        conv.trace = list(snap.trace)
        conv.committed = dict(snap.tool_results)
        conv.tools_started = list(snap.tools_started)
        conv.tool_ms = dict(snap.tool_ms)
        conv._elapsed_before = snap.elapsed_s
        conv.revision = snap.revision
        conv.waiting, conv.decision, conv.input = snap.waiting, snap.decision, snap.input
        conv.reply_kept = snap.reply_kept
        conv.batched = snap.batched
        conv.emit(
            "run.resumed",
            agent=snap.agent,
            at_state=snap.state,
            turns=snap.counters.turns,
            committed_tool_results=len(snap.tool_results),
            interrupted_tool_calls=len([t for t in snap.tools_started if t not in snap.tool_results]),
        )
        return conv

    def spent_budget(self) -> str | None:
        """The name of the first budget of the policy that is spent, or None."""
        p, u = self.policy, self.usage
        if p.max_input_tokens is not None and (
            u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens >= p.max_input_tokens
        ):
            return "max_input_tokens"
        if p.max_output_tokens is not None and u.output_tokens >= p.max_output_tokens:
            return "max_output_tokens"
        if p.max_cost_usd is not None and self.cost_usd is not None and self.cost_usd >= p.max_cost_usd:
            return "max_cost_usd"
        if p.max_wall_seconds is not None and self.elapsed_s >= p.max_wall_seconds:
            return "max_wall_seconds"
        return None

    def _save(self) -> None:
        if self.store is not None:
            self.revision += 1
            self.store.save(self.snapshot())

    def _claim(self) -> None:
        """Hold (or renew) this worker's lease on the conversation; refuse to advance without it.

        When the lease is first taken, the stored conversation must still be the one this worker
        holds: a worker that loaded it while another was advancing it would fork its history (and
        run again the tools the other committed).
        """
        if self.store is None:
            return
        if not self.store.acquire(self.id, self.owner, self.policy.lease_seconds):
            raise ConversationLockedError(self.id)
        if not self._leased:
            try:
                stored = self.store.load(self.id).revision
            except KeyError:  # not stored (yet, or any more): nothing to fork
                stored = self.revision
            if stored != self.revision:
                self.store.release(self.id, self.owner)
                raise StaleConversationError(self.id, self.revision, stored)
            self._leased = True

    def release(self) -> None:
        """Give up this worker's lease (``run``/``arun`` do it when they return)."""
        if self.store is not None:
            self._leased = False
            self.store.release(self.id, self.owner)

    def _tool_work(self, calls: list[ToolCall]) -> tuple[list[ToolCall], dict[str, ToolResult]]:
        """Which calls to run now, and the results already settled (committed, or interrupted for good).

        Exactly once: a committed result is never run again; a call that was running when the
        process died — or when the caller cancelled ``arun()`` (or interrupted ``run()``) — is run
        again only if its tool is idempotent. The calls handed to the executor are remembered on
        the conversation even without a store, so the same conversation object run again knows them.
        """
        settled: dict[str, ToolResult] = {}
        to_run: list[ToolCall] = []
        tools = self.agent.tool_map
        for call in calls:
            if call.id in self.committed:
                settled[call.id] = self.committed[call.id]
            elif call.id in self.tools_started and not (call.name in tools and tools[call.name].idempotent):
                settled[call.id] = error_result(call, ToolInterruptedError(call.name))
                self.emit("tool.interrupted", level="warning", tool=call.name, tool_use_id=call.id)
            else:
                to_run.append(call)
        if to_run:
            self.tools_started = [c.id for c in to_run]
            self._save()
        return to_run, settled

    def _commit(self, results: Sequence[ToolResult]) -> None:
        if self.store is None:
            return
        secrets = self.agent.secrets()
        for result in results:  # stored as they will be sent: cut, credentials redacted
            self.committed[result.tool_use_id] = for_history(
                result, limit=self.policy.max_tool_result_chars, secrets=secrets
            )
        self.tools_started = []
        self._save()

    # --- reading ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.state in self.table.terminal

    @property
    def stopped(self) -> bool:
        """Finished, or waiting for a decision from outside: a driver runs until this is true."""
        return self.waiting is not None or self.state in self.table.terminal

    @property
    def messages(self) -> list[Message]:
        """The history: a list of message dicts. Change it through an action (``agentfsm.actions``)."""
        return self._messages

    @messages.setter
    def messages(self, value: list[Message]) -> None:
        if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
            raise TypeError(
                f"conv.messages takes a list of message dicts ({{'role': ..., 'content': ...}}), got "
                f"{type(value).__name__}; to add to the history use actions.add_user_message(...) or "
                "actions.answer_with(...)"
            )
        self._messages = value

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
        return self.reply is not None and self._kept_reply is self.reply

    @reply_kept.setter
    def reply_kept(self, kept: bool) -> None:
        self._kept_reply = self.reply if kept else None

    @property
    def pending_tool_calls(self) -> list[ToolCall]:
        """The reply's client tool calls that the history does not answer yet (what a waiting run asks about)."""
        calls = self.reply_calls()
        if calls and self.reply_kept and self.messages and is_tool_result_message(self.messages[-1]):
            answered = set(tool_result_ids(self.messages[-1]))
            calls = [c for c in calls if c.id not in answered]
        return calls

    def reply_calls(self) -> list[ToolCall]:
        """The reply's client tool calls (answered or not), in call order: read off the reply once, since the
        machine asks for them several times a turn (a new list each time; the calls are frozen)."""
        reply = self.reply
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
        return None if self.stopped else self.plan()

    def require_reply(self) -> api.Reply:
        if self.reply is None:
            raise InvalidTransitionError(f"state {self.state!r} needs a reply and there is none")
        return self.reply

    # --- stepping: each method hands the conversation to its driver (agentfsm.machine.drivers) -------

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

    def _scope(self) -> AbstractContextManager[object]:
        obs = self.log.observer
        return _NO_SCOPE if obs is None else obs.scope()

    # --- the parts of a step the drivers share ------------------------------------------------

    @property
    def tool_timeout(self) -> float:
        return self.policy.tool_timeout or math.inf

    def drain(self) -> list[StreamEvent]:
        """The stream events emitted since the last drain (a streaming driver yields them)."""
        outbox = self._outbox
        if not outbox:
            return []
        drained = list(outbox)
        outbox.clear()
        return drained

    def retry_delay(self, outcome: api.Reply | api.RequestFailure, attempt: int) -> float | None:
        """Seconds to wait before sending a broken stream's request again, or None to stop retrying.

        A resend is a request like any other (the driver calls ``begin_request`` again, which
        counts it as a turn): it is sent only while ``Policy.stream_retries`` allows another, a
        turn is left under ``max_turns``, and no budget is spent — wall time counted to the end
        of the wait. When a limit stops the retries, the run's error says which.
        """
        if not isinstance(outcome, api.RequestFailure) or outcome.fault is None:
            return None
        if attempt >= self.policy.stream_retries:
            return None
        delay: float = min(self.policy.stream_retry_backoff * 2**attempt, self.policy.stream_retry_max_backoff)
        blocked = self._resend_blocked(delay)
        if blocked is not None:
            self._retry_stopped_by = blocked
            return None
        self.emit(
            "request.retried",
            level="warning",
            attempt=attempt + 1,
            error_type=outcome.type,
            message=redact_error(outcome.message, self.agent.secrets()),
            fault=outcome.fault,
            delay_s=delay,
        )
        return delay

    def _resend_blocked(self, delay: float) -> str | None:
        """The limit a resend after ``delay`` seconds would break, described, or None."""
        p = self.policy
        if self.turns >= p.max_turns:
            return f"Policy.max_turns={p.max_turns} requests were sent"
        spent = self.spent_budget()
        if spent is not None:
            return f"the Policy.{spent} budget is spent"
        if p.max_wall_seconds is not None and self.elapsed_s + delay >= p.max_wall_seconds:
            return f"Policy.max_wall_seconds={p.max_wall_seconds:g} would pass during the {delay:g} s wait"
        return None

    def begin_tools(self, plan: RunTools) -> tuple[list[ToolCall], dict[str, ToolResult]]:
        """Claim the conversation, settle what needs no run (committed or interrupted), announce the rest."""
        self._claim()
        to_run, settled = self._tool_work(plan.calls)
        for call in to_run:
            self.emit("tool.started", tool=call.name, tool_use_id=call.id)
        return to_run, settled

    def finish_tools(
        self, plan: RunTools, settled: dict[str, ToolResult], results: Sequence[ToolResult], *, fire: bool = True
    ) -> None:
        """Commit what ran, then answer every call of the reply."""
        self._commit(results)
        self.complete_tools(plan, [*settled.values(), *results], fire=fire)

    def begin_request(self) -> None:
        """Claim the conversation, count the request about to go out (the turn) and say so."""
        self._claim()
        self.turns += 1
        self.credit_token = None  # a credit token goes on one request: the one planned before this call
        self.emit("request.sent", max_tokens=self.max_tokens, messages=len(self.messages), model=self.model)

    def plan(self, choice: Any = _ASK) -> Plan:
        """Decide the next transition (and the I/O it needs) without doing anything.

        The state's hook chooses, unless a decision from outside is pending (``decide``) or
        ``choice`` is what an ``async def`` hook returned (the async driver awaits it when this
        returns ``AwaitHook``). A choice of ``Wait``, or none in a ``Wait`` state, is ``Suspend``.
        """
        state = self.state
        if self.decision is not None:
            chosen: str | None = self.decision
        else:
            if choice is _ASK:
                if state in self.agent.async_hook_states():
                    return AwaitHook(state, getattr(self.agent, f"on_{state}"))
                choice = self.agent.hook(state, self)
            if choice is Wait or isinstance(choice, Wait):
                if choice not in (Wait, "", state):
                    raise InvalidTransitionError(
                        f"hook on_{state} returned {choice!r}: a hook's Wait stops where the conversation is "
                        f"({state!r}); to go to another state, return the trigger that leads there"
                    )
                return Suspend(state)
            if inspect.isawaitable(choice):
                if inspect.iscoroutine(choice):
                    choice.close()  # never awaited, on purpose: do not warn about it
                raise ConfigurationError(
                    f"hook on_{state} returned an awaitable: declare it `async def on_{state}(self, conv)` on the "
                    "Agent class, and run with arun(), astream() or aresume()"
                )
            chosen = None if choice is None else str(choice)
            if chosen is None and state in self.table.waits:
                return Suspend(state)
            if chosen is None and state in self.table.must_choose:
                raise InvalidTransitionError(
                    f"hook on_{state} returned None, but {state!r} has several ways out "
                    f"({', '.join(self.table.triggers(state))}) and nothing else may choose for it: return one "
                    "of those triggers, or Wait to stop here until agent.resume(..., trigger=...)"
                )
        if state == REQUESTING and chosen is None:
            for limit in self.table.pre_request:
                if limit.allowed(self):
                    return Fire(limit)
            params = self.request_params()
            return SendRequest(
                params,
                api.request_timeout(self.max_tokens, self.policy.request_timeout, self.policy.long_request_timeout),
                serverside.request_betas(self, params),
            )
        transition = self.table.first_allowed(self, chosen)
        if transition is None:
            if chosen is not None:
                raise InvalidTransitionError(
                    f"hook on_{self.state} chose trigger {chosen!r}, but no transition with that trigger leaves "
                    f"{self.state!r} with its guards passing; triggers from here: {self.table.triggers(self.state)}"
                )
            raise InvalidTransitionError(f"no transition leaves state {self.state!r} with its guards passing")
        if transition.runs_tools:
            self.require_reply()  # raises when there is none to run
            return RunTools(transition, self.reply_calls())
        return Fire(transition)

    def request_params(self) -> dict[str, Any]:
        """The body of the next request."""
        params: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": self._wire_messages()}
        params.update(self.agent.static_params())
        if self.container is not None:
            given = params.get("container")
            params["container"] = {**given, "id": self.container} if isinstance(given, dict) else self.container
        # A retry redeeming a credit token must be the refused request's body: marked as that one was.
        sent_before = self.turns - 1 if self.credit_token is not None else self.turns
        if self.policy.prompt_caching and sent_before > 0:
            # A follow-up: mark what the next request will repeat (on the wire copy only; see agentfsm.wire.caching).
            prefill = self.pending_kind in ("prefill", "caller_prefill")
            params = caching.with_breakpoint(params, prefill=prefill, max_tokens=self.max_tokens, counter=self._marks)
        return serverside.shape_request(self, params)

    def _wire_messages(self) -> list[Message]:
        """The history as sent: a prefill loses its trailing whitespace, which the API rejects."""
        if self.pending_kind not in ("prefill", "caller_prefill"):
            return self.messages
        last = self.messages[-1]
        content = blocks(last)
        if content and content[-1].get("type") == "text":
            stripped = content[-1].get("text", "").rstrip()
            content = [*content[:-1], {**content[-1], "text": stripped}] if stripped else content[:-1]
        return [*self.messages[:-1], {"role": "assistant", "content": content}]

    def complete_request(self, outcome: api.Reply | api.RequestFailure, latency_ms: float) -> None:
        """Feed the outcome of the request from ``requesting`` and fire the transition it calls for."""
        stopped_by, self._retry_stopped_by = self._retry_stopped_by, None
        if isinstance(outcome, api.RequestFailure):
            # The error goes into events, onto the result and into the store: scrubbed of credentials
            # (an error body may quote the key, whole or cut short; a short key only as a word).
            message = redact_error(outcome.message, self.agent.secrets())
            if stopped_by is not None:
                message += f" (not sent again: {stopped_by})"
            self.emit(
                "request.failed",
                level="error",
                error_type=outcome.type,
                status_code=outcome.status_code,
                message=message,
                latency_ms=round(latency_ms, 3),
            )
            self.error = RunError(type=outcome.type, message=message, status_code=outcome.status_code)
            self.prefill_was_rejected = outcome.rejects_prefill
            recovered = (self.table.first_allowed(self, trigger) for trigger in RECOVERABLE_FAILURES)
            self.fire(next((t for t in recovered if t is not None), None) or self._require(API_ERROR))
            return
        self.reply = outcome
        self.container = outcome.container_id or self.container
        self.usage.add(outcome.usage)
        if self.cost_usd is not None:
            price = price_for(outcome.model or self.model, self.policy.prices)
            # compaction passes included, each priced as the request it was
            self.cost_usd = None if price is None else round(self.cost_usd + price.reply_cost(outcome.usage), 10)
            if self.cost_usd is None and self.policy.max_cost_usd is not None:
                # The models the agent names were checked when it was made (Policy.require_prices); this is one
                # that turned up at run time, such as a server-side fallback answering with a model with no price.
                self.emit("budget.unknown_cost", level="warning", model=outcome.model or self.model)
        self.emit(
            "response.received",
            stop_reason=outcome.stop_reason,
            usage=outcome.usage or {},
            latency_ms=round(latency_ms, 3),
            block_types=[b.get("type") for b in outcome.content],
        )
        serverside.note_reply(self, outcome)
        trigger = outcome.stop_reason if outcome.stop_reason in STOP_REASONS else UNKNOWN_STOP_REASON
        self.fire(self._require(str(trigger)))

    def complete_tools(self, plan: RunTools, results: Sequence[ToolResult], *, fire: bool = True) -> None:
        """Feed an executor's results for ``plan.calls`` and fire the transition that answers them.

        ``fire=False`` leaves the firing to the caller (the async driver, which first awaits an
        ``async def`` action).

        One result per call, in call order: a call the executor left unanswered
        gets an is_error result rather than breaking the history. Every result,
        whichever executor made it, is made sendable here (``tools.for_history``):
        cut to ``Policy.max_tool_result_chars``, the client's credentials redacted.
        """
        by_id = {r.tool_use_id: r for r in results}
        ordered: list[ToolResult] = []
        secrets = self.agent.secrets()
        for call in plan.calls:
            result = by_id.get(call.id)
            if result is None:
                result = ToolResult(
                    tool_use_id=call.id,
                    content=f"the tool executor returned no result for call {call.id} of tool {call.name!r}",
                    is_error=True,
                )
            result = for_history(result, limit=self.policy.max_tool_result_chars, secrets=secrets)
            ordered.append(result)
            # A tool that raised: its traceback says where, for the developer (the model read only what).
            where = {} if result.traceback is None else {"traceback": result.traceback}
            self.emit(
                "tool.finished",
                level="warning" if result.is_error else "info",
                tool=call.name,
                tool_use_id=call.id,
                is_error=result.is_error,
                duration_ms=result.duration_ms,
                **where,
            )
        self.tool_results = ToolResults(ordered)  # for_history made each a ToolResult: nothing to check
        self.tool_ms.update((r.tool_use_id, r.duration_ms) for r in ordered)
        self.committed, self.tools_started = {}, []  # answered in the history from now on
        if fire:
            self.fire(plan.transition)

    def _require(self, trigger: str) -> Transition:
        transition = self.table.first_allowed(self, trigger)
        if transition is None:
            raise InvalidTransitionError(f"no transition {trigger!r} leaves {self.state!r}")
        return transition

    def fire(self, transition: Transition) -> None:
        """Take ``transition`` (a row of this agent's table) through the class's ``transitions`` Machine."""
        try:
            event = self.table.machine.events.get(transition.trigger)
            if event is None:
                raise InvalidTransitionError(
                    f"{type(self.agent).__name__}'s table has no transition {transition.trigger!r}; "
                    f"the triggers from {self.state!r}: {self.table.triggers(self.state)}"
                )
            if not event.trigger(self, transition):
                raise InvalidTransitionError(f"transition {transition.trigger!r} from {self.state!r} did not fire")
        finally:
            self._performed = None

    def record_transition(self, source: str, dest: str, trigger: str) -> None:
        """Called by the machine after every state change."""
        self.decision = None  # carried out (and saved so, below)
        size = size_of(self.messages)
        # Validated: pydantic-core does it in ~1 µs, a third of what model_construct costs in Python.
        step = TraceStep(source=source, dest=dest, trigger=trigger, turn=self.turns, history_size=size)
        self.trace.append(step)
        self._save()
        self.emit(
            "transition",
            source=source,
            dest=dest,
            trigger=trigger,
            stop_reason=self.reply.stop_reason if self.reply else None,
            history_size=list(size),
        )
        if dest in self.table.terminal:
            self.emit(
                "run.finished",
                level="warning" if dest != "done" else "info",
                final_state=dest,
                reason=self.reason,
                stop_reason=self.reply.stop_reason if self.reply else None,
                usage=self.usage.model_dump(),
                cost_usd=self.cost_usd,
                turns=self.turns,
                latency_ms=round((time.perf_counter() - self._started) * 1000, 3),
                batched=self.batched,
            )

    # --- waiting, and the actions of a subclass's transitions ----------------------------------

    def suspend(self) -> None:
        """Stop here, waiting for a decision from outside (``Suspend``): saved, and the lease given back
        (whoever decides, in whatever process, takes it)."""
        self._claim()
        self.waiting = self.state
        self.input = None  # it was for the decision before this one
        calls = self.pending_tool_calls
        self.emit(
            "run.waiting",
            waiting=self.state,
            triggers=self.table.triggers(self.state),
            pending_tool_calls=[c.name for c in calls],
        )
        self._save()
        self.release()

    def pending_decision(self) -> PendingDecision | None:
        """What the run waits for, as stored with it (None unless waiting): worked out from the table now, so
        that showing a stored waiting run never needs to import its Agent class."""
        if self.waiting is None:
            return None
        table = self.table
        # The triggers resume() will take: those leaving the state whose guards pass. Guards see what decide()
        # will show them (the conversation as stored, input cleared), so this is the list its error would give.
        can = [t for t in table.triggers(self.waiting) if table.first_allowed(self, t) is not None]
        why = None
        into = next((s for s in reversed(self.trace) if s.dest == self.waiting), None)
        if into is not None:  # the guards of the transition taken into the wait say why it was taken
            edge = (into.source, into.trigger, into.dest)
            why = next((t.condition for t in table.transitions if (t.source, t.trigger, t.dest) == edge), None)
        return PendingDecision(state=self.waiting, triggers=can, tool_calls=self.pending_tool_calls, why=why or None)

    def decide(self, trigger: str | None = None, *, input: Any = None) -> None:
        """Carry a waiting conversation on: along ``trigger`` (one that leaves the waiting state), or,
        without one, by asking the state's hook again. ``input`` (JSON) reaches the hook and the action
        as ``conv.input`` and is stored with the conversation."""
        if self.waiting is None and not (self.state in self.table.waits and self.decision is None):
            if self.decision is not None:
                raise InvalidTransitionError(
                    f"conversation {self.id!r} is not waiting: it is carrying out {self.decision!r} already "
                    "(its run stopped before finishing); resume it without trigger= or input="
                )
            where = "finished" if self.finished else "running"
            raise InvalidTransitionError(
                f"conversation {self.id!r} is not waiting ({where}, at state {self.state!r}): trigger= and "
                "input= are for a conversation that stopped to wait; resume it without them"
            )
        try:
            json.dumps(input)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"input must be JSON (dicts, lists, strings, numbers, booleans, None): it is stored with the "
                f"conversation; {exc}"
            ) from None
        if trigger is not None:
            leaving = self.table.triggers(self.state)
            if trigger not in leaving or self.table.first_allowed(self, trigger) is None:
                can = [t for t in leaving if self.table.first_allowed(self, t) is not None]
                why = "does not leave" if trigger not in leaving else "cannot leave (its guards do not pass)"
                raise InvalidTransitionError(
                    f"trigger {trigger!r} {why} the waiting state {self.state!r}; the triggers that can: "
                    f"{', '.join(can) or 'none'}"
                )
        self._claim()
        self.waiting, self.decision, self.input = None, trigger, input
        kind = sorted(input) if isinstance(input, dict) else type(input).__name__
        self.emit("wait.decided", trigger=trigger, input=kind)

    def require_sync(self) -> None:
        """Refuse to run under the sync drivers when the agent has ``async def`` hooks or actions."""
        parts = self.agent.async_parts()
        if parts:
            raise ConfigurationError(
                f"{type(self.agent).__name__} has async hooks or actions ({', '.join(parts)}): run it with "
                "arun(), astream() or aresume() and an anthropic.AsyncAnthropic client"
            )

    def perform(self, transition: Transition) -> None:
        """Run the action of a subclass's transition (called by the machine as it fires), checked."""
        if self._performed is transition:
            return  # the async driver awaited it already
        action: Any = transition.action
        if transition.awaits:
            self.require_sync()
        with self.acting(transition):
            done = action(self)
            if inspect.isawaitable(done):
                if inspect.iscoroutine(done):
                    done.close()
                raise ConfigurationError(
                    f"action {_name(action)} returned an awaitable: declare it `async def` and run with arun()"
                )

    @contextmanager
    def acting(self, transition: Transition) -> Iterator[None]:
        """Around a subclass's action: if it raises, or leaves a history that breaks the rules every
        request keeps (``InvalidActionError``, naming the action and the rule), everything it changed
        in the history is put back. The async driver awaits an ``async def`` action inside this."""
        self._compaction_seen = None  # an action may edit any message: look at the whole history again
        self._calls = None  # or the reply's blocks
        saved = (
            copy.deepcopy(self.messages),
            list(self.tool_results),
            self._kept_reply,
            self.answer,
            self.reason,
            self.error,
            self.pending_kind,
        )
        try:
            yield
            problems = self.history_problems(sending=transition.dest == REQUESTING)
            if problems:
                raise InvalidActionError.broken_history(
                    _name(transition.action),
                    f"{transition.source} --{transition.trigger}--> {transition.dest}",
                    problems,
                )
        except BaseException:
            self.messages, self.tool_results, self._kept_reply = saved[0], saved[1], saved[2]
            self.answer, self.reason, self.error, self.pending_kind = saved[3:]
            raise
        self._performed = transition

    def history_problems(self, *, sending: bool = True) -> list[tuple[str, str]]:
        """Where the history, as the next request would send it, breaks the rules: (problem, rule) pairs."""
        messages = self.messages
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            messages = self._wire_messages()
        return history_problems(messages, sending=sending)

    def emit(self, name: str, *, level: Level = "info", **data: Any) -> None:
        clean = self.log.record(name, level, self.turns, self.state, data)
        if self._outbox is not None:
            mirrored = stream_event_for(name, self.turns, clean)
            if mirrored is not None:
                self._outbox.append(mirrored)

    # --- the outcome ----------------------------------------------------------------------

    def result(self) -> RunResult:
        reply = self.reply
        result = RunResult(
            conversation_id=self.id,
            final_state="waiting" if self.waiting is not None else self.state,
            waiting=self.waiting,
            pending_tool_calls=self.pending_tool_calls if self.waiting is not None else [],
            reason=self.reason,
            stop_reason=reply.stop_reason if reply else None,
            stop_sequence=reply.stop_sequence if reply else None,
            stop_details=reply.stop_details if reply else None,
            text=self.answer,
            error=self.error,
            messages=self.messages,
            replaced_messages=self.replaced_messages,
            usage=self.usage,
            trace=self.trace,
            model=self.model,
            turns=self.turns,
            agent=type(self.agent).qualified_name(),
            cost_usd=self.cost_usd,
            answered_by=serverside.served_by(reply) if reply else None,
            batched=self.batched,
        )
        result.attach_events(self.log.raw)
        if self.waiting is not None:  # what agent.resume(result, ...) carries on, with no store
            result.attach_snapshot(self.snapshot().model_copy(deep=True))
        return result

    def graph(self, format: str = "mermaid") -> str:
        """The agent's graph with the path so far and the current state highlighted: ``mermaid``, ``dot`` or ``svg``."""
        from agentfsm.observe.graph import conversation_graph

        return conversation_graph(self, format)


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))
