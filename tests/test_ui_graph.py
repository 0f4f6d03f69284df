"""The inspector's graph: labels that never collide, Wait states drawn as waits, and the "path only" view.

Label boxes are computed from the SVG the inspector draws (each label's anchor, its text, the
10px font's character width) for every shipped agent — the base ``Agent`` and every Agent class of
``examples/`` — with no run, with every transition taken, and with counts in the hundreds (the
widest labels); and measured by the browser itself (``getBBox``) on a real run page.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ui import Runs, Served, dom, has_class, runs, ui  # noqa: F401  (module fixtures: real runs, served)
from test_ui_decisions import Chromium, chromium  # noqa: F401  (the DevTools-driven browser)

from agentfsm import Agent
from agentfsm.loading import agent_classes
from agentfsm.observe.graph import build
from agentfsm.observe.ui.svg import LABEL_CHAR_W, LABEL_H, render_svg
from agentfsm.result import TraceStep

ROOT = Path(__file__).resolve().parent.parent

Box = tuple[float, float, float, float]  # x, y, width, height


def shipped_agents() -> Iterator[type[Agent]]:
    yield Agent
    for path in sorted((ROOT / "examples").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"shipped_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        yield from agent_classes(module).values()


SHIPPED = list(shipped_agents())


def label_boxes(svg: str) -> dict[str, Box]:
    """Each edge label's box, by ``source -trigger-> dest``, as drawn: centred on its x, its baseline at y."""
    boxes = {}
    for edge in dom(svg).all(has_class("edge", "g")):
        text = edge.one(lambda n: n.tag == "text")
        shown = text.text()
        if not shown:
            continue
        x, y, w = float(text.attrs["x"]), float(text.attrs["y"]), len(shown) * LABEL_CHAR_W
        key = f"{edge.attrs['data-source']} -{edge.attrs['data-trigger']}-> {edge.attrs['data-dest']}"
        boxes[key] = (x - w / 2, y - LABEL_H + 3, w, LABEL_H)
    return boxes


def state_boxes(svg: str) -> dict[str, Box]:
    out = {}
    for g in dom(svg).all(has_class("state", "g")):
        shape = g.all(lambda n: n.tag in ("rect", "polygon") and "inner" not in n.classes)[0]
        if shape.tag == "rect":
            out[g.attrs["data-state"]] = tuple(float(shape.attrs[k]) for k in ("x", "y", "width", "height"))
        else:
            xs = [float(p.split(",")[0]) for p in shape.attrs["points"].split()]
            ys = [float(p.split(",")[1]) for p in shape.attrs["points"].split()]
            out[g.attrs["data-state"]] = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
    return out  # type: ignore[return-value]


def overlapping(a: dict[str, Box], b: dict[str, Box] | None = None) -> list[tuple[str, str]]:
    found = []
    pairs = (
        [(k1, k2) for i, k1 in enumerate(a) for k2 in list(a)[i + 1 :]]
        if b is None
        else [(k1, k2) for k1 in a for k2 in b]
    )
    other = a if b is None else b
    for k1, k2 in pairs:
        (x1, y1, w1, h1), (x2, y2, w2, h2) = a[k1], other[k2]
        if x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1:
            found.append((k1, k2))
    return found


def every_edge(agent: type[Agent], times: int) -> list[TraceStep]:
    return [
        TraceStep(source=t.source, dest=t.dest, trigger=t.trigger, turn=1)
        for t in agent.table().transitions
        for _ in range(times)
    ]


@pytest.mark.parametrize("agent", SHIPPED, ids=lambda a: a.__name__)
def test_no_two_labels_overlap_on_any_shipped_agent(agent: type[Agent]) -> None:
    assert len(SHIPPED) >= 5  # the base Agent and the examples' agents
    for times in (0, 1, 120):
        trace = every_edge(agent, times)
        svg = render_svg(build(agent.table(), trace=trace), trace)
        labels = label_boxes(svg)
        assert len(labels) >= (len(agent.table().transitions) * 0.8 if times else 10)
        assert overlapping(labels) == [], f"{agent.__name__}, every edge taken {times}x"
        assert overlapping(labels, state_boxes(svg)) == [], f"{agent.__name__}: a label over a state"
        if times == 120:
            assert "prefill_rejected ×120" in {
                t for t in (e.one(lambda n: n.tag == "text").text() for e in dom(svg).all(has_class("edge", "g")))
            }


def test_the_loops_on_requesting_no_longer_print_over_each_other() -> None:
    trace = [
        TraceStep(source="requesting", dest="requesting", trigger="prefill_rejected", turn=1),
        TraceStep(source="requesting", dest="requesting", trigger="compaction_failed", turn=2),
    ]
    labels = label_boxes(render_svg(build(Agent.table(), trace=trace), trace))
    rejected = labels["requesting -prefill_rejected-> requesting"]
    failed = labels["requesting -compaction_failed-> requesting"]
    assert overlapping({"a": rejected, "b": failed}) == []


def test_a_wait_state_is_drawn_as_a_wait() -> None:
    approval = next(a for a in SHIPPED if a.__name__ == "ApprovalAgent")
    page = dom(render_svg(build(approval.table()), []))
    waits = {w.attrs["data-state"]: w for w in page.all(has_class("wait", "g"))}
    assert set(waits) == {"awaiting_approval", "awaiting_tool_approval"}  # its own, and approval on a tool's
    wait = waits["awaiting_approval"]
    assert wait.all(lambda n: n.tag == "polygon")
    assert "waits for a decision" in wait.one(lambda n: n.tag == "title").text()
    base = dom(render_svg(build(Agent.table()), [])).all(has_class("wait", "g"))
    assert [w.attrs["data-state"] for w in base] == ["awaiting_tool_approval"]


def test_the_path_only_view(ui: Served, runs: Runs) -> None:  # noqa: F811
    seen = runs.recorded["conv_scenario"].trace
    path_states = {seen[0].source, *(s.dest for s in seen)}
    taken = {(s.source, s.trigger, s.dest) for s in seen}
    whole = dom(ui.html("/runs/conv_scenario"))
    assert len(whole.all(has_class("state", "g"))) > len(path_states)
    assert whole.one(has_class("graph-path", "a")).attrs["href"] == f"?step={len(seen)}&graph=path"
    folded = dom(ui.html("/runs/conv_scenario?step=3&graph=path"))
    svg = folded.one(has_class("agent-graph", "svg"))
    assert {g.attrs["data-state"] for g in svg.all(has_class("state", "g"))} == path_states
    edges = {
        (g.attrs["data-source"], g.attrs["data-trigger"], g.attrs["data-dest"]) for g in svg.all(has_class("edge", "g"))
    }
    assert edges == taken
    assert folded.one(lambda n: n.attrs.get("id") == "main").attrs["data-graph"] == "path"
    assert folded.one(has_class("next", "a")).attrs["href"] == "?step=4&graph=path"  # stepping keeps the view
    assert folded.one(has_class("graph-all", "a")).attrs["href"] == "?step=3&graph=all"
    current = {g.attrs["data-state"] for g in svg.all(has_class("current", "g"))}
    assert current == {seen[2].dest}
    status, _, body = ui.get("/api/runs/conv_scenario/graph.svg?graph=path")
    assert status == 200 and len(dom(body.decode()).all(has_class("state", "g"))) == len(path_states)
    status, _, body = ui.get("/runs/conv_scenario?graph=sideways")
    assert status == 400 and "graph must be" in body.decode()


def test_a_run_page_legend_names_wait_states(tmp_path: Path) -> None:
    from test_ui import serve
    from test_ui_decisions import waiting_run

    from agentfsm.observe.ui.sources import open_source
    from agentfsm.stores.sqlite import SQLiteStore

    with SQLiteStore(tmp_path / "runs.db") as store:
        waiting_run(store, "conv_wait")
    served = serve(open_source(str(tmp_path / "runs.db")))
    try:
        page = dom(served.html("/runs/conv_wait"))
        assert "waits for a decision (Wait)" in page.one(has_class("graph-panel")).one(has_class("legend", "p")).text()
        waits = {w.attrs["data-state"]: w for w in page.all(has_class("wait", "g"))}
        assert {"current", "visited"} <= waits["awaiting_approval"].classes
        assert not {"current", "visited"} & waits["awaiting_tool_approval"].classes
    finally:
        served.stop()


#: The browser's own boxes of the edge labels that show text.
BOXES = """Array.from(document.querySelectorAll('svg.agent-graph .edge text'))
  .filter(function (t) { return t.textContent.trim(); })
  .map(function (t) { var b = t.getBBox(); return [t.textContent, b.x, b.y, b.width, b.height]; })"""


@pytest.mark.slow  # Chromium
def test_in_a_browser_no_two_labels_overlap(chromium: Chromium, ui: Served) -> None:  # noqa: F811
    for path in ("/runs/conv_scenario", "/runs/conv_scenario?graph=path", "/runs/conv_writer"):
        chromium.open(ui.url + path)
        measured = chromium.run(BOXES)
        assert len(measured) >= 5
        boxes = {f"{i}:{text}": (x, y, w, h) for i, (text, x, y, w, h) in enumerate(measured)}
        assert overlapping(boxes) == [], path
