"""The step, sans I/O: decide what the next step needs, and complete it with what the I/O brought back.

Everything a run decides is here, as plain functions over a ``Conversation``;
nothing here sends a request, runs a tool, awaits or sleeps. ``plan`` says what
the next step needs (``agentfsm.machine.plan``); ``begin_request`` /
``complete_request``, ``begin_tools`` / ``finish_tools`` and ``fire`` take the
outcome back and fire the transition it calls for; ``resend`` decides whether
a broken stream is sent again (the attempt, its backoff and the limits that
stop it). ``agentfsm.machine.loop`` strings these together into the one loop
every runner interprets; this module is what it strings together.

These are the driver protocol: a hook or an action never calls them (it gets
the ``Conversation``, whose public face is reading and ``decide``).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from agentfsm.errors import ConfigurationError, InvalidActionError, InvalidTransitionError
from agentfsm.machine import fallback, output, serverside, threads
from agentfsm.machine.persistence import Settled
from agentfsm.machine.plan import AwaitHook, Fire, Plan, RunTools, SendRequest, Suspend
from agentfsm.machine.streaming import StreamEvent
from agentfsm.machine.table import (
    API_ERROR,
    AWAITING_APPROVAL,
    BASE_TRANSITIONS,
    COMPACTION_FAILED,
    RECOVERABLE_FAILURES,
    REQUESTING,
    STOP_REASONS,
    UNKNOWN_STOP_REASON,
    Transition,
    Wait,
)
from agentfsm.redaction import redact_error
from agentfsm.result import RunError
from agentfsm.tools.approval import requires_approval
from agentfsm.tools.calls import ToolCall, ToolContext, ToolResult, ToolResults, for_history
from agentfsm.wire import api, caching, models
from agentfsm.wire.api_errors import action_of
from agentfsm.wire.messages import Message, blocks, history_problems, size_of
from agentfsm.wire.pricing import price_for

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation
    from agentfsm.tools.reconcile import Checked

ASK: Any = object()  # plan(): no choice given, ask the hook


# --- planning -------------------------------------------------------------------------------


def plan(conv: Conversation, choice: Any = ASK) -> Plan:
    """Decide the next transition (and the I/O it needs) without doing anything.

    The state's hook chooses, unless a decision from outside is pending (``decide``) or
    ``choice`` is what an ``async def`` hook returned (the async runners await it when this
    returns ``AwaitHook``). A choice of ``Wait``, or none in a ``Wait`` state, is ``Suspend``.
    """
    run, table = conv.runstate, conv.table
    state = run.state
    if run.decision is not None:
        chosen: str | None = run.decision
    else:
        if choice is ASK:
            if state in conv.agent.async_hook_states():
                return AwaitHook(state, getattr(conv.agent, f"on_{state}"))
            choice = conv.agent.hook(state, conv)
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
        if chosen is None and state in table.waits:
            return Suspend(state)
        if chosen is None and state in table.must_choose:
            raise InvalidTransitionError(
                f"hook on_{state} returned None, but {state!r} has several ways out "
                f"({', '.join(table.triggers(state))}) and nothing else may choose for it: return one "
                "of those triggers, or Wait to stop here until agent.resume(..., trigger=...)"
            )
    if state == REQUESTING and chosen is None:
        if conv.agent.toolset is not None:
            stopped = _tools_failed(conv)
            if stopped is not None:
                return stopped
        for limit in table.pre_request:
            if limit.allowed(conv):
                return Fire(limit)
        return _send_request(conv)
    transition = table.first_allowed(conv, chosen)
    if transition is None:
        if chosen is not None:
            raise InvalidTransitionError(
                f"hook on_{state} chose trigger {chosen!r}, but no transition with that trigger leaves "
                f"{state!r} with its guards passing; triggers from here: {table.triggers(state)}"
            )
        raise InvalidTransitionError(f"no transition leaves state {state!r} with its guards passing")
    if transition.runs_tools:
        conv.require_reply()  # raises when there is none to run
        calls = conv.reply_calls()
        if transition.dest == AWAITING_APPROVAL:  # the calls that need no approval run before the run waits
            tools = conv.agent.tool_map
            calls = [call for call in calls if not requires_approval(tools, call)]
        elif chosen is not None and transition.source != AWAITING_APPROVAL and transition in _GATED:
            _refuse_unapproved(conv, chosen, calls)
        return RunTools(transition, calls)
    return Fire(transition)


def _tools_failed(conv: Conversation) -> Fire | None:
    """An MCP server the agent's tools come from failed (or a re-listing made two tools share a name): no
    request can carry the tools, so the run ends ``failed`` along ``api_error``, with that error."""
    problem = conv.agent.tools_problem()
    if problem is None:
        return None
    message = redact_error(str(problem), conv.agent.secrets())
    conv.emit("request.failed", level="error", error_type=type(problem).__name__, status_code=None,
              message=message, latency_ms=0.0)  # fmt: skip
    conv.runstate.error = RunError(type=type(problem).__name__, message=message)
    return Fire(_require(conv, API_ERROR))


#: The base table's rows that run a reply's calls: the first allowed of a state is its await_approval row when a
#: call needs approval, so only a trigger named from outside (a hook, a decision) could reach these then.
_GATED = frozenset(t for t in BASE_TRANSITIONS if t.runs_tools and AWAITING_APPROVAL not in (t.source, t.dest))


def _refuse_unapproved(conv: Conversation, chosen: str, calls: list[ToolCall]) -> None:
    """Nothing runs a call needing approval before a person decides it: not a hook naming ``run_tools`` either."""
    tools = conv.agent.tool_map
    gated = [f"{call.name} ({call.id})" for call in calls if requires_approval(tools, call)]
    if gated:
        state = conv.runstate.state
        raise InvalidTransitionError(
            f"{chosen!r} from {state!r} would run calls that need approval: {', '.join(gated)}; return None or "
            f"'await_approval' from on_{state} (the run then waits for agent.resume(..., approve=..., deny=...))"
        )


def _send_request(conv: Conversation, attempt: int = 0) -> SendRequest:
    """The next request, as the run's transport sends it (``agentfsm.machine.threads``)."""
    params = request_params(conv)
    policy = conv.policy
    params, betas = threads.shape(conv, params, serverside.request_betas(conv, params))
    timeout = api.request_timeout(conv.runstate.max_tokens, policy.request_timeout, policy.long_request_timeout)
    return SendRequest(params, timeout, betas, attempt)


def request_params(conv: Conversation) -> dict[str, Any]:
    """The body of the next request."""
    run = conv.runstate
    params: dict[str, Any] = {"model": run.model, "max_tokens": run.max_tokens, "messages": wire_messages(conv)}
    params.update(conv.agent.static_params())
    params = output.shape_request(conv, params)  # output_config.format, for an output_type asked for natively
    if run.container is not None:
        given = params.get("container")
        params["container"] = {**given, "id": run.container} if isinstance(given, dict) else run.container
    # A retry redeeming a credit token must be the refused request's body: marked as that one was.
    turns = run.counters.turns
    sent_before = turns - 1 if run.credit_token is not None else turns
    if conv.policy.prompt_caching and sent_before > 0:
        # A follow-up: mark what the next request will repeat (on the wire copy only; see agentfsm.wire.caching).
        prefill = run.pending_kind in ("prefill", "caller_prefill")
        params = caching.with_breakpoint(params, prefill=prefill, max_tokens=run.max_tokens, counter=conv._marks)
    params = serverside.shape_request(conv, params)
    if run.model != conv.agent.model:  # another model mid-run (a fallback): the request made fit for it
        params, changed = models.request_for_model(params, run.model, from_model=conv.agent.model)
        if changed:
            conv.emit("request.adapted", model=run.model, changed=changed)
    return params


def wire_messages(conv: Conversation) -> list[Message]:
    """The history as sent: a prefill loses its trailing whitespace, which the API rejects; after a switch of
    model, the thinking blocks another model produced are left out (``agentfsm.machine.fallback``)."""
    messages = conv.runstate.messages
    if conv.runstate.thinking_before:
        messages = fallback.without_other_thinking(messages, conv.runstate.thinking_before)
    if conv.runstate.pending_kind not in ("prefill", "caller_prefill"):
        return messages
    last = messages[-1]
    content = blocks(last)
    if content and content[-1].get("type") == "text":
        stripped = content[-1].get("text", "").rstrip()
        content = [*content[:-1], {**content[-1], "text": stripped}] if stripped else content[:-1]
    return [*messages[:-1], {"role": "assistant", "content": content}]


def spent_budget(conv: Conversation) -> str | None:
    """The name of the first budget of the policy that is spent, or None."""
    p, run = conv.policy, conv.runstate
    u = run.usage
    if p.max_input_tokens is not None and (
        u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens >= p.max_input_tokens
    ):
        return "max_input_tokens"
    if p.max_output_tokens is not None and u.output_tokens >= p.max_output_tokens:
        return "max_output_tokens"
    if p.max_cost_usd is not None and run.cost_usd is not None and run.cost_usd >= p.max_cost_usd:
        return "max_cost_usd"
    if p.max_wall_seconds is not None and conv.elapsed_s >= p.max_wall_seconds:
        return "max_wall_seconds"
    return None


# --- a request ------------------------------------------------------------------------------


def begin_request(conv: Conversation) -> None:
    """Claim the conversation, count the request about to go out (the turn) and say so."""
    conv._persistence.claim(conv)
    run = conv.runstate
    run.counters.turns += 1
    conv.emit("request.sent", max_tokens=run.max_tokens, messages=len(run.messages), model=run.model)


def resend(conv: Conversation, sent: SendRequest, outcome: api.Reply | api.RequestFailure) -> SendRequest | None:
    """The same request again, after a backoff, when a stream broke and the limits allow another; else None.
    On a message thread the server lost (``agentfsm.machine.threads.lost``), the same turn at once, with the
    full history on a new thread.

    A resend is a request like any other (counted as a turn by ``begin_request``): it is sent
    only while ``Policy.stream_retries`` allows another (for an error the API says to retry later,
    ``Policy.max_retries_later``, after its retry-after or ``retry_later_seconds``), a turn is left
    under ``max_turns``, and
    no budget is spent — wall time counted to the end of the wait. When a limit stops the
    resends, the run's error says which.
    """
    if threads.lost(conv, outcome):  # the same turn again, with the full history, on a new thread
        blocked = _resend_blocked(conv, 0.0)
        if blocked is None:
            return _send_request(conv, sent.attempt)
        conv._retry_stopped_by = blocked
        return None
    if not isinstance(outcome, api.RequestFailure):
        return None
    policy = conv.policy
    if outcome.fault is None:  # an HTTP error after the SDK's retries: again only when the API says to wait
        if action_of(outcome.kind) != "retry_later" or sent.attempt >= policy.max_retries_later:
            return None
        delay = policy.retry_later_seconds if outcome.retry_after is None else outcome.retry_after
    elif sent.attempt >= policy.stream_retries:
        return None
    else:
        delay = min(policy.stream_retry_backoff * 2**sent.attempt, policy.stream_retry_max_backoff)
    blocked = _resend_blocked(conv, delay)
    if blocked is not None:
        conv._retry_stopped_by = blocked
        return None
    conv.emit(
        "request.retried",
        level="warning",
        attempt=sent.attempt + 1,
        error_type=outcome.type,
        message=redact_error(outcome.message, conv.agent.secrets()),
        fault=outcome.fault,
        delay_s=delay,
    )
    return sent.again(delay)


def _resend_blocked(conv: Conversation, delay: float) -> str | None:
    """The limit a resend after ``delay`` seconds would break, described, or None."""
    p = conv.policy
    if conv.runstate.counters.turns >= p.max_turns:
        return f"Policy.max_turns={p.max_turns} requests were sent"
    spent = spent_budget(conv)
    if spent is not None:
        return f"the Policy.{spent} budget is spent"
    if p.max_wall_seconds is not None and conv.elapsed_s + delay >= p.max_wall_seconds:
        return f"Policy.max_wall_seconds={p.max_wall_seconds:g} would pass during the {delay:g} s wait"
    return None


def complete_request(conv: Conversation, outcome: api.Reply | api.RequestFailure, latency_ms: float) -> None:
    """Feed the outcome of the request from ``requesting`` and fire the transition it calls for."""
    run = conv.runstate
    threads.note_reply(conv, outcome, wire_messages(conv))
    stopped_by, conv._retry_stopped_by = conv._retry_stopped_by, None
    if isinstance(outcome, api.RequestFailure):
        # The error goes into events, onto the result and into the store: scrubbed of credentials
        # (an error body may quote the key, whole or cut short; a short key only as a word).
        message = redact_error(outcome.message, conv.agent.secrets())
        if stopped_by is not None:
            message += f" (not sent again: {stopped_by})"
        conv.emit(
            "request.failed",
            level="error",
            error_type=outcome.type,
            status_code=outcome.status_code,
            message=message,
            latency_ms=round(latency_ms, 3),
        )
        run.error = RunError(
            type=outcome.type,
            message=message,
            status_code=outcome.status_code,
            kind=outcome.kind,
            error_code=outcome.error_code,
        )
        run.prefill_was_rejected = outcome.rejects_prefill
        table = conv.table
        recovered = (table.first_allowed(conv, trigger) for trigger in RECOVERABLE_FAILURES)
        fire(conv, next((t for t in recovered if t is not None), None) or _require(conv, API_ERROR))
        return
    _share_strings(outcome.content)
    run.reply, run.reply_kept = outcome, False
    run.container = outcome.container_id or run.container
    run.usage.add(outcome.usage)
    run.credit_token = None  # a credit token goes on one request: answered now (a refusal's own goes on the hop)
    answered_by = serverside.served_by(outcome) or run.model
    price = price_for(outcome.model or run.model, conv.policy.prices)
    cost = None if price is None else price.reply_cost(outcome.usage)  # compaction passes included
    fallback.account(conv, answered_by, outcome.usage, cost)
    if run.cost_usd is not None:
        run.cost_usd = None if cost is None else round(run.cost_usd + cost, 10)
        if run.cost_usd is None and conv.policy.max_cost_usd is not None:
            # The models the agent names were checked when it was made (Policy.require_prices); this is one
            # that turned up at run time, such as a server-side fallback answering with a model with no price.
            conv.emit("budget.unknown_cost", level="warning", model=outcome.model or run.model)
    conv.emit(
        "response.received",
        stop_reason=outcome.stop_reason,
        usage=outcome.usage or {},
        latency_ms=round(latency_ms, 3),
        block_types=[b.get("type") for b in outcome.content],
    )
    serverside.note_reply(conv, outcome)
    trigger = outcome.stop_reason if outcome.stop_reason in STOP_REASONS else UNKNOWN_STOP_REASON
    fallback.answered(conv, answered_by, refused=trigger == "refusal")
    if run.pending_kind == "compaction" and trigger != "compaction":
        # Our compaction request is answered with stop_reason "compaction" (the block, alone). Under any other
        # stop reason the reply is not a compaction, whatever it holds, nor an answer to the conversation (it
        # was asked to summarise): a failed compaction, as a reply of the wrong shape is.
        trigger = COMPACTION_FAILED
    fire(conv, _require(conv, str(trigger)))


def _share_strings(content: list[dict[str, Any]]) -> None:
    """Give a reply's blocks the process's one copy of their keys, type and tool name.

    Each reply's JSON comes with copies of its own (``"type"``, ``"text"``, ``"id"``, ``"tool_use"``,
    the tool's name ...), and the history keeps every reply's blocks: ~400 bytes a turn of strings
    that are all equal. The blocks are replaced by equal ones (same keys, same order, same values)
    holding the interned strings.
    """
    for i, block in enumerate(content):
        shared = {sys.intern(key) if type(key) is str else key: value for key, value in block.items()}
        for field in ("type", "name"):
            value = shared.get(field)
            if type(value) is str:
                shared[field] = sys.intern(value)
        content[i] = shared


# --- tool calls ---------------------------------------------------------------------------------


def tool_timeout(conv: Conversation) -> float:
    """Seconds each tool call may take (``Policy.tool_timeout``; unbounded when None)."""
    return conv.policy.tool_timeout or math.inf


def begin_tools(conv: Conversation, plan: RunTools) -> Settled:
    """Claim the conversation, settle what needs no run (committed or interrupted), announce the rest."""
    conv._persistence.claim(conv)
    calls, answered = output.split_calls(conv, plan.calls)  # a final_answer call is judged, never run
    settled = conv._persistence.start_tools(conv, calls)
    settled.results.update(answered)
    # Each call carries its ToolContext to the executor (a tool that declares one receives it): the key is
    # the call's own, whichever runner runs it; attempt 2 when the ledger says it started before.
    settled.to_run = [
        call.with_context(ToolContext.of(conv.id, call.id, 2 if call.id in settled.again else 1))
        for call in settled.to_run
    ]
    # A call in doubt is checked with its key (the one it ran with) before anything runs (``reconciled``).
    settled.to_check = [call.with_context(ToolContext.of(conv.id, call.id, 2)) for call in settled.to_check]
    if not settled.to_check:
        announce_tools(conv, settled.to_run)
    return settled


def announce_tools(conv: Conversation, calls: Sequence[ToolCall]) -> None:
    for call in calls:
        conv.emit("tool.started", tool=call.name, tool_use_id=call.id)


def reconciled(conv: Conversation, settled: Settled, checked: Sequence[Checked]) -> None:
    """Carry out the answers of the reconcile checks (``Reconcile``), then announce what runs now."""
    conv._persistence.reconciled(conv, settled, checked)
    announce_tools(conv, settled.to_run)


def commit_call(conv: Conversation) -> Callable[[ToolResult], None] | None:
    """The ``RunTools.commit`` of ``conv``: commits one finished call's result (``Persistence.commit_call``);
    None without a store (nothing to commit: the executor runs the batch as it always did)."""
    persistence = conv._persistence
    if persistence.store is None:
        return None
    return functools.partial(persistence.commit_call, conv)


def commit_tools(conv: Conversation, results: Sequence[ToolResult]) -> None:
    """Commit the results the runner did not commit call by call (one save; none if it did)."""
    conv._persistence.commit(conv, results)


def finish_tools(conv: Conversation, plan: RunTools, settled: Settled, results: Sequence[ToolResult]) -> None:
    """Answer every call of the reply (the caller fires ``plan.transition``)."""
    complete_tools(conv, plan, [*settled.results.values(), *results])


def complete_tools(conv: Conversation, plan: RunTools, results: Sequence[ToolResult]) -> None:
    """Feed an executor's results for ``plan.calls``, ready for the transition that answers them.

    One result per call, in call order: a call the executor left unanswered gets an is_error
    result rather than breaking the history. Every result, whichever executor made it, is made
    sendable here (``tools.for_history``): cut to ``Policy.max_tool_result_chars``, the client's
    credentials redacted.
    """
    by_id = {r.tool_use_id: r for r in results}
    ordered: list[ToolResult] = []
    secrets = conv.agent.secrets()
    limit = conv.policy.max_tool_result_chars
    for call in plan.calls:
        result = by_id.get(call.id)
        if result is None:
            result = ToolResult(
                tool_use_id=call.id,
                content=f"the tool executor returned no result for call {call.id} of tool {call.name!r}",
                is_error=True,
            )
        result = for_history(result, limit=limit, secrets=secrets)
        ordered.append(result)
        # A tool that raised: its traceback says where, for the developer (the model read only what).
        where = {} if result.traceback is None else {"traceback": result.traceback}
        conv.emit(
            "tool.finished",
            level="warning" if result.is_error else "info",
            tool=call.name,
            tool_use_id=call.id,
            is_error=result.is_error,
            duration_ms=result.duration_ms,
            **where,
        )
    conv.tool_results = ToolResults(ordered)  # for_history made each a ToolResult: nothing to check
    run = conv.runstate
    run.tool_ms.update((r.tool_use_id, r.duration_ms) for r in ordered)
    run.tool_results, run.tools_started = {}, []  # answered in the history from now on


# --- transitions -------------------------------------------------------------------------------


def _require(conv: Conversation, trigger: str) -> Transition:
    transition = conv.table.first_allowed(conv, trigger)
    if transition is None:
        raise InvalidTransitionError(f"no transition {trigger!r} leaves {conv.runstate.state!r}")
    return transition


def fire(conv: Conversation, transition: Transition) -> None:
    """Take ``transition`` (a row of this agent's table) through the class's ``transitions`` Machine."""
    try:
        event = conv.table.machine.events.get(transition.trigger)
        if event is None:
            raise InvalidTransitionError(
                f"{type(conv.agent).__name__}'s table has no transition {transition.trigger!r}; "
                f"the triggers from {conv.runstate.state!r}: {conv.table.triggers(conv.runstate.state)}"
            )
        if not event.trigger(conv, transition):
            raise InvalidTransitionError(f"transition {transition.trigger!r} from {conv.runstate.state!r} did not fire")
    finally:
        conv._performed = None


def perform(conv: Conversation, transition: Transition) -> None:
    """Run the action of a subclass's transition (called by the machine as it fires), checked."""
    if conv._performed is transition:
        return  # an async runner awaited it already
    action: Any = transition.action
    if transition.awaits:
        require_sync(conv)
    with acting(conv, transition):
        done = action(conv)
        if inspect.isawaitable(done):
            if inspect.iscoroutine(done):
                done.close()
            raise ConfigurationError(
                f"action {_name(action)} returned an awaitable: declare it `async def` and run with arun()"
            )


@contextmanager
def acting(conv: Conversation, transition: Transition) -> Iterator[None]:
    """Around a subclass's action: if it raises, or leaves a history that breaks the rules every
    request keeps (``InvalidActionError``, naming the action and the rule), everything it changed
    in the history is put back. An async runner awaits an ``async def`` action inside this."""
    conv._compaction_seen = None  # an action may edit any message: look at the whole history again
    conv._calls = None  # or the reply's blocks
    run = conv.runstate
    saved = (
        copy.deepcopy(run.messages),
        list(conv.tool_results),
        run.reply_kept,
        run.answer,
        run.reason,
        run.error,
        run.pending_kind,
    )
    try:
        yield
        problems = history_problems(_sent(conv), sending=transition.dest == REQUESTING)
        if problems:
            raise InvalidActionError.broken_history(
                _name(transition.action),
                f"{transition.source} --{transition.trigger}--> {transition.dest}",
                problems,
            )
    except BaseException:
        run.messages, conv.tool_results, run.reply_kept = saved[0], saved[1], saved[2]
        run.answer, run.reason, run.error, run.pending_kind = saved[3:]
        raise
    conv._performed = transition


def _sent(conv: Conversation) -> list[Message]:
    """The history as the next request would send it."""
    messages = conv.runstate.messages
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        return wire_messages(conv)
    return messages


def record_transition(conv: Conversation, source: str, dest: str, trigger: str) -> None:
    """Called by the machine after every state change: the trace, the save, the events."""
    run = conv.runstate
    run.decision = None  # carried out (and saved so, below)
    size = size_of(run.messages)
    run.trace.record(source, dest, trigger, run.counters.turns, size)
    conv._persistence.save(conv)
    reply = run.reply
    conv.emit(
        "transition",
        source=source,
        dest=dest,
        trigger=trigger,
        stop_reason=reply.stop_reason if reply else None,
        history_size=list(size),
    )
    if dest in conv.table.terminal:
        conv.emit(
            "run.finished",
            level="warning" if dest != "done" else "info",
            final_state=dest,
            reason=run.reason,
            stop_reason=reply.stop_reason if reply else None,
            usage=run.usage.model_dump(),
            cost_usd=run.cost_usd,
            turns=run.counters.turns,
            latency_ms=round((conv._clock.now() - conv._started) * 1000, 3),
            batched=run.batched,
        )


# --- stopping to wait ---------------------------------------------------------------------------


def suspend(conv: Conversation) -> None:
    """Stop here, waiting for a decision from outside (``Suspend``): saved, and the lease given back
    (whoever decides, in whatever process, takes it)."""
    persistence = conv._persistence
    persistence.claim(conv)
    run = conv.runstate
    run.waiting = run.state
    run.wait_token = conv._new_wait_token()  # names this wait: a decision spends it (decided once)
    run.input = None  # it was for the decision before this one
    calls = conv.pending_tool_calls
    conv.emit(
        "run.waiting",
        waiting=run.state,
        triggers=conv.table.triggers(run.state),
        pending_tool_calls=[c.name for c in calls],
    )
    persistence.save(conv)
    persistence.release(conv)


def drain(conv: Conversation) -> list[StreamEvent]:
    """The stream events the run emitted since the last drain (a streaming runner yields them in order)."""
    outbox = conv._outbox
    if not outbox:
        return []
    drained = list(outbox)
    outbox.clear()
    return drained


def require_sync(conv: Conversation) -> None:
    """Refuse to run under the sync runners when the agent has ``async def`` hooks or actions."""
    parts = conv.agent.async_parts()
    if parts:
        raise ConfigurationError(
            f"{type(conv.agent).__name__} has async hooks or actions ({', '.join(parts)}): run it with "
            "arun(), astream() or aresume() and an anthropic.AsyncAnthropic client"
        )


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))
