"""An agent's tools when some come from MCP servers: the request's ``tools`` and the executor's lookup, as of now.

``ToolSet`` is what ``Agent.static_params()`` and ``Agent.tool_map`` read when the agent's ``tools`` hold
an ``MCPServer``: the agent's own tools in the order given, each server's tools where the server stands,
rebuilt only when a server's list changed (``MCPServer.version``). Two tools with one name — an
``@tool`` function, a server tool or an MCP tool — is a ``ConfigurationError`` naming both.

``serving(agent)`` / ``aserving(agent)`` open the servers for one run and close them after it (the
drivers use them); ``ToolSet.hold()`` / ``release()`` keep them open across runs (``with agent:``). A
runner that opens nothing — stepping a conversation, a durable engine's worker — opens the servers on
first use and keeps them open until ``agent.close()``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from agentfsm.errors import AgentfsmError, ConfigurationError
from agentfsm.tools.definition import Tool
from agentfsm.tools.mcp.server import MCPServer
from agentfsm.tools.mcp.tool import MCPTool

if TYPE_CHECKING:
    from agentfsm.agent import Agent

__all__ = ["ToolSet", "aserving", "serving"]


def _source(item: Tool | Mapping[str, Any]) -> str:
    if isinstance(item, MCPTool):
        return f"tool {item.name!r} of {item.server.source()}"
    if isinstance(item, Tool):
        qualname = getattr(item.fn, "__qualname__", None)
        return f"@tool {item.name!r}" + (f" (function {qualname})" if qualname else "")
    return f"tool definition {item.get('name')!r}"


class ToolSet:
    """The tools of an agent that has MCP servers among them."""

    def __init__(self, items: Sequence[Any], extra: Sequence[dict[str, Any]] = ()) -> None:
        self.items = list(items)
        self.servers = [t for t in self.items if isinstance(t, MCPServer)]
        self.extra = list(extra)  # tool entries the agent adds itself (the API connector's mcp_toolset)
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._tools: list[dict[str, Any]] = []
        self._map: dict[str, Tool] = {}
        self._lazy: list[MCPServer] = []  # opened on first use, outside any run: closed by release_lazy()

    # --- now ----------------------------------------------------------------------------------------------

    def current(self) -> tuple[list[dict[str, Any]], dict[str, Tool]]:
        """The ``tools`` request parameter and the executor's lookup, from every server's current list.

        A server never opened is opened now (and kept open until ``agent.close()``); a re-listing the
        server asked for is waited for. Raises ``ConfigurationError`` for two tools with one name.
        """
        for server in self.servers:
            if not server.is_open and server.failure is None:
                self._open_lazily(server)
            server.wait_listed()
        key = tuple((id(s._conn), s.version) for s in self.servers)
        with self._lock:
            if key == self._key:
                return self._tools, self._map
        tools: list[dict[str, Any]] = []
        by_name: dict[str, Tool | Mapping[str, Any]] = {}
        found: dict[str, Tool] = {}
        for item in self.items:
            members: Sequence[Tool | Mapping[str, Any]] = item.tools if isinstance(item, MCPServer) else [item]
            for member in members:
                name = member.name if isinstance(member, Tool) else member.get("name")
                if isinstance(name, str):
                    if name in by_name:
                        raise ConfigurationError(
                            f"two tools are named {name!r}: the {_source(by_name[name])} and the "
                            f"{_source(member)}; give the MCP server a prefix (MCPServer.stdio(..., prefix='...'))"
                        )
                    by_name[name] = member
                if isinstance(member, Tool):
                    tools.append(member.to_param())
                    found[member.name] = member
                else:
                    tools.append(dict(member))
        tools.extend(self.extra)
        with self._lock:
            self._key, self._tools, self._map = key, tools, found
        return tools, found

    def problem(self) -> AgentfsmError | None:
        """Why a run cannot go on with these tools: a server that failed, or a clash after a re-listing."""
        for server in self.servers:
            if server.failure is not None:
                return server.failure
        try:
            self.current()
        except ConfigurationError as exc:
            return exc
        for server in self.servers:  # current() may have found one failing
            if server.failure is not None:
                return server.failure
        return None

    def credentials(self) -> list[str]:
        return [c for s in self.servers for c in s.credentials]

    # --- opening ------------------------------------------------------------------------------------------

    def _open_lazily(self, server: MCPServer) -> None:
        with self._lock:
            if server in self._lazy:
                return
            self._lazy.append(server)
        server.open()

    def open(self) -> None:
        """Open every server for a run (a failure is recorded on the server, and ends the run); raises
        ``ConfigurationError`` (everything closed again) when two tools share a name."""
        for server in self.servers:
            server.open()
        clash = self._clash()
        if clash is not None:
            self.close()
            raise clash

    async def aopen(self) -> None:
        for server in self.servers:
            await server.aopen()
        clash = self._clash()
        if clash is not None:
            await self.aclose()
            raise clash

    def close(self) -> None:
        for server in self.servers:
            server.close()

    async def aclose(self) -> None:
        for server in self.servers:
            await server.aclose()

    def _clash(self) -> ConfigurationError | None:
        if any(s.failure is not None for s in self.servers):
            return None  # the run ends failed on that first
        try:
            self.current()
        except ConfigurationError as exc:
            return exc
        return None

    def release_lazy(self) -> None:
        with self._lock:
            lazy, self._lazy = self._lazy, []
        for server in lazy:
            server.close()

    async def arelease_lazy(self) -> None:
        with self._lock:
            lazy, self._lazy = self._lazy, []
        for server in lazy:
            await server.aclose()


@contextmanager
def serving(agent: Agent) -> Iterator[None]:
    """The agent's MCP servers open for one sync run (nothing to do for an agent without any)."""
    toolset = agent.toolset
    if toolset is None:
        yield
        return
    toolset.open()
    try:
        yield
    finally:
        toolset.close()


@asynccontextmanager
async def aserving(agent: Agent) -> AsyncIterator[None]:
    """``serving``, awaited: the event loop is not blocked while the servers start and stop."""
    toolset = agent.toolset
    if toolset is None:
        yield
        return
    await toolset.aopen()
    try:
        yield
    finally:
        await toolset.aclose()
