"""Around every tool call: a person's approval first, then ``before_tool``, then the call, then ``after_tool``.

The loop (``agentfsm.machine.loop``) runs one step's tool calls so::

    screened = yield from around.screen(conv, plan)   # approvals carried out, before_tool asked
    settled = core.begin_tools(conv, screened.plan)   # the ledger: what runs now, what is settled
    ... yield Reconcile(...)                          # calls in doubt: their reconcile checks, if any
    results = yield RunTools(...)                     # the executor (each result committed as it finishes)
    results = yield from around.review(conv, screened, [*held, *results])   # after_tool
    core.finish_tools(conv, plan, settled, [*screened.answered, *results])

``after_tool`` sees every result the ledger committed and the history has not answered yet: the ones
just run, and on a resume those committed before the crash (the ledger keeps a result as the executor
made it, so the hook decides on it again, as an engine's replay asks it again about a recorded one).

**Where they run, and why here.** Around the executor, in the loop — not inside an executor. So
every runner gets them with no copy: the four drivers, the durable engines (the calls run in the
engine's durable tool step; the hooks are workflow code, replayed like any hook, so they must
decide from the call and the conversation alone) and the batch runner; and a ``ToolExecutor`` of
your own (a sandbox, a remote worker) needs to know nothing of them. An executor sees no
conversation, and a hook needs one (``conv``, the face hooks get). An ``async def`` hook is
awaited by the async runners (an ``AwaitHook`` effect: one for the whole batch, its calls asked
concurrently); the sync runners refuse an agent with one before anything is sent
(``core.require_sync``).

**What each sees.** ``before_tool(call, conv)`` is asked for each call about to run — not for a
call whose result the ledger holds, nor one answered as interrupted — and answers None (run it),
``Deny(reason)`` (an ``is_error`` result with the reason; the function never runs) or
``Rewrite(input=...)`` (validated against the tool's schema, then run with it; an input that does
not validate is an ``is_error`` result saying so). The history keeps the call as the model made
it. ``after_tool(call, result, conv)`` is asked for each result the executor returned, with the
call as it ran (rewritten, if it was), and may return a replacement ``ToolResult`` (it answers the
same call: its ``tool_use_id`` is the call's). Each decision is an event (``tool.denied``,
``tool.rewritten``, ``tool.result_replaced``) and an attribute of the call's span.

**A hook that fails fails closed.** A hook that raises, or answers something else than the above,
does not crash the run and never lets a call or a result through unchecked: before the call, the
call is not run; after it, the result is withheld. Either way the model reads an ``is_error``
result saying the agent's check failed, and the developer gets the traceback (on the result and
its ``tool.finished`` event) and the decision's event.

**Approvals.** In ``awaiting_tool_approval`` the decision (``conv.input``, checked by
``decide``: ``{"approve": [ids], "deny": {id: reason}}``) is carried out first: a denied call is
answered with its reason and never reaches ``before_tool``; an approved one goes on like any
other. A call the decision does not name is denied (it cannot happen through ``decide``; a run
never runs a call unapproved).
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentfsm.errors import ToolInputError
from agentfsm.machine.persistence import settle
from agentfsm.machine.plan import AwaitHook, Effect, RunTools
from agentfsm.machine.table import AWAITING_APPROVAL
from agentfsm.tools.approval import DEFAULT_DENIAL, read_decision
from agentfsm.tools.calls import ToolCall, ToolResult
from agentfsm.tools.hooks import Deny, Rewrite

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

#: The events of the decisions made around a call; each also sets attributes on the call's OpenTelemetry span.
DECISION_EVENTS = ("tool.denied", "tool.rewritten", "tool.result_replaced")

#: What the model reads for a call whose approval the decision did not give (never the case through ``decide``).
NOT_APPROVED = "This tool call was not approved; it was not run."


@dataclass
class Screened:
    """One step's calls after approvals and ``before_tool``: what goes to the ledger and the executor."""

    #: The calls to hand on (denied ones taken out, rewritten ones with their new input), as a ``RunTools``.
    plan: RunTools
    #: The results of the calls answered without running (denied, an invalid rewrite, a hook that failed).
    answered: list[ToolResult] = field(default_factory=list)


def screen(conv: Conversation, plan: RunTools) -> Generator[Effect, Any, Screened]:
    """Carry out an approval decision, then ask ``before_tool`` about each call about to run."""
    calls, answered = list(plan.calls), list[ToolResult]()
    if plan.transition.source == AWAITING_APPROVAL:
        calls, answered = _approved(conv, calls)
    before, is_async = conv.agent.tool_hooks()[0]
    if before and calls:
        run = conv.runstate
        due = settle(calls, committed=run.tool_results, started=run.tools_started, tools=conv.agent.tool_map)
        asked = [*due.to_run, *due.to_check]  # a call in doubt may run, if its reconcile check says it did not
        if asked:
            if is_async:
                answers = yield AwaitHook(conv.state, _gathered(lambda call, c: c.agent.before_tool(call, c), asked))
            else:
                answers = [_asked(conv.agent.before_tool, call, conv) for call in asked]
            replaced: dict[str, ToolCall | ToolResult] = {}
            for call, answer in zip(asked, answers, strict=True):
                outcome = _before(conv, call, answer)
                if isinstance(outcome, ToolResult):
                    answered.append(outcome)
                replaced[call.id] = outcome
            calls = [c for c in (replaced.get(c.id, c) for c in calls) if isinstance(c, ToolCall)]
    if answered or len(calls) != len(plan.calls) or any(a is not b for a, b in zip(calls, plan.calls, strict=False)):
        plan = RunTools(plan.transition, calls)
    return Screened(plan, answered)


def review(
    conv: Conversation, screened: Screened, results: list[ToolResult]
) -> Generator[Effect, Any, list[ToolResult]]:
    """Ask ``after_tool`` about each result the executor returned; give the results as they go on."""
    after, is_async = conv.agent.tool_hooks()[1]
    if not after or not results:
        return results
    ran = {c.id: c for c in screened.plan.calls}
    asked = [(ran[r.tool_use_id], r) for r in results if r.tool_use_id in ran]
    if is_async:
        answers = yield AwaitHook(conv.state, _gathered(lambda pair, c: c.agent.after_tool(pair[0], pair[1], c), asked))
    else:
        answers = [_asked(conv.agent.after_tool, call, result, conv) for call, result in asked]
    replaced = {
        result.tool_use_id: _after(conv, call, result, answer)
        for (call, result), answer in zip(asked, answers, strict=True)
    }
    return [replaced.get(r.tool_use_id, r) for r in results]


# --- approvals ----------------------------------------------------------------------------------------------


def _approved(conv: Conversation, calls: list[ToolCall]) -> tuple[list[ToolCall], list[ToolResult]]:
    """The calls a decision lets through (and those the ledger holds), and the denied ones' results."""
    committed = conv.runstate.tool_results
    pending = [c for c in calls if c.id not in committed]
    try:
        decided = read_decision(pending, conv.input)
    except Exception:  # never through decide(), which checks it: then nothing is approved
        decided = {"approve": [], "deny": {}}
    approved, denied = set(decided["approve"]), decided["deny"]
    kept, answered = [], []
    for call in calls:
        if call.id in committed or call.id in approved:
            kept.append(call)
            continue
        reason = denied.get(call.id) or (DEFAULT_DENIAL if call.id in denied else NOT_APPROVED)
        answered.append(ToolResult(tool_use_id=call.id, content=reason, is_error=True, duration_ms=0.0))
        conv.emit("tool.denied", tool=call.name, tool_use_id=call.id, by="approval", reason=reason)
    return kept, answered


# --- before_tool and after_tool -------------------------------------------------------------------------------


class _Failed:
    """A hook that raised: the exception, and its traceback for the developer."""

    __slots__ = ("exc", "traceback")

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _asked(hook: Callable[..., Any], *args: Any) -> Any:
    """A sync hook's answer, or ``_Failed`` when it raised (an ``Exception``; anything else goes up)."""
    try:
        answer = hook(*args)
    except Exception as exc:
        return _Failed(exc)
    if inspect.isawaitable(answer):
        if inspect.iscoroutine(answer):
            answer.close()  # never awaited, on purpose: do not warn about it
        return _Failed(TypeError("returned an awaitable from a hook that is not `async def`"))
    return answer


def _gathered(hook: Callable[[Any, Conversation], Any], items: Sequence[Any]) -> Callable[[Conversation], Any]:
    """An ``AwaitHook``'s function: the async hook asked about every item at once, failures kept per item."""

    async def ask(conv: Conversation) -> list[Any]:
        answers = await asyncio.gather(*(hook(item, conv) for item in items), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer  # cancelled, interrupted: not the hook's answer
        return [_Failed(a) if isinstance(a, Exception) else a for a in answers]

    return ask


def _before(conv: Conversation, call: ToolCall, answer: Any) -> ToolCall | ToolResult:
    """What ``before_tool``'s answer makes of the call: the call (as it runs) or its result (it does not run)."""
    if answer is None:
        return call
    if isinstance(answer, Deny):
        conv.emit("tool.denied", tool=call.name, tool_use_id=call.id, by="before_tool", reason=answer.reason)
        return ToolResult(tool_use_id=call.id, content=answer.reason, is_error=True, duration_ms=0.0)
    if isinstance(answer, Rewrite):
        tool = conv.agent.tool_map.get(call.name)
        try:
            if tool is not None:
                tool.validate(answer.input)
        except ToolInputError as exc:
            conv.emit("tool.rewritten", level="warning", tool=call.name, tool_use_id=call.id, valid=False)
            content = (
                f"The call was not run: the agent's check before it rewrote its input for tool {call.name!r}, and "
                f"the new input is not valid: {'; '.join(exc.problems)}."
            )
            return ToolResult(tool_use_id=call.id, content=content, is_error=True, duration_ms=0.0)
        conv.emit("tool.rewritten", tool=call.name, tool_use_id=call.id, valid=True)
        return call.model_copy(update={"input": answer.input})
    failed = answer if isinstance(answer, _Failed) else _Failed(TypeError(_wrong("before_tool", answer)))
    why = f"{type(failed.exc).__name__}: {failed.exc}"
    conv.emit("tool.denied", level="warning", tool=call.name, tool_use_id=call.id, by="before_tool", reason=why)
    content = f"The call was not run: the agent's check before it failed ({type(failed.exc).__name__})."
    return ToolResult(tool_use_id=call.id, content=content, is_error=True, duration_ms=0.0, traceback=failed.traceback)


def _after(conv: Conversation, call: ToolCall, result: ToolResult, answer: Any) -> ToolResult:
    """What ``after_tool``'s answer makes of the result: it, or its replacement (answering the same call)."""
    if answer is None:
        return result
    if isinstance(answer, ToolResult):
        update: dict[str, Any] = {"tool_use_id": result.tool_use_id}
        if answer.duration_ms is None:
            update["duration_ms"] = result.duration_ms
        replacement = answer.model_copy(update=update)
        conv.emit("tool.result_replaced", tool=call.name, tool_use_id=call.id, is_error=replacement.is_error)
        return replacement
    failed = answer if isinstance(answer, _Failed) else _Failed(TypeError(_wrong("after_tool", answer)))
    conv.emit(
        "tool.result_replaced",
        level="warning",
        tool=call.name,
        tool_use_id=call.id,
        is_error=True,
        reason=f"after_tool failed: {type(failed.exc).__name__}: {failed.exc}",
    )
    content = f"The result was withheld: the agent's check after the call failed ({type(failed.exc).__name__})."
    return ToolResult(
        tool_use_id=result.tool_use_id,
        content=content,
        is_error=True,
        duration_ms=result.duration_ms,
        traceback=failed.traceback,
    )


def _wrong(hook: str, answer: object) -> str:
    allowed = "None, Deny(reason) or Rewrite(input={...})" if hook == "before_tool" else "None or a ToolResult"
    return f"{hook} returned {type(answer).__name__} {answer!r:.60}: return {allowed}"


def span_attributes(event: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes a decision's event sets on the call's span (``agentfsm.observe.otel``):
    ``agentfsm.tool.decision`` (``denied``, ``rewritten`` or ``rewrite_invalid``), ``agentfsm.tool.denied_by``
    and ``agentfsm.tool.result_replaced``."""
    if event == "tool.denied":
        return {"agentfsm.tool.decision": "denied", "agentfsm.tool.denied_by": str(data.get("by"))}
    if event == "tool.rewritten":
        return {"agentfsm.tool.decision": "rewritten" if data.get("valid") else "rewrite_invalid"}
    return {"agentfsm.tool.result_replaced": True}
