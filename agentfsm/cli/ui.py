"""``agentfsm ui``: serve the run inspector for a store or an events file."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

from agentfsm.errors import AgentfsmError, ConfigurationError

if TYPE_CHECKING:
    from agentfsm.observe.ui.decisions import Decider
    from agentfsm.stores.base import Store

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
    decide = ui.add_argument_group(
        "deciding waiting runs", "off by default: without --allow-decisions the inspector only shows runs"
    )
    decide.add_argument(
        "--allow-decisions",
        action="store_true",
        help="let the page of a waiting run decide it (a trigger button, optional JSON input): the run goes on "
        "in this process, running its tools and calling the API, as `agentfsm runs decide` does",
    )
    decide.add_argument(
        "--agent",
        action="append",
        metavar="MODULE:AgentClass",
        help="the Agent class that carries decided runs on (required with --allow-decisions: deciding runs its "
        "hooks, actions and tools, so you name the code; the class a stored row names is never imported). Repeat "
        "it for a store whose runs are of several classes: a run is decided by the one it recorded",
    )
    decide.add_argument(
        "--sim",
        metavar="SCRIPT",
        help="carry decided runs on against the simulator: a JSON file of replies or MODULE:NAME, as "
        "`agentfsm run --sim` takes; without it, the real API (ANTHROPIC_API_KEY)",
    )
    ui.set_defaults(func=cmd_ui)


def decider_for(store: Store, agent_specs: list[str], sim_script: str | None) -> Decider:
    """What decides a waiting run for ``--allow-decisions``: ``agentfsm.cli.runs.decide_run`` on ``store``, with
    the client of ``--sim`` (or the real API's, checked now) and a class ``--agent`` named.

    The classes are loaded now (the operator named them: a mistake is one line before serving). A run is
    decided by the named class it recorded (``module:QualName``); when one class is named and the run recorded
    another (a module renamed since), by that one, as ``agentfsm runs decide --agent`` does; when several are
    named and none is the run's, the decision is refused, saying so. The class a row names is never imported.
    """
    from agentfsm.cli.targets import command_client
    from agentfsm.loading import load_agent_class

    if not agent_specs:
        raise ConfigurationError(
            "--allow-decisions runs the decided runs' hooks, actions and tools in this process: name the Agent "
            "class that carries them on with --agent MODULE:Class (repeat it for several); the class a stored "
            "run records is never imported"
        )
    classes: dict[str, type] = {}
    for spec in agent_specs:
        cls = load_agent_class(spec)
        classes[cls.qualified_name()] = cls
    client = command_client(sim_script)  # a missing API key is one line now, not an error on the first click

    def decide(conversation_id: str, trigger: str, input: Any) -> object:
        from agentfsm.errors import UnknownConversationError

        try:
            recorded = store.load(conversation_id).agent
        except KeyError:
            raise UnknownConversationError(conversation_id) from None
        cls = classes.get(recorded) or (next(iter(classes.values())) if len(classes) == 1 else None)
        if cls is None:
            raise ConfigurationError(
                f"not decided: run {conversation_id!r} recorded the class {recorded!r}, and this inspector decides "
                f"only runs of {', '.join(sorted(classes))}: start it with --agent MODULE:Class for that class too"
            )
        # `runs decide` carries the run on exactly as agent.resume does; the inspector shares it (looked up by
        # name, when the first decision is taken, so that showing runs never loads the deciding code).
        decide_loaded = getattr(importlib.import_module("agentfsm.cli.runs"), "decide_loaded")  # noqa: B009
        return decide_loaded(store, conversation_id, trigger, input, agent=cls, client=client)

    return decide


def cmd_ui(args: argparse.Namespace) -> int:
    from agentfsm.observe.ui.server import UIServer
    from agentfsm.observe.ui.sources import StoreSource, open_source

    if args.events and args.allow_decisions:
        raise ConfigurationError("--allow-decisions needs a store (--store): an events file cannot be carried on")
    if (args.agent or args.sim) and not args.allow_decisions:
        raise ConfigurationError("--agent and --sim are for deciding runs: add --allow-decisions")
    if args.events:
        source = open_source(events=args.events)
    else:
        source = open_source(str(args.store or os.environ.get("AGENTFSM_STORE") or DEFAULT_STORE))
    try:
        decider = None
        if args.allow_decisions:
            assert isinstance(source, StoreSource)  # an events file was refused above
            decider = decider_for(source.store, args.agent or [], args.sim)
        server = UIServer(source, args.host, args.port, decider=decider)
    except AgentfsmError:
        source.close()
        raise
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
    if args.allow_decisions:
        print("agentfsm ui: decisions allowed: a waiting run's page can decide it (its tools run here)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    _stop_on_ctrl_c()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("agentfsm ui: stopped", flush=True)
    finally:
        server.close()
    return 0


def _stop_on_ctrl_c() -> None:
    """Make "Ctrl-C to stop" true even in a process started with SIGINT ignored or blocked (both are inherited
    across exec from whatever started it): the server runs in the foreground until interrupted."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
