"""A state graph as SVG, laid out here: no Graphviz, no JavaScript library.

The inspector draws the graph itself rather than running Graphviz's ``dot``
(optional, and a process per page) or shipping Mermaid (a large script that
lays out in the browser). An agent's graph has a known shape — the
``requesting`` hub, the stop-reason states it fans out to, the final states —
and a layered left-to-right layout draws it well:

* layers by longest path from the initial state, after the edges back to an
  earlier state are set apart;
* within a layer the table's order (the first layer after the hub) or the
  mean height of the states that lead there (later layers);
* edges leave and enter at ports spread along a state's side, ordered by where
  the other end is, so they do not cross at the box; an edge back to an
  earlier layer runs right to left, an edge that skips layers runs in a lane
  below (forward) or above (back) the states in between.

Every state and edge carries what a page needs to show any step without
drawing again: ``data-from`` (the first step at which the run was in the
state; 0 for the start), ``data-at`` (the steps that ended in it) and, on
edges, ``data-steps`` (the steps that took it). Classes mark the step drawn:
``visited``, ``current``, ``taken`` (and ``unvisited`` for the rest).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from agentfsm.observe.graph import Edge, Graph
from agentfsm.result import TraceStep

CHAR_W = 7.0  # average width of a character of the 12px labels, for sizing boxes
NODE_H = 30.0
PORT_GAP = 11.0
PAD_X = 12.0
V_GAP = 16.0
H_GAP = 170.0
MARGIN = 16.0
START_W = 34.0  # room left of the initial state for the start dot
LANE_GAP = 14.0
LOOP_H = 30.0
LOOP_STEP = 18.0  # each further loop on the same state is this much taller, its label above the last one's
LABEL_CHAR_W = 6.2  # a character of the 10px edge labels, generously (a label's box must hold its text)
LABEL_H = 13.0


@dataclass
class _Box:
    name: str
    layer: int
    index: int
    w: float
    h: float = NODE_H
    x: float = 0.0
    y: float = 0.0
    left: list[tuple[float, int]] = field(default_factory=list)  # (other end's y, edge index)
    right: list[tuple[float, int]] = field(default_factory=list)

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


def _layers(graph: Graph) -> tuple[dict[str, int], set[int]]:
    """Each state's layer, and the indices of the edges that go back (against the layering)."""
    out: dict[str, list[int]] = {s: [] for s in graph.states}
    for i, e in enumerate(graph.edges):
        if e.source != e.dest:
            out[e.source].append(i)
    colour: dict[str, int] = {}
    back: set[int] = set()
    finish: list[str] = []
    # A depth-first search with a stack of its own, not recursion: a stored graph or trace is data, and a chain
    # of states as long as the interpreter's recursion limit must draw as any other.
    for root in (graph.initial, *graph.states):
        if root in colour:
            continue
        colour[root] = 1
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            u, k = stack[-1]
            if k == len(out[u]):
                stack.pop()
                colour[u] = 2
                finish.append(u)
                continue
            stack[-1] = (u, k + 1)
            i = out[u][k]
            v = graph.edges[i].dest
            if colour.get(v) == 1:
                back.add(i)
            elif v not in colour:
                colour[v] = 1
                stack.append((v, 0))
    layer = dict.fromkeys(graph.states, 0)
    for u in reversed(finish):  # a topological order of the forward edges
        for i in out[u]:
            if i not in back:
                v = graph.edges[i].dest
                layer[v] = max(layer[v], layer[u] + 1)
    return layer, back


Point = tuple[float, float]


def _bezier(p0: Point, p1: Point, p2: Point, p3: Point, t: float) -> Point:
    u = 1 - t
    x = u**3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0]
    y = u**3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1]
    return x, y


def _f(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _p(x: float, y: float) -> str:
    return f"{_f(x)},{_f(y)}"


def _marker(name: str, size: int, cls: str) -> str:
    return (
        f'<marker id="{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="{size}" markerHeight="{size}" '
        'markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z" class="{cls}"/></marker>'
    )


def steps_of(graph: Graph, trace: Sequence[TraceStep]) -> tuple[dict[str, list[int]], dict[int, list[int]]]:
    """The steps that ended in each state (the start counts as step 0), and the steps that took each edge."""
    at: dict[str, list[int]] = {}
    took: dict[int, list[int]] = {}
    first: dict[tuple[str, str, str], int] = {}
    for i, e in enumerate(graph.edges):
        first.setdefault((e.source, e.trigger, e.dest), i)
    if trace:
        at.setdefault(trace[0].source, []).append(0)
    for k, step in enumerate(trace, start=1):
        at.setdefault(step.dest, []).append(k)
        i = first.get((step.source, step.trigger, step.dest), -1)
        if i >= 0:
            took.setdefault(i, []).append(k)
    return at, took


def render_svg(graph: Graph, trace: Sequence[TraceStep], step: int | None = None, *, style: str = "") -> str:
    """``graph`` as an SVG document, the run drawn as it was after ``step`` (the whole trace by default).

    ``style`` (CSS) is embedded for a standalone file; a page styles the graph with its own sheet.
    """
    trace = list(trace)
    step = len(trace) if step is None else max(0, min(step, len(trace)))
    at, took = steps_of(graph, trace)
    layer, back = _layers(graph)
    order = {s: i for i, s in enumerate(graph.states)}
    boxes = {s: _Box(s, layer[s], order[s], max(64.0, len(s) * CHAR_W + 2 * PAD_X)) for s in graph.states}

    # Which side each edge uses at each end, and its kind.
    kinds: list[str] = []
    for i, e in enumerate(graph.edges):
        a, b = boxes[e.source], boxes[e.dest]
        if e.source == e.dest:
            kinds.append("loop")
        elif a.layer == b.layer:
            kinds.append("side")
        elif i in back or b.layer < a.layer:
            kinds.append("back" if a.layer - b.layer == 1 else "back-long")
        else:
            kinds.append("forward" if b.layer - a.layer == 1 else "forward-long")
    ports: dict[str, tuple[int, int]] = dict.fromkeys(graph.states, (0, 0))
    for e, kind in zip(graph.edges, kinds, strict=True):
        sl, sr = ports[e.source]
        dl, dr = ports[e.dest]
        if kind.startswith("forward"):
            ports[e.source] = (sl, sr + 1)
            dl, dr = ports[e.dest]
            ports[e.dest] = (dl + 1, dr)
        elif kind.startswith("back"):
            ports[e.source] = (sl + 1, sr)
            dl, dr = ports[e.dest]
            ports[e.dest] = (dl, dr + 1)
        elif kind == "side":
            ports[e.source] = (sl, sr + 1)
            dl, dr = ports[e.dest]
            ports[e.dest] = (dl, dr + 1)
    for s, box in boxes.items():
        box.h = min(max(NODE_H, PORT_GAP * max(ports[s]) + 8), 200.0)

    # Columns: x from the widest box of each layer; rows: stacked, centred on the tallest column.
    nlayers = max(layer.values(), default=0) + 1
    columns: list[list[_Box]] = [[] for _ in range(nlayers)]
    for box in sorted(boxes.values(), key=lambda b: b.index):
        columns[box.layer].append(box)
    widths = [max((b.w for b in col), default=0.0) for col in columns]
    xs: list[float] = []
    x = MARGIN + START_W
    for w in widths:
        xs.append(x)
        x += w + H_GAP
    width = x - H_GAP + MARGIN
    heights = [sum(b.h for b in col) + V_GAP * max(len(col) - 1, 0) for col in columns]
    tallest = max(heights, default=0.0)
    most_loops = max(
        Counter(e.source for e, k in zip(graph.edges, kinds, strict=True) if k == "loop").values(), default=0
    )
    top = MARGIN + (LOOP_H + 12 + (most_loops - 1) * LOOP_STEP if most_loops else 0)
    preds: dict[str, list[str]] = {s: [] for s in graph.states}
    for e, kind in zip(graph.edges, kinds, strict=True):
        if kind.startswith("forward"):
            preds[e.dest].append(e.source)
    for n, col in enumerate(columns):
        if n >= 2:  # the first two columns keep the table's order; later ones follow their predecessors

            def mean_y(box: _Box) -> tuple[float, int]:
                ys = [boxes[p].cy for p in preds[box.name] if boxes[p].layer < box.layer]
                return (sum(ys) / len(ys) if ys else float("inf"), box.index)

            col.sort(key=mean_y)
        y = top + (tallest - heights[n]) / 2
        for box in col:
            box.x = xs[n] + (widths[n] - box.w) / 2
            box.y = y
            y += box.h + V_GAP
    bottom = top + tallest

    # Lanes for edges that skip layers: forward ones below the states, back ones above.
    lane_below, lane_above = bottom + 18.0, top - 18.0
    lanes: dict[int, float] = {}
    for i, kind in enumerate(kinds):
        if kind == "forward-long":
            lanes[i] = lane_below
            lane_below += LANE_GAP
        elif kind == "back-long":
            lanes[i] = lane_above
            lane_above -= LANE_GAP
    shift = max(0.0, MARGIN - (lane_above + LANE_GAP - 8)) if any(k == "back-long" for k in kinds) else 0.0
    height = max(bottom, lane_below - LANE_GAP + 12) + MARGIN + shift

    # Ports, ordered by where each edge's other end is.
    for i, (e, kind) in enumerate(zip(graph.edges, kinds, strict=True)):
        a, b = boxes[e.source], boxes[e.dest]
        if kind == "loop":
            continue
        a_other = lanes.get(i, b.cy)
        b_other = lanes.get(i, a.cy)
        if kind.startswith("forward"):
            a.right.append((a_other, i))
            b.left.append((b_other, i))
        elif kind.startswith("back"):
            a.left.append((a_other, i))
            b.right.append((b_other, i))
        else:
            a.right.append((a_other, i))
            b.right.append((b_other, i))
    port_y: dict[tuple[str, str, int], float] = {}
    for box in boxes.values():
        for side, items in (("l", box.left), ("r", box.right)):
            items.sort()
            for n, (_, i) in enumerate(items):
                port_y[(box.name, side, i)] = box.y + box.h * (n + 1) / (len(items) + 1)

    fan_out = {s: len(boxes[s].right) for s in graph.states}
    fan_in = {s: len(boxes[s].left) for s in graph.states}
    loop_rank: dict[int, int] = {}
    for i, kind in enumerate(kinds):
        if kind == "loop":
            loop_rank[i] = sum(1 for j in loop_rank if graph.edges[j].source == graph.edges[i].source)
    routes = [
        _route(e, i, kind, boxes, port_y, lanes, fan_out, fan_in, loop_rank.get(i, 0))
        for i, (e, kind) in enumerate(zip(graph.edges, kinds, strict=True))
    ]
    labels = _place_labels(
        [_label_size(e, len(took.get(i, []))) for i, e in enumerate(graph.edges)],
        [candidates for _, candidates in routes],
        [_Rect(b.x - 2, b.y - 2, b.w + 4, b.h + 4) for b in boxes.values()],
    )
    # The drawing's bounds: the states, the lanes, and every label where it landed.
    left, top_edge = 0.0, -shift
    right, bottom_edge = width, height - shift
    for spot in labels:
        left, right = min(left, spot.x - 4), max(right, spot.x + spot.w + 4)
        top_edge, bottom_edge = min(top_edge, spot.y - 4), max(bottom_edge, spot.y + spot.h + 4)
    w_total, h_total = right - left, bottom_edge - top_edge
    parts: list[str] = []
    parts.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="agent-graph" viewBox="{_f(left)} {_f(top_edge)} '
        f'{_f(w_total)} {_f(h_total)}" width="{_f(w_total)}" height="{_f(h_total)}" role="img" '
        f'aria-label="{escape(graph.title)}" data-steps="{len(trace)}" data-step="{step}">'
    )
    parts.append(f"<title>{escape(graph.title)}</title>")
    if style:
        parts.append(f"<style>{style}</style>")
    parts.append(
        "<defs>" + _marker("arrow", 8, "arrowhead") + _marker("arrow-taken", 10, "arrowhead taken") + "</defs>"
    )
    highlighted = bool(trace)
    parts.append('<g class="edges">')
    for i, (e, kind) in enumerate(zip(graph.edges, kinds, strict=True)):
        parts.append(_edge(e, kind, routes[i][0], labels[i], took.get(i, []), step, highlighted))
    parts.append("</g>")
    parts.append('<g class="states">')
    initial = boxes[graph.initial]
    sx, sy = initial.x - START_W + 6, initial.cy
    parts.append(
        f'<g class="start"><circle cx="{_f(sx)}" cy="{_f(sy)}" r="5"/>'
        f'<path d="M{_f(sx + 5)},{_f(sy)} L{_f(initial.x)},{_f(sy)}" marker-end="url(#arrow)"/></g>'
    )
    for s in graph.states:
        parts.append(_state(graph, boxes[s], at.get(s, []), step, highlighted))
    parts.append("</g></svg>")
    return "".join(parts)


def _classes(*names: str | None) -> str:
    return " ".join(n for n in names if n)


def _state(graph: Graph, box: _Box, at: list[int], step: int, highlighted: bool) -> str:
    first = min(at) if at else None
    visited = first is not None and first <= step
    current = step in at if highlighted else graph.current == box.name
    wait = box.name in graph.waits
    cls = _classes(
        "state",
        "initial" if box.name == graph.initial else None,
        "terminal" if box.name in graph.terminal else None,
        "wait" if wait else None,
        ("visited" if visited else "unvisited") if highlighted else None,
        "current" if current else None,
    )
    data = f' data-state="{escape(box.name)}"'
    if first is not None:
        data += f' data-from="{first}" data-at="{" ".join(str(k) for k in at)}"'
    inner = ""
    if box.name in graph.terminal:
        inner = (
            f'<rect class="inner" x="{_f(box.x + 3)}" y="{_f(box.y + 3)}" width="{_f(box.w - 6)}" '
            f'height="{_f(box.h - 6)}" rx="4"/>'
        )
    if wait:  # a Wait state: an octagon (as in the DOT drawing), where a run stops until someone decides
        c = min(10.0, box.h / 3)
        x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
        corners = [(x0 + c, y0), (x1 - c, y0), (x1, y0 + c), (x1, y1 - c), (x1 - c, y1), (x0 + c, y1), (x0, y1 - c)]
        shape = f'<polygon points="{" ".join(_p(x, y) for x, y in [*corners, (x0, y0 + c)])}"/>'
    else:
        shape = f'<rect x="{_f(box.x)}" y="{_f(box.y)}" width="{_f(box.w)}" height="{_f(box.h)}" rx="6"/>'
    return (
        f'<g class="{cls}"{data}><title>{escape(box.name)}{" (waits for a decision)" if wait else ""}</title>'
        f"{shape}{inner}"
        f'<text x="{_f(box.x + box.w / 2)}" y="{_f(box.cy + 4)}">{escape(box.name)}</text></g>'
    )


_GAP = 0.5  # pixels kept between two labels


@dataclass(frozen=True)
class _Rect:
    x: float
    y: float
    w: float
    h: float

    def overlap(self, other: _Rect) -> float:
        """The area the two share, counting a gap under half a pixel as shared: two labels placed edge to edge
        (one's bottom at the other's top, give or take a float's rounding) would read as one."""
        dx = min(self.x + self.w, other.x + other.w) - max(self.x, other.x) + _GAP
        dy = min(self.y + self.h, other.y + other.h) - max(self.y, other.y) + _GAP
        return dx * dy if dx > 0 and dy > 0 else 0.0


def label_text(e: Edge, count: int) -> str:
    """What an edge's label shows with ``count`` steps taken: its trigger (none when it is the state it leads
    to) and ``×count``."""
    label = "" if e.trigger == e.dest else e.trigger
    sep = " " if label else ""
    return label + (f"{sep}×{count}" if count else "")


def _label_size(e: Edge, most: int) -> tuple[float, float]:
    """The box a label needs at its widest: with the count the whole run reaches (the pages step up to it)."""
    return len(label_text(e, most)) * LABEL_CHAR_W, LABEL_H


def _place_labels(
    sizes: list[tuple[float, float]], candidates: list[list[Point]], obstacles: list[_Rect]
) -> list[_Rect]:
    """A box for every label, each at the first of its candidate anchors (text centre, baseline) where it
    overlaps no state and no label placed before it; failing that, where it overlaps least."""
    placed: list[_Rect] = []
    for (w, h), anchors in zip(sizes, candidates, strict=True):
        best: _Rect | None = None
        best_cost = float("inf")
        for n, (x, y) in enumerate(anchors):
            box = _Rect(x - w / 2, y - h + 3, w, h)
            if w == 0:
                best = box
                break
            cost = sum(box.overlap(o) for o in obstacles) + sum(box.overlap(o) for o in placed)
            if cost == 0:
                best = box
                break
            if cost + n < best_cost:
                best, best_cost = box, cost + n
        assert best is not None
        placed.append(best)
    return placed


def _along(p: tuple[Point, Point, Point, Point], ts: Sequence[float], dy: float) -> list[Point]:
    out = []
    for t in ts:
        x, y = _bezier(*p, t)
        out.append((x, y + dy))
    return out


def _route(
    e: Edge,
    i: int,
    kind: str,
    boxes: dict[str, _Box],
    port_y: dict[tuple[str, str, int], float],
    lanes: dict[int, float],
    fan_out: dict[str, int],
    fan_in: dict[str, int],
    loop_rank: int,
) -> tuple[str, list[Point]]:
    """An edge's path, and where its label may go (the preferred place first)."""
    a, b = boxes[e.source], boxes[e.dest]
    if kind == "loop":
        cx, y0 = a.x + a.w / 2, a.y
        h, spread = LOOP_H + loop_rank * LOOP_STEP, 26 + loop_rank * 10
        d = f"M{_p(cx - 9, y0)} C{_p(cx - spread, y0 - h)} {_p(cx + spread, y0 - h)} {_p(cx + 9, y0)}"
        top = y0 - h * 0.75 + 2
        return d, [(cx, top), (cx + a.w / 2 + 30, top), (cx - a.w / 2 - 30, top), (cx, top - LOOP_STEP / 2)]
    if kind == "side":
        x1, y1 = a.x + a.w, port_y[(a.name, "r", i)]
        x2, y2 = b.x + b.w, port_y[(b.name, "r", i)]
        bend = max(x1, x2) + 46
        d = f"M{_f(x1)},{_f(y1)} C{_f(bend)},{_f(y1)} {_f(bend)},{_f(y2)} {_f(x2)},{_f(y2)}"
        mid = (y1 + y2) / 2
        return d, [(bend - 8 + dx, mid + dy) for dy in (0, -14, 14, -28, 28) for dx in (0, 30)]
    if kind in ("forward", "back"):
        if kind == "forward":
            x1, y1 = a.x + a.w, port_y[(a.name, "r", i)]
            x2, y2 = b.x, port_y[(b.name, "l", i)]
        else:
            x1, y1 = a.x, port_y[(a.name, "l", i)]
            x2, y2 = b.x + b.w, port_y[(b.name, "r", i)]
        dx = (x2 - x1) / 2
        p = ((x1, y1), (x1 + dx, y1), (x2 - dx, y2), (x2, y2))
        d = f"M{_f(x1)},{_f(y1)} C{_f(x1 + dx)},{_f(y1)} {_f(x2 - dx)},{_f(y2)} {_f(x2)},{_f(y2)}"
        # The label where the edges around it spread out: near the end that has fewer of them; failing that,
        # anywhere along the line, above or below it, then a little further off.
        if kind == "back":  # just after it leaves, under its line (the edge the other way runs above)
            t, offsets = 0.16, (11.0, -3.0, 24.0, -16.0)
        elif e.trigger == e.dest:  # only a count to show: by the arrow
            t, offsets = 0.88, (-3.0, 11.0, -16.0, 24.0)
        else:
            t, offsets = (0.66 if fan_out[a.name] > fan_in[b.name] else 0.34), (-3.0, 11.0, -16.0, 24.0)
        ts = sorted(
            (0.1, 0.16, 0.22, 0.28, 0.34, 0.42, 0.5, 0.58, 0.66, 0.72, 0.8, 0.88, 0.94), key=lambda u: abs(u - t)
        )
        return d, [spot for dy in offsets for spot in _along(p, ts, dy)]
    lane = lanes[i]
    if kind == "forward-long":
        x1, y1 = a.x + a.w, port_y[(a.name, "r", i)]
        x2, y2 = b.x, port_y[(b.name, "l", i)]
        s = 1.0
    else:
        x1, y1 = a.x, port_y[(a.name, "l", i)]
        x2, y2 = b.x + b.w, port_y[(b.name, "r", i)]
        s = -1.0
    r = 40.0
    d = (
        f"M{_p(x1, y1)} C{_p(x1 + s * r, y1)} {_p(x1 + s * r, lane)} {_p(x1 + s * 2 * r, lane)} "
        f"L{_p(x2 - s * 2 * r, lane)} C{_p(x2 - s * r, lane)} {_p(x2 - s * r, y2)} {_p(x2, y2)}"
    )
    return d, [(x1 + (x2 - x1) * f, lane - 3) for f in (0.5, 0.35, 0.65, 0.25, 0.75, 0.15, 0.85)]


def _edge(e: Edge, kind: str, d: str, label: _Rect, took: list[int], step: int, highlighted: bool) -> str:
    shown = [k for k in took if k <= step]
    cls = _classes(
        "edge",
        ("taken" if shown else "untaken") if highlighted else None,
        None if e.declared else "undeclared",
        kind,
    )
    text = "" if e.trigger == e.dest else e.trigger
    count = f"×{len(shown)}" if shown else ""
    tip = e.trigger + (f" [{e.condition}]" if e.condition else "")
    data = f' data-source="{escape(e.source)}" data-dest="{escape(e.dest)}" data-trigger="{escape(e.trigger)}"'
    if took:
        data += f' data-steps="{" ".join(str(k) for k in took)}"'
    sep = " " if text else ""
    return (
        f'<g class="{cls}"{data}><title>{escape(tip)}</title>'
        f'<path d="{d}"/>'
        f'<text x="{_f(label.x + label.w / 2)}" y="{_f(label.y + label.h - 3)}">{escape(text)}'
        f'<tspan class="count" data-sep="{sep}">{sep if count else ""}{count}</tspan></text></g>'
    )
