"""``agentfsm demo`` and ``agentfsm run``: a run on the terminal, its events shown live or as JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shlex
import sys
from collections.abc import Iterator
from typing import Any

from agentfsm.cli.output import EXIT_NOT_DONE
from agentfsm.cli.targets import command_client, make_agent
from agentfsm.errors import AgentfsmError
from agentfsm.loading import load_agent_class


def add_commands(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run a scripted conversation on the built-in simulator (no API key needed)")
    output_options(demo)
    _store_options(demo)
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
    output_options(run)
    _store_options(run)
    run.set_defaults(func=cmd_run)


def output_options(p: argparse.ArgumentParser) -> None:
    """What every command that runs a conversation shows: the live view or JSON lines, an events file, a graph."""
    p.add_argument("--json", action="store_true", help="print events as JSON lines instead of the live view")
    p.add_argument("--events", metavar="FILE", help="also write the events as JSON lines to FILE, for replay")
    p.add_argument("--graph", metavar="FILE", help="draw the path taken to FILE (.mmd, .dot, .svg or .png)")


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        metavar="URL",
        help="save the run in this store (a SQLite file, made if missing, or a postgresql:// URI), to see it "
        "later with `agentfsm runs show` or `agentfsm ui` and, if it waits, decide it with `agentfsm runs decide`",
    )
    p.add_argument("--id", metavar="ID", help="the conversation id (default: a new one); with --store it must be new")


def _json_logger(*processors: Any) -> Any:
    """A structlog logger that prints events to stdout as JSON lines."""
    import structlog

    from agentfsm.redaction import redact_processor

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
def event_logger(args: argparse.Namespace) -> Iterator[Any]:
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


@contextlib.contextmanager
def run_store(args: argparse.Namespace) -> Iterator[Any]:
    """The store ``--store`` names (made if it is a SQLite file that does not exist yet), or None; closed after.

    A ``--id`` the store holds already is an error before anything runs: a run never overwrites another.
    """
    if not args.store:  # not saved (an --id then only names the run in its events)
        yield None
        return
    from agentfsm.stores.location import open_store, store_label

    store = open_store(args.store, create=True)
    try:
        if args.id is not None:
            try:
                store.load(args.id)
            except KeyError:
                pass
            else:
                where = shlex.quote(store_label(args.store))
                raise AgentfsmError(
                    f"conversation {args.id!r} is already in {store_label(args.store)}: pick another --id, or see "
                    f"it with agentfsm runs show {shlex.quote(args.id)} --store {where}"
                )
        yield store
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def after_run(args: argparse.Namespace, result: Any, agent_cls: Any, store: str | None = None) -> int:
    """Say what a run came to (unless --json), draw it (--graph), and return its exit code: 0 for ``done``,
    ``EXIT_NOT_DONE`` for any other end (waiting included). ``store``: where it is saved, to say how to see it."""
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
        run_id = shlex.quote(result.conversation_id)
        where = shlex.quote(store) if store else None
        if where:
            print(f"stored      : {result.conversation_id} (agentfsm runs show {run_id} --store {where})")
        if result.final_state == "waiting":
            snapshot = result.snapshot
            decision = snapshot.pending_decision if snapshot is not None else None
            triggers = " | ".join(decision.triggers) if decision is not None else "TRIGGER"
            # The class as this command was given it: deciding needs it named again (a stored row's is not loaded).
            spec = getattr(args, "target", None) or getattr(args, "agent", None) or agent_cls.qualified_name()
            from agentfsm.machine.table import AWAITING_APPROVAL  # the run has loaded the machine already

            # A run waiting for approval of its tool calls is decided with the approval flags, not a trigger.
            decide = "--approve ID --deny ID[=REASON]" if result.waiting == AWAITING_APPROVAL else "TRIGGER"
            how = (
                f"agentfsm runs decide {run_id} {decide} --agent {shlex.quote(spec)} --store {where}"
                if where
                else "run it with --store to decide it later with agentfsm runs decide"
            )
            print(f"waiting     : at {result.waiting} for {triggers} ({how})")
        print()
        print("answer      :", result.text)
    return 0 if result.final_state == "done" else EXIT_NOT_DONE


def cmd_demo(args: argparse.Namespace) -> int:
    from agentfsm.demo import WeatherAgent, run_demo

    with run_store(args) as store, event_logger(args) as logger:
        result, _ = run_demo(logger=logger, store=store, conversation_id=args.id)
    return after_run(args, result, WeatherAgent, _label(args))


def cmd_run(args: argparse.Namespace) -> int:
    agent_cls = load_agent_class(args.target)
    asynchronous = bool(agent_cls.async_parts())  # async hooks or actions: only arun can run it
    client = command_client(args.sim, asynchronous=asynchronous)
    with run_store(args) as store, event_logger(args) as logger:
        agent = make_agent(agent_cls, client=client, logger=logger)
        if asynchronous:
            result = asyncio.run(agent.arun(args.prompt, store=store, conversation_id=args.id))
        else:
            result = agent.run(args.prompt, store=store, conversation_id=args.id)
    return after_run(args, result, agent_cls, _label(args))


def _label(args: argparse.Namespace) -> str | None:
    from agentfsm.stores.location import store_label

    return store_label(args.store) if args.store else None
