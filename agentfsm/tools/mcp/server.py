"""``MCPServer``: one MCP server (a command over stdio, or a URL over streamable HTTP) whose tools an Agent uses.

**How it runs.** The ``mcp`` SDK is async (anyio) and its sessions must be entered and left in one
task. An agent runs under four drivers, two of them sync, and conversations of one agent may run at
once on different threads and loops; so each open server has a *private event loop on a thread of its
own* (``agentfsm-mcp-<name>``), which holds the session from start to close. A call from any thread or
loop is handed to that loop (``asyncio.run_coroutine_threadsafe``) and awaited there; cancelling the
awaiting call (a timeout) cancels it on the server's loop, which tells the server. The thread costs
one hop per call (tens of microseconds) and keeps the session out of the caller's loop, whose tasks
come and go.

**Protocol.** Sessions open with the ``initialize`` handshake (the SDK's ``mode="legacy"``): the era
every MCP server in use speaks, and the one whose ``notifications/tools/list_changed`` the server
sends as it changes its tools; servers of the 2026-07-28 era answer it too.

**Lifecycle.** ``open``/``close`` count their users: the drivers open the agent's servers for a run
and close them after it, ``with agent:`` holds them open across runs, and the last user closing stops
the session (and a stdio server's process). A server that fails to start, or dies later, is
``failure``: the run ends ``failed`` with that ``MCPServerError``; the next ``open`` starts it afresh.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shlex
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, TextIO

from agentfsm.errors import ConfigurationError, MCPServerError, MCPToolError
from agentfsm.tools.mcp.tool import ApprovalSetting, MCPTool, needs_approval_for, result_content

__all__ = ["MCPServer", "require_mcp"]

_PAGES = 100  # tools/list pages followed at most: a server whose cursor never ends cannot hang a run
_MAX_NAME = 64


def require_mcp() -> None:
    """Raise a ``ConfigurationError`` saying how to install the ``mcp`` package when it is missing."""
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError("MCP servers need the official mcp package: pip install 'agentfsm[mcp]'") from exc


def _api_name(name: str) -> str:
    """An MCP tool name as the Messages API takes tool names: letters, digits, ``_`` and ``-`` (others → ``_``)."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "_" for c in name)


class MCPServer:
    """An MCP server whose tools an ``Agent`` offers the model, next to ``@tool`` functions::

        files = MCPServer.stdio("python", ["files_server.py"], prefix="files")
        agent = Agent(tools=[get_weather, files])

    Make one with :meth:`stdio` or :meth:`http`. ``prefix`` names its tools ``prefix_name`` (needed when
    a name clashes with another tool's); ``needs_approval`` marks which of its tools need a person's
    approval (``True``, ``"destructive"``, or a callable of the call); ``timeout`` bounds starting the
    server and listing its tools, in seconds (a call's own time is ``Policy.tool_timeout``).
    """

    def __init__(
        self,
        *,
        transport: str,
        describe: str,
        connect: Callable[[], Any],
        name: str | None,
        prefix: str | None,
        needs_approval: ApprovalSetting,
        timeout: float,
        credentials: Sequence[str] = (),
    ) -> None:
        require_mcp()
        if prefix is not None and (not prefix or _api_name(prefix) != prefix):
            raise ConfigurationError(f"MCP server prefix {prefix!r} must be letters, digits, '_' or '-'")
        if not timeout > 0:
            raise ConfigurationError(f"MCP server timeout must be a positive number of seconds, got {timeout!r}")
        needs_approval_for({}, needs_approval)  # checks the setting now
        self.transport = transport
        self.describe = describe
        self.name = name or prefix or describe
        self.prefix = prefix
        self.needs_approval: ApprovalSetting = needs_approval
        self.timeout = float(timeout)
        #: Credential strings (HTTP header values) kept out of events, errors and stored rows.
        self.credentials = tuple(credentials)
        self._connect = connect
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._users = 0
        self._tools: list[MCPTool] = []
        #: Bumped at every listing: the agent rebuilds its request's tools when it changes.
        self.version = 0
        self._failure: MCPServerError | None = None

    # --- making one ----------------------------------------------------------------------------------

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        prefix: str | None = None,
        needs_approval: ApprovalSetting = None,
        timeout: float = 30.0,
        name: str | None = None,
        errlog: TextIO | None = None,
    ) -> MCPServer:
        """A server run as a process of its own (``command args...``), spoken to over its stdin/stdout.

        ``env`` is added to the SDK's minimal default environment (``HOME``, ``PATH``, ...: not this
        process's whole environment, so no credential leaks to the server unless given). The server's
        stderr goes to ``errlog`` (default: this process's stderr).
        """
        if isinstance(args, str):
            raise ConfigurationError("MCPServer.stdio takes args as a list of strings, e.g. ['server.py']")
        argv = [str(a) for a in args]
        describe = shlex.join([os.path.basename(command), *argv])

        def connect() -> Any:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=command, args=argv, env=dict(env) if env else None, cwd=os.fspath(cwd) if cwd else None
            )
            return stdio_client(params, errlog=errlog if errlog is not None else sys.stderr)

        return cls(
            transport="stdio",
            describe=describe,
            connect=connect,
            name=name,
            prefix=prefix,
            needs_approval=needs_approval,
            timeout=timeout,
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        prefix: str | None = None,
        needs_approval: ApprovalSetting = None,
        timeout: float = 30.0,
        name: str | None = None,
    ) -> MCPServer:
        """A server at ``url``, over MCP's streamable HTTP transport; ``headers`` go with every request
        (``Authorization`` ...; their values never reach an event, an error or a stored row)."""
        given = dict(headers or {})
        connect_timeout = timeout if timeout > 0 else 30.0

        def connect() -> Any:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            # No read timeout: a call may run as long as Policy.tool_timeout lets it (the executor cancels it).
            client = httpx2.AsyncClient(headers=given, timeout=httpx2.Timeout(connect_timeout, read=None))
            return _HTTPTransport(streamable_http_client(url, http_client=client), client)

        secrets = [v for v in given.values() if v]
        secrets += [v.partition(" ")[2] for v in given.values() if " " in v]
        return cls(
            transport="http",
            describe=url,
            connect=connect,
            name=name,
            prefix=prefix,
            needs_approval=needs_approval,
            timeout=timeout,
            credentials=[s for s in secrets if s],
        )

    def __repr__(self) -> str:
        return f"MCPServer.{self.transport}({self.describe!r}, name={self.name!r})"

    # --- what the agent reads -----------------------------------------------------------------------

    @property
    def tools(self) -> list[MCPTool]:
        """The server's tools as last listed (``[]`` before it was opened)."""
        return self._tools

    @property
    def failure(self) -> MCPServerError | None:
        """Why the server is not usable (it failed to start, or died), or None."""
        return self._failure

    @property
    def is_open(self) -> bool:
        conn = self._conn
        return conn is not None and self._failure is None

    def source(self) -> str:
        """How errors name this server (a clash names both sources)."""
        return (
            f"MCP server {self.name!r} ({self.describe})" if self.name != self.describe else f"MCP server {self.name!r}"
        )

    # --- opening and closing ------------------------------------------------------------------------

    def _acquire(self) -> concurrent.futures.Future[None]:
        """Count one more user; start the session if it is not running. The future resolves when it is ready
        (or failed: the failure is recorded, the future still resolves)."""
        with self._lock:
            self._users += 1
            conn = self._conn
            if conn is None or self._failure is not None:
                if conn is not None:
                    conn.stop()
                self._failure = None
                conn = self._conn = _Connection(self)
                conn.start()
            return conn.ready

    def open(self) -> MCPServerError | None:
        """Start the server (if no one has) and wait until its tools are listed; None, or why it failed.

        Each ``open`` needs one ``close``. Blocks for at most ``timeout`` seconds.
        """
        ready = self._acquire()
        try:
            ready.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self._fail_start(f"did not start within {self.timeout:g} s (timeout=)")
        return self._failure

    async def aopen(self) -> MCPServerError | None:
        """``open``, awaited (the event loop is not blocked while the server starts)."""
        ready = self._acquire()
        try:
            await asyncio.wait_for(asyncio.wrap_future(ready), self.timeout)
        except TimeoutError:
            self._fail_start(f"did not start within {self.timeout:g} s (timeout=)")
        return self._failure

    def _fail_start(self, problem: str) -> None:
        with self._lock:
            conn = self._conn
            if self._failure is None:
                self._failure = MCPServerError(self.source(), problem)
        if conn is not None:
            conn.stop()

    def close(self) -> None:
        """One user is done; the last one stops the session (a stdio server's process exits). Waits for it."""
        done = self._release()
        if done is not None:
            done.result(timeout=self.timeout + 5)

    async def aclose(self) -> None:
        done = self._release()
        if done is not None:
            await asyncio.wait_for(asyncio.wrap_future(done), self.timeout + 5)

    def _release(self) -> concurrent.futures.Future[None] | None:
        with self._lock:
            if self._users == 0:
                return None
            self._users -= 1
            if self._users > 0 or self._conn is None:
                return None
            conn, self._conn = self._conn, None
            self._tools = []
        conn.stop()
        return conn.closed

    # --- calls (from any thread or loop) --------------------------------------------------------------

    async def call(
        self, tool: MCPTool, arguments: dict[str, Any], *, meta: dict[str, Any] | None = None
    ) -> str | list[dict[str, Any]]:
        """Call ``tool`` on the server's own loop (``meta``: the request's ``_meta``) and map its result
        (``result_content``)."""
        conn = self._conn
        if conn is None or self._failure is not None:
            why = self._failure.problem if self._failure is not None else "it is not running"
            raise MCPToolError(tool.name, f"the tool's MCP server {self.name!r} cannot take calls: {why}")
        future = conn.submit(conn.call(tool.remote_name, arguments, meta))
        try:
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # the call's timeout (or the run's cancellation): cancel it on the server's loop too
            raise
        return result_content(tool.name, result)

    def wait_listed(self) -> None:
        """Wait (at most ``timeout`` s) for a re-listing the server asked for (``list_changed``) to finish."""
        conn = self._conn
        pending = conn.relisting if conn is not None else None
        if pending is not None and not pending.done():
            try:
                pending.result(timeout=self.timeout)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                self._fail_start(f"did not list its tools within {self.timeout:g} s after it said they changed")
            except Exception:  # recorded as the failure by the listing itself
                pass

    # --- called on the server's loop ----------------------------------------------------------------------

    def _listed(self, conn: _Connection, listed: Sequence[Any]) -> None:
        tools: list[MCPTool] = []
        seen: dict[str, str] = {}
        for item in listed:
            remote = str(item.name)
            name = _api_name(remote)
            if self.prefix:
                name = f"{self.prefix}_{name}"
            if not name or len(name) > _MAX_NAME:
                raise MCPServerError(
                    self.source(),
                    f"its tool {remote!r} would be named {name!r}, which the Messages API does not take "
                    f"(1-{_MAX_NAME} letters, digits, '_' or '-')"
                    + ("" if not self.prefix else ": use a shorter prefix"),
                )
            if name in seen:
                raise MCPServerError(
                    self.source(), f"its tools {seen[name]!r} and {remote!r} both become {name!r} for the API"
                )
            seen[name] = remote
            annotations = item.annotations.model_dump(by_alias=True, exclude_none=True) if item.annotations else {}
            schema = dict(item.input_schema) if item.input_schema else {"type": "object", "properties": {}}
            description = item.description or item.title or f"The {remote} tool of MCP server {self.name}."
            tools.append(
                MCPTool(
                    self,
                    name=name,
                    remote_name=remote,
                    description=description,
                    input_schema=schema,
                    annotations=annotations,
                )
            )
        with self._lock:
            if self._conn is conn:
                self._tools = tools
                self.version += 1

    def _died(self, conn: _Connection, problem: str) -> None:
        with self._lock:
            if self._conn is conn and self._failure is None:
                self._failure = MCPServerError(self.source(), problem)


class _HTTPTransport:
    """The streamable-HTTP transport plus the HTTP client it uses, closed together."""

    def __init__(self, transport: Any, client: Any) -> None:
        self._transport, self._client = transport, client

    async def __aenter__(self) -> Any:
        return await self._transport.__aenter__()

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._transport.__aexit__(*exc)
        finally:
            await self._client.aclose()


class _Connection:
    """One session with the server, on a private event loop in a thread of its own."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.closed: concurrent.futures.Future[None] = concurrent.futures.Future()
        #: A re-listing under way after ``notifications/tools/list_changed``, or None.
        self.relisting: concurrent.futures.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._loop_ready = threading.Event()
        self.client: Any = None
        self.thread = threading.Thread(target=self._main, name=f"agentfsm-mcp-{server.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        self._loop_ready.wait()
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Ask the session to end (from any thread); ``closed`` resolves when it has."""
        self._stopping = True
        self._loop_ready.wait()
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(stop.set)

    def _main(self) -> None:
        try:
            asyncio.run(self._session())
        except BaseException as exc:  # the thread must end quietly; what went wrong is recorded
            self._failed(f"{type(exc).__name__}: {exc}")
        finally:
            if not self.ready.done():
                self.ready.set_result(None)
            self.closed.set_result(None)

    def _failed(self, problem: str) -> None:
        if not self.ready.done():
            self.server._fail_start(f"failed to start: {problem}")
        elif not self._stopping:
            self.server._died(self, f"stopped answering: {problem}")

    async def _session(self) -> None:
        from mcp import Client

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._loop_ready.set()
        if self._stopping:
            return
        try:
            async with AsyncExitStack() as stack:
                client = Client(self.server._connect(), mode="legacy", cache=None, message_handler=self._on_message)
                self.client = await stack.enter_async_context(client)
                await self._list()
                self.ready.set_result(None)
                await self._stop.wait()
        except MCPServerError as exc:  # its tools cannot be offered (a name the API does not take)
            self._failed(exc.problem)
        except Exception as exc:
            self._failed(_describe(exc))

    async def _list(self) -> None:
        listed: list[Any] = []
        cursor: str | None = None
        for _ in range(_PAGES):
            page = await self.client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        self.server._listed(self, listed)

    async def _relist(self) -> None:
        try:
            await self._list()
        except Exception as exc:
            self.server._died(self, f"failed to list its tools again: {_describe(exc)}")
            raise

    async def _on_message(self, message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/tools/list_changed" and self.loop is not None:
            # Listed again at once, on this loop; a call that is answered after this notification waits for
            # the new list before it returns (``call``), so the next request carries it.
            self.relisting = asyncio.run_coroutine_threadsafe(self._relist(), self.loop)

    async def call(self, name: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        try:
            result = await self.client.call_tool(name, arguments, meta=meta)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self.server._died(self, f"exited or dropped the connection during a call of {name!r}")
                raise MCPToolError(name, f"the MCP server {self.server.name!r} exited during the call") from None
            raise MCPToolError(name, f"the MCP server {self.server.name!r} rejected the call: {exc}") from None
        except Exception as exc:
            self.server._died(self, f"failed during a call of {name!r}: {_describe(exc)}")
            raise MCPToolError(name, f"the MCP server {self.server.name!r} failed during the call") from None
        pending = self.relisting
        if pending is not None and not pending.done():
            await asyncio.wrap_future(pending)
        dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped


def _describe(exc: BaseException) -> str:
    inner = exc
    while isinstance(inner, BaseExceptionGroup) and inner.exceptions:
        inner = inner.exceptions[0]
    text = str(inner).strip()
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__
