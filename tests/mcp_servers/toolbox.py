"""An MCP server for the tests: tools with annotations, an error, an image, a resource, a list that grows, a
call that never returns until the process is killed, and one that makes the server exit mid-call.

Run: ``python tests/mcp_servers/toolbox.py`` (stdio) or ``... --http PORT`` (streamable HTTP on 127.0.0.1).
``TOOLBOX_MARK`` (a file or a FIFO): ``hang`` writes a line there as it starts, so a test sees the call
in flight without sleeping; ``TOOLBOX_TALLY`` (a file): ``tally`` appends a line there each time it runs.
"""

from __future__ import annotations

import base64
import os
import sys
from typing import Annotated, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import EmbeddedResource, ImageContent, TextContent, TextResourceContents, ToolAnnotations
from pydantic import Field

HTTP = len(sys.argv) == 3 and sys.argv[1] == "--http"
server = MCPServer("toolbox", log_level="INFO" if HTTP else "WARNING")  # INFO: uvicorn says when it listens

# A 1x1 PNG.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()


def _mark(line: str, variable: str = "TOOLBOX_MARK") -> None:
    path = os.environ.get(variable)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(annotations=ToolAnnotations(destructiveHint=True))
def delete_file(path: Annotated[str, Field(min_length=1)]) -> str:
    """Delete a file (pretends to)."""
    return f"deleted {path}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def append_line(text: str, where: Literal["top", "bottom"] = "bottom") -> str:
    """Append a line somewhere (pretends to)."""
    return f"appended {text!r} at the {where}"


@server.tool()
def fail(reason: str) -> str:
    """Always fails, saying why."""
    raise ToolError(reason)


@server.tool()
def picture() -> list[TextContent | ImageContent]:
    """A caption and a one-pixel PNG."""
    return [TextContent(type="text", text="a red pixel"), ImageContent(type="image", data=PIXEL, mimeType="image/png")]


@server.tool()
def readme() -> list[EmbeddedResource]:
    """The README, as an embedded resource."""
    return [
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(uri="file:///README.md", mimeType="text/markdown", text="# Toolbox"),
        )
    ]


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds the tool 'shout' and tells the client the tool list changed."""

    def shout(text: str) -> str:
        """Say it louder."""
        return text.upper() + "!"

    server.add_tool(shout)
    await ctx.session.send_tool_list_changed()
    return "grown"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def call_key(ctx: Context) -> str:
    """The idempotency key agentfsm sent in the request's _meta, with the attempt."""
    meta = ctx.request_context.meta or {}
    return f"{meta.get('agentfsm/idempotency_key')} {meta.get('agentfsm/attempt')} {meta.get('agentfsm/tool_use_id')}"


@server.tool(annotations=ToolAnnotations(idempotentHint=False))
def tally(label: str) -> str:
    """Counts a call (each call appends a line to TOOLBOX_MARK)."""
    _mark(f"tally {label}", "TOOLBOX_TALLY")
    return f"counted {label}"


@server.tool()
async def hang(label: str) -> str:
    """Never returns: marks that it started, then waits forever."""
    _mark(f"hang {label}")
    await anyio.Event().wait()
    return "unreachable"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def die() -> str:
    """The server process exits in the middle of this call."""
    os._exit(3)


if __name__ == "__main__":
    if HTTP:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
