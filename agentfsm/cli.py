"""The ``agentfsm`` command line: ``demo`` and ``sim serve``.

Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

import structlog

from agentfsm.events import redact_processor


def _logger(json_lines: bool) -> Any:
    """A structlog logger that prints events to stdout, as JSON lines or for a human."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty(), pad_event_to=22)
    )
    processors: list[Any] = [redact_processor, structlog.processors.add_log_level]
    if json_lines:
        processors.append(structlog.processors.TimeStamper(fmt="iso"))
    processors.append(renderer)
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stdout),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from agentfsm.demo import run_demo

    result, sim = run_demo(logger=_logger(args.json))
    if args.json:
        return 0 if result.final_state == "done" else 1
    print()
    print(f"final state : {result.final_state} ({result.reason})")
    print(f"requests    : {len(sim.requests)} sent, {result.usage.requests} answered")
    print(f"usage       : {result.usage.input_tokens} input + {result.usage.output_tokens} output tokens")
    print("path taken  :")
    for step in result.trace:
        print(f"  turn {step.turn:>2}  {step.source:>14} --{step.trigger}--> {step.dest}")
    print()
    print("answer      :", result.text)
    return 0 if result.final_state == "done" else 1


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentfsm", description="Claude agent loops as finite-state machines.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a scripted conversation on the built-in simulator (no API key needed)")
    demo.add_argument("--json", action="store_true", help="print events as JSON lines")
    demo.set_defaults(func=cmd_demo)
    sim = sub.add_parser("sim", help="the Messages API simulator")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    serve = sim_sub.add_parser("serve", help="serve an echo model on a loopback port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.set_defaults(func=cmd_sim_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the command line reports, it does not dump tracebacks
        print(f"agentfsm: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
