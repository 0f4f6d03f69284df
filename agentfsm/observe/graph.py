"""State graphs: an Agent class's machine, and the path a run took on it, as Mermaid, DOT, SVG or PNG.

Drawn from the state table itself (``agentfsm.machine.table``), not from the
``transitions`` library's diagram extension: a conversation is not a model of
the machine, a whole path (not only the last transition) is highlighted, and
the text must be valid Mermaid whatever a subclass names its states. Mermaid
and DOT are plain text and need nothing installed; SVG and PNG run Graphviz's
``dot`` program, which is optional. Waiting states (``Wait``), where a run stops
until it is resumed, are drawn apart: blue and dashed in Mermaid (class
``waiting``), blue octagons in DOT.

A stored run carries its class's table as data (``Snapshot.graph``, a
``StoredGraph``), and everything here draws from that as from a ``Table``: a
run is drawn without importing the class its row names. Nothing here imports a
module by name (``resolve_agent`` looks in the modules already imported).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from agentfsm.errors import GraphvizNotFoundError, GraphvizRenderError
from agentfsm.machine.state import StoredGraph
from agentfsm.machine.table import REQUESTING, Table
from agentfsm.result import TraceStep

if TYPE_CHECKING:
    from agentfsm.agent import Agent
    from agentfsm.machine.conversation import Conversation

#: Formats returned as text.
TextFormat = Literal["mermaid", "dot", "svg"]
#: Every format; ``png`` is bytes.
Format = Literal["mermaid", "dot", "svg", "png"]
FORMATS: tuple[str, ...] = get_args(Format)

_SUFFIXES: dict[str, Format] = {
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
}

# Colours of the highlighted path (the same in Mermaid and DOT).
_VISITED_FILL, _VISITED_LINE = "#fff3c4", "#c99a06"
_CURRENT_FILL, _CURRENT_LINE = "#ffd166", "#c0392b"
_UNVISITED = "#a0a0a0"
# Waiting states (the same in Mermaid and DOT).
_WAIT_FILL, _WAIT_LINE = "#dbeafe", "#1d4ed8"


@dataclass(frozen=True)
class Edge:
    """One transition as drawn: its label parts and how often the path took it."""

    source: str
    dest: str
    trigger: str
    condition: str = ""
    count: int = 0
    #: False for an edge seen in a trace but absent from the table (a replay drawn on another class's table).
    declared: bool = True

    @property
    def label(self) -> str:
        """``trigger [condition] ×count``, the parts that apply."""
        text = self.trigger + (f" [{self.condition}]" if self.condition else "")
        return text + (f" ×{self.count}" if self.count else "")


@dataclass(frozen=True)
class Graph:
    """A state table ready to draw, with an optional path highlighted."""

    title: str
    states: tuple[str, ...]
    initial: str
    terminal: frozenset[str]
    edges: tuple[Edge, ...]
    #: The states visited, in order (empty when no path is drawn).
    path: tuple[str, ...] = ()
    #: The state the run is in (or ended in); highlighted apart from the path.
    current: str | None = None
    #: The waiting states (``Wait``): drawn apart.
    waits: frozenset[str] = frozenset()

    @property
    def highlighted(self) -> bool:
        return bool(self.path) or self.current is not None

    @property
    def visited(self) -> frozenset[str]:
        return frozenset(self.path)


def build(
    table: Table | StoredGraph,
    *,
    title: str = "Agent",
    trace: Sequence[TraceStep] | None = None,
    current: str | None = None,
) -> Graph:
    """The graph of ``table`` (an Agent class's, or one stored with a run); with ``trace``, each edge counts how
    often the run took it.

    A step of ``trace`` that the table does not declare (a replay drawn on a
    different class's table) is added as an undeclared edge, and its states
    too, so the whole path always shows.
    """
    steps = list(trace or ())
    taken = Counter((s.source, s.trigger, s.dest) for s in steps)
    states = dict.fromkeys(table.states)
    edges: list[Edge] = []
    seen: set[tuple[str, str, str]] = set()
    for t in table.transitions:
        key = (t.source, t.trigger, t.dest)
        states.setdefault(t.source)  # a stored graph is data: every end of an edge is a state, whatever it says
        states.setdefault(t.dest)
        # Two transitions with the same ends and trigger cannot be told apart in a trace: the first gets the count.
        count = 0 if key in seen else taken.get(key, 0)
        seen.add(key)
        edges.append(Edge(t.source, t.dest, t.trigger, t.condition, count))
    for key, count in taken.items():
        if key not in seen:
            seen.add(key)
            states.setdefault(key[0])
            states.setdefault(key[2])
            edges.append(Edge(key[0], key[2], key[1], "", count, declared=False))
    path: tuple[str, ...] = (steps[0].source, *(s.dest for s in steps)) if steps else ()
    if current is not None:
        states.setdefault(current)
    if not states:
        states[REQUESTING] = None
    return Graph(
        title=title,
        states=tuple(states),
        initial=REQUESTING if REQUESTING in states else next(iter(states)),
        terminal=frozenset(table.terminal),
        edges=tuple(edges),
        path=path,
        current=current,
        waits=frozenset(table.waits),
    )


def draw(
    table: Table | StoredGraph,
    format: TextFormat = "mermaid",
    *,
    title: str = "Agent",
    trace: Sequence[TraceStep] | None = None,
    current: str | None = None,
) -> str:
    """``table`` as Mermaid, DOT or SVG text; with ``trace``/``current``, the path and state highlighted."""
    return render_text(build(table, title=title, trace=trace, current=current), format)


def resolve_agent(agent: type[Agent] | str | None) -> type[Agent]:
    """An Agent class from a class, the ``module:QualName`` of a class already imported in this process, or
    None (the base Agent).

    Never imports: a name is data (a stored row's, an events file's), and importing a module runs its code.
    A name whose module is not imported here, or that names no Agent class in it, is the base Agent. Reading
    the module runs nothing either (no module ``__getattr__``, no descriptor).
    """
    from agentfsm.agent import Agent

    if isinstance(agent, type) and issubclass(agent, Agent):
        return agent
    if isinstance(agent, str) and ":" in agent:
        module_name, _, qualname = agent.partition(":")
        found: Any = sys.modules.get(module_name)
        try:
            for part in qualname.split("."):
                found = inspect.getattr_static(found, part)
        except AttributeError:
            return Agent
        if isinstance(found, type) and issubclass(found, Agent):
            return found
    return Agent


def short_name(agent: str | None) -> str:
    """The class name in a ``module:QualName`` (``Agent`` for None): what a graph of its run is titled."""
    if not agent:
        return "Agent"
    return agent.rpartition(":")[2].rpartition(".")[2] or agent


def stored_table(graph: StoredGraph | None) -> Table | StoredGraph:
    """What a stored run is drawn on: the graph stored with it, else (a row an earlier agentfsm wrote, an events
    file) the base Agent's table. Imports nothing of the run's."""
    if graph is not None:
        return graph
    from agentfsm.agent import Agent

    return Agent.table()


def agent_graph(agent: type[Agent], format: str = "mermaid") -> str:
    """An Agent class's graph (what ``Agent.graph`` returns)."""
    return draw(agent.table(), text_format(format), title=agent.__name__)


def path_graph(
    trace: Sequence[TraceStep],
    current: str | None,
    format: str = "mermaid",
    *,
    agent: type[Agent] | str | None = None,
) -> str:
    """A path drawn on ``agent``'s graph (the base Agent's by default; steps it lacks are added, dashed).

    ``agent`` may be a class or its ``module:QualName`` as recorded in ``run.started``; a name whose class is
    not imported in this process already is the base Agent (``resolve_agent``: a name is never imported).
    """
    agent = resolve_agent(agent)
    title = f"{agent.__name__} ({current})" if current else agent.__name__
    return draw(agent.table(), text_format(format), title=title, trace=trace, current=current)


def conversation_graph(conv: Conversation, format: str = "mermaid") -> str:
    """A conversation's graph, its path so far and its current state highlighted."""
    name = type(conv.agent).__name__
    if conv.finished:
        title = f"{name} ({conv.state})"
    else:
        title = f"{name} (waiting at {conv.state})" if conv.waiting else f"{name} (at {conv.state})"
    return draw(conv.table, text_format(format), title=title, trace=conv.trace, current=conv.state)


def text_format(format: str) -> TextFormat:
    """``format`` checked: one of mermaid, dot, svg."""
    if format not in ("mermaid", "dot", "svg"):
        raise ValueError(
            f"unknown graph format {format!r}: use 'mermaid', 'dot' or 'svg' (PNG: agentfsm.observe.graph.render)"
        )
    return cast(TextFormat, format)


def render_text(graph: Graph, format: TextFormat) -> str:
    if format == "mermaid":
        return to_mermaid(graph)
    if format == "dot":
        return to_dot(graph)
    if format == "svg":
        return render_image(to_dot(graph), "svg").decode("utf-8")
    raise ValueError(f"unknown graph format {format!r}: use one of mermaid, dot, svg (or png for bytes)")


def render(graph: Graph, format: Format) -> str | bytes:
    """``graph`` in any format: text for mermaid, dot and svg; bytes for png."""
    if format == "png":
        return render_image(to_dot(graph), "png")
    return render_text(graph, format)


def format_for(path: str | Path, default: Format = "mermaid") -> Format:
    """The format a file name asks for (``.mmd``/``.mermaid``, ``.dot``/``.gv``, ``.svg``, ``.png``)."""
    return _SUFFIXES.get(Path(path).suffix.lower(), default)


def write(graph: Graph, path: str | Path, format: Format | None = None) -> Format:
    """Write ``graph`` to ``path`` in ``format`` (by default, the one its suffix names); returns the format."""
    chosen = format or format_for(path)
    out = render(graph, chosen)
    target = Path(path)
    if isinstance(out, bytes):
        target.write_bytes(out)
    else:
        target.write_text(out, encoding="utf-8")
    return chosen


# --- Mermaid ------------------------------------------------------------------------------------------

#: Words the stateDiagram-v2 grammar reads as keywords (or uses for its own ids): never bare state ids.
MERMAID_RESERVED = frozenset(
    {
        "state", "note", "class", "classdef", "style", "scale", "default", "click", "end", "direction",
        "as", "hide", "left", "right", "of", "fork", "join", "choice", "concurrent", "root", "root_start",
        "root_end", "acctitle", "accdescr", "link", "callback", "call", "href", "tb", "bt", "lr", "rl",
    }
)  # fmt: skip
_MERMAID_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Characters that would end or change a label, written as Mermaid entity codes instead: ``;`` ends a
# statement, ``#`` starts an entity code, ``%%`` a comment, ``"`` a quoted name; labels are HTML, so ``&``
# and a ``<`` that could open a tag are coded too (``a < b`` stays as it is, for reading).
_MERMAID_ESCAPES = {"#": "#35;", ";": "#59;", "%": "#37;", '"': "#quot;", "&": "#amp;"}
_MERMAID_UNSAFE = re.compile(r"[#;%\"&]|<(?=[A-Za-z/!?])")


def mermaid_text(text: str) -> str:
    """``text`` made safe for a Mermaid label or quoted state description (one line, entity-coded)."""
    text = " ".join(text.split())
    return _MERMAID_UNSAFE.sub(lambda m: _MERMAID_ESCAPES.get(m.group(), "#lt;"), text)


def mermaid_ids(states: Iterable[str]) -> dict[str, str]:
    """A Mermaid id for each state: the name itself when Mermaid accepts it, else ``s<n>`` (declared with its name)."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    names = list(states)
    for name in names:
        if _MERMAID_ID.match(name) and name.lower() not in MERMAID_RESERVED:
            ids[name] = name
            taken.add(name)
    n = 0
    for name in names:
        if name in ids:
            continue
        while f"s{n}" in taken:
            n += 1
        ids[name] = f"s{n}"
        taken.add(ids[name])
    return ids


def to_mermaid(graph: Graph) -> str:
    """``stateDiagram-v2`` text. State names Mermaid would reject are declared as ``state "name" as sN``."""
    ids = mermaid_ids(graph.states)
    # The title is YAML front matter: a JSON string is a valid YAML scalar, whatever the title holds.
    lines = ["---", f"title: {json.dumps(graph.title, ensure_ascii=False)}", "---", "stateDiagram-v2"]
    if graph.path:
        lines.append(f"    %% path: {' -> '.join(graph.path)}".replace("\n", " "))
    for name in graph.states:
        if ids[name] != name:
            lines.append(f'    state "{mermaid_text(name)}" as {ids[name]}')
    lines.append(f"    [*] --> {ids[graph.initial]}")
    for e in graph.edges:
        lines.append(f"    {ids[e.source]} --> {ids[e.dest]}: {mermaid_text(e.label)}")
    for name in graph.states:
        if name in graph.terminal:
            lines.append(f"    {ids[name]} --> [*]")
    waits = [ids[s] for s in graph.states if s in graph.waits]
    if waits:
        lines.append(f"    classDef waiting fill:{_WAIT_FILL},stroke:{_WAIT_LINE},stroke-width:2px,stroke-dasharray:5")
        lines.append(f"    class {','.join(waits)} waiting")
    if graph.highlighted:
        lines.append(f"    classDef visited fill:{_VISITED_FILL},stroke:{_VISITED_LINE},stroke-width:2px")
        lines.append(f"    classDef current fill:{_CURRENT_FILL},stroke:{_CURRENT_LINE},stroke-width:3px")
        visited = [ids[s] for s in graph.states if s in graph.visited and s != graph.current]
        if visited:
            lines.append(f"    class {','.join(visited)} visited")
        if graph.current is not None:
            lines.append(f"    class {ids[graph.current]} current")
    return "\n".join(lines) + "\n"


# --- DOT ----------------------------------------------------------------------------------------------


def dot_quote(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_attrs(attrs: dict[str, str]) -> str:
    return "[" + ", ".join(f"{k}={dot_quote(v)}" for k, v in attrs.items()) + "]"


_GRAPH_ATTRS = {"rankdir": "LR", "labelloc": "t", "fontname": "Helvetica", "fontsize": "16"}


def _wrap(condition: str, width: int = 36) -> str:
    """A guard label over short lines (``and`` ends a line), so long conditions do not stretch the layout."""
    parts = condition.split(" and ")
    parts = [part + " and" for part in parts[:-1]] + parts[-1:]
    lines = [line for part in parts for line in textwrap.wrap(part, width)]
    return "[" + "\n".join(lines) + "]"


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text: guards on a second label line, the path in colour with its counts."""
    lines = [
        f"digraph {dot_quote(graph.title)} {{",
        f"    graph {_dot_attrs(_GRAPH_ATTRS | {'label': graph.title})};",
        '    node [shape="box", style="rounded", fontname="Helvetica", fontsize="11"];',
        '    edge [fontname="Helvetica", fontsize="9"];',
    ]
    if graph.path:
        lines.append(f"    // path: {' -> '.join(graph.path)}".replace("\n", " "))
    start_attrs = {"shape": "point", "width": "0.15", "label": ""}
    lines.append(f"    __start__ {_dot_attrs(start_attrs)};")
    lines.append(f"    __start__ -> {dot_quote(graph.initial)};")
    for name in graph.states:
        attrs: dict[str, str] = {}
        if name in graph.terminal:
            attrs["peripheries"] = "2"
        if name in graph.waits:
            attrs.update(shape="octagon", style="filled", fillcolor=_WAIT_FILL, color=_WAIT_LINE, penwidth="2")
        if name == graph.current:
            attrs.update(style="rounded,filled", fillcolor=_CURRENT_FILL, color=_CURRENT_LINE, penwidth="3")
        elif name in graph.visited:
            attrs.update(style="rounded,filled", fillcolor=_VISITED_FILL, color=_VISITED_LINE, penwidth="2")
        elif graph.highlighted:
            attrs.update(color=_UNVISITED, fontcolor="#707070")
        lines.append(f"    {dot_quote(name)}" + (f" {_dot_attrs(attrs)}" if attrs else "") + ";")
    for e in graph.edges:
        label = e.trigger + (f" ×{e.count}" if e.count else "") + (f"\n{_wrap(e.condition)}" if e.condition else "")
        attrs = {"label": label}
        if e.count:
            attrs.update(color=_VISITED_LINE, fontcolor="#7a5c00", penwidth="2.5")
        elif graph.highlighted:
            attrs.update(color=_UNVISITED, fontcolor=_UNVISITED)
        if not e.declared:
            attrs["style"] = "dashed"
        lines.append(f"    {dot_quote(e.source)} -> {dot_quote(e.dest)} {_dot_attrs(attrs)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- SVG and PNG, through Graphviz ----------------------------------------------------------------------

#: Written into every SVG this module renders, so a stale SVG can be found without Graphviz installed.
SOURCE_MARK = "agentfsm-dot-sha256"


def source_digest(dot: str) -> str:
    return hashlib.sha256(dot.encode("utf-8")).hexdigest()


def svg_source_digest(svg: str) -> str | None:
    """The digest of the DOT text an SVG was rendered from (None if it carries none)."""
    found = re.search(rf"<!-- {SOURCE_MARK}: ([0-9a-f]{{64}}) -->", svg)
    return found.group(1) if found else None


def render_image(dot: str, format: Literal["svg", "png"]) -> bytes:
    """Run Graphviz's ``dot`` on ``dot`` text. SVG output carries the digest of its source."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFoundError(format)
    try:
        proc = subprocess.run([exe, f"-T{format}"], input=dot.encode("utf-8"), capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphvizRenderError(str(exc)) from exc
    if proc.returncode != 0:
        raise GraphvizRenderError(proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}")
    if format == "svg":
        svg = proc.stdout.decode("utf-8")
        mark = f"<!-- {SOURCE_MARK}: {source_digest(dot)} -->\n"
        at = svg.find("<svg")
        return (svg[:at] + mark + svg[at:] if at >= 0 else mark + svg).encode("utf-8")
    return proc.stdout
