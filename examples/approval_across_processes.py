"""Approval across processes: one process runs the agent until it waits, and exits; another, later, decides.

The decision may come an hour later from a web app, after every worker restarted: the
conversation waits in the store (here SQLite: one file), not in memory. The first process
runs to ``final_state == "waiting"`` and exits; the second loads nothing by hand — it calls
``agent.resume(conversation_id, store=store, trigger="approve")`` (or ``"refuse"`` with
``input={"reason": ...}``, which the refusal action reads) and the run carries on from
where it stopped, exactly once.

    python examples/approval_across_processes.py          # both steps, each in its own process
    python examples/approval_across_processes.py start DB URL ID
    python examples/approval_across_processes.py approve DB URL ID
    python examples/approval_across_processes.py refuse DB URL ID "a reason"

URL is the Messages API to use: the scripted simulator this script serves on a loopback
port by default, or ``real`` for the real API (``ANTHROPIC_API_KEY``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import anthropic

from agentfsm import Agent, Conversation, RunResult, SQLiteStore, Transition, Wait, actions, guard, tool
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r


@tool
def drop_table(table: str) -> str:
    """Drop a database table. Needs a person's approval."""
    return f"dropped {table}"


@guard("the model wants to drop a table")
def drops_a_table(conv: Conversation) -> bool:
    return any(call.name == "drop_table" for call in conv.pending_tool_calls)


class CleanupAgent(Agent):
    model = "claude-haiku-4-5"
    system = "You maintain a database. Dropping a table needs approval."
    tools = [drop_table]
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask", "awaiting_approval", (drops_a_table,)),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
    ]


def agent_for(url: str) -> CleanupAgent:
    client = anthropic.Anthropic() if url == "real" else anthropic.Anthropic(base_url=url, api_key="sk-ant-sim-0000")
    return CleanupAgent(client=client, logger=None)


def step(command: str, db: str, url: str, conversation_id: str, reason: str | None = None) -> RunResult:
    """What one process does: start the run, or decide it. Each opens the store afresh."""
    agent, store = agent_for(url), SQLiteStore(db)
    try:
        if command == "start":
            return agent.run("Drop the tmp_import table.", store=store, conversation_id=conversation_id)
        given = {"reason": reason} if reason else None
        return agent.resume(conversation_id, store=store, trigger=command, input=given)
    finally:
        store.close()


def in_a_new_process(*args: str) -> RunResult:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True, timeout=300)
    return RunResult.model_validate_json(out.stdout.strip().splitlines()[-1])


def main() -> RunResult:
    sim = Simulator([r.tool_use("drop_table", {"table": "tmp_import"}), r.text("The tmp_import table is gone.")])
    with tempfile.TemporaryDirectory() as folder, sim.serve() as url:
        db = str(Path(folder) / "agents.db")
        waiting = in_a_new_process("start", db, url, "cleanup-1")
        print(f"process 1: {waiting.final_state} at {waiting.waiting}; pending {waiting.pending_tool_calls}")
        done = in_a_new_process("approve", db, url, "cleanup-1")
        print(f"process 2: {done.final_state}: {done.text}")
    return done


if __name__ == "__main__":
    if len(sys.argv) > 1:  # one step, in this process: its result as JSON on stdout, the outcome on stderr
        result = step(*sys.argv[1:])
        print(json.dumps(result.model_dump(mode="json", exclude={"events"})))
        want, out = ("waiting" if sys.argv[1] == "start" else "done"), sys.stderr  # the first step is to wait
    else:
        result, want, out = main(), "done", sys.stdout
    print(f"{result.final_state} ({result.reason})" + (f": {result.error.message}" if result.error else ""), file=out)
    sys.exit(0 if result.final_state == want else 1)  # a run that did not end as it should fails the script
