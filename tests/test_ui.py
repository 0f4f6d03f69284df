"""``agentfsm ui``: the run inspector, served for real and read back over HTTP and in a real browser.

The runs are real: agents on the simulator, through the real ``anthropic`` client, saved
into a ``SQLiteStore`` (and a ``PostgresStore`` on a throwaway server, see ``pgserver``), and
recorded as an events file. The conversations are stepped one transition at a time while
the test keeps a copy of the history after each step, so the history the inspector shows for
step N can be compared with the history as it really was.

The browser tests run Debian's ``chromium`` headless with ``--dump-dom`` (the DOM after the
page's script ran): no driver, no Node. The chromium fixture installs it with apt-get when it
is missing and this is root (as ``pgserver`` does for PostgreSQL), and otherwise skips saying
why. Step-through is driven by the URL (``#step=N``), which is what the previous/next links
and the arrow keys set.

``python tests/test_ui.py docs/ui.png`` writes the screenshot the guide shows.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import scenario as sc

from agentfsm import Agent, Policy, Tool
from agentfsm.cli import EXIT_ERROR, main
from agentfsm.observe.graph import build
from agentfsm.observe.replay import write_events
from agentfsm.observe.ui import history as uh
from agentfsm.observe.ui.server import UIServer, static_files
from agentfsm.observe.ui.sources import StoreSource, open_source
from agentfsm.observe.ui.svg import render_svg
from agentfsm.result import TraceStep
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.location import store_label
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.wire.messages import blocks, size_of

ROOT = Path(__file__).resolve().parent.parent

# --- real runs ----------------------------------------------------------------------------------------------


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def writer_agent(sim: Simulator) -> Agent:
    """A model that accepts prefill: its cut text is continued *inside* the same assistant message."""
    return Agent(
        client=sim.client(max_retries=0),
        model="claude-haiku-4-5",
        tools=[Tool(add)],
        policy=Policy(continuation="prefill", max_empty_retries=2, max_tokens=64),
        logger=None,
    )


WRITER_SCRIPT = [
    r.tool_use("add", {"a": 1, "b": 2}, text="Let me add."),
    r.empty_end_turn(),  # a nudge: a new user message
    r.empty_end_turn(),  # a second nudge: one more block in that message
    r.max_tokens("The sum of one and two is"),
    r.max_tokens(" three, which is a small"),
    r.text(" number."),
]


@dataclass
class Recorded:
    """A conversation as it really went: the history after each step (index 0: after step 1)."""

    conversation_id: str
    histories: list[list[dict[str, Any]]] = field(default_factory=list)
    trace: list[TraceStep] = field(default_factory=list)


def step_through(conv: Any) -> Recorded:
    seen = Recorded(conv.id)
    while (step := conv.step()) is not None:
        seen.trace.append(step)
        seen.histories.append(copy.deepcopy(conv.messages))
    return seen


@dataclass
class Runs:
    store_path: Path
    events_path: Path
    recorded: dict[str, Recorded]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    folder = tmp_path_factory.mktemp("ui")
    store = SQLiteStore(folder / "runs.db")
    recorded: dict[str, Recorded] = {}
    # A paused server tool, client tools (one, then two at once), a rejected prefill, prompted continuations.
    conv = sc.agent().start(sc.PROMPT, store=store, conversation_id="conv_scenario")
    recorded["conv_scenario"] = step_through(conv)
    write_events(conv.result().events, folder / "run.jsonl")
    # Prefilled continuations that grow one text block; a nudge answered in the same user message.
    conv = writer_agent(Simulator(WRITER_SCRIPT)).start(
        "What is 1 + 2? Explain.", store=store, conversation_id="conv_writer"
    )
    recorded["conv_writer"] = step_through(conv)
    # A run that died while its tools ran: unfinished, with calls that were running.
    sc.RAISE_ON.add("b")
    try:
        with pytest.raises(KeyboardInterrupt):
            sc.agent().run(sc.PROMPT, store=store, conversation_id="conv_crashed")
    finally:
        sc.RAISE_ON.clear()
        sc.CALLS.clear()
    # A request that failed.
    Agent(client=Simulator([r.server_error()]).client(max_retries=0), logger=None).run(
        "Hello?", store=store, conversation_id="conv_failed"
    )
    store.close()
    yield Runs(folder / "runs.db", folder / "run.jsonl", recorded)


class Served:
    def __init__(self, server: UIServer) -> None:
        self.server = server
        # serve_forever checks for shutdown() every poll_interval: at its 0.5 s default, each stop cost half a second.
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{server.port}"

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        status, headers, body = self.get(path)
        assert status == 200, body
        assert headers["Content-Type"].startswith("application/json")
        return json.loads(body)

    def html(self, path: str) -> str:
        status, headers, body = self.get(path)
        assert status == 200, body
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        return body.decode("utf-8")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.close()
        self.thread.join(10)


def serve(source: Any) -> Served:
    return Served(UIServer(source, "127.0.0.1", 0))


@pytest.fixture(scope="module")
def ui(runs: Runs) -> Iterator[Served]:
    served = serve(open_source(f"sqlite:///{runs.store_path}"))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def events_ui(runs: Runs) -> Iterator[Served]:
    served = serve(open_source(events=runs.events_path))
    yield served
    served.stop()


def normal(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with their content as a list of blocks (a string is one text block to the API too)."""
    return [{"role": m["role"], "content": blocks(m)} for m in messages]


# --- a small DOM, from the HTML the server sent or the DOM the browser dumped --------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)
    parent: Node | None = None

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def hidden(self) -> bool:
        return "hidden" in self.attrs

    def text(self, *, visible: bool = False) -> str:
        if visible and self.hidden:
            return ""
        return "".join(c if isinstance(c, str) else c.text(visible=visible) for c in self.children)

    def all(self, test: Callable[[Node], bool]) -> list[Node]:
        found: list[Node] = []
        for child in self.children:
            if isinstance(child, Node):
                if test(child):
                    found.append(child)
                found.extend(child.all(test))
        return found

    def one(self, test: Callable[[Node], bool]) -> Node:
        found = self.all(test)
        assert len(found) == 1, f"expected one element, found {len(found)}"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.at = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, parent=self.at)
        self.at.children.append(node)
        if tag not in VOID:
            self.at = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.at.children.append(Node(tag, {k: v or "" for k, v in attrs}, parent=self.at))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.at
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.at = node.parent

    def handle_data(self, data: str) -> None:
        self.at.children.append(data)


def dom(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def has_class(name: str, tag: str | None = None) -> Callable[[Node], bool]:
    return lambda n: name in n.classes and (tag is None or n.tag == tag)


def shown_history(page: Node) -> list[dict[str, Any]]:
    """The history a page shows: its visible messages and blocks, text from the visible pieces."""
    shown = []
    for article in page.all(has_class("message", "article")):
        if article.hidden:
            continue
        role = article.one(has_class("role")).text()
        content = []
        for block in article.all(has_class("block")):
            if block.hidden:
                continue
            kinds = block.classes - {"block", "added"}
            kind = kinds.pop()
            if kind == "text":
                content.append({"type": "text", "text": block.one(lambda n: n.tag == "pre").text(visible=True)})
            else:
                content.append({"type": kind})
        shown.append({"role": role, "content": content})
    return shown


def expected_view(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` reduced to what ``shown_history`` reads off a page."""
    return [
        {
            "role": m["role"],
            "content": [b if b.get("type") == "text" else {"type": b["type"]} for b in blocks(m)],
        }
        for m in messages
    ]


def graph_state(page: Node) -> tuple[set[str], set[str], set[tuple[str, str, str]]]:
    """(visited states, current states, taken edges) as the page's graph marks them."""
    svg = page.one(has_class("agent-graph", "svg"))
    states = svg.all(has_class("state", "g"))
    visited = {n.attrs["data-state"] for n in states if "visited" in n.classes}
    current = {n.attrs["data-state"] for n in states if "current" in n.classes}
    edges = svg.all(has_class("edge", "g"))
    taken = {
        (n.attrs["data-source"], n.attrs["data-trigger"], n.attrs["data-dest"]) for n in edges if "taken" in n.classes
    }
    return visited, current, taken


# --- the history as it stood, rebuilt from sizes -----------------------------------------------------------------


def test_the_trace_records_the_history_size_after_every_step(runs: Runs) -> None:
    for seen in runs.recorded.values():
        assert [s.history_size for s in seen.trace] == [size_of(h) for h in seen.histories]


@pytest.mark.parametrize("cid", ["conv_scenario", "conv_writer"])
def test_every_step_shows_the_history_as_it_was_then(ui: Served, runs: Runs, cid: str) -> None:
    seen = runs.recorded[cid]
    run = ui.json(f"/api/runs/{cid}")
    assert [s["step"] for s in run["steps"]] == list(range(1, len(seen.trace) + 1))
    assert run["history"] == {"messages": len(seen.histories[-1]), "exact": True, "problem": None}
    before: list[dict[str, Any]] | None = None
    for k, real in enumerate(seen.histories, start=1):
        body = ui.json(f"/api/runs/{cid}/steps/{k}")
        assert body["exact"] is True and body["step"] == k
        assert normal(body["messages"]) == normal(real), f"step {k}"
        assert body["path"] == [seen.trace[0].source, *(s.dest for s in seen.trace[:k])]
        if before is not None:  # what the step added turns the previous history into this one
            assert rebuilt(before, body) == normal(real), f"step {k}: {body['added']}"
        before = normal(real)


def rebuilt(before: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
    out = copy.deepcopy(before)
    now = normal(body["messages"])
    for piece in body["added"]:
        i = piece["message"]
        if "block" not in piece:
            assert i == len(out)
            out.append(now[i])
        elif "from_char" not in piece:
            assert piece["block"] == len(out[i]["content"])
            out[i]["content"].append(now[i]["content"][piece["block"]])
        else:
            block = out[i]["content"][piece["block"]]
            assert len(block["text"]) == piece["from_char"]
            block["text"] += piece["text"]
    return out


def test_continuations_and_nudges_grow_the_last_message_and_say_so(ui: Served, runs: Runs) -> None:
    seen = runs.recorded["conv_writer"]
    assert seen.histories[-1][-1]["content"][0]["text"] == "The sum of one and two is three, which is a small number."
    steps = {s["step"]: s for s in ui.json("/api/runs/conv_writer")["steps"]}
    grew = [k for k, s in steps.items() if s["change"].startswith("+") and "character" in s["change"]]
    assert len(grew) == 2  # two continuations joined onto the prefilled turn
    nudged = [k for k, s in steps.items() if s["trigger"] == "nudge"]
    assert len(nudged) == 2 and steps[nudged[1]]["change"] == "+1 block in message 4"
    first = ui.json(f"/api/runs/conv_writer/steps/{grew[0] - 2}")
    assert (
        first["extended_later"] is True and first["messages"][-1]["content"][0]["text"] == "The sum of one and two is"
    )
    assert ui.json(f"/api/runs/conv_writer/steps/{len(steps)}")["extended_later"] is False


def test_sizes_that_do_not_describe_a_growing_history_are_refused() -> None:
    final = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "abc"}]}]
    assert uh.growth(final, [(1, 1, 2), (2, 1, 1), (2, 1, 3)]).exact
    shrank = uh.growth(final, [(2, 1, 3), (1, 1, 2)])
    assert not shrank.exact and "shrank or was rewritten after step 1" in str(shrank.problem)
    old = uh.growth(final, [None, None])
    assert not old.exact and "recorded before" in str(old.problem) and old.messages == [1, 1]
    assert "stored history has 2" in str(uh.growth(final, [(3, 1, 0)]).problem)
    assert "more text" in str(uh.growth(final, [(2, 1, 9)]).problem)
    assert "no step recorded" in str(uh.growth(final, [(1, 1, 2)]).problem)
    grown = uh.growth(final, [(1, 1, 2), (2, 1, 1), (2, 1, 3)])
    assert uh.pieces("abc", grown.cuts[(1, 0)], 2) == [("a", 2), ("bc", 3)]
    assert uh.history_at(final, (2, 1, 1))[-1]["content"] == [{"type": "text", "text": "a"}]


# --- the JSON API and the pages over HTTP ----------------------------------------------------------------------


def test_the_run_list(ui: Served, runs: Runs) -> None:
    body = ui.json("/api/runs")
    rows = {row["id"]: row for row in body["runs"]}
    assert set(rows) == {"conv_scenario", "conv_writer", "conv_crashed", "conv_failed"}
    store = SQLiteStore(runs.store_path)
    for cid, row in rows.items():
        snap = store.load(cid)
        assert row["state"] == snap.state and row["finished"] == snap.finished and row["turns"] == snap.counters.turns
        assert row["reason"] == snap.reason and row["tokens"] == snap.usage.total_tokens
        assert row["cost_usd"] == snap.cost_usd and row["agent"] == snap.agent
        assert row["started"] is not None and abs(row["updated"] - row["started"] - snap.elapsed_s) < 1e-6
    store.close()
    assert rows["conv_failed"]["state"] == "failed" and rows["conv_failed"]["reason"] == "api_error"
    assert rows["conv_writer"]["cost_usd"] > 0  # claude-haiku-4-5 has a price
    page = dom(ui.html("/"))
    table = page.one(has_class("runs", "table"))
    links = [a.attrs["href"] for a in table.all(lambda n: n.tag == "a")]
    assert sorted(links) == sorted(f"/runs/{cid}" for cid in rows)
    crashed = table.one(lambda n: n.attrs.get("data-run") == "conv_crashed")
    assert "unfinished" in crashed.classes and "at tool_use" in crashed.text()
    failed = table.one(lambda n: n.attrs.get("data-run") == "conv_failed")
    assert [td.text() for td in failed.all(lambda n: n.tag == "td")][2:5] == ["failed", "api_error", "1"]


def test_pages_load_nothing_from_outside(ui: Served) -> None:
    for path in ("/", "/runs/conv_scenario", "/runs/nope"):
        status, headers, body = ui.get(path)
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        page = dom(body.decode())
        urls = [n.attrs[a] for n in page.all(lambda n: True) for a in ("src", "href") if a in n.attrs]
        assert urls and all(u.startswith(("/", "?", "#")) for u in urls), urls
    for name, content_type in (("ui.js", "text/javascript"), ("ui.css", "text/css"), ("graph.css", "text/css")):
        status, headers, body = ui.get(f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(content_type) and body == static_files()[name]
    assert b"http://" not in static_files()["ui.js"] and b"https://" not in static_files()["ui.js"]


def test_the_static_assets_ship_in_the_package() -> None:
    import fnmatch
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["agentfsm"]
    folder = ROOT / "agentfsm" / "observe" / "ui" / "static"
    files = [str(p.relative_to(ROOT / "agentfsm")) for p in folder.iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, pattern) for pattern in declared) for f in files), declared
    assert set(static_files()) == {p.name for p in folder.iterdir()}
    assert sum(len(b) for b in static_files().values()) < 40_000  # small: no framework, no diagram library


def test_a_run_page_shows_the_step_its_url_asks_for(ui: Served, runs: Runs) -> None:
    seen = runs.recorded["conv_writer"]
    last = len(seen.trace)
    for k in (1, 4, last - 1, last):
        page = dom(ui.html(f"/runs/conv_writer?step={k}"))
        main_ = page.one(lambda n: n.attrs.get("id") == "main")
        assert main_.attrs["data-step"] == str(k) and main_.attrs["data-last"] == str(last)
        assert shown_history(page) == expected_view(seen.histories[k - 1])
        visited, current, taken = graph_state(page)
        assert current == {seen.trace[k - 1].dest}
        assert visited == {seen.trace[0].source, *(s.dest for s in seen.trace[:k])}
        assert taken == {(s.source, s.trigger, s.dest) for s in seen.trace[:k]}
        selected = page.one(lambda n: n.tag == "li" and "selected" in n.classes)
        assert selected.attrs["data-step"] == str(k)
    assert dom(ui.html("/runs/conv_writer?step=999")).one(lambda n: n.attrs.get("id") == "main").attrs[
        "data-step"
    ] == str(last)


def test_tool_calls_with_inputs_results_and_durations(ui: Served, runs: Runs) -> None:
    calls = ui.json("/api/runs/conv_scenario")["tool_calls"]
    client = [c for c in calls if c["kind"] == "client"]
    assert [(c["name"], c["input"], c["result"]) for c in client] == [
        ("count", {"label": label}, f"counted {label}") for label in "abc"
    ]
    snap = SQLiteStore(runs.store_path).load("conv_scenario")
    assert all(c["duration_ms"] == snap.tool_ms[c["id"]] and c["duration_ms"] >= 0 for c in client)
    assert all(c["status"] == "answered" and c["answered_at"] > c["called_at"] for c in client)
    run_tools = [k for k, s in enumerate(runs.recorded["conv_scenario"].trace, 1) if s.trigger == "run_tools"]
    assert sorted({c["answered_at"] for c in client}) == run_tools
    server = [c for c in calls if c["kind"] == "server"]
    assert [c["name"] for c in server] == ["web_search", "web_search"] and all(c["result"] for c in server)
    page = dom(ui.html(f"/runs/conv_scenario?step={run_tools[0]}"))
    rows = page.one(has_class("tools", "table")).all(lambda n: n.tag == "tr" and "call" in n.classes)
    assert len(rows) == len(calls)
    added = [row for row in rows if "added" in row.classes]
    assert next(row.text() for row in added if "client" in row.classes).count("counted a") == 1
    crashed = ui.json("/api/runs/conv_crashed")["tool_calls"]
    assert {c["input"]["label"]: c["status"] for c in crashed if c["kind"] == "client"} == {
        "a": "answered",
        "b": "running",  # it raised KeyboardInterrupt: in doubt
        "c": "committed",  # a commit per call: c finished beside b and is kept, not run again
    }
    assert "were running at the last save" in ui.html("/runs/conv_crashed")


def test_a_failed_run_shows_its_error(ui: Served) -> None:
    page = ui.html("/runs/conv_failed")
    assert "api_error" in page and '<p class="error">' in page
    assert ui.json("/api/runs/conv_failed")["run"]["error"].startswith("api_error")


def test_errors_are_clear_pages_and_json(ui: Served) -> None:
    status, headers, body = ui.get("/runs/nope")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert "no run &#x27;nope&#x27; in sqlite:///" in body.decode() and "Traceback" not in body.decode()
    status, _, body = ui.get("/api/runs/nope")
    assert status == 404 and json.loads(body)["error"].startswith("no run 'nope'")
    status, _, body = ui.get("/api/runs/conv_writer/steps/99")
    assert status == 404 and "has steps 1 to" in json.loads(body)["error"]
    status, _, body = ui.get("/runs/conv_writer?step=two")
    assert status == 400 and "step must be a whole number" in body.decode()
    status, _, _ = ui.get("/no/such/page")
    assert status == 404
    status, _, body = ui.get("/api/runs", headers={"Host": "attacker.example:80"})
    assert status == 403 and "answers only requests for" in json.loads(body)["error"]
    status, headers, body = ui.get("/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    # a run id that needs quoting, and the graph endpoints
    status, headers, body = ui.get("/api/runs/conv_writer/graph.svg?step=2")
    assert status == 200 and headers["Content-Type"].startswith("image/svg+xml")
    svg = ET.fromstring(body)  # well-formed XML, standalone: it carries its own style
    assert svg.tag.endswith("svg") and any(el.tag.endswith("style") for el in svg)
    status, _, body = ui.get("/api/runs/conv_writer/graph.mmd")
    assert status == 200 and body.decode().splitlines()[3] == "stateDiagram-v2"
    assert "class done current" in body.decode()


def test_the_graph_draws_every_state_and_edge_of_a_subclass() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from approval_agent import ApprovalAgent
    finally:
        sys.path.remove(str(ROOT / "examples"))
    trace = [
        TraceStep(source="requesting", dest="tool_use", trigger="tool_use", turn=1),
        TraceStep(source="tool_use", dest="awaiting_approval", trigger="ask_approval", turn=1),
        TraceStep(source="awaiting_approval", dest="requesting", trigger="refuse", turn=1),
        TraceStep(source="requesting", dest="weird", trigger="surprise", turn=2),
    ]
    graph = build(ApprovalAgent.table(), trace=trace, current="weird")
    for step in (1, 3, 4):
        page = dom(render_svg(graph, trace, step))
        svg = page.one(has_class("agent-graph", "svg"))
        assert {n.attrs["data-state"] for n in svg.all(has_class("state", "g"))} == set(graph.states)
        edges = svg.all(has_class("edge", "g"))
        assert len(edges) == len(graph.edges)
        _, current, taken = graph_state(page)
        assert current == {trace[step - 1].dest}
        assert taken == {(s.source, s.trigger, s.dest) for s in trace[:step]}
    undeclared = [e for e in edges if "undeclared" in e.classes]
    assert [e.attrs["data-trigger"] for e in undeclared] == ["surprise"]
    boxes = [n for n in svg.all(lambda n: n.tag == "rect") if "inner" not in n.classes]
    spans = [
        (float(b.attrs["x"]), float(b.attrs["y"]), float(b.attrs["width"]), float(b.attrs["height"])) for b in boxes
    ]
    for i, a in enumerate(spans):  # no two states overlap
        for b in spans[i + 1 :]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


# --- live runs -------------------------------------------------------------------------------------------------


def test_a_run_going_on_changes_its_signature_and_page(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "live.db")
    conv = writer_agent(Simulator(WRITER_SCRIPT)).start("1 + 2?", store=store, conversation_id="conv_live")
    served = serve(open_source(str(tmp_path / "live.db")))
    try:
        page = dom(served.html("/runs/conv_live"))  # stored as it started: no transition yet
        assert page.one(lambda n: n.attrs.get("id") == "main").attrs["data-last"] == "0"
        assert "no transitions yet" in page.one(has_class("stepper")).text()
        assert shown_history(page) == expected_view(conv.messages)
        conv.step()
        first = served.json("/api/signature?run=conv_live")["signature"]
        page = dom(served.html("/runs/conv_live"))
        main_ = page.one(lambda n: n.attrs.get("id") == "main")
        assert main_.attrs["data-live"] == "1" and main_.attrs["data-last"] == "1"
        assert main_.attrs["data-signature"] == first
        conv.step()
        second = served.json("/api/signature?run=conv_live")["signature"]
        assert second != first
        conv.run()
        main_ = dom(served.html("/runs/conv_live")).one(lambda n: n.attrs.get("id") == "main")
        assert main_.attrs["data-live"] == "0" and main_.attrs["data-last"] == str(len(conv.trace))
        status, _, _ = served.get("/api/signature?run=nope")
        assert status == 404
    finally:
        served.stop()
        store.close()


def test_ids_that_need_quoting_and_an_empty_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "odd.db")
    served = serve(open_source(str(tmp_path / "odd.db")))
    try:
        assert "No runs in" in served.html("/") and served.json("/api/runs")["runs"] == []
        odd = "run/1 #x?y=<b>"
        writer_agent(Simulator(WRITER_SCRIPT)).run("1 + 2?", store=store, conversation_id=odd)
        page = dom(served.html("/"))
        (link,) = page.one(has_class("runs", "table")).all(lambda n: n.tag == "a")
        assert link.attrs["href"] == "/runs/run%2F1%20%23x%3Fy%3D%3Cb%3E" and link.text() == odd
        run = dom(served.html(link.attrs["href"]))
        assert run.one(has_class("run-id")).text() == odd
        assert served.json("/api/runs/" + quote(odd, safe=""))["run"]["id"] == odd
    finally:
        served.stop()
        store.close()


# --- an events file --------------------------------------------------------------------------------------------


def test_an_events_file_shows_what_its_events_carry(events_ui: Served, ui: Served, runs: Runs) -> None:
    from_events = events_ui.json("/api/runs")["runs"]
    assert [row["id"] for row in from_events] == ["conv_scenario"]
    stored = next(row for row in ui.json("/api/runs")["runs"] if row["id"] == "conv_scenario")
    for key in ("state", "finished", "reason", "turns", "tokens", "agent"):
        assert from_events[0][key] == stored[key], key
    run = events_ui.json("/api/runs/conv_scenario")
    seen = runs.recorded["conv_scenario"]
    assert [s["history_size"] for s in run["steps"]] == [list(s.history_size or ()) for s in seen.trace]
    assert run["history"] is None and run["run"]["kind"] == "events"
    calls = run["tool_calls"]
    assert [c["input"] for c in calls] == [None, None, None] and all(c["duration_ms"] is not None for c in calls)
    assert sum(len(s["events"]) for s in run["steps"]) == len(run["events"])
    step = events_ui.json("/api/runs/conv_scenario/steps/3")
    assert step["messages"] is None and "no message content" in step["note"]
    page = dom(events_ui.html("/runs/conv_scenario?step=3"))
    assert page.all(has_class("event", "li")) and "no message content" in page.one(has_class("history")).text()


# --- PostgreSQL --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a PostgreSQL server process
def test_a_postgres_store_is_served_like_a_sqlite_one(postgres_database: str, ui: Served) -> None:
    from agentfsm.stores.postgres import PostgresStore

    with PostgresStore(postgres_database) as store:
        writer_agent(Simulator(WRITER_SCRIPT)).run(
            "What is 1 + 2? Explain.", store=store, conversation_id="conv_writer"
        )
    served = serve(open_source(postgres_database))
    try:
        assert served.server.source.label == postgres_database
        pg, lite = served.json("/api/runs/conv_writer"), ui.json("/api/runs/conv_writer")
        for key in ("steps", "graph", "history"):
            assert pg[key] == lite[key], key
        assert [(c["name"], c["input"], c["result"]) for c in pg["tool_calls"]] == [
            (c["name"], c["input"], c["result"]) for c in lite["tool_calls"]
        ]
        last = len(pg["steps"])
        assert (
            served.json(f"/api/runs/conv_writer/steps/{last}")["messages"]
            == ui.json(f"/api/runs/conv_writer/steps/{last}")["messages"]
        )
        assert "conv_writer" in served.html("/")
    finally:
        served.stop()


def test_a_postgres_database_is_shown_without_its_password() -> None:
    assert store_label("postgresql://app:s3cret@db.example:5433/runs") == "postgresql://app:***@db.example:5433/runs"
    assert store_label("postgresql://app@db/runs") == "postgresql://app@db/runs"


# --- the command line -----------------------------------------------------------------------------------------


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentfsm: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], runs: Runs) -> None:
    assert main(["ui", "--store", f"sqlite:///{tmp_path}/missing.db"]) == EXIT_ERROR
    assert f"no agentfsm store at {tmp_path}/missing.db" in one_line_error(capsys)
    assert main(["ui", "--store", "mysql://root@db/runs"]) == EXIT_ERROR
    assert "unsupported store URL 'mysql://root@db/runs'" in one_line_error(capsys)
    (tmp_path / "notes.txt").write_text("not a database, just words " * 100)
    assert main(["ui", "--store", str(tmp_path / "notes.txt")]) == EXIT_ERROR
    assert "not an agentfsm store" in one_line_error(capsys)
    assert main(["ui", "--events", str(tmp_path / "none.jsonl")]) == EXIT_ERROR
    assert "none.jsonl: no such file" in one_line_error(capsys)
    (tmp_path / "bad.jsonl").write_text('{"event": "transition"\n')
    assert main(["ui", "--events", str(tmp_path / "bad.jsonl")]) == EXIT_ERROR
    assert "bad.jsonl line 1: not a JSON line" in one_line_error(capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--store", str(runs.store_path), "--port", str(port)]) == EXIT_ERROR
        assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(capsys)
    assert main(["ui", "--store", "x.db", "--events", "y.jsonl"]) == 2  # one or the other
    capsys.readouterr()


@pytest.mark.slow  # a subprocess
def test_cli_serves_until_interrupted(runs: Runs) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentfsm", "ui", "--store", f"sqlite:///{runs.store_path}", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"agentfsm ui: serving the runs in sqlite:///{runs.store_path} at http://localhost:")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/runs")
        assert len(json.loads(conn.getresponse().read())["runs"]) == 4
        conn.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "agentfsm ui: stopped" in out and err == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# --- a real browser -------------------------------------------------------------------------------------------

#: Flags that let headless Chromium run as root on a machine with no network, quietly.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def install_chromium() -> str:
    """Debian's chromium, with apt-get (after an ``apt-get update`` if the first try fails)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("browser tests skipped: chromium is not installed, and apt-get cannot install it here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    tail = ""
    for attempt in range(2):
        if attempt:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, env=env, check=False)
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, check=False)
        found = find_chromium()
        if proc.returncode == 0 and found:
            return found
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        tail = lines[-1] if lines else f"exit status {proc.returncode}"
    pytest.skip(f"browser tests skipped: chromium is not installed and apt-get could not install it: {tail}")


@dataclass
class Browser:
    exe: str
    profile: Path

    def run(self, *args: str, timeout: float = 60) -> str:
        proc = subprocess.run(
            [self.exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    def dom(self, url: str, *, budget_ms: int | None = None) -> Node:
        extra = [f"--virtual-time-budget={budget_ms}"] if budget_ms else []
        return dom(self.run(*extra, "--dump-dom", url))

    def screenshot(self, url: str, target: Path, size: str = "1280,900") -> None:
        self.run(f"--screenshot={target}", f"--window-size={size}", url)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    exe = find_chromium() or install_chromium()
    profile = Path(tempfile.mkdtemp(prefix="agentfsm-chromium-"))
    try:
        yield Browser(exe, profile)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow  # Chromium
def test_in_a_browser_the_run_list_and_a_run_step_through(browser: Browser, ui: Served, runs: Runs) -> None:
    page = browser.dom(ui.url + "/")
    assert page.one(lambda n: n.tag == "html").attrs.get("data-js") == "ready"  # the script loaded and ran
    listed = {n.attrs["data-run"] for n in page.all(lambda n: n.tag == "tr" and "data-run" in n.attrs)}
    assert listed == {"conv_scenario", "conv_writer", "conv_crashed", "conv_failed"}

    seen = runs.recorded["conv_writer"]
    last = len(seen.trace)
    shown: dict[int, list[dict[str, Any]]] = {}
    # The server draws the last step; the script moves the page to the step the URL names.
    for k in (2, 10, last):
        page = browser.dom(f"{ui.url}/runs/conv_writer#step={k}")
        main_ = page.one(lambda n: n.attrs.get("id") == "main")
        assert main_.attrs["data-step"] == str(k)
        shown[k] = shown_history(page)
        assert shown[k] == expected_view(seen.histories[k - 1]), f"step {k}"
        visited, current, taken = graph_state(page)
        assert current == {seen.trace[k - 1].dest}
        assert taken == {(s.source, s.trigger, s.dest) for s in seen.trace[:k]}
        assert visited == {seen.trace[0].source, *(s.dest for s in seen.trace[:k])}
        assert page.one(has_class("step-label")).text() == (
            f"turn {seen.trace[k - 1].turn} · {seen.trace[k - 1].source} → {seen.trace[k - 1].dest} "
            f"({seen.trace[k - 1].trigger})"
        )
        prev, nxt = page.one(has_class("prev", "a")), page.one(has_class("next", "a"))
        assert prev.attrs["data-goto"] == str(max(k - 1, 1)) and nxt.attrs["data-goto"] == str(min(k + 1, last))
        assert ("off" in nxt.classes) == (k == last)
        added = [n for n in page.one(has_class("messages")).all(lambda n: "added" in n.classes) if not n.hidden]
        if k == 10:  # the step that joined " three, which is a small" onto the prefilled turn
            assert [n.text() for n in added] == [" three, which is a small"]
    assert shown[2] != shown[10] != shown[last]  # stepping changes the history shown
    # A continuation's text is cut where the step left it, and the message says a later step extends it.
    cut = browser.dom(f"{ui.url}/runs/conv_writer#step=8")
    grows = cut.all(lambda n: n.tag == "article" and "grows-later" in n.classes)
    assert len(grows) == 1 and grows[0].one(lambda n: n.tag == "pre").text(visible=True) == "The sum of one and two is"


@pytest.mark.slow  # Chromium
def test_in_a_browser_a_run_going_on_refreshes(browser: Browser, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "live.db")
    conv = writer_agent(Simulator(WRITER_SCRIPT)).start("1 + 2?", store=store, conversation_id="conv_live")
    for _ in range(3):
        conv.step()

    class Advancing(StoreSource):
        """The run goes on while the page is open: the page's first poll finds it finished."""

        polls = 0

        def signature(self, run_id: str | None = None) -> str:
            if run_id == "conv_live":
                Advancing.polls += 1
                if Advancing.polls == 2:  # the first is the page itself; the second the script's first poll
                    conv.run()
            return super().signature(run_id)

    served = serve(Advancing(SQLiteStore(tmp_path / "live.db"), label="live"))
    try:
        page = browser.dom(f"{served.url}/runs/conv_live", budget_ms=6000)
        main_ = page.one(lambda n: n.attrs.get("id") == "main")
        assert conv.finished and Advancing.polls >= 2
        assert main_.attrs["data-live"] == "0" and main_.attrs["data-last"] == str(len(conv.trace))
        assert main_.attrs["data-step"] == str(len(conv.trace))  # it followed the run to its end
        assert shown_history(page) == expected_view(conv.messages)
    finally:
        served.stop()
        store.close()


@pytest.mark.slow  # Chromium
def test_in_a_browser_a_screenshot_of_the_run_page(browser: Browser, ui: Served, tmp_path: Path) -> None:
    target = tmp_path / "ui.png"
    browser.screenshot(f"{ui.url}/runs/conv_scenario#step=6", target)
    head = target.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1280, 900)


def write_screenshot(target: Path) -> None:
    """Make a store of real runs, serve it, and photograph a run page (the guide's docs/ui.png)."""
    exe = find_chromium()
    if exe is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    target = target.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # so the page names the store as a user would: runs.db
        store = SQLiteStore(Path(tmp) / "runs.db")
        sc.agent().run(sc.PROMPT, store=store, conversation_id="conv_scenario")
        writer_agent(Simulator(WRITER_SCRIPT)).run(
            "What is 1 + 2? Explain.", store=store, conversation_id="conv_writer"
        )
        served = serve(open_source("sqlite:///runs.db"))
        try:
            Browser(exe, Path(tmp) / "profile").screenshot(
                f"{served.url}/runs/conv_scenario#step=6", target, "1280,1000"
            )
        finally:
            served.stop()
            store.close()


if __name__ == "__main__":
    write_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/ui.png"))


# --- what the requests are sent with -------------------------------------------------------------------------------


def test_the_run_page_shows_what_the_requests_are_sent_with(tmp_path: Path) -> None:
    from agentfsm.stores.base import stored_request

    system = "You add numbers. <b>Never</b> guess. The key sk-ant-api03-notakey-0123456789 is not yours."
    agent = Agent(
        client=Simulator([r.tool_use("add", {"a": 1, "b": 2}), r.text("3")]).client(max_retries=0),
        model="claude-haiku-4-5",
        system=system,
        tools=[Tool(add)],
        request_params={"temperature": 0.25, "stop_sequences": ["END"]},
        logger=None,
    )
    store = SQLiteStore(tmp_path / "runs.db")
    agent.run("1 + 2?", store=store, conversation_id="conv_params")
    stored = store.load("conv_params").request
    assert stored is not None and stored["temperature"] == 0.25 and "sk-ant-api03" not in json.dumps(stored)
    served = serve(open_source(str(tmp_path / "runs.db")))
    try:
        page = dom(served.html("/runs/conv_params"))
        panel = page.one(has_class("request", "section"))
        params = {td.attrs["data-param"]: td.text() for td in panel.all(lambda n: n.tag == "td")}
        assert params == {
            "model": "claude-haiku-4-5",
            "max_tokens": "1024",
            "temperature": "0.25",
            "stop_sequences": '["END"]',
        }
        shown = panel.one(has_class("system", "details")).one(lambda n: n.tag == "pre").text()
        assert shown == system.replace("sk-ant-api03-notakey-0123456789", "[REDACTED]")  # escaped, not markup
        (tool,) = panel.all(has_class("tool-spec", "details"))
        assert tool.attrs["data-tool"] == "add" and "Add two numbers." in tool.text()
        assert json.loads(tool.one(lambda n: n.tag == "pre").text())["properties"]["a"] == {"type": "integer"}
        # A row an earlier agentfsm wrote holds none of it: the page says so.
        store.save(store.load("conv_params").model_copy(update={"request": None, "revision": 99}))
        note = dom(served.html("/runs/conv_params")).one(has_class("request", "section")).text()
        assert "The system prompt, the tools and the other parameters are not in this stored run" in note
    finally:
        served.stop()
        store.close()
    # A credential under its own key (an MCP server's token) is never stored, whatever it looks like.
    kept = stored_request({"mcp_servers": [{"name": "x", "authorization_token": "abc"}], "top_k": 5}, ["zzz-secret-1"])
    assert kept == {"mcp_servers": [{"name": "x", "authorization_token": "[REDACTED]"}], "top_k": 5}


def test_a_long_value_is_drawn_cut_with_a_note_and_the_json_keeps_all_of_it(tmp_path: Path) -> None:
    """A browser takes tens of seconds to lay out a 5 MB line: a page draws SHOWN_CHARS of a value and says how
    many more there are; the run's JSON has every character."""
    from agentfsm.observe.ui.pages import SHOWN_CHARS

    big = "B" * (SHOWN_CHARS + 12_345)

    def dump() -> str:
        """Dump a file."""
        return big

    sim = Simulator([r.tool_use("dump", {}), r.text("Dumped.")])
    db = tmp_path / "runs.db"
    with sim.serve() as url, SQLiteStore(db) as store:
        import anthropic

        client = anthropic.Anthropic(base_url=url, api_key="sk-ant-test-0000", max_retries=0)
        agent = Agent(client=client, model="claude-haiku-4-5", tools=[Tool(dump)], logger=None,
                      policy=Policy(max_tool_result_chars=None))  # fmt: skip
        assert agent.run("Dump it.", store=store, conversation_id="big").final_state == "done"
    served = serve(open_source(f"sqlite:///{db}"))
    try:
        page = served.html("/runs/big")
        assert "B" * SHOWN_CHARS in page and "B" * (SHOWN_CHARS + 1) not in page
        assert page.count("… 12,345 more characters (all in the run's JSON)") == 2  # the history, the calls
        calls = served.json("/api/runs/big")["tool_calls"]
        assert [c["result"] for c in calls] == [big]
    finally:
        served.stop()
