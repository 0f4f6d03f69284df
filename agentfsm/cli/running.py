"""``agentfsm demo`` and ``agentfsm run``: a run on the terminal, its events shown live or as JSON lines."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from agentfsm.cli.output import EXIT_NOT_DONE
from agentfsm.cli.targets import command_client, load_agent_class, make_agent


def add_commands(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run a scripted conversation on the built-in simulator (no API key needed)")
    _run_options(demo)
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run an Agent class: on the simulator (--sim) or the real API")
    run.add_argument("target", metavar="MODULE:AgentClass", help="e.g. examples/weather_agent.py:WeatherAgent")
    run.add_argument("prompt")
    run.add_argument(
        "--sim",
        metavar="SCRIPT",
        help="run on the simulator: a JSON file of replies ([{'type': 'text', 'text': 'Hi'}, ...]) or "
        "MODULE:NAME of a list of replies or a function returning one; without it, the real API "
        "(ANTHROPIC_API_KEY)",
    )
    _run_options(run)
    run.set_defaults(func=cmd_run)


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print events as JSON lines instead of the live view")
    p.add_argument("--events", metavar="FILE", help="also write the events as JSON lines to FILE, for replay")
    p.add_argument("--graph", metavar="FILE", help="draw the path taken to FILE (.mmd, .dot, .svg or .png)")


def _json_logger(*processors: Any) -> Any:
    """A structlog logger that prints events to stdout as JSON lines."""
    import structlog

    from agentfsm.observe.redaction import redact_processor

    chain: list[Any] = [
        redact_processor,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        *processors,
        structlog.processors.JSONRenderer(ensure_ascii=False),
    ]
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stdout),
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )


@contextlib.contextmanager
def _event_logger(args: argparse.Namespace) -> Iterator[Any]:
    """The logger a run writes to: JSON lines (--json) or the live view, plus an events file (--events)."""
    from agentfsm.observe.live import LiveView
    from agentfsm.observe.replay import EventsWriter

    extra: list[Any] = []
    writer = EventsWriter(args.events) if args.events else None
    if writer is not None:
        extra.append(writer)
    try:
        yield _json_logger(*extra) if args.json else LiveView().logger(*extra)
    finally:
        if writer is not None:
            writer.close()


def _after_run(args: argparse.Namespace, result: Any, agent_cls: Any) -> int:
    from agentfsm.observe.graph import build, write

    if args.graph:
        at = result.waiting or result.final_state  # a waiting run is drawn at the state it waits in
        title = f"{agent_cls.__name__} ({result.final_state})"
        fmt = write(build(agent_cls.table(), title=title, trace=result.trace, current=at), args.graph)
        if not args.json:
            print(f"graph       : {args.graph} ({fmt})")
    if args.events and not args.json:
        print(f"events      : {args.events} (agentfsm replay {args.events})")
    if not args.json:
        print()
        print("answer      :", result.text)
    return 0 if result.final_state == "done" else EXIT_NOT_DONE


def cmd_demo(args: argparse.Namespace) -> int:
    from agentfsm.demo import WeatherAgent, run_demo

    with _event_logger(args) as logger:
        result, _ = run_demo(logger=logger)
    return _after_run(args, result, WeatherAgent)


def cmd_run(args: argparse.Namespace) -> int:
    agent_cls = load_agent_class(args.target)
    client: Any = None
    client = command_client(args.sim)
    with _event_logger(args) as logger:
        result = make_agent(agent_cls, client=client, logger=logger).run(args.prompt)
    return _after_run(args, result, agent_cls)
