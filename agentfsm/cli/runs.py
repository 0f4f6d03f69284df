"""``agentfsm runs list|show|graph|decide``: the conversations a store holds, and deciding a waiting one.

Looking at a stored run (``list``, ``show``, ``graph``) never imports code: a waiting run says what it
waits for from what was stored when it stopped (``Snapshot.pending_decision``), and a run is drawn on
the graph stored with it (``Snapshot.graph``). A stored row is data: the class it names is never
loaded. ``decide`` runs code, so it takes the class from the person deciding (``--agent``), never
from the row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import sys
from typing import TYPE_CHECKING, Any

from agentfsm.cli.output import EXIT_USAGE, FORMATS, emit
from agentfsm.cli.running import after_run, event_logger, output_options
from agentfsm.cli.targets import command_client, drawn_table, make_agent
from agentfsm.errors import AgentfsmError
from agentfsm.loading import load_agent_class

if TYPE_CHECKING:
    from agentfsm.result import RunResult
    from agentfsm.stores.base import Snapshot, Store
    from agentfsm.tools.calls import ToolCall


def add_commands(sub: Any) -> None:
    runs = sub.add_parser("runs", help="list, inspect and decide stored conversations (a SQLite file or PostgreSQL)")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    store_help = f"the store: a SQLite file or a postgresql:// URI (default: $AGENTFSM_STORE, else {DEFAULT_STORE})"
    runs_list = runs_sub.add_parser("list", help="one line per stored conversation")
    runs_list.add_argument("--store", metavar="PATH", help=store_help)
    runs_list.set_defaults(func=cmd_runs_list)
    runs_show = runs_sub.add_parser("show", help="a stored conversation: state, counters, usage, messages, path")
    runs_show.add_argument("id", metavar="ID", help="the conversation id (or the start of one)")
    runs_show.add_argument("--store", metavar="PATH", help=store_help)
    runs_show.add_argument("--json", action="store_true", help="print the stored snapshot as JSON")
    runs_show.set_defaults(func=cmd_runs_show)
    runs_graph = runs_sub.add_parser("graph", help="draw a stored conversation's path on its agent's graph")
    runs_graph.add_argument("id", metavar="ID", help="the conversation id (or the start of one)")
    runs_graph.add_argument("--store", metavar="PATH", help=store_help)
    runs_graph.add_argument("--format", choices=FORMATS, help="default: from -o's suffix, else mermaid")
    runs_graph.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    runs_graph.add_argument(
        "--agent",
        metavar="MODULE:AgentClass",
        help="draw on this class's graph, imported (default: the graph stored with the run; its class is never "
        "imported)",
    )
    runs_graph.set_defaults(func=cmd_runs_graph)
    runs_decide = runs_sub.add_parser(
        "decide",
        help="decide a waiting conversation along TRIGGER and carry it on, as agent.resume(..., trigger=...) does; "
        "a run awaiting approval on its tool calls, with --approve/--approve-all/--deny, as "
        "agent.resume(..., approve=, deny=) does",
    )
    runs_decide.add_argument("id", metavar="ID", help="the conversation id (or the start of one)")
    runs_decide.add_argument(
        "trigger",
        metavar="TRIGGER",
        nargs="?",
        help="one of the triggers `agentfsm runs show ID` lists (with --approve/--approve-all/--deny: run_tools, "
        "which may be left out)",
    )
    approving = runs_decide.add_mutually_exclusive_group()
    approving.add_argument(
        "--approve",
        metavar="TOOL_USE_ID",
        action="append",
        help="a run awaiting_tool_approval: run this call (repeatable; the ids are those `runs show ID` lists)",
    )
    approving.add_argument(
        "--approve-all", action="store_true", help="a run awaiting_tool_approval: run every call not --deny'd"
    )
    runs_decide.add_argument(
        "--deny",
        metavar="TOOL_USE_ID[=REASON]",
        action="append",
        type=denial_argument,
        help="a run awaiting_tool_approval: answer this call with an error carrying REASON, which the model reads, "
        "instead of running it (repeatable; without a reason: the library's default denial text). Every call "
        "awaiting approval must be approved or denied",
    )
    runs_decide.add_argument(
        "--input",
        metavar="JSON",
        type=json_argument,
        help='what the decision gives the hook and the action (conv.input), as JSON: \'{"reason": "not today"}\'',
    )
    runs_decide.add_argument("--store", metavar="PATH", help=store_help)
    runs_decide.add_argument(
        "--agent",
        metavar="MODULE:AgentClass",
        help="the Agent class that carries the run on (required: deciding runs its hooks, actions and tools, so "
        "you name the code; the class a stored row names is never imported)",
    )
    runs_decide.add_argument(
        "--sim",
        metavar="SCRIPT",
        help="carry it on against the simulator with this script (as for `agentfsm run`); without it, the real "
        "API (ANTHROPIC_API_KEY)",
    )
    output_options(runs_decide)
    runs_decide.set_defaults(func=cmd_runs_decide)
    from agentfsm.cli import debugging  # runs fork|rerun: a module of their own

    debugging.add_commands(runs_sub, store_help)


def json_argument(text: str) -> Any:
    """``--input``'s value: JSON, or a usage error saying where it breaks."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past what a reader can read back
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None


def denial_argument(text: str) -> tuple[str, str]:
    """``--deny``'s value: ``TOOL_USE_ID`` or ``TOOL_USE_ID=REASON`` (split at the first ``=``: a tool_use id
    has none). No reason (or an empty one) is the library's default denial text."""
    call_id, _, reason = text.partition("=")
    if not call_id.strip():
        raise argparse.ArgumentTypeError(f"no tool_use id before '=': {text!r} (TOOL_USE_ID[=REASON])")
    return call_id, reason


#: The trigger an approval decision (``--approve``, ``--approve-all``, ``--deny``) takes.
APPROVAL_TRIGGER = "run_tools"


def decision_of(args: argparse.Namespace) -> tuple[str, Any]:
    """The trigger and input ``runs decide``'s arguments give: TRIGGER and ``--input``, or the approval flags as
    ``agent.resume(approve=, deny=)`` gives them (trigger ``run_tools``, input ``{"approve": ..., "deny": ...}``).
    A mix, or neither, is a ``ValueError`` saying so (a usage error)."""
    flags = [
        name
        for name, given in (("--approve", args.approve), ("--approve-all", args.approve_all), ("--deny", args.deny))
        if given
    ]
    if not flags:
        if args.trigger is None:
            raise ValueError(
                "the following arguments are required: TRIGGER (or, for a run awaiting_tool_approval, "
                "--approve/--approve-all/--deny)"
            )
        return args.trigger, args.input
    if args.input is not None:
        raise ValueError(f"{'/'.join(flags)} make the decision's input: give them without --input")
    if args.trigger not in (None, APPROVAL_TRIGGER):
        raise ValueError(
            f"{'/'.join(flags)} decide a run awaiting_tool_approval along {APPROVAL_TRIGGER}: give them without "
            f"TRIGGER (got {args.trigger!r})"
        )
    given: dict[str, Any] = {}
    if args.approve_all:
        given["approve"] = True
    elif args.approve:
        given["approve"] = list(args.approve)
    if args.deny:
        denied: dict[str, str] = {}
        for call_id, reason in args.deny:
            if call_id in denied:
                raise ValueError(f"--deny {call_id} is given twice")
            denied[call_id] = reason
        given["deny"] = denied
    return APPROVAL_TRIGGER, given


DEFAULT_STORE = "agentfsm.db"


def _store_location(args: argparse.Namespace) -> str:
    return str(args.store or os.environ.get("AGENTFSM_STORE") or DEFAULT_STORE)


def _open_store(args: argparse.Namespace) -> Any:
    """The store ``--store`` names (a SQLite file or URL, or a ``postgresql://`` URI); a missing file is an error."""
    from agentfsm.errors import StoreError
    from agentfsm.stores.location import open_store

    try:
        return open_store(_store_location(args))
    except StoreError as exc:
        raise AgentfsmError(f"{exc}; name a store with --store PATH or $AGENTFSM_STORE") from None


def _load_run(args: argparse.Namespace) -> tuple[Any, Any]:
    """The store and the snapshot of ``args.id`` (or of the one stored id it begins)."""
    store = _open_store(args)
    try:
        return store, store.load(args.id)
    except KeyError:
        pass
    matches = [s.conversation_id for s in store.list() if s.conversation_id.startswith(args.id)]
    if len(matches) == 1:
        return store, store.load(matches[0])
    where = _store_location(args)
    if matches:
        raise AgentfsmError(f"{args.id!r} begins {len(matches)} conversations in {where}: {', '.join(matches[:5])}")
    raise AgentfsmError(f"no conversation {args.id!r} in {where} (agentfsm runs list --store {where} lists them)")


def _when(timestamp: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def cmd_runs_list(args: argparse.Namespace) -> int:
    runs = _open_store(args).list()
    if not runs:
        print(f"no conversations in {_store_location(args)}")
        return 0
    rows = [("ID", "STATE", "FINISHED", "TURNS", "UPDATED", "FORKED", "AGENT")]
    for run in runs:
        agent = f"{run.agent}  (cannot be read: {run.problem})" if run.problem else run.agent
        parent = run.forked_from
        rows.append(
            (
                run.conversation_id,
                run.state,
                "yes" if run.finished else "no",
                str(run.turns),
                _when(run.updated_at),
                "-" if parent is None else f"{parent.conversation_id}@{parent.step}",
                agent,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _preview(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return json.dumps(text if len(text) <= limit else text[: limit - 1] + "…", ensure_ascii=False)


def _block_summary(block: Any) -> str:
    if not isinstance(block, dict):
        return type(block).__name__
    kind = str(block.get("type"))
    if kind == "text":
        return f"text {_preview(str(block.get('text', '')))}"
    if kind in ("tool_use", "server_tool_use"):
        given = " ".join(json.dumps(block.get("input"), ensure_ascii=False).split())
        given = given if len(given) <= 40 else given[:39] + "…"
        return f"{kind} {block.get('name')}({given}) [{block.get('id')}]"
    if kind == "tool_result":
        content = block.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        error = " is_error" if block.get("is_error") else ""
        return f"tool_result [{block.get('tool_use_id')}]{error} {_preview(text or '', 50)}"
    return kind


#: Where the environment keeps credentials: ``runs show`` never prints them (nor a cut-short copy).
CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _for_display(snap: Any) -> Any:
    """The snapshot as it may be printed: credentials redacted everywhere (the conversation included —
    the store keeps the caller's messages as sent, a terminal need not show a key in them), and lone
    surrogates, which no terminal encoding can print, as U+FFFD."""
    from agentfsm.redaction import redact, redact_error
    from agentfsm.stores.base import Snapshot

    secrets = tuple(v for v in (os.environ.get(name) for name in CREDENTIAL_VARIABLES) if v)
    data = _printable(redact(snap.model_dump(mode="json"), secrets))
    if data.get("error"):
        data["error"]["message"] = redact_error(data["error"]["message"], secrets)
    return Snapshot.model_validate(data)


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        if _SURROGATE.search(value) is None:
            return value
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    return value


def cmd_runs_show(args: argparse.Namespace) -> int:
    _, snap = _load_run(args)
    snap = _for_display(snap)
    if args.json:
        print(snap.model_dump_json(indent=2))
        return 0
    c = snap.counters
    if snap.finished:
        status = f"{snap.state} ({snap.reason})"
    elif snap.waiting is not None:
        status = f"waiting at {snap.waiting} (agentfsm runs decide carries it on)"
    else:
        status = f"at {snap.state} (unfinished: agent.resume carries it on)"
    print(f"conversation : {snap.conversation_id}")
    print(f"agent        : {snap.agent}")
    if snap.forked_from is not None:
        print(f"forked from  : {snap.forked_from.conversation_id} at step {snap.forked_from.step}")
    print(f"state        : {status}")
    if snap.waiting is not None:
        _print_wait(snap, _store_location(args))
    print(f"model        : {snap.model} (max_tokens {snap.max_tokens})")
    print(
        f"turns        : {c.turns} (continuations {c.continuations}, pause resumes {c.pause_resumes}, "
        f"empty retries {c.empty_retries}, ladder rung {c.rung})"
    )
    usage = snap.usage
    print(
        f"usage        : input {usage.input_tokens}, output {usage.output_tokens}, cache read "
        f"{usage.cache_read_input_tokens}, cache write {usage.cache_creation_input_tokens}, requests {usage.requests}"
    )
    print(f"cost         : {'unknown' if snap.cost_usd is None else f'${snap.cost_usd:.6f}'}")
    if snap.error is not None:
        print(f"error        : {snap.error.type}: {' '.join(snap.error.message.split())}")
    if snap.tool_results or snap.tools_started:
        running = [t for t in snap.tools_started if t not in snap.tool_results]
        print(
            f"tool calls   : {len(snap.tool_results)} committed, {len(running)} running at the last save "
            "(answered as interrupted on resume unless idempotent)"
        )
    print(
        f"saved        : {snap.revision} times, schema_version {snap.schema_version}, "
        f"{snap.elapsed_s:.1f} s of wall time"
    )
    print(f"answer       : {_preview(snap.answer, 200)}")
    print("messages     :")
    for i, message in enumerate(snap.messages):
        content = message.get("content")
        parts = [_preview(content)] if isinstance(content, str) else [_block_summary(b) for b in content or []]
        print(f"  [{i}] {message.get('role')}: {'; '.join(parts) or '(empty)'}")
    print("path taken   :")
    for step in snap.trace:
        print(f"  turn {step.turn:>2}  {step.source:>14} --{step.trigger}--> {step.dest}")
    return 0


def _print_wait(snap: Snapshot, store: str) -> None:
    """What a waiting run waits for, from what was stored when it stopped (no code is imported)."""
    decision = snap.pending_decision
    how = (
        f"agentfsm runs decide {shlex.quote(snap.conversation_id)} TRIGGER --agent MODULE:Class "
        f"--store {shlex.quote(store)}"
    )
    if decision is None:  # stored by an earlier agentfsm, which kept no record of the triggers
        print(f"waiting for  : a trigger not recorded with this run ({how} lists the ones that can)")
        return
    if decision.state == "awaiting_tool_approval" and decision.tool_calls:  # approval on a tool: its own flags
        how = (
            f"agentfsm runs decide {shlex.quote(snap.conversation_id)} --approve TOOL_USE_ID | --approve-all | "
            f"--deny TOOL_USE_ID[=REASON] ... --agent MODULE:Class --store {shlex.quote(store)}"
        )
    print(f"waiting for  : {' | '.join(decision.triggers) or '(no trigger leaves this state)'}  ({how})")
    if decision.why:
        print(f"because      : {decision.why}")
    for i, call in enumerate(decision.tool_calls):
        print(f"{'pending call' if i == 0 else '':<12} : {call_signature(call)} [{call.id}]")


def call_signature(call: ToolCall, limit: int = 120) -> str:
    """A tool call as an operator reads it before deciding: ``name(arg=value, ...)``, each value as JSON
    (strings quoted, so that what is shown is exactly what will run) and cut at ``limit`` characters."""

    def shown(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False, default=str)  # one line: no indent, newlines escaped
        return text if len(text) <= limit else text[: limit - 1] + "…"

    given = call.input
    if isinstance(given, dict):
        return f"{call.name}({', '.join(f'{key}={shown(value)}' for key, value in given.items())})"
    return f"{call.name}({shown(given)})"


def cmd_runs_graph(args: argparse.Namespace) -> int:
    from agentfsm.observe.graph import build, format_for, render

    _, snap = _load_run(args)
    held = "the run was stored without its graph (by an earlier agentfsm, or the stored copy is unreadable)"
    table, name = drawn_table(args.agent, snap.agent, snap.graph, held=held)
    fmt = args.format or (format_for(args.output) if args.output and args.output != "-" else "mermaid")
    title = f"{name} ({snap.state})" if snap.finished else f"{name} (at {snap.state})"
    emit(render(build(table, title=title, trace=snap.trace, current=snap.state), fmt), args.output)
    return 0


def cmd_runs_decide(args: argparse.Namespace) -> int:
    try:
        trigger, given = decision_of(args)
    except ValueError as exc:  # a usage error, reported as the parser reports one
        print(f"agentfsm: error: {exc} (see agentfsm runs decide --help)", file=sys.stderr)
        return EXIT_USAGE
    store, snap = _load_run(args)
    with contextlib.closing(store) if hasattr(store, "close") else contextlib.nullcontext():
        check_decidable(snap)  # before loading code or asking for a key: a finished run is said so first
        agent_cls = decider_class(snap, args.agent)
        client = command_client(args.sim, asynchronous=bool(agent_cls.async_parts()))
        with event_logger(args) as logger:
            result = _carry_on(agent_cls, store, snap, trigger, given, client=client, logger=logger)
    from agentfsm.stores.location import store_label

    return after_run(args, result, agent_cls, store_label(_store_location(args)))


def decide_run(
    store: Store,
    conversation_id: str,
    trigger: str,
    input: Any = None,
    *,
    agent_spec: str | None = None,
    client: Any = None,
) -> RunResult:
    """Decide a waiting conversation of ``store`` along ``trigger`` and carry it on, as
    ``agent.resume(conversation_id, store=store, trigger=trigger, input=input)`` does, to a final state or its
    next wait: for a caller that holds a store but not the agent (the command line, the inspector).

    The agent is made from ``agent_spec`` (``MODULE:Class``, or a ``.py`` file path and a class), with ``client``
    (None: the agent's default client, from ``ANTHROPIC_API_KEY``). ``agent_spec`` is required: deciding runs
    the class's hooks, actions and tools, so the caller names the code, never the stored row (a row is data:
    the class it records is not imported). Without it, a ``ConfigurationError`` says which class the row
    recorded; a class that cannot be loaded is an error, never a fallback. The rules are ``resume``'s: a
    trigger that does not leave the waiting state is an ``InvalidTransitionError`` naming the ones that can; a
    run that is not waiting is one too; two deciders at once cannot both go on (the store's lease: the second gets
    ``ConversationLockedError`` or ``StaleConversationError``), so an approved tool runs once. Every error is an
    ``AgentfsmError`` with a message fit for one line.
    """
    return decide_loaded(store, conversation_id, trigger, input, agent=agent_spec, client=client)


def decide_loaded(
    store: Store, conversation_id: str, trigger: str, input: Any = None, *, agent: str | type | None, client: Any
) -> RunResult:
    """``decide_run`` with the class given loaded already (the inspector loads each ``--agent`` once, when it
    starts) or as ``MODULE:Class``."""
    from agentfsm.errors import UnknownConversationError
    from agentfsm.observe.events import default_logger

    try:
        snap = store.load(conversation_id)
    except KeyError:
        raise UnknownConversationError(conversation_id) from None
    check_decidable(snap)
    agent_cls = agent if isinstance(agent, type) else decider_class(snap, agent)
    return _carry_on(agent_cls, store, snap, trigger, input, client=client, logger=default_logger())


def check_decidable(snap: Snapshot) -> None:
    """Refuse, without loading any code, a run that cannot be waiting: a finished one, or one carrying out a
    decision already. (Any other case is for ``Conversation.decide`` to judge: it knows the class's waits.)"""
    from agentfsm.errors import InvalidTransitionError

    if snap.finished:
        raise InvalidTransitionError(
            f"conversation {snap.conversation_id!r} is not waiting (finished, at state {snap.state!r}): there is "
            "nothing to decide"
        )
    if snap.waiting is None and snap.decision is not None:
        raise InvalidTransitionError(
            f"conversation {snap.conversation_id!r} is not waiting: it is carrying out {snap.decision!r} already "
            "(its run stopped before finishing); carry it on with agent.resume(conversation_id, store=...)"
        )


def decider_class(snap: Snapshot, agent_spec: str | None) -> Any:
    """The Agent class that carries a decided run on: the one ``agent_spec`` names. Never the one the row
    records: a stored row is data, and importing the module it names would run that module's code. Without
    ``agent_spec``, a ``ConfigurationError`` saying what the row recorded; a class that cannot be loaded is an
    error, never the base Agent instead (it would carry the run on wrongly)."""
    from agentfsm.errors import ConfigurationError

    if not agent_spec:
        raise ConfigurationError(
            f"deciding conversation {snap.conversation_id!r} runs its agent's hooks, actions and tools: name the "
            f"Agent class that carries it on with --agent MODULE:Class (agent_spec= in code); the run recorded "
            f"{snap.agent!r}, which is not imported for you (a stored row is data)"
        )
    return load_agent_class(agent_spec)


def _carry_on(
    agent_cls: Any, store: Store, snap: Snapshot, trigger: str, input: Any, *, client: Any, logger: Any
) -> RunResult:
    """``agent.resume`` (``aresume`` for a class with async hooks or actions, which only it can run)."""
    agent = make_agent(agent_cls, client=client, logger=logger)
    result: RunResult
    if agent_cls.async_parts():
        result = asyncio.run(agent.aresume(snap.conversation_id, store=store, trigger=trigger, input=input))
    else:
        result = agent.resume(snap.conversation_id, store=store, trigger=trigger, input=input)
    return result
