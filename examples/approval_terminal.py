"""Approval in a terminal: the run stops before a dangerous tool call, you answer, it carries on.

``run()`` returns normally with ``final_state == "waiting"``; ``result.pending_tool_calls``
says what the model wants to run; ``agent.resume(result, trigger=...)`` carries the run on
in this process (no store needed: a waiting result carries its conversation). Nothing runs
until you say yes; a "no" (with your words as the reason) goes back to the model as an
``is_error`` tool result, and the model carries on with that.

    python examples/approval_terminal.py              # on the simulator; answer y or n
    ANTHROPIC_API_KEY=... python examples/approval_terminal.py --real
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import anthropic

from agentfsm import Agent, Conversation, Policy, RunResult, Transition, Wait, actions, guard, tool
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r


@tool
def list_files(folder: str) -> list[str]:
    """List the files in a folder."""
    return ["build.log", "cache.bin", "notes.txt"]


@tool
def delete_files(paths: list[str]) -> str:
    """Delete files. Dangerous: asks a person first."""
    return f"deleted {len(paths)} file(s): {', '.join(paths)}"


@guard("the model wants to delete files")
def deletes_files(conv: Conversation) -> bool:
    return any(call.name == "delete_files" for call in conv.pending_tool_calls)


class TerminalApprovalAgent(Agent):
    model = "claude-haiku-4-5"
    system = "You tidy up folders. Ask before deleting; never delete notes."
    tools = [list_files, delete_files]
    policy = Policy(max_tokens=1024, max_turns=12)
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask", "awaiting_approval", (deletes_files,)),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
    ]


def scripted_model() -> Simulator:
    return Simulator(
        [
            r.tool_use("list_files", {"folder": "/tmp/project"}),
            r.tool_use("delete_files", {"paths": ["build.log", "cache.bin"]}, text="Two files look disposable."),
            r.text("Done: I handled the two disposable files and left notes.txt alone."),
        ]
    )


def main(ask: Callable[[str], str] = input, client: anthropic.Anthropic | None = None) -> RunResult:
    """Run the agent, asking ``ask`` (``input`` in a terminal; a function in tests) at every wait."""
    agent = TerminalApprovalAgent(client=client or scripted_model().client(), logger=None)
    result = agent.run("Free some space in /tmp/project.")
    while result.final_state == "waiting":
        for call in result.pending_tool_calls:
            print(f"The agent wants to run {call.name} with {call.input}")
        answer = ask("Allow it? [y/N, or say why not] ").strip()
        if answer.lower() in ("y", "yes"):
            result = agent.resume(result, trigger="approve")
        else:
            reason = answer if answer.lower() not in ("", "n", "no") else None
            result = agent.resume(result, trigger="refuse", input={"reason": reason} if reason else None)
    return result


if __name__ == "__main__":
    result = main(client=anthropic.Anthropic() if "--real" in sys.argv else None)
    print(" -> ".join(result.path))
    print(result.text)
    print(f"{result.final_state} ({result.reason})" + (f": {result.error.message}" if result.error else ""))
    sys.exit(0 if result.final_state == "done" else 1)  # a run that did not end as it should fails the script
