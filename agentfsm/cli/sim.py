"""``agentfsm sim serve``: the simulator on a loopback port, answering with an echo model or a script."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any


def add_commands(sub: Any) -> None:
    sim = sub.add_parser("sim", help="the Messages API simulator")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    serve = sim_sub.add_parser("serve", help="serve the simulator on a loopback port: an echo model, or a script")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="default 8765; 0 picks a free port (the URL says which)")
    serve.add_argument(
        "--script",
        metavar="FILE",
        help="answer with these replies, in order, one per request (whichever client sends it): a JSON file "
        "([{'type': 'tool_use', 'name': 'get_weather', 'input': {'location': 'Hanoi'}}, {'type': 'text', "
        "'text': 'Done.'}]) or MODULE:NAME, as `agentfsm run --sim` reads; once they are used up, every request "
        "is answered with an HTTP 400 saying so. Without it, an echo model",
    )
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

    if args.script:
        from agentfsm.cli.targets import load_sim_script

        script: Any = load_sim_script(args.script)  # read now: a bad script is an error before the port opens
        sim = Simulator(script)
        model = f"the script {args.script}"
    else:
        sim = Simulator(echo)
        model = "an echo model"

    def ready(url: str) -> None:  # said once the socket listens, so whoever reads it can connect at once
        print(f"agentfsm simulator on {url} ({model}; POST /v1/messages; Ctrl-C stops)", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever(args.host, args.port, on_ready=ready)
    return 0
