"""A small MCP server to try ``MCPServer`` with: notes kept in memory (``python -m agentfsm.tools.mcp_demo``).

Its tools carry MCP annotations: ``list_notes`` is read-only, ``add_note`` changes things but destroys
nothing, ``delete_note`` is destructive. It speaks stdio (as ``MCPServer.stdio`` starts it), or streamable
HTTP with ``--http PORT``. It needs the ``mcp`` package (``pip install 'agentfsm[mcp]'``).
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("notes", log_level="WARNING")
_notes: dict[str, str] = {}


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True))
def list_notes() -> str:
    """List the notes, one title per line."""
    return "\n".join(sorted(_notes)) or "(no notes)"


@server.tool(annotations=ToolAnnotations(destructiveHint=False, idempotentHint=True))
def add_note(title: str, text: str) -> str:
    """Add a note (or replace the note with that title)."""
    _notes[title] = text
    return f"saved {title!r}"


@server.tool(annotations=ToolAnnotations(destructiveHint=True))
def delete_note(title: str) -> str:
    """Delete a note."""
    if _notes.pop(title, None) is None:
        raise ToolError(f"no note titled {title!r}")
    return f"deleted {title!r}"


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(argv[1]))
    else:
        server.run()


if __name__ == "__main__":
    main(sys.argv[1:])
