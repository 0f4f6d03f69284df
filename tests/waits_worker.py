"""The approval agent of test_waits, and one process of its cross-process tests.

``child(argv, log, out)`` is a whole process: ``argv`` is ``PHASE MODE STORE WHERE BASE_URL
CONVERSATION [TRIGGER [INPUT_JSON]]``. PHASE is ``start`` (run the prompt to the wait) or
``resume`` (decide it with TRIGGER and INPUT); MODE is ``run``, ``stream``, ``arun`` or
``astream``; STORE is ``sqlite`` or ``postgres`` at WHERE. The model is a simulator served by
the test process at BASE_URL (so every request is checked there). ``delete_file`` appends to
the file ``log`` (in process: ``$WAITS_TOOL_LOG``) each time it really runs. The result is
written to the file ``out`` as JSON, last.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic

from agentfsm import Agent, Conversation, Policy, RunResult, Transition, Wait, actions, guard, tool
from agentfsm.machine.streaming import ResultEvent, StreamEvent

LOG: str | None = None


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    log = LOG or os.environ.get("WAITS_TOOL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(path + "\n")
    return f"deleted {path}"


@tool
def read_file(path: str) -> str:
    """Read a text file."""
    return f"(contents of {path})"


@guard("a dangerous tool was called")
def wants_approval(conv: Conversation) -> bool:
    return any(c.name == "delete_file" for c in conv.pending_tool_calls)


class ApprovalAgent(Agent):
    model = "claude-haiku-4-5"
    tools = [read_file, delete_file]
    policy = Policy(max_tokens=512, lease_seconds=30)
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask", "awaiting_approval", (wants_approval,)),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
    ]


def last(events: Iterator[StreamEvent]) -> RunResult:
    final = list(events)[-1]
    assert isinstance(final, ResultEvent)
    return final.result


async def alast(events: AsyncIterator[StreamEvent]) -> RunResult:
    final = [e async for e in events][-1]
    assert isinstance(final, ResultEvent)
    return final.result


def summary(result: RunResult) -> dict[str, Any]:
    return {
        "final_state": result.final_state,
        "waiting": result.waiting,
        "pending": [c.model_dump() for c in result.pending_tool_calls],
        "path": result.path,
        "text": result.text,
        "messages": result.messages,
    }


def child(argv: list[str], log: str, out: str) -> None:
    global LOG
    LOG = log
    report = main(argv)
    with open(out, "w") as f:
        json.dump(report, f)


def main(argv: list[str]) -> dict[str, Any]:
    from scenario import open_store

    phase, mode, kind, where, base_url, cid, *rest = argv
    trigger = rest[0] if rest else None
    given = json.loads(rest[1]) if len(rest) > 1 else None
    asynchronous = mode.startswith("a")
    kind_of_client = anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic
    client = kind_of_client(base_url=base_url, api_key="sk-ant-waits-0000", max_retries=0)
    agent = ApprovalAgent(client=client, logger=None)
    store = open_store(kind, where)
    try:
        if phase == "start":
            prompt = "Delete /tmp/old.log"
            if mode == "run":
                result = agent.run(prompt, store=store, conversation_id=cid)
            elif mode == "stream":
                result = last(agent.stream(prompt, store=store, conversation_id=cid))
            elif mode == "arun":
                result = asyncio.run(agent.arun(prompt, store=store, conversation_id=cid))
            else:
                result = asyncio.run(alast(agent.astream(prompt, store=store, conversation_id=cid)))
        elif mode == "run":
            result = agent.resume(cid, store=store, trigger=trigger, input=given)
        elif mode == "stream":
            result = last(agent.load(cid, store=store, trigger=trigger, input=given).stream())
        elif mode == "arun":
            result = asyncio.run(agent.aresume(cid, store=store, trigger=trigger, input=given))
        else:
            conv = agent.load(cid, store=store, trigger=trigger, input=given, asynchronous=True)
            result = asyncio.run(alast(conv.astream()))
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    return summary(result)
