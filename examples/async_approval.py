"""An async hook that awaits an external approval service.

Under ``arun``/``astream``/``aresume``, ``async def on_awaiting_approval(self, conv)`` is
awaited: here it asks an approval service (in real code, an HTTP call to your own
service, e.g. ``await http.get(f"/approvals/{call.id}")``) and waits a little for a
reviewer. If an answer comes, it is the trigger; if not, the hook returns ``Wait`` and
the run stops, saved, until ``aresume`` asks again (or someone decides with a trigger).

    python examples/async_approval.py
"""

from __future__ import annotations

import asyncio
import sys

import anthropic

from agentfsm import Agent, Conversation, MemoryStore, RunResult, Transition, Wait, actions, guard, tool
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r


@tool
def send_email(to: str, subject: str, body: str) -> str:
    """Send an email. A reviewer approves every one."""
    return f"sent to {to}"


@guard("the model wants to send an email")
def sends_email(conv: Conversation) -> bool:
    return any(call.name == "send_email" for call in conv.pending_tool_calls)


class ApprovalService:
    """Stands in for a remote service where reviewers approve or refuse requests."""

    def __init__(self) -> None:
        self.requests: dict[str, asyncio.Future[str]] = {}

    async def decision(self, request_id: str, *, wait_s: float) -> str | None:
        """The reviewer's answer ("approve" or "refuse"), or None if none came within ``wait_s``."""
        pending = self.requests.setdefault(request_id, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(pending), wait_s)
        except TimeoutError:
            return None

    def answer(self, request_id: str, verdict: str) -> None:
        """What a reviewer's click does, on the service's side."""
        self.requests.setdefault(request_id, asyncio.get_running_loop().create_future()).set_result(verdict)


class ReviewedMailer(Agent):
    model = "claude-haiku-4-5"
    tools = [send_email]
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask", "awaiting_approval", (sends_email,)),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
    ]

    def __init__(self, *args: object, service: ApprovalService, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.service = service

    async def on_awaiting_approval(self, conv: Conversation) -> str | type[Wait]:
        call = conv.pending_tool_calls[0]
        verdict = await self.service.decision(call.id, wait_s=0.2)
        return verdict or Wait  # nobody answered yet: stop here, saved, until aresume


async def reviewer(service: ApprovalService, delay_s: float) -> None:
    """A person, somewhere else, who approves the first request after a while."""
    await asyncio.sleep(delay_s)
    while not service.requests:
        await asyncio.sleep(0.01)
    service.answer(next(iter(service.requests)), "approve")


async def amain(client: anthropic.AsyncAnthropic | None = None) -> RunResult:
    sim = Simulator(
        [
            r.tool_use("send_email", {"to": "team@example.com", "subject": "Release", "body": "v2 is out."}),
            r.text("The release email is sent."),
        ]
    )
    service, store = ApprovalService(), MemoryStore()
    agent = ReviewedMailer(client=client or sim.async_client(), service=service, logger=None)

    first = await agent.arun("Announce the v2 release to the team.", store=store)  # nobody answers in time
    print(f"first run: {first.final_state} at {first.waiting}")
    answer = asyncio.create_task(reviewer(service, delay_s=0.1))
    result = await agent.aresume(first.conversation_id, store=store)  # the hook is awaited again
    await answer
    print(f"resumed: {result.final_state}: {result.text}")
    return result


def main() -> RunResult:
    return asyncio.run(amain())


if __name__ == "__main__":
    result = main()
    print(f"{result.final_state} ({result.reason})" + (f": {result.error.message}" if result.error else ""))
    sys.exit(0 if result.final_state == "done" else 1)  # a run that did not end as it should fails the script
