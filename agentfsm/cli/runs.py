"""``agentfsm runs list|show|graph``: the conversations a store holds."""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

from agentfsm.cli.output import FORMATS, emit
from agentfsm.cli.targets import load_agent_class, recorded_agent_class
from agentfsm.errors import AgentfsmError


def add_commands(sub: Any) -> None:
    runs = sub.add_parser("runs", help="list and inspect stored conversations (a SQLite store file)")
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
        "--agent", metavar="MODULE:AgentClass", help="draw on this class's graph (default: the class the run recorded)"
    )
    runs_graph.set_defaults(func=cmd_runs_graph)


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
    rows = [("ID", "STATE", "FINISHED", "TURNS", "UPDATED", "AGENT")]
    for run in runs:
        agent = f"{run.agent}  (cannot be read: {run.problem})" if run.problem else run.agent
        rows.append(
            (
                run.conversation_id,
                run.state,
                "yes" if run.finished else "no",
                str(run.turns),
                _when(run.updated_at),
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
    from agentfsm.observe.redaction import redact, redact_error
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
    status = (
        f"{snap.state} ({snap.reason})"
        if snap.finished
        else f"at {snap.state} (unfinished: agent.resume carries it on)"
    )
    print(f"conversation : {snap.conversation_id}")
    print(f"agent        : {snap.agent}")
    print(f"state        : {status}")
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


def cmd_runs_graph(args: argparse.Namespace) -> int:
    from agentfsm.observe.graph import build, format_for, render

    _, snap = _load_run(args)
    cls = load_agent_class(args.agent) if args.agent else recorded_agent_class(snap.agent)
    fmt = args.format or (format_for(args.output) if args.output and args.output != "-" else "mermaid")
    title = f"{cls.__name__} ({snap.state})" if snap.finished else f"{cls.__name__} (at {snap.state})"
    emit(render(build(cls.table(), title=title, trace=snap.trace, current=snap.state), fmt), args.output)
    return 0
