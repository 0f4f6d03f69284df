"""``agentfsm sim serve``: the simulator on a loopback port, answering with an echo model."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any


def add_commands(sub: Any) -> None:
    sim = sub.add_parser("sim", help="the Messages API simulator")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    serve = sim_sub.add_parser("serve", help="serve an echo model on a loopback port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.set_defaults(func=cmd_sim_serve)


def cmd_sim_serve(args: argparse.Namespace) -> int:
    from agentfsm.sim import SimRequest, Simulator
    from agentfsm.sim import replies as r

    def echo(request: SimRequest) -> Any:
        last = request.last_message or {}
        content = last.get("content")
        said = (
            content
            if isinstance(content, str)
            else " ".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")
        )
        return r.text(f"You said: {said}" if said else "Hello from the agentfsm simulator.")

    sim = Simulator(echo)
    print(f"agentfsm simulator on http://{args.host}:{args.port} (POST /v1/messages; Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever(args.host, args.port)
    return 0
