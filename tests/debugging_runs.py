"""A stored run for the fork and rerun tests: tools, a wait, a compaction and a continuation, in one conversation.

The model is a function of the request (so one simulator answers the original, its forks and its reruns alike):

1. ``lookup(q="a")`` — a client tool, run;
2. the machine asks for a compaction (``compact_at_input_tokens``): its block replaces the history;
3. ``pay(amount=5)`` — a tool that needs approval: the run waits in ``awaiting_tool_approval``; approved, it runs;
4. ``Part one,`` cut at max_tokens, continued by prompt: `` part two.``

On ``claude-opus-4-6`` the model answers at once without a tool (a rerun that diverges at step 1); on
``claude-haiku-4-5`` it looks up ``"b"`` (a call the recording has no result for) and then answers with what the
lookup said.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentfsm import Agent, Policy, RunResult, tool
from agentfsm.sim import ScriptedReply, SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import Store
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.wire.caching import unmarked
from agentfsm.wire.messages import blocks, text_of

PROMPT = "Look up a, then pay 5."
CONTINUE = "Continue exactly where you stopped; do not repeat anything."
#: Every tool call that really ran, in order: (tool, input).
RAN: list[tuple[str, Any]] = []


@tool
def lookup(q: str) -> str:
    """Look something up."""
    RAN.append(("lookup", q))
    return f"found {q} ({len(RAN)})"


@tool(needs_approval=True)
def pay(amount: int) -> str:
    """Pay an amount."""
    RAN.append(("pay", amount))
    return f"paid {amount}"


def model(request: SimRequest) -> ScriptedReply:
    if request.is_compaction:
        return r.compaction("The user asked to look up a; it was found.")
    messages = unmarked(request.messages)
    last = messages[-1]
    if last["role"] == "user" and text_of(blocks(last)) == CONTINUE:
        return r.text(" part two.")
    name = request.body["model"]
    if messages[0]["role"] == "user":  # not compacted yet
        results = [b for b in blocks(last) if b.get("type") == "tool_result"]
        if name == "claude-opus-4-6":
            return r.text("I know without looking.")
        if name == "claude-haiku-4-5":
            return r.text(f"The lookup said: {results[0]['content']}") if results else r.tool_use("lookup", {"q": "b"})
        return r.tool_use("lookup", {"q": "a"})
    if len(messages) == 1:  # the compaction block alone
        return r.tool_use("pay", {"amount": 5})
    return r.max_tokens("Part one,")


class Payer(Agent):
    model = "claude-sonnet-4-6"
    tools = [lookup, pay]
    policy = Policy(compact_at_input_tokens=60, continuation="prompt")


def agent(sim: Simulator, **kw: Any) -> Payer:
    return Payer(client=sim.client(max_retries=0), logger=None, **kw)


def store_at(path: Path) -> SQLiteStore:
    return SQLiteStore(path / "runs.db")


def record(store: Store, sim: Simulator, conversation_id: str = "orig") -> RunResult:
    """Run the conversation into ``store``: it waits for approval, is approved, and finishes."""
    payer = agent(sim)
    waiting = payer.run(PROMPT, store=store, conversation_id=conversation_id)
    assert waiting.final_state == "waiting" and waiting.waiting == "awaiting_tool_approval"
    result = payer.resume(conversation_id, store=store, approve=True)
    assert result.final_state == "done" and result.text == "Part one, part two."
    assert RAN == [("lookup", "a"), ("pay", 5)]
    RAN.clear()
    return result


#: The transitions the recorded run takes (the tests name steps by these numbers).
STEPS = [
    "requesting --tool_use--> tool_use",  # 1
    "tool_use --run_tools--> requesting",  # 2: lookup answered
    "requesting --compact--> requesting",  # 3
    "requesting --compaction--> compaction",  # 4
    "compaction --compacted--> requesting",  # 5: the block replaces the history
    "requesting --tool_use--> tool_use",  # 6
    "tool_use --await_approval--> awaiting_tool_approval",  # 7: the wait
    "awaiting_tool_approval --run_tools--> requesting",  # 8: pay answered
    "requesting --stop_compacting--> requesting",  # 9
    "requesting --max_tokens--> max_tokens",  # 10
    "max_tokens --continue_text--> requesting",  # 11: the continuation prompt
    "requesting --end_turn--> end_turn",  # 12
    "end_turn --finish--> done",  # 13
]


def steps(result: RunResult) -> list[str]:
    return [f"{s.source} --{s.trigger}--> {s.dest}" for s in result.trace]
