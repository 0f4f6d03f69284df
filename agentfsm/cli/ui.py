"""``agentfsm ui``: serve the run inspector for a store or an events file."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from agentfsm.errors import AgentfsmError

DEFAULT_STORE = "agentfsm.db"


def add_commands(sub: Any) -> None:
    ui = sub.add_parser(
        "ui",
        help="inspect runs in the browser: the graph, the path, the history at each step, tool calls",
        description=(
            "Serve a local web page that lists the runs of a store (or of a recorded events file) and shows "
            "each one: its state graph with the path taken, a timeline, the history after each transition "
            "with the diff from the step before, tool calls, and a step-through. Unfinished runs refresh."
        ),
    )
    where = ui.add_mutually_exclusive_group()
    where.add_argument(
        "--store",
        metavar="URL",
        help=f"sqlite:///PATH, a SQLite file, or postgresql://... (default: $AGENTFSM_STORE, else {DEFAULT_STORE})",
    )
    where.add_argument("--events", metavar="FILE", help="a recorded events file (JSON lines) instead of a store")
    ui.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1, this machine)")
    ui.add_argument("--port", type=int, default=8000, help="the port (default: 8000; 0 picks a free one)")
    ui.add_argument("--open", action="store_true", help="open the page in a web browser")
    ui.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from agentfsm.observe.ui.server import UIServer
    from agentfsm.observe.ui.sources import open_source

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # so the runs' own Agent classes (their graphs) import, as with python -m
    if args.events:
        source = open_source(events=args.events)
    else:
        source = open_source(str(args.store or os.environ.get("AGENTFSM_STORE") or DEFAULT_STORE))
    try:
        server = UIServer(source, args.host, args.port)
    except OSError as exc:
        source.close()
        reason = exc.strerror or str(exc)
        raise AgentfsmError(
            f"cannot listen on {args.host}:{args.port}: {reason} (choose another port with --port, or 0 for any)"
        ) from None
    what = f"the events in {args.events}" if args.events else f"the runs in {source.label}"
    print(f"agentfsm ui: serving {what} at {server.url} (Ctrl-C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"agentfsm ui: listening on {args.host}: anyone who can reach it can read these runs", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("agentfsm ui: stopped", flush=True)
    finally:
        server.close()
    return 0
