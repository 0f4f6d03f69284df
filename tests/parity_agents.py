"""The scripted conversations of the parity suite (``test_parity.py``): one Agent class and one model per scenario.

Every model here is a pure function of the request (the reply, its tool ids and server tool ids
depend on the request alone), so every runner — ``run``, ``arun``, ``stream``, ``astream``, the
durable engines' workflow body and ``BatchRunner`` — gets the same reply to the same request, whatever
order its requests come in and whichever process sends them.

Each ``Scenario`` also says what SPEC.md §1 makes of its conversation — the final state and reason,
the path, how many requests and which tool executions — written here from the spec, not read off a
run. The tools count their real executions in ``RAN`` (by name and argument), under a lock: parallel
calls run concurrently.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from agentfsm import (
    Agent,
    Conversation,
    Deny,
    Policy,
    Rewrite,
    RunResult,
    ToolCall,
    ToolResult,
    Transition,
    Wait,
    actions,
    guard,
    tool,
)
from agentfsm.sim import ErrorReply, ScriptedReply, SimRequest
from agentfsm.sim import replies as r
from agentfsm.sim.writer import writer
from agentfsm.wire.caching import unmarked

MODEL = "claude-haiku-4-5"  # accepts prefill
NO_PREFILL_MODEL = "claude-sonnet-4-6"  # rejects prefill (as the API does; the simulator knows it)
FALLBACK_MODEL = "claude-sonnet-4-5"
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}
PAUSE_EDIT = {"edits": [{"type": "compact_20260112", "pause_after_compaction": True}]}

# --- the tools: every real execution counted --------------------------------------------------------------

RAN: Counter[tuple[str, str]] = Counter()
_RAN_LOCK = threading.Lock()


def _ran(name: str, arg: str) -> None:
    with _RAN_LOCK:
        RAN[(name, arg)] += 1


def executions() -> dict[tuple[str, str], int]:
    with _RAN_LOCK:
        return dict(RAN)


def forget_executions() -> None:
    with _RAN_LOCK:
        RAN.clear()


@tool
def count(label: str) -> str:
    """Count one call of the given label."""
    _ran("count", label)
    return f"counted {label}"


@tool
def fail(msg: str) -> str:
    """Always raises."""
    _ran("fail", msg)
    raise RuntimeError(msg)


@tool
def write(text: str) -> str:
    """Write a long text somewhere."""
    _ran("write", text)
    return f"wrote {len(text)} characters"


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    _ran("delete_file", path)
    return f"deleted {path}"


@tool(needs_approval=True)
def remove(path: str) -> str:
    """Remove a file (a person approves each call first)."""
    _ran("remove", path)
    return f"removed {path}"


# --- what the models read off a request ------------------------------------------------------------------


def _id(kind: str, request: SimRequest, i: int = 0) -> str:
    """An id of the API's shape that depends on the request alone (its position in the conversation)."""
    digest = hashlib.sha256(f"{kind}:{len(request.messages)}:{i}".encode()).hexdigest()
    return f"{kind}_01{digest[:22]}"


def _blocks(message: dict[str, Any] | None) -> list[dict[str, Any]]:
    content = (message or {}).get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def answered(request: SimRequest) -> int:
    """How many tool-result messages the request holds: how far the conversation has gone."""
    return sum(
        1
        for m in request.messages
        if m.get("role") == "user" and any(b.get("type") == "tool_result" for b in _blocks(m))
    )


def calls(*items: tuple[str, dict[str, Any]], request: SimRequest, text: str | None = None) -> ScriptedReply:
    lead = [r.text_block(text)] if text else []
    blocks = [r.tool_use_block(name, args, id=_id("toolu", request, i)) for i, (name, args) in enumerate(items)]
    return r.message([*lead, *blocks], "tool_use")


def bodies_of(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Request bodies with their cache breakpoints taken out (``unmarked``), to read what they say."""
    return [{**b, "messages": unmarked(b["messages"])} for b in requests]


def _results(message: dict[str, Any]) -> list[tuple[str, bool]]:
    """A tool-result message as (content, is_error) pairs; it holds nothing else (SPEC.md §3.2)."""
    assert message["role"] == "user" and all(b["type"] == "tool_result" for b in _blocks(message)), message
    return [(b["content"], bool(b.get("is_error"))) for b in _blocks(message)]


# --- the scenarios -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A scripted conversation, and what SPEC.md §1 says it ends in."""

    name: str
    agent: type[Agent]
    model: Callable[[SimRequest], Any]
    prompt: str
    final_state: str
    reason: str | None
    path: list[str]
    #: Requests the simulator receives (a rejected one included), the resume's included.
    requests: int
    ran: dict[tuple[str, str], int] = field(default_factory=dict)
    #: A scenario that stops waiting: the trigger that decides it, and the path up to the wait.
    trigger: str | None = None
    waiting_path: list[str] | None = None
    #: Or, for approval on a tool: the decision, ``resume``'s ``approve=``/``deny=``, made from the waiting result.
    decide: Callable[[RunResult], dict[str, Any]] | None = None
    error_type: str | None = None
    #: Requests carry parameters newer than the vendored API schema (marked ``beyond_schema``).
    beyond_schema: bool = False
    #: What SPEC.md §1 and §3 say about the requests this conversation sends (their bodies, cache marks
    #: taken out) and its result, beyond the path.
    wire: Callable[[list[dict[str, Any]], RunResult], None] = field(kw_only=True)

    @property
    def asynchronous(self) -> bool:
        return bool(self.agent.async_parts())

    @property
    def waits(self) -> bool:
        return self.trigger is not None or self.decide is not None

    def decision(self, waiting: RunResult) -> dict[str, Any]:
        """What ``resume``/``load`` take to decide the wait: ``trigger=``, or ``approve=``/``deny=``."""
        return {"trigger": self.trigger} if self.decide is None else self.decide(waiting)


# 1. tool calls: two in parallel, then two more (one raises), then the answer.


class ToolsAgent(Agent):
    model = MODEL
    tools = [count, fail]


def tools_model(request: SimRequest) -> ScriptedReply:
    done = answered(request)
    if done == 0:
        return calls(("count", {"label": "a"}), ("count", {"label": "b"}), request=request, text="Counting a and b.")
    if done == 1:
        return calls(("count", {"label": "c"}), ("fail", {"msg": "disk on fire"}), request=request)
    return r.text("Counted a, b and c; the disk is on fire.")


def tools_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """Every call answered, in order, by one message of tool results only; a raising tool is an is_error result."""
    assert _results(bodies[1]["messages"][-1]) == [("counted a", False), ("counted b", False)]
    (first, second) = _results(bodies[2]["messages"][-1])
    assert first == ("counted c", False) and second[1] and "disk on fire" in second[0]


# 2. the max_tokens ladder: a tool call cut at 1024 and at 4096 output tokens, whole at 16384.


class LadderAgent(Agent):
    model = MODEL
    tools = [write]
    policy = Policy(max_tokens=1024, max_tokens_ladder=(4096, 16384))


def ladder_model(request: SimRequest) -> ScriptedReply:
    if answered(request):
        return r.text("Written.")
    if (request.max_tokens or 0) < 16384:
        return r.truncated_tool_use("write", '{"text": "a very long te', text="Writing it.")
    return calls(("write", {"text": "a very long text"}), request=request, text="Writing it.")


def ladder_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The same request again on each rung; the cut call is never run nor sent back."""
    assert [b["max_tokens"] for b in bodies] == [1024, 4096, 16384, 16384]
    assert bodies[0]["messages"] == bodies[1]["messages"] == bodies[2]["messages"]
    assert [c["input"] for c in _blocks(bodies[3]["messages"][1]) if c["type"] == "tool_use"] == [
        {"text": "a very long text"}
    ]


# 3. continuation: a text cut at max_tokens, continued by prefill and stitched.

DOCUMENT = (
    "Report. The text you are reading was written across several replies cut at max_tokens, "
    "continued by prefilling the partial assistant turn, and stitched into one seamless answer."
)


def continuation_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """Each continuation prefills the partial assistant turn; the chunks are stitched with nothing lost."""
    assert [b["messages"][-1]["role"] for b in bodies] == ["user", "assistant", "assistant", "assistant"]
    assert result.text == DOCUMENT and result.messages[-1]["role"] == "assistant"


def prompt_continuation_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The model's request rules refuse prefill (agentfsm.wire.models): every continuation asks by prompt, and no
    prefill is ever tried (no 400 eaten)."""
    assert [b["messages"][-1]["role"] for b in bodies] == ["user", "user", "user"]
    assert bodies[1]["messages"][-1]["content"] == Policy().continuation_prompt
    assert result.text == DOCUMENT


class ContinuationAgent(Agent):
    model = MODEL
    policy = Policy(max_tokens=12, max_continuations=12)


# 4. continuation on a model that rejects prefill: "auto" asks by prompt from the first continuation.


class PromptContinuationAgent(Agent):
    model = NO_PREFILL_MODEL
    policy = Policy(max_tokens=16, max_continuations=12)


# 5. pause_turn: a server tool paused mid-turn, sent back unchanged, resumed by the server.


class PauseAgent(Agent):
    model = MODEL
    tools = [WEB_SEARCH]


def pause_model(request: SimRequest) -> ScriptedReply:
    last = request.messages[-1]
    if last.get("role") == "assistant":  # the paused turn, sent back: the server finishes it
        pending = _blocks(last)[-1]["id"]
        results = r.server_search("agentfsm parity (2)", "unused").content[1]
        return r.message([{**results, "tool_use_id": pending}, r.text_block("Found it.")], "end_turn")
    paused = r.pause_turn(query="agentfsm parity")
    content, last_call = [dict(b) for b in paused.content], None
    for i, block in enumerate(content):
        if block.get("type") == "server_tool_use":
            block["id"] = last_call = _id("srvtoolu", request, i)
        elif block.get("type") == "web_search_tool_result":
            block["tool_use_id"] = last_call
    return r.message(content, "pause_turn")


def pause_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The paused reply goes back unchanged as the last message, with no new user text."""
    paused = pause_model(SimRequest(n=1, body=bodies[0]))
    assert bodies[1]["messages"] == [*bodies[0]["messages"], {"role": "assistant", "content": paused.content}]


# 6. compaction, the policy's: between turns the machine asks for a compaction and goes on from its block.


class CompactingAgent(Agent):
    model = MODEL
    tools = [count]
    policy = Policy(compact_at_input_tokens=40, compaction_instructions="Keep the labels.")


#: A second prompt for CompactingAgent: a text cut at max_tokens, then continued. A continuation is the middle of
#: a turn, never compacted: its request goes without the compaction beta while the other prompt's compacts.
TWO_PARTS = "Write two parts."


def compacting_model(request: SimRequest) -> ScriptedReply:
    if unmarked(request.messages)[0]["content"] == TWO_PARTS:
        return r.text(" part two.") if request.messages[-1]["role"] == "assistant" else r.max_tokens("Part one,")
    if request.is_compaction:
        return r.compaction("The user asked to count a; it was counted.", encrypted_content="EncParity==")
    if request.messages[0].get("role") == "assistant":  # the history starts with the compaction block
        return r.text("Counted, and compacted.")
    return calls(("count", {"label": "a"}), request=request)


def compacting_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """A compaction request between turns (never with calls unanswered); its block replaces the history."""
    assert [("compaction" in b) for b in bodies] == [False, True, False]
    assert _blocks(bodies[1]["messages"][-1])[0]["type"] == "tool_result"
    block = r.compaction_block("The user asked to count a; it was counted.", encrypted_content="EncParity==")
    assert bodies[2]["messages"] == [{"role": "assistant", "content": [block]}]
    assert [m["role"] for m in result.replaced_messages] == ["user", "assistant", "user"]


# 7. compaction, the server's: automatic compaction paused the turn; sent back unchanged and carried.


class PausedCompactionAgent(Agent):
    model = MODEL
    tools = [count]
    request_params = {"context_management": PAUSE_EDIT}


def paused_compaction_model(request: SimRequest) -> ScriptedReply:
    if answered(request):
        return r.text("Counted after the compaction.")
    last = _blocks(request.messages[-1])
    if last and last[0].get("type") == "compaction":  # the paused compaction, sent back
        return calls(("count", {"label": "a"}), request=request)
    return r.compaction("The user wants a counted.", encrypted_content="EncPaused==")


def paused_compaction_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The paused compaction goes back unchanged, and its block stays first in every later request."""
    block = r.compaction_block("The user wants a counted.", encrypted_content="EncPaused==")
    assert bodies[1]["messages"][-1] == {"role": "assistant", "content": [block]}
    assert _blocks(bodies[2]["messages"][1])[0] == block


# 8. refusal fallback: refused on the agent's model, retried once on the fallback model with the credit token.


class RefusalAgent(Agent):
    model = MODEL
    tools = [count]
    policy = Policy(fallback_model=FALLBACK_MODEL)


def refusal_model(request: SimRequest) -> ScriptedReply:
    if answered(request):
        return r.text("Counted on the fallback model.")
    if request.model == MODEL:
        return r.refusal(text="I can't", credit_token=True)
    return calls(("count", {"label": "a"}), request=request)


def refusal_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """Retried once, on the fallback model, with the refusal's credit token; the refusal is never sent back."""
    assert [b["model"] for b in bodies] == [MODEL, FALLBACK_MODEL, FALLBACK_MODEL]
    assert bodies[1]["messages"] == bodies[0]["messages"]
    assert str(bodies[1]["fallback_credit_token"]["token"]).startswith("fct_")


# 8b. a fallback chain: the agent's model is overloaded (after the SDK's retries), the request goes on to the next
# model of the chain, which answers and is kept (sticky) for the rest of the conversation.


class OverloadChainAgent(Agent):
    model = MODEL
    tools = [count]
    # No resends of its own: the batch runner resends an overloaded request stream_retries times (the SDK's
    # retries, which the parity clients turn off), so it goes on down the chain as the others do.
    policy = Policy(fallback_models=(FALLBACK_MODEL,), stream_retries=0)


def overload_chain_model(request: SimRequest) -> ScriptedReply | ErrorReply:
    if request.model == MODEL:
        return r.overloaded()
    if answered(request):
        return r.text("Counted on the fallback model.")
    return calls(("count", {"label": "a"}), request=request)


def overload_chain_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The same request goes on to the fallback model, which is kept; the result says which model answered."""
    assert [b["model"] for b in bodies] == [MODEL, FALLBACK_MODEL, FALLBACK_MODEL]
    assert bodies[1]["messages"] == bodies[0]["messages"] and "fallback_credit_token" not in bodies[1]
    assert result.turn_models == [(2, FALLBACK_MODEL)] and list(result.usage_by_model) == [FALLBACK_MODEL]


# 8c. refusal fallback to a stricter model: the retry is made fit for the fallback's request rules
# (agentfsm.wire.models): Opus 5 takes thinking disabled, Sonnet 5.5 refuses it and has between_tools instead.

STRICT_MODEL = "claude-sonnet-5-5"


class AdaptedRefusalAgent(Agent):
    model = "claude-opus-5"
    tools = [count]
    request_params = {"thinking": {"type": "disabled"}}
    policy = Policy(fallback_model=STRICT_MODEL)


def adapted_refusal_model(request: SimRequest) -> ScriptedReply:
    if answered(request):
        return r.text("Counted on the fallback model.")
    if request.model == AdaptedRefusalAgent.model:
        return r.refusal(text="I can't", credit_token=True)
    return calls(("count", {"label": "a"}), request=request)


def adapted_refusal_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The agent's own request as written; every request on the fallback model with between_tools in its place."""
    assert [b["model"] for b in bodies] == ["claude-opus-5", STRICT_MODEL, STRICT_MODEL]
    assert bodies[0]["thinking"] == {"type": "disabled"}
    assert bodies[1]["thinking"] == bodies[2]["thinking"] == {"type": "between_tools"}
    adapted = [e.data for e in result.events if e.event == "request.adapted"]
    assert [a["changed"] for a in adapted] == [["thinking disabled -> between_tools"]] * 2


# 9. a wait and its resume: a dangerous call stops the run until someone approves it.


@guard("a dangerous tool was called")
def wants_approval(conv: Conversation) -> bool:
    return any(c.name == "delete_file" for c in conv.pending_tool_calls)


class WaitAgent(Agent):
    model = MODEL
    tools = [delete_file]
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask", "awaiting_approval", (wants_approval,)),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
    ]


def wait_model(request: SimRequest) -> ScriptedReply:
    if answered(request):
        return r.text("Deleted it.")
    return calls(("delete_file", {"path": "/tmp/old.log"}), request=request)


def wait_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """Nothing ran while it waited; the approved call ran and its result went out."""
    assert _results(bodies[1]["messages"][-1]) == [("deleted /tmp/old.log", False)]


# 10. budgets: a tool loop with no end of its own, stopped by the output-token budget.


class BudgetAgent(Agent):
    model = MODEL
    tools = [count]
    policy = Policy(max_output_tokens=50)


def budget_model(request: SimRequest) -> ScriptedReply:
    done = answered(request)
    return calls(("count", {"label": f"n{done}"}), request=request, text=f"Counting n{done}, and then some more.")


def budget_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The request that would start over budget is not sent; every tool result so far is kept."""
    assert result.usage.output_tokens >= 50 and result.messages[-1]["role"] == "user"
    assert _results(result.messages[-1]) == [("counted n3", False)]


# 11. a malformed reply: after a tool turn, a reply whose tool_use input is a list (not an object).


class MalformedAgent(Agent):
    model = MODEL
    tools = [count]


def malformed_model(request: SimRequest) -> ScriptedReply:
    if answered(request):
        bad = {"type": "tool_use", "id": _id("toolu", request), "name": "count", "input": ["a"]}
        return r.message([bad], "tool_use")
    return calls(("count", {"label": "a"}), request=request)


def malformed_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """A malformed reply fails the request, with every message so far kept and nothing of the reply."""
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user"]
    assert bodies_of([{"messages": result.messages}])[0]["messages"] == bodies[1]["messages"]


# 12. async hooks and actions: an async hook decides each call on the spot (from the conversation alone, as a
# durable engine's replay needs); an async action refuses the one it does not approve.


@guard("a file outside /tmp")
def outside_tmp(conv: Conversation) -> bool:
    return any(not str(c.input.get("path", "")).startswith("/tmp/") for c in conv.pending_tool_calls)


async def refuse_by_mail(conv: Conversation) -> None:
    await asyncio.sleep(0)  # tell someone, then answer
    actions.refuse_tool_calls(conv)


class AsyncHookAgent(WaitAgent):
    transitions = [Transition("awaiting_approval", "mail", "requesting", action=refuse_by_mail)]

    async def on_awaiting_approval(self, conv: Conversation) -> str:
        await asyncio.sleep(0)  # ask a service
        return "mail" if outside_tmp(conv) else "approve"


def async_hook_model(request: SimRequest) -> ScriptedReply:
    done = answered(request)
    if done == 0:
        return calls(("delete_file", {"path": "/tmp/old.log"}), request=request)
    if done == 1:
        return calls(("delete_file", {"path": "/etc/passwd"}), request=request)
    return r.text("Deleted the one in /tmp; the other was refused.")


def async_hook_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The hook approved the first call (it ran) and had the async action refuse the second (it did not)."""
    assert _results(bodies[1]["messages"][-1]) == [("deleted /tmp/old.log", False)]
    ((_, refused),) = _results(bodies[2]["messages"][-1])
    assert refused


# 13. typed output (Agent.output_type): natively (output_config.format), a tool call first, an answer that does not
# validate sent back with its errors, then a valid one; and by the final_answer tool on a model without structured
# outputs, an invalid call answered with the errors (is_error), then a valid one.


class Receipt(BaseModel):
    label: str
    count: int = Field(gt=0)


class TypedOutputAgent(Agent):
    model = MODEL
    tools = [count]
    output_type = Receipt


def typed_output_model(request: SimRequest) -> ScriptedReply:
    if not answered(request):
        return calls(("count", {"label": "a"}), request=request)
    if "not a valid Receipt" in str(request.messages[-1].get("content")):  # the errors, sent back
        return r.text('{"label": "a", "count": 1}')
    return r.text('{"label": "a", "count": 0}')


def typed_output_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """Every request asks for the format; the errors go back in a user message; the output is typed."""
    assert all(b["output_config"]["format"]["type"] == "json_schema" for b in bodies)
    assert "count: Input should be greater than 0" in str(bodies[2]["messages"][-1]["content"])
    assert result.output_as(Receipt) == Receipt(label="a", count=1)


class ToolOutputAgent(Agent):
    model = MODEL
    policy = Policy(output_mode="tool")  # the final_answer tool, as on a model without structured outputs
    output_type = Receipt


def tool_output_model(request: SimRequest) -> ScriptedReply:
    return calls(("final_answer", {"label": "a", "count": answered(request)}), request=request)


def tool_output_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The invalid call is answered with its errors, never run; the valid one ends the run."""
    assert all("output_config" not in b and b["tools"][-1]["name"] == "final_answer" for b in bodies)
    ((content, is_error),) = _results(bodies[1]["messages"][-1])
    assert is_error and "greater than 0" in content
    assert result.output_as(Receipt) == Receipt(label="a", count=1)


# 14. approval on a tool: a call of a tool with needs_approval stops the run before it runs; a person approves it,
# denies it, or (a reply with three calls) the call needing no approval runs before the wait and the two others are
# decided one each way.


class ApprovalToolAgent(Agent):
    model = MODEL
    tools = [count, remove]


# One class per scenario: a durable engine's worker serves each scenario's agent under its class's name.
class ApprovedAgent(ApprovalToolAgent):
    pass


class DeniedAgent(ApprovalToolAgent):
    pass


class MixedApprovalAgent(ApprovalToolAgent):
    pass


def approval_model(*paths: str, counted: bool = False) -> Callable[[SimRequest], ScriptedReply]:
    def model(request: SimRequest) -> ScriptedReply:
        if answered(request):
            return r.text("Done as decided.")
        lead = [("count", {"label": "a"})] if counted else []
        return calls(*lead, *(("remove", {"path": p}) for p in paths), request=request)

    return model


def approve_all(waiting: RunResult) -> dict[str, Any]:
    return {"approve": True}


def deny_all(waiting: RunResult) -> dict[str, Any]:
    return {"deny": {c.id: "not today" for c in waiting.pending_tool_calls}}


def approve_first_deny_second(waiting: RunResult) -> dict[str, Any]:
    first, second = waiting.pending_tool_calls
    return {"approve": [first.id], "deny": {second.id: "not that one"}}


def approved_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """Nothing ran while it waited; the approved call ran and its result went out."""
    assert _results(bodies[1]["messages"][-1]) == [("removed /tmp/a", False)]


def denied_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The denied call never ran: it is answered is_error with the person's reason."""
    assert _results(bodies[1]["messages"][-1]) == [("not today", True)]


def mixed_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """Every call of the reply answered at once, in call order: the one that ran before the wait, the approved one,
    the denied one."""
    assert _results(bodies[1]["messages"][-1]) == [
        ("counted a", False),
        ("removed /tmp/a", False),
        ("not that one", True),
    ]


# 15. hooks around every call: before_tool denies one call and rewrites another's input, after_tool replaces a
# result (sync hooks, and the same as async hooks).


class ToolHooksAgent(Agent):
    model = MODEL
    tools = [count]

    def before_tool(self, call: ToolCall, conv: Conversation) -> Deny | Rewrite | None:
        label = call.input.get("label")
        if label == "secret":
            return Deny("counting secrets is not allowed")
        return Rewrite(input={"label": "b"}) if label == "B" else None

    def after_tool(self, call: ToolCall, result: ToolResult, conv: Conversation) -> ToolResult | None:
        if call.input.get("label") == "b":
            return ToolResult(tool_use_id=call.id, content="counted [redacted]")
        return None


class AsyncToolHooksAgent(ToolHooksAgent):
    async def before_tool(self, call: ToolCall, conv: Conversation) -> Deny | Rewrite | None:
        await asyncio.sleep(0)  # ask a policy service
        return ToolHooksAgent.before_tool(self, call, conv)

    async def after_tool(self, call: ToolCall, result: ToolResult, conv: Conversation) -> ToolResult | None:
        await asyncio.sleep(0)
        return ToolHooksAgent.after_tool(self, call, result, conv)


def hooks_model(request: SimRequest) -> ScriptedReply:
    if answered(request):
        return r.text("Counted what I was allowed to.")
    return calls(*(("count", {"label": label}) for label in ("a", "secret", "B")), request=request)


def hooks_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """Denied: never ran, answered with the reason; rewritten: ran with the new input; its result replaced. The
    history keeps the calls as the model made them."""
    assert _results(bodies[1]["messages"][-1]) == [
        ("counted a", False),
        ("counting secrets is not allowed", True),
        ("counted [redacted]", False),
    ]
    sent_calls = [b["input"] for b in _blocks(bodies[1]["messages"][1]) if b["type"] == "tool_use"]
    assert sent_calls == [{"label": "a"}, {"label": "secret"}, {"label": "B"}]


# Message threads: tool calls and a pause_turn on a server-held thread (Policy.transport="thread").


class ThreadAgent(Agent):
    model = MODEL
    tools = [count, WEB_SEARCH]
    policy = Policy(transport="thread")


def thread_model(request: SimRequest) -> ScriptedReply:
    if request.messages[-1].get("role") == "user" and not answered(request):
        return calls(("count", {"label": "t"}), request=request)
    return pause_model(request)  # a pause, then (the paused turn sent back) its end


def thread_wire(bodies: list[dict[str, Any]], result: RunResult) -> None:
    """The model sees the whole conversation on every turn (the simulator rebuilds it from the thread): the
    bodies are those of a run without a thread; the pause goes back as the last message."""
    assert [len(b["messages"]) for b in bodies] == [1, 3, 4]
    assert bodies[2]["messages"][:-1] == bodies[1]["messages"] and bodies[2]["messages"][-1]["role"] == "assistant"
    assert result.messages[-1]["content"][-1] == {"type": "text", "text": "Found it."}


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "tool_calls", ToolsAgent, tools_model, "Count a, b and c.", "done", "end_turn",
            ["requesting", "tool_use", "requesting", "tool_use", "requesting", "end_turn", "done"], 3,
            {("count", "a"): 1, ("count", "b"): 1, ("count", "c"): 1, ("fail", "disk on fire"): 1},
            wire=tools_wire,
        ),
        Scenario(
            "max_tokens_ladder", LadderAgent, ladder_model, "Write a long text.", "done", "end_turn",
            ["requesting", "max_tokens", "requesting", "max_tokens", "requesting", "tool_use", "requesting",
             "end_turn", "done"], 4,
            {("write", "a very long text"): 1},
            wire=ladder_wire,
        ),
        Scenario(
            "continuation", ContinuationAgent, writer(DOCUMENT), "Write the report.", "done", "end_turn",
            ["requesting", *["max_tokens", "requesting"] * 3, "end_turn", "done"], 4,
            wire=continuation_wire,
        ),
        Scenario(
            "continuation_by_prompt", PromptContinuationAgent, writer(DOCUMENT), "Write the report.", "done",
            "end_turn",  # by prompt from the first continuation: the model's rules refuse prefill, no 400 is eaten
            ["requesting", "max_tokens", "requesting", "max_tokens", "requesting", "end_turn", "done"], 3,
            wire=prompt_continuation_wire,
        ),
        Scenario(
            "pause_turn", PauseAgent, pause_model, "Search for agentfsm parity.", "done", "end_turn",
            ["requesting", "pause_turn", "requesting", "end_turn", "done"], 2,
            wire=pause_wire,
        ),
        Scenario(
            "compaction", CompactingAgent, compacting_model, "Count a.", "done", "end_turn",
            ["requesting", "tool_use", "requesting", "requesting", "compaction", "requesting", "end_turn", "done"], 3,
            {("count", "a"): 1}, beyond_schema=True,
            wire=compacting_wire,
        ),
        Scenario(
            "paused_compaction", PausedCompactionAgent, paused_compaction_model, "Count a.", "done", "end_turn",
            ["requesting", "compaction", "requesting", "tool_use", "requesting", "end_turn", "done"], 3,
            {("count", "a"): 1},
            wire=paused_compaction_wire,
        ),
        Scenario(
            "refusal_fallback", RefusalAgent, refusal_model, "Count a.", "done", "end_turn",
            ["requesting", "refusal", "requesting", "tool_use", "requesting", "end_turn", "done"], 3,
            {("count", "a"): 1}, beyond_schema=True,
            wire=refusal_wire,
        ),
        Scenario(
            "overload_chain", OverloadChainAgent, overload_chain_model, "Count a.", "done", "end_turn",
            ["requesting", "requesting", "tool_use", "requesting", "end_turn", "done"], 3,
            {("count", "a"): 1},
            wire=overload_chain_wire,
        ),
        Scenario(
            "refusal_fallback_adapted", AdaptedRefusalAgent, adapted_refusal_model, "Count a.", "done", "end_turn",
            ["requesting", "refusal", "requesting", "tool_use", "requesting", "end_turn", "done"], 3,
            {("count", "a"): 1}, beyond_schema=True,
            wire=adapted_refusal_wire,
        ),
        Scenario(
            "wait_and_resume", WaitAgent, wait_model, "Delete /tmp/old.log.", "done", "end_turn",
            ["requesting", "tool_use", "awaiting_approval", "requesting", "end_turn", "done"], 2,
            {("delete_file", "/tmp/old.log"): 1},
            trigger="approve", waiting_path=["requesting", "tool_use", "awaiting_approval"],
            wire=wait_wire,
        ),
        Scenario(
            "budget", BudgetAgent, budget_model, "Count until you are stopped.", "truncated", "max_output_tokens",
            ["requesting", *["tool_use", "requesting"] * 4, "truncated"], 4,
            {("count", f"n{i}"): 1 for i in range(4)},
            wire=budget_wire,
        ),
        Scenario(
            "malformed_reply", MalformedAgent, malformed_model, "Count a.", "failed", "api_error",
            ["requesting", "tool_use", "requesting", "failed"], 2,
            {("count", "a"): 1}, error_type="invalid_response",
            wire=malformed_wire,
        ),
        Scenario(
            "async_hook", AsyncHookAgent, async_hook_model, "Delete the old files.", "done", "end_turn",
            ["requesting", "tool_use", "awaiting_approval", "requesting", "tool_use", "awaiting_approval",
             "requesting", "end_turn", "done"], 3,
            {("delete_file", "/tmp/old.log"): 1},
            wire=async_hook_wire,
        ),
        Scenario(
            "typed_output", TypedOutputAgent, typed_output_model, "Count a, then report.", "done", "end_turn",
            ["requesting", "tool_use", "requesting", "end_turn", "requesting", "end_turn", "done"], 3,
            {("count", "a"): 1},
            wire=typed_output_wire,
        ),
        Scenario(
            "typed_output_by_tool", ToolOutputAgent, tool_output_model, "Report.", "done", "final_answer",
            ["requesting", "tool_use", "requesting", "tool_use", "done"], 2,
            wire=tool_output_wire,
        ),
        Scenario(
            "approval_approved", ApprovedAgent, approval_model("/tmp/a"), "Remove /tmp/a.", "done", "end_turn",
            ["requesting", "tool_use", "awaiting_tool_approval", "requesting", "end_turn", "done"], 2,
            {("remove", "/tmp/a"): 1},
            decide=approve_all, waiting_path=["requesting", "tool_use", "awaiting_tool_approval"],
            wire=approved_wire,
        ),
        Scenario(
            "approval_denied", DeniedAgent, approval_model("/tmp/a"), "Remove /tmp/a.", "done", "end_turn",
            ["requesting", "tool_use", "awaiting_tool_approval", "requesting", "end_turn", "done"], 2,
            {},
            decide=deny_all, waiting_path=["requesting", "tool_use", "awaiting_tool_approval"],
            wire=denied_wire,
        ),
        Scenario(
            "approval_mixed", MixedApprovalAgent, approval_model("/tmp/a", "/etc/x", counted=True), "Tidy up.", "done",
            "end_turn",
            ["requesting", "tool_use", "awaiting_tool_approval", "requesting", "end_turn", "done"], 2,
            {("count", "a"): 1, ("remove", "/tmp/a"): 1},
            decide=approve_first_deny_second, waiting_path=["requesting", "tool_use", "awaiting_tool_approval"],
            wire=mixed_wire,
        ),
        Scenario(
            "thread", ThreadAgent, thread_model, "Count t, then search.", "done", "end_turn",
            ["requesting", "tool_use", "requesting", "pause_turn", "requesting", "end_turn", "done"], 3,
            {("count", "t"): 1}, beyond_schema=True,  # the thread parameter
            wire=thread_wire,
        ),
        Scenario(
            "tool_hooks", ToolHooksAgent, hooks_model, "Count a, the secret and B.", "done", "end_turn",
            ["requesting", "tool_use", "requesting", "end_turn", "done"], 2,
            {("count", "a"): 1, ("count", "b"): 1},
            wire=hooks_wire,
        ),
        Scenario(
            "async_tool_hooks", AsyncToolHooksAgent, hooks_model, "Count a, the secret and B.", "done", "end_turn",
            ["requesting", "tool_use", "requesting", "end_turn", "done"], 2,
            {("count", "a"): 1, ("count", "b"): 1},
            wire=hooks_wire,
        ),
    ]
}  # fmt: skip
