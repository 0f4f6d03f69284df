"""An agent with a state of its own: dangerous tool calls wait for approval.

The subclass adds one state, ``awaiting_approval``, between ``tool_use`` and
the next request, and one hook, ``on_awaiting_approval``, that decides. Safe
calls never enter the new state. Here the operator is a function (it approves
reads and refuses deletes); in a terminal it could be ``input()``.

    python examples/approval_agent.py
"""

from __future__ import annotations

from collections.abc import Callable

from agentfsm import Agent, Conversation, RunResult, Transition, actions, guard, tool
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
    return any(b.get("type") == "tool_use" and b.get("name") in DANGEROUS for b in conv.require_reply().content)


def refuse_calls(conv: Conversation) -> None:
    """Keep the reply; answer every call with an is_error result saying the operator said no."""
    actions.keep_reply(conv)
    calls = [b for b in conv.require_reply().content if b.get("type") == "tool_use"]
    conv.messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": c["id"], "content": "the operator refused", "is_error": True}
                for c in calls
            ],
        }
    )


class ApprovalAgent(Agent):
    model = "claude-haiku-4-5"
    tools = [read_file, delete_file]
    states = ["awaiting_approval"]
    transitions = [
        Transition("tool_use", "ask_approval", "awaiting_approval", (wants_approval,)),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=refuse_calls),
    ]

    def __init__(self, *args: object, operator: Callable[[list[str]], bool], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.operator = operator

    def on_awaiting_approval(self, conv: Conversation) -> str:
        names = [b["name"] for b in conv.require_reply().content if b.get("type") == "tool_use"]
        return "approve" if self.operator(names) else "refuse"


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
