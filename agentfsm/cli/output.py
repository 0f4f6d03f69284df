"""What every command shares about its output: exit codes, graph formats, writing a rendered graph."""

from __future__ import annotations

import sys
from pathlib import Path

from agentfsm.errors import AgentfsmError

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_DONE = 1, 2, 3

#: The graph formats a command can write; ``agentfsm.observe.graph.FORMATS`` (a test keeps them equal,
#: so that ``--help`` need not import the graph module).
FORMATS = ("mermaid", "dot", "svg", "png")


def emit(out: str | bytes, output: str | None) -> None:
    """Write a rendered graph to ``output`` (a file, or stdout when None or '-')."""
    if output and output != "-":
        target = Path(output)
        if isinstance(out, bytes):
            target.write_bytes(out)
        else:
            target.write_text(out, encoding="utf-8")
        return
    if isinstance(out, bytes):
        if sys.stdout.isatty():
            raise AgentfsmError("PNG is binary: write it to a file with -o FILE")
        sys.stdout.flush()
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(out)
