"""The ``agentfsm`` command line: ``demo``, ``run``, ``graph``, ``replay``, ``diagrams``, ``sim serve`` and ``runs``.

Errors are one line on stderr and a non-zero exit, never a traceback. Exit
codes: 0 success; 1 an error (a module or class that does not exist, a
malformed events file, Graphviz or an API key missing, stale diagrams); 2 a
usage error; 3 a run that ended in a state other than ``done``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import structlog

from agentfsm.errors import AgentfsmError, ConfigurationError, TargetNotFoundError
from agentfsm.events import redact_processor

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_DONE = 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"agentfsm: error: {message} (see {self.prog} --help)\n")


# --- loading MODULE:NAME --------------------------------------------------------------------------------


def load_module(spec: str) -> ModuleType:
    """A module by dotted name (found from the current directory too) or by ``.py`` file path."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise TargetNotFoundError(f"no such Python file: {spec}")
        name = path.stem if path.stem not in sys.modules else f"{path.stem}_{abs(hash(path.resolve())):x}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise TargetNotFoundError(f"cannot load {spec} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses, pydantic and pickling look modules up by name
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise TargetNotFoundError(f"importing {spec} failed: {type(exc).__name__}: {exc}") from exc
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does, so local modules are found
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise TargetNotFoundError(
                f"no module named {spec!r} (give a dotted module name importable from here, or a .py file path)"
            ) from exc
        raise TargetNotFoundError(f"importing {spec} failed: {exc}") from exc
    except Exception as exc:
        raise TargetNotFoundError(f"importing {spec} failed: {type(exc).__name__}: {exc}") from exc


def split_target(spec: str) -> tuple[str, str | None]:
    """``MODULE:NAME`` → (MODULE, NAME); a bare module or file → (it, None)."""
    module, sep, name = spec.rpartition(":")
    if not sep or not module or os.sep in name or "/" in name:
        return spec, None
    return module, name


def load_target(spec: str) -> Any:
    """The object ``MODULE:NAME`` names."""
    module_spec, name = split_target(spec)
    if name is None:
        raise TargetNotFoundError(
            f"{spec!r} names no class: write MODULE:NAME, e.g. examples/weather_agent.py:WeatherAgent "
            "or mypackage.agents:MyAgent"
        )
    module = load_module(module_spec)
    try:
        return getattr(module, name)
    except AttributeError:
        agents = ", ".join(agent_classes(module)) or "none"
        raise TargetNotFoundError(
            f"module {module_spec!r} has no {name!r} (Agent classes defined there: {agents})"
        ) from None


def agent_classes(module: ModuleType) -> dict[str, type[Any]]:
    """The Agent subclasses a module defines (not those it imports)."""
    from agentfsm.agent import Agent

    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, Agent) and obj.__module__ == module.__name__
    }


def load_agent_class(spec: str) -> Any:
    from agentfsm.agent import Agent

    obj = load_target(spec)
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise TargetNotFoundError(f"{spec} is a {type(obj).__name__}, not an agentfsm.Agent subclass")
    return obj


def load_sim_script(spec: str) -> Any:
    """A simulator script: a JSON file of replies, or ``MODULE:NAME`` (a list, or a function returning one)."""
    from agentfsm.sim import ErrorReply, ScriptedReply
    from agentfsm.sim import replies as r

    if spec.endswith(".json"):
        try:
            items = json.loads(Path(spec).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TargetNotFoundError(f"no such simulator script: {spec}") from None
        except ValueError as exc:
            raise TargetNotFoundError(f"simulator script {spec} is not JSON: {exc}") from exc
        builders = sorted(  # the reply builders of agentfsm.sim.replies, by what they return
            n
            for n, f in vars(r).items()
            if inspect.isfunction(f)
            and f.__module__ == r.__name__
            and not n.startswith("_")
            and str(inspect.signature(f).return_annotation) in ("ScriptedReply", "ErrorReply")
        )
        if not isinstance(items, list):
            raise TargetNotFoundError(f"simulator script {spec}: expected a JSON list of replies")
        script: list[Any] = []
        for i, item in enumerate(items):
            kind = item.get("type") if isinstance(item, dict) else None
            if kind not in builders:
                raise TargetNotFoundError(
                    f"simulator script {spec} item {i}: 'type' must be one of {', '.join(builders)}, got {kind!r}"
                )
            kwargs = {k: v for k, v in item.items() if k != "type"}
            try:
                reply = getattr(r, kind)(**kwargs)
            except (TypeError, ValueError) as exc:
                raise TargetNotFoundError(f"simulator script {spec} item {i} ({kind}): {exc}") from exc
            if not isinstance(reply, ScriptedReply | ErrorReply):
                raise TargetNotFoundError(f"simulator script {spec} item {i}: {kind!r} does not make a reply")
            script.append(reply)
        return script
    obj = load_target(spec)
    if callable(obj) and not isinstance(obj, type):
        required = [
            p for p in inspect.signature(obj).parameters.values() if p.default is p.empty and p.kind <= p.KEYWORD_ONLY
        ]
        if not required:
            obj = obj()  # a function that builds the script
    if isinstance(obj, list | tuple) or callable(obj):
        return obj
    raise TargetNotFoundError(f"{spec} is a {type(obj).__name__}: expected a list of replies or a function")


# --- loggers --------------------------------------------------------------------------------------------


def _json_logger(*processors: Any) -> Any:
    """A structlog logger that prints events to stdout as JSON lines."""
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
    from agentfsm.live import LiveView
    from agentfsm.replay import EventsWriter

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
    from agentfsm.graph import build, write

    if args.graph:
        title = f"{agent_cls.__name__} ({result.final_state})"
        fmt = write(build(agent_cls.table(), title=title, trace=result.trace, current=result.final_state), args.graph)
        if not args.json:
            print(f"graph       : {args.graph} ({fmt})")
    if args.events and not args.json:
        print(f"events      : {args.events} (agentfsm replay {args.events})")
    if not args.json:
        print()
        print("answer      :", result.text)
    return 0 if result.final_state == "done" else EXIT_NOT_DONE


# --- commands -------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from agentfsm.demo import WeatherAgent, run_demo

    with _event_logger(args) as logger:
        result, _ = run_demo(logger=logger)
    return _after_run(args, result, WeatherAgent)


def cmd_run(args: argparse.Namespace) -> int:
    agent_cls = load_agent_class(args.target)
    client: Any = None
    if args.sim:
        from agentfsm.sim import Simulator

        client = Simulator(load_sim_script(args.sim)).client(max_retries=0)
    elif not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise ConfigurationError(
            "no Anthropic API key: set ANTHROPIC_API_KEY to use the real API, or pass --sim SCRIPT to run "
            "on the simulator"
        )
    with _event_logger(args) as logger:
        try:
            agent = agent_cls(client=client, logger=logger)
        except TypeError as exc:
            raise TargetNotFoundError(
                f"cannot make a {agent_cls.__name__} with (client=..., logger=...): {exc}"
            ) from exc
        result = agent.run(args.prompt)
    return _after_run(args, result, agent_cls)


def cmd_graph(args: argparse.Namespace) -> int:
    from agentfsm.graph import build, format_for, render

    agent_cls = load_agent_class(args.target)
    fmt = args.format or (format_for(args.output) if args.output else "mermaid")
    out = render(build(agent_cls.table(), title=agent_cls.__name__), fmt)
    _emit(out, args.output)
    return 0


def _emit(out: str | bytes, output: str | None) -> None:
    """Write a rendered graph to ``output`` (a file, or stdout when None or '-')."""
    if output and output != "-":
        target = Path(output)
        if isinstance(out, bytes):
            target.write_bytes(out)
        else:
            target.write_text(out, encoding="utf-8")
        return
    if isinstance(out, bytes):
        if sys.stdout.isatty():
            raise AgentfsmError("PNG is binary: write it to a file with -o FILE")
        sys.stdout.flush()
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(out)


def cmd_replay(args: argparse.Namespace) -> int:
    """Print each recorded run's trace and draw its path: printed as Mermaid, or to ``--graph FILE``."""
    from agentfsm.errors import EventsFileError
    from agentfsm.graph import build, format_for, render, resolve_agent
    from agentfsm.live import edge_counts
    from agentfsm.replay import replay

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
    chosen = load_agent_class(args.agent) if args.agent else None
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
        cls = chosen or resolve_agent(run.agent)  # the class the run recorded, when importable here
        graph = build(cls.table(), title=f"{cls.__name__} ({run.state})", trace=run.trace, current=run.state)
        if to_file:
            _emit(render(graph, fmt), args.graph)
            print(f"graph       : {args.graph} ({fmt})", file=out)
        elif args.graph == "-":
            _emit(render(graph, fmt), None)
        else:
            print(f"graph ({fmt}) :", file=out)
            _emit(render(graph, fmt), None)
            print(file=out)
    return 0


# --- diagrams/ ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Diagram:
    name: str
    source: str  # the target it came from
    mermaid: str
    dot: str


def _diagrams(targets: Sequence[str]) -> list[_Diagram]:
    """One diagram per Agent class (or per run, for a function returning a RunResult) the targets name."""
    from agentfsm.agent import Agent
    from agentfsm.graph import build, to_dot, to_mermaid
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
            add(attr, spec, build(Agent.table(), title=title, trace=result.trace, current=result.final_state))
        else:
            raise TargetNotFoundError(f"{spec} is neither an Agent class nor a function returning a RunResult")
    return list(found.values())


_DIAGRAM_SUFFIXES = (".mmd", ".dot", ".svg")


def _gallery(diagrams: Sequence[_Diagram]) -> str:
    lines = [
        "# Diagrams",
        "",
        "Generated from the code by the `agentfsm diagrams` command in the README's *diagrams/* section; do not edit.",
        "Each has Mermaid (`.mmd`), DOT (`.dot`) and SVG (`.svg`, rendered by Graphviz from the DOT) files.",
    ]
    for d in diagrams:
        lines += ["", f"## {d.name}", "", f"From `{d.source}`.", "", f"![{d.name}]({d.name}.svg)", ""]
        lines += ["```mermaid", d.mermaid.rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"


def cmd_diagrams(args: argparse.Namespace) -> int:
    from agentfsm.graph import render_image, source_digest, svg_source_digest

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
                "Regenerate them with the same command without --check (see the README)"
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


# --- runs: stored conversations -------------------------------------------------------------------------

DEFAULT_STORE = "agentfsm.db"


def _store_location(args: argparse.Namespace) -> str:
    return str(args.store or os.environ.get("AGENTFSM_STORE") or DEFAULT_STORE)


def _open_store(args: argparse.Namespace) -> Any:
    """The store ``--store`` names (a SQLite file, or a ``postgresql://`` URI); a missing file is an error."""
    where = _store_location(args)
    if where.startswith(("postgresql://", "postgres://")):
        from agentfsm.postgres_store import PostgresStore

        return PostgresStore(where)
    from agentfsm.sqlite_store import SQLiteStore

    if not Path(where).is_file():
        raise AgentfsmError(
            f"no agentfsm store at {where}: name one with --store PATH or $AGENTFSM_STORE "
            "(runs are stored by agent.run(..., store=agentfsm.SQLiteStore(PATH)))"
        )
    return SQLiteStore(where)


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


def cmd_runs_show(args: argparse.Namespace) -> int:
    _, snap = _load_run(args)
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
    from agentfsm.graph import build, format_for, render, resolve_agent

    _, snap = _load_run(args)
    cls = load_agent_class(args.agent) if args.agent else resolve_agent(snap.agent)
    fmt = args.format or (format_for(args.output) if args.output and args.output != "-" else "mermaid")
    title = f"{cls.__name__} ({snap.state})" if snap.finished else f"{cls.__name__} (at {snap.state})"
    _emit(render(build(cls.table(), title=title, trace=snap.trace, current=snap.state), fmt), args.output)
    return 0


# --- the parser -----------------------------------------------------------------------------------------


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print events as JSON lines instead of the live view")
    p.add_argument("--events", metavar="FILE", help="also write the events as JSON lines to FILE, for replay")
    p.add_argument("--graph", metavar="FILE", help="draw the path taken to FILE (.mmd, .dot, .svg or .png)")


def build_parser() -> argparse.ArgumentParser:
    from agentfsm.graph import FORMATS

    parser = _Parser(prog="agentfsm", description="Claude agent loops as finite-state machines.")
    sub = parser.add_subparsers(dest="command", required=True)

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

    graph = sub.add_parser("graph", help="draw an Agent class's state graph")
    graph.add_argument("target", metavar="MODULE:AgentClass")
    graph.add_argument("--format", choices=FORMATS, help="default: from -o's suffix, else mermaid")
    graph.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    graph.set_defaults(func=cmd_graph)

    replay = sub.add_parser("replay", help="print a recorded run's transition trace and draw its path, offline")
    replay.add_argument("events", metavar="EVENTS.jsonl")
    replay.add_argument("--graph", metavar="FILE", help="draw the path to FILE ('-' for stdout)")
    replay.add_argument("--format", choices=FORMATS, help="the graph's format; default: from FILE's suffix")
    replay.add_argument("--agent", metavar="MODULE:AgentClass", help="draw on this class's graph (default: Agent)")
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

    sim = sub.add_parser("sim", help="the Messages API simulator")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    serve = sim_sub.add_parser("serve", help="serve an echo model on a loopback port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.set_defaults(func=cmd_sim_serve)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported on one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `agentfsm ... | head`: the reader left; say nothing more
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # the command line reports, it does not dump tracebacks
        message = str(exc) if isinstance(exc, AgentfsmError) else f"{type(exc).__name__}: {exc}"
        print(f"agentfsm: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
