"""An agent with a state of its own: dangerous tool calls wait for approval.

The subclass adds one waiting state, ``awaiting_approval``, between ``tool_use``
and the next request, and one hook, ``on_awaiting_approval``, that decides on
the spot when it can. Safe calls never enter the new state. Here the operator
is a function (it approves reads and refuses deletes); when it cannot decide
(returns None) the run stops there, ``final_state == "waiting"``, until
``agent.resume(result, trigger="approve" or "refuse")``. The refusal is
``actions.refuse_tool_calls``: the history is never edited by hand.

    python examples/approval_agent.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from agentfsm import Agent, Conversation, RunResult, Transition, Wait, actions, guard, tool
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r

DANGEROUS = {"delete_file"}


@tool
def read_file(path: str) -> str:
    """Read a text file."""
    return f"(contents of {path})"


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


@guard("a dangerous tool was called")
def wants_approval(conv: Conversation) -> bool:
    return any(call.name in DANGEROUS for call in conv.pending_tool_calls)


class ApprovalAgent(Agent):
    model = "claude-haiku-4-5"
    tools = [read_file, delete_file]
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask_approval", "awaiting_approval", (wants_approval,)),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
    ]

    def __init__(self, *args: object, operator: Callable[[list[str]], bool | None], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.operator = operator

    def on_awaiting_approval(self, conv: Conversation) -> str | None:
        verdict = self.operator([call.name for call in conv.pending_tool_calls])
        if verdict is None:
            return None  # no decision now: the run waits here (a Wait state never decides by itself)
        return "approve" if verdict else "refuse"


def main() -> RunResult:
    sim = Simulator(
        [
            r.tool_use("read_file", {"path": "notes.txt"}),
            r.tool_use("delete_file", {"path": "notes.txt"}),
            r.text("I read notes.txt; the operator did not allow deleting it."),
        ]
    )
    agent = ApprovalAgent(client=sim.client(), operator=lambda names: "delete_file" not in names, logger=None)
    return agent.run("Read notes.txt, then delete it.")


if __name__ == "__main__":
    result = main()
    print(" -> ".join(result.path))
    print(result.text)
    print(f"{result.final_state} ({result.reason})" + (f": {result.error.message}" if result.error else ""))
    sys.exit(0 if result.final_state == "done" else 1)  # a run that did not end as it should fails the script
