"""A custom tool executor: an audit log and an allow-list in front of the default executor.

Executors implement `execute` (sync driver) and `aexecute` (async driver):
given one reply's tool calls, return one ToolResult per call, in call order.
Here, calls to tools outside the allow-list are refused with an is_error
result the model can read; every other call is delegated to the default
executor (concurrency, timeouts, validation) and logged.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from agentfsm import Agent, DefaultExecutor, RunResult, Tool, ToolCall, ToolResult, tool
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r


class AuditingExecutor:
    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.audit: list[str] = []
        self._inner = DefaultExecutor()

    def _split(self, calls: Sequence[ToolCall]) -> tuple[list[ToolCall], dict[str, ToolResult]]:
        permitted = [c for c in calls if c.name in self.allowed]
        refused = {
            c.id: ToolResult(tool_use_id=c.id, content=f"tool {c.name!r} is not allowed here", is_error=True)
            for c in calls
            if c.name not in self.allowed
        }
        for c in calls:
            self.audit.append(f"{'run' if c.name in self.allowed else 'refused'} {c.name} {c.input}")
        return permitted, refused

    def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        permitted, refused = self._split(calls)
        done = {res.tool_use_id: res for res in self._inner.execute(permitted, tools, timeout)}
        return [refused.get(c.id) or done[c.id] for c in calls]

    async def aexecute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        permitted, refused = self._split(calls)
        done = {res.tool_use_id: res for res in await self._inner.aexecute(permitted, tools, timeout)}
        return [refused.get(c.id) or done[c.id] for c in calls]


@tool
def read_file(path: str) -> str:
    """Read a text file."""
    return f"(contents of {path})"


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    raise AssertionError("never reached: delete_file is not on the allow-list")


def main() -> tuple[RunResult, AuditingExecutor]:
    executor = AuditingExecutor(allowed={"read_file"})
    sim = Simulator(
        [
            r.tool_uses([("read_file", {"path": "notes.txt"}), ("delete_file", {"path": "notes.txt"})]),
            r.text("I read the notes; deleting is not allowed."),
        ]
    )
    agent = Agent(
        client=sim.client(), model="claude-haiku-4-5", tools=[read_file, delete_file], executor=executor, logger=None
    )
    return agent.run("Read notes.txt, then delete it."), executor


if __name__ == "__main__":
    result, executor = main()
    print("\n".join(executor.audit))
    print(result.text)
    print(f"{result.final_state} ({result.reason})" + (f": {result.error.message}" if result.error else ""))
    sys.exit(0 if result.final_state == "done" else 1)  # a run that did not end as it should fails the script
