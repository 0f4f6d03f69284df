"""``agentfsm graph``, ``replay`` and ``diagrams``: an Agent's state graph, a recorded run's path, a folder of both."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentfsm.cli.output import FORMATS, emit
from agentfsm.cli.targets import drawn_table
from agentfsm.errors import AgentfsmError, TargetNotFoundError
from agentfsm.loading import agent_classes, load_agent_class, load_module, load_target, split_target


def add_commands(sub: Any) -> None:
    graph = sub.add_parser("graph", help="draw an Agent class's state graph")
    graph.add_argument("target", metavar="MODULE:AgentClass")
    graph.add_argument("--format", choices=FORMATS, help="default: from -o's suffix, else mermaid")
    graph.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    graph.set_defaults(func=cmd_graph)

    replay = sub.add_parser("replay", help="print a recorded run's transition trace and draw its path, offline")
    replay.add_argument("events", metavar="EVENTS.jsonl")
    replay.add_argument("--graph", metavar="FILE", help="draw the path to FILE ('-' for stdout)")
    replay.add_argument("--format", choices=FORMATS, help="the graph's format; default: from FILE's suffix")
    replay.add_argument(
        "--agent",
        metavar="MODULE:AgentClass",
        help="draw on this class's graph (imported: a module path or a .py file); without it, the base Agent's "
        "graph with the run's own steps added (an events file records no graph, and the class it names is never "
        "imported)",
    )
    replay.add_argument("--conversation", metavar="ID", help="only this conversation")
    replay.set_defaults(func=cmd_replay)

    diagrams = sub.add_parser("diagrams", help="write (or --check) the diagrams of Agent classes into a folder")
    diagrams.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="MODULE:AgentClass, a module or .py file (all its Agent classes), or MODULE:function returning a run",
    )
    diagrams.add_argument("--out", default="diagrams", help="the folder (default: diagrams)")
    diagrams.add_argument("--check", action="store_true", help="write nothing; fail if any file is out of date")
    diagrams.set_defaults(func=cmd_diagrams)


def cmd_graph(args: argparse.Namespace) -> int:
    from agentfsm.observe.graph import build, format_for, render

    agent_cls = load_agent_class(args.target)
    fmt = args.format or (format_for(args.output) if args.output else "mermaid")
    out = render(build(agent_cls.table(), title=agent_cls.__name__), fmt)
    emit(out, args.output)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Print each recorded run's trace and draw its path: printed as Mermaid, or to ``--graph FILE``."""
    from agentfsm.errors import EventsFileError
    from agentfsm.observe.graph import build, format_for, render
    from agentfsm.observe.live import edge_counts
    from agentfsm.observe.replay import replay

    runs = replay(args.events)
    if args.conversation is not None:
        runs = [r for r in runs if r.conversation_id == args.conversation]
        if not runs:
            raise EventsFileError(f"no conversation {args.conversation!r}", args.events)
    if args.graph and len(runs) > 1:
        ids = ", ".join(r.conversation_id for r in runs)
        raise EventsFileError(f"holds {len(runs)} conversations ({ids}); pick one with --conversation ID", args.events)
    to_file = bool(args.graph) and args.graph != "-"
    fmt = args.format or (format_for(args.graph) if to_file else "mermaid")
    if fmt in ("svg", "png") and not to_file:
        raise AgentfsmError(f"{fmt.upper()} is not for a terminal: write it to a file with --graph FILE.{fmt}")
    drawn: dict[str | None, Any] = {}  # by the class each run recorded: one note each, not one per run
    out = sys.stderr if args.graph == "-" else sys.stdout  # the graph alone goes to stdout with --graph -
    for run in runs:
        finished = f"{run.final_state} ({run.reason})" if run.final_state else f"unfinished, at {run.state}"
        print(
            f"conversation {run.conversation_id}: {finished}, {run.turns} requests, {len(run.trace)} transitions",
            file=out,
        )
        print("path taken  :", file=out)
        for step in run.trace:
            print(f"  turn {step.turn:>2}  {step.source:>14} --{step.trigger}--> {step.dest}", file=out)
        print(f"edges taken : {edge_counts([(s.turn, s.source, s.trigger, s.dest) for s in run.trace])}", file=out)
        if run.agent not in drawn:
            drawn[run.agent] = drawn_table(args.agent, run.agent, None, held="an events file records no graph")
        table, name = drawn[run.agent]
        graph = build(table, title=f"{name} ({run.state})", trace=run.trace, current=run.state)
        if to_file:
            emit(render(graph, fmt), args.graph)
            print(f"graph       : {args.graph} ({fmt})", file=out)
        elif args.graph == "-":
            emit(render(graph, fmt), None)
        else:
            print(f"graph ({fmt}) :", file=out)
            emit(render(graph, fmt), None)
            print(file=out)
    return 0


@dataclass(frozen=True)
class _Diagram:
    name: str
    source: str  # the target it came from
    mermaid: str
    dot: str


def _diagrams(targets: Sequence[str]) -> list[_Diagram]:
    """One diagram per Agent class (or per run, for a function returning a RunResult) the targets name."""
    from agentfsm.agent import Agent
    from agentfsm.observe.graph import build, to_dot, to_mermaid
    from agentfsm.result import RunResult

    found: dict[str, _Diagram] = {}

    def add(name: str, source: str, graph: Any) -> None:
        if name in found:
            raise TargetNotFoundError(f"two diagrams would be named {name!r} ({found[name].source} and {source})")
        found[name] = _Diagram(name, source, to_mermaid(graph), to_dot(graph))

    for spec in targets:
        module_spec, attr = split_target(spec)
        if attr is None:
            classes = agent_classes(load_module(module_spec))
            if not classes:
                print(f"{spec}: defines no agentfsm.Agent subclass, skipped", file=sys.stderr)
            for cls in classes.values():
                add(cls.__name__, spec, build(cls.table(), title=cls.__name__))
            continue
        obj = load_target(spec)
        if isinstance(obj, type) and issubclass(obj, Agent):
            add(obj.__name__, spec, build(obj.table(), title=obj.__name__))
        elif callable(obj):
            out = obj()
            result = out[0] if isinstance(out, tuple) and out else out
            if not isinstance(result, RunResult):
                raise TargetNotFoundError(f"{spec} returned a {type(out).__name__}, not a RunResult")
            title = f"{attr} ({result.final_state})"
            at = result.waiting or result.final_state
            add(attr, spec, build(Agent.table(), title=title, trace=result.trace, current=at))
        else:
            raise TargetNotFoundError(f"{spec} is neither an Agent class nor a function returning a RunResult")
    return list(found.values())


_DIAGRAM_SUFFIXES = (".mmd", ".dot", ".svg")


def _gallery(diagrams: Sequence[_Diagram]) -> str:
    lines = [
        "# Diagrams",
        "",
        "Generated from the code by the `agentfsm diagrams` command in docs/08-seeing-a-run.md; do not edit.",
        "Each has Mermaid (`.mmd`), DOT (`.dot`) and SVG (`.svg`, rendered by Graphviz from the DOT) files.",
    ]
    for d in diagrams:
        lines += ["", f"## {d.name}", "", f"From `{d.source}`.", "", f"![{d.name}]({d.name}.svg)", ""]
        lines += ["```mermaid", d.mermaid.rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"


def cmd_diagrams(args: argparse.Namespace) -> int:
    from agentfsm.observe.graph import render_image, source_digest, svg_source_digest

    out = Path(args.out)
    diagrams = _diagrams(args.targets)
    wanted: dict[Path, str] = {out / "README.md": _gallery(diagrams)}
    for d in diagrams:
        wanted[out / f"{d.name}.mmd"] = d.mermaid
        wanted[out / f"{d.name}.dot"] = d.dot
    svgs = {out / f"{d.name}.svg": d.dot for d in diagrams}
    existing = {p for p in out.glob("*") if p.suffix in _DIAGRAM_SUFFIXES} if out.is_dir() else set()
    extra = sorted(existing - set(wanted) - set(svgs))

    def read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    stale = [p for p, text in wanted.items() if read(p) != text]
    stale_svgs = [p for p, dot in svgs.items() if svg_source_digest(read(p) or "") != source_digest(dot)]
    if args.check:
        problems = [f"{p} (differs from the code)" for p in stale]
        problems += [f"{p} (not rendered from the current {p.with_suffix('.dot').name})" for p in stale_svgs]
        problems += [f"{p} (no target makes it)" for p in extra]
        if problems:
            raise AgentfsmError(
                f"{len(problems)} diagram file(s) out of date: {'; '.join(map(str, problems))}. "
                "Regenerate them with the same command without --check (see docs/08-seeing-a-run.md)"
            )
        print(f"diagrams in {out}/ are up to date ({len(wanted) + len(svgs)} files)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for p in stale:
        p.write_text(wanted[p], encoding="utf-8")
    for p in stale_svgs:
        p.write_bytes(render_image(svgs[p], "svg"))
    for p in extra:
        p.unlink()
    changed = len(stale) + len(stale_svgs) + len(extra)
    print(f"diagrams in {out}/: {changed} file(s) written or removed, {len(wanted) + len(svgs) - changed} unchanged")
    return 0
