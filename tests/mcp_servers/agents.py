"""Agents and a worker process for the MCP tests that need a process of their own.

* ``ToolboxAgent``: the toolbox server over stdio, prefixed ``box`` (a durable engine's worker builds it with
  no arguments, so its client comes from the environment: the test's simulator);
* ``python tests/mcp_servers/agents.py run|resume STORE``: the kill test's worker: ``run`` starts conversation
  ``conv_kill`` whose first reply calls ``box_hang``, ``box_tally`` and ``box_add`` at once (it never ends:
  the test SIGKILLs it mid-call); ``resume`` carries it on and prints the result as JSON.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agentfsm import Agent, Policy
from agentfsm.tools.mcp import MCPServer

TOOLBOX = str(Path(__file__).with_name("toolbox.py"))


def toolbox(**kw: object) -> MCPServer:
    """The toolbox over stdio, prefixed ``box``; the ``TOOLBOX_*`` variables of this process go to it (a stdio
    server gets only the SDK's minimal environment plus ``env=``)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("TOOLBOX_")}
    return MCPServer.stdio(sys.executable, [TOOLBOX], prefix="box", env=env, **kw)  # type: ignore[arg-type]


class ToolboxAgent(Agent):
    tools = [toolbox()]
    policy = Policy(max_tokens=1024)


def _main(mode: str, store_path: str) -> None:
    from agentfsm.sim import Simulator
    from agentfsm.sim import replies as r
    from agentfsm.stores.sqlite import SQLiteStore

    store = SQLiteStore(store_path)
    calls = [("box_hang", {"label": "h"}), ("box_tally", {"label": "t"}), ("box_add", {"a": 2, "b": 3})]
    if mode == "run":
        sim = Simulator([r.tool_uses(calls), r.text("never reached")])
        agent = Agent(client=sim.client(), tools=[toolbox()], policy=Policy(tool_timeout=None), logger=None)
        agent.run("Use the toolbox.", conversation_id="conv_kill", store=store)
        raise SystemExit("unreachable: box_hang never returns")
    sim = Simulator([r.text("Resumed.")])
    agent = Agent(client=sim.client(), tools=[toolbox()], logger=None)
    result = agent.resume("conv_kill", store=store)
    sys.stdout.write(result.model_dump_json() + "\n")


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
