"""Someone else's runs database is untrusted data: opening it never runs code (issue 21, items 1 to 3).

A stored row names its Agent class (``agent``: ``module:QualName``). Drawing the run used to import
that module — ``agentfsm ui``, ``runs graph`` and ``replay`` did, with the current directory put on the
import path — so a row naming ``evil_mod:ReviewAgent``, or an ``evil_mod.py`` lying beside
``runs.db``, ran that file's code when a page opened. Now a stored run carries its class's states and
transitions as data (``Snapshot.graph``) and every view draws from that, importing nothing; a class is
imported only where a person names it (``--agent MODULE:Class``, ``agent_spec=``), and deciding a run
(which runs code) needs it named.

The runs are real: a subclass with a ``Wait`` state and a final state of its own, through the real
``anthropic`` client over HTTP against the simulator, saved in a ``SQLiteStore``. The rows are then
made hostile as a stranger's database would be: they name ``evil_mod:ReviewAgent`` (a module that
writes a marker file when imported, lying in the current directory beside ``runs.db``) or
``evil_site_mod:ReviewAgent`` (the same, importable as it is from the import path). Every test
ends with no marker unless the test itself named the module.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest
from test_ui import dom, graph_state, has_class, serve

from agentfsm import Agent, ConfigurationError, Transition, Wait, actions
from agentfsm.cli import EXIT_ERROR, EXIT_NOT_DONE, main
from agentfsm.cli.runs import decide_run
from agentfsm.cli.ui import decider_for
from agentfsm.observe.graph import path_graph, resolve_agent
from agentfsm.observe.replay import replay_one, write_events
from agentfsm.observe.ui.sources import open_source
from agentfsm.result import TraceStep
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.sqlite import SQLiteStore


class ReviewAgent(Agent):
    """Every answer waits for a reviewer: ``approve`` finishes it, ``reject`` ends in a final state of its own."""

    model = "claude-haiku-4-5"
    states = [Wait("awaiting_review"), "rejected"]
    transitions = [
        Transition("end_turn", "review", "awaiting_review"),
        Transition("awaiting_review", "approve", "done", action=actions.keep_reply),
        Transition("awaiting_review", "reject", "rejected"),
    ]


#: The states ReviewAgent adds: a page that draws the run's own graph shows both, the unvisited one too.
ADDED = {"awaiting_review", "rejected"}
OWN = f"{__name__}:ReviewAgent"  # how an operator names the real class: importable as it is (tests/ is on the path)
KEY = "sk-ant-test-untrusted-0000"

#: A module that says when it is imported: what a stranger's folder holds beside runs.db.
EVIL_SOURCE = """\
from pathlib import Path

Path({marker!r}).write_text("imported " + __name__)

from agentfsm import Agent, Transition, Wait, actions


class ReviewAgent(Agent):
    model = "claude-haiku-4-5"
    states = [Wait("awaiting_review"), "rejected"]
    transitions = [
        Transition("end_turn", "review", "awaiting_review"),
        Transition("awaiting_review", "approve", "done", action=actions.keep_reply),
        Transition("awaiting_review", "reject", "rejected"),
    ]
"""


@dataclass
class Project:
    """A stranger's folder: ``runs.db`` beside ``evil_mod.py``; ``evil_site_mod`` importable from the path."""

    folder: Path
    db: Path
    marker: Path
    events: Path
    url: str

    def imported(self) -> str | None:
        return self.marker.read_text() if self.marker.exists() else None


def real_client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)


def rename(store: SQLiteStore, conversation_id: str, agent: str) -> None:
    """Make the row name another class, as a hostile store would (a valid save: the revision moves on)."""
    snap = store.load(conversation_id)
    store.save(snap.model_copy(update={"agent": agent, "revision": snap.revision + 1}))


def strip_graph(db: Path, conversation_id: str) -> None:
    """The row as an agentfsm before ``Snapshot.graph`` wrote it."""
    with closing(sqlite3.connect(db)) as conn, conn:
        (raw,) = conn.execute("SELECT snapshot FROM agentfsm_conversations WHERE id = ?", (conversation_id,)).fetchone()
        data = json.loads(raw)
        data.pop("graph", None)  # (an agentfsm before it never wrote one)
        conn.execute("UPDATE agentfsm_conversations SET snapshot = ? WHERE id = ?", (json.dumps(data), conversation_id))


def set_graph(db: Path, conversation_id: str, graph: Any) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        (raw,) = conn.execute("SELECT snapshot FROM agentfsm_conversations WHERE id = ?", (conversation_id,)).fetchone()
        data = json.loads(raw) | {"graph": graph}
        conn.execute("UPDATE agentfsm_conversations SET snapshot = ? WHERE id = ?", (json.dumps(data), conversation_id))


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, str]]:
    """The simulator on a loopback port: the model says "Looks fine." to every request."""
    simulator = Simulator(lambda request: r.text("Looks fine."))
    with simulator.serve() as url:
        yield simulator, url


@pytest.fixture
def project(tmp_path: Path, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """The stranger's folder, with the current directory in it and the import path as the installed command has
    it (no ``""`` entry: the tests see only what agentfsm itself adds). Rows:

    * ``evil_wait``: a ReviewAgent run waiting at ``awaiting_review``, its row naming ``evil_mod:ReviewAgent``;
    * ``evil_done``: one approved to ``done``, naming ``evil_site_mod:ReviewAgent`` (importable as it is);
    * ``evil_old``: like ``evil_wait``, as an earlier agentfsm stored it (no graph).
    """
    _, url = sim
    folder = tmp_path / "stranger"
    folder.mkdir()
    marker = tmp_path / "marker"
    (folder / "evil_mod.py").write_text(EVIL_SOURCE.format(marker=str(marker)))
    site = tmp_path / "site"
    site.mkdir()
    (site / "evil_site_mod.py").write_text(EVIL_SOURCE.format(marker=str(marker)))
    db = folder / "runs.db"
    agent = ReviewAgent(client=real_client(url), logger=None)
    with SQLiteStore(db) as store:
        waiting = agent.run("Review this.", store=store, conversation_id="evil_wait")
        assert waiting.final_state == "waiting" and waiting.waiting == "awaiting_review"
        agent.run("Review that.", store=store, conversation_id="evil_done")
        done = agent.resume("evil_done", store=store, trigger="approve")
        assert done.final_state == "done" and done.path[-2:] == ["awaiting_review", "done"]
        agent.run("Review it again.", store=store, conversation_id="evil_old")
        rename(store, "evil_wait", "evil_mod:ReviewAgent")
        rename(store, "evil_done", "evil_site_mod:ReviewAgent")
        rename(store, "evil_old", "evil_mod:ReviewAgent")
    strip_graph(db, "evil_old")
    events = folder / "run.jsonl"  # an events file naming the evil module too
    write_events(waiting.events, events)
    events.write_text(events.read_text().replace(OWN, "evil_mod:ReviewAgent"))
    assert "evil_mod:ReviewAgent" in events.read_text()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != ""])  # restored after, with what agentfsm added
    monkeypatch.syspath_prepend(str(site))
    try:
        yield Project(folder, db, marker, events, url)
    finally:
        for name in ("evil_mod", "evil_site_mod"):
            sys.modules.pop(name, None)


# --- viewing: the inspector -------------------------------------------------------------------------------------


def test_the_inspector_opens_hostile_rows_importing_nothing_and_draws_their_own_graph(project: Project) -> None:
    served = serve(open_source(f"sqlite:///{project.db}"))
    try:
        for path in ("/", "/api/runs", "/?agent=evil_mod%3AReviewAgent", "/api/signature"):
            assert served.get(path)[0] == 200, path
        for run_id in ("evil_wait", "evil_done"):
            page = dom(served.html(f"/runs/{run_id}"))
            svg = page.one(has_class("agent-graph", "svg"))
            drawn = {n.attrs["data-state"] for n in svg.all(has_class("state", "g"))}
            assert drawn >= ADDED, run_id  # the run's own graph, its unvisited added state too
            undeclared = [e for e in svg.all(has_class("edge", "g")) if "undeclared" in e.classes]
            assert undeclared == [], run_id  # every step it took is a transition of the stored graph
            assert "base Agent" not in served.html(f"/runs/{run_id}")
            body = served.json(f"/api/runs/{run_id}")
            assert body["graph"]["own"] is True and body["graph"]["agent"] == body["run"]["agent"]
            for step in range(1, len(body["steps"]) + 1):
                assert served.json(f"/api/runs/{run_id}/steps/{step}")["step"] == step
                assert served.get(f"/runs/{run_id}?step={step}&graph=path")[0] == 200
            for graph in ("graph.svg", "graph.svg?graph=path", "graph.mmd", "graph.dot", "graph.mmd?step=1"):
                assert served.get(f"/api/runs/{run_id}/{graph}")[0] == 200, (run_id, graph)
            mermaid = served.get(f"/api/runs/{run_id}/graph.mmd")[2].decode()
            assert 'title: "ReviewAgent (' in mermaid and "awaiting_review --> rejected: reject" in mermaid
        visited, current, _ = graph_state(dom(served.html("/runs/evil_wait")))
        assert current == {"awaiting_review"} and "rejected" not in visited
    finally:
        served.stop()
    assert project.imported() is None


def test_an_old_row_without_its_graph_is_drawn_on_the_base_graph_importing_nothing(project: Project) -> None:
    served = serve(open_source(f"sqlite:///{project.db}"))
    try:
        page = served.html("/runs/evil_old")
        note = dom(page).all(lambda n: n.tag == "p" and "base Agent" in n.text())
        assert len(note) == 1 and "its row holds none" in note[0].text()
        assert "never imports a run's code" in note[0].text()
        svg = dom(page).one(has_class("agent-graph", "svg"))
        drawn = {n.attrs["data-state"] for n in svg.all(has_class("state", "g"))}
        assert "awaiting_review" in drawn and "rejected" not in drawn  # the path's own steps, dashed; no more
        body = served.json("/api/runs/evil_old")
        assert body["graph"] == body["graph"] | {"agent": "agentfsm.agent:Agent", "own": False}
        assert served.get("/api/runs/evil_old/graph.dot")[0] == 200
    finally:
        served.stop()
    assert project.imported() is None


def test_an_events_file_naming_the_module_is_shown_importing_nothing(project: Project) -> None:
    served = serve(open_source(events=project.events))
    try:
        (run,) = served.json("/api/runs")["runs"]
        assert run["agent"] == "evil_mod:ReviewAgent"
        page = served.html(run["url"])
        assert "an events file records no graph" in page
        assert served.get(f"/api/runs/{run['id']}/graph.svg")[0] == 200
    finally:
        served.stop()
    assert project.imported() is None


# --- viewing: the command line ------------------------------------------------------------------------------------


def test_runs_list_show_and_graph_import_nothing(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", "runs.db"]  # named as a user in the folder names it
    assert main(["runs", "list", *store]) == 0
    assert "evil_mod:ReviewAgent" in capsys.readouterr().out
    for run_id in ("evil_wait", "evil_done", "evil_old"):
        assert main(["runs", "show", run_id, *store]) == 0
        assert main(["runs", "show", run_id, "--json", *store]) == 0
    out = capsys.readouterr().out
    assert "waiting for  : approve | reject  (agentfsm runs decide evil_wait TRIGGER --agent MODULE:Class" in out
    assert main(["runs", "graph", "evil_wait", *store]) == 0
    shown = capsys.readouterr()
    assert shown.err == "" and 'title: "ReviewAgent (at awaiting_review)"' in shown.out
    assert "awaiting_review --> rejected: reject" in shown.out and "class awaiting_review current" in shown.out
    assert main(["runs", "graph", "evil_done", "--format", "dot", *store]) == 0
    assert '"awaiting_review" -> "done" [label="approve ×1"' in capsys.readouterr().out
    assert main(["runs", "graph", "evil_old", *store]) == 0  # no stored graph: the base one, said so
    old = capsys.readouterr()
    assert 'title: "Agent (at awaiting_review)"' in old.out and "--> rejected" not in old.out
    assert old.err.splitlines() == [
        "agentfsm: note: drawn on the base Agent's graph: the run was stored without its graph (by an earlier "
        "agentfsm, or the stored copy is unreadable), and the class it recorded ('evil_mod:ReviewAgent') is not "
        "imported to draw it; name it with --agent MODULE:Class to draw on its graph"
    ]
    assert project.imported() is None


def test_replay_of_an_events_file_imports_nothing(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "run.jsonl"]) == 0
    shown = capsys.readouterr()
    assert 'title: "Agent (waiting)"' in shown.out or 'title: "Agent (awaiting_review)"' in shown.out
    assert "end_turn --> awaiting_review: review ×1" in shown.out  # the run's own step, on the base graph
    assert "an events file records no graph, and the class it recorded ('evil_mod:ReviewAgent')" in shown.err
    assert replay_one(project.events).graph().count("awaiting_review") >= 1  # the library: no import either
    assert project.imported() is None


def test_library_drawing_never_imports_a_name(project: Project) -> None:
    assert resolve_agent("evil_site_mod:ReviewAgent") is Agent  # importable, and not imported
    assert resolve_agent("evil_mod:ReviewAgent") is Agent
    trace = [TraceStep(source="requesting", dest="end_turn", trigger="end_turn", turn=1)]
    assert "stateDiagram-v2" in path_graph(trace, "end_turn", agent="evil_site_mod:ReviewAgent")
    assert resolve_agent(OWN) is ReviewAgent  # a class this process has imported is found by its name
    assert resolve_agent(f"{__name__}:ReviewAgent.missing") is Agent
    assert project.imported() is None


# --- naming a class: --agent ----------------------------------------------------------------------------------


def test_a_class_named_on_the_command_line_is_loaded_and_drawn(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", "runs.db"]
    assert main(["runs", "graph", "evil_wait", "--agent", "agentfsm:Agent", *store]) == 0
    base = capsys.readouterr().out
    assert 'title: "Agent (at awaiting_review)"' in base and "--> rejected" not in base
    # A dotted name is a module importable as it is: the one lying in the current directory is not found.
    assert main(["runs", "graph", "evil_wait", "--agent", "evil_mod:ReviewAgent", *store]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith(
        "agentfsm: error: no module named 'evil_mod': give a .py file path, or put its folder on PYTHONPATH (the "
        "current directory is not searched) (evil_mod.py is here: name it as evil_mod.py:Class)"
    )
    assert main(["graph", "evil_mod:ReviewAgent"]) == EXIT_ERROR and "no module named 'evil_mod'" in (
        capsys.readouterr().err
    )
    assert project.imported() is None
    # Named by its file, it is the operator's choice: imported, and drawn on.
    assert main(["runs", "graph", "evil_wait", "--agent", "evil_mod.py:ReviewAgent", *store]) == 0
    assert 'title: "ReviewAgent (at awaiting_review)"' in capsys.readouterr().out
    assert project.imported() == "imported evil_mod"


# --- deciding runs code: the operator names it ----------------------------------------------------------------


def test_deciding_needs_the_class_named_and_never_loads_the_rows(
    project: Project, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", project.url)  # the real API client, pointed at the simulator
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    before = SQLiteStore(project.db).load("evil_wait")
    assert main(["runs", "decide", "evil_wait", "approve", "--store", "runs.db"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == (
        "agentfsm: error: deciding conversation 'evil_wait' runs its agent's hooks, actions and tools: name the Agent "
        "class that carries it on with --agent MODULE:Class (agent_spec= in code); the run recorded "
        "'evil_mod:ReviewAgent', which is not imported for you (a stored row is data)\n"
    )
    with SQLiteStore(project.db) as store:
        with pytest.raises(ConfigurationError, match="the run recorded 'evil_mod:ReviewAgent'"):
            decide_run(store, "evil_wait", "approve", client=real_client(project.url))
        with pytest.raises(ConfigurationError, match="--allow-decisions runs the decided runs' hooks"):
            decider_for(store, [], None)
        assert store.load("evil_wait") == before
    assert project.imported() is None and len(sim[0].requests) == 3  # the three runs' own: no decision went out

    # Named: the run goes on with that class, over HTTP, and still nothing of the row's is imported.
    decide = ["runs", "decide", "evil_wait", "reject", "--agent", OWN, "--store", "runs.db", "--json"]
    assert main(decide) == EXIT_NOT_DONE  # rejected: a final state other than done
    assert '"final_state": "rejected"' in capsys.readouterr().out
    with SQLiteStore(project.db) as store:
        assert store.load("evil_wait").state == "rejected"
        decided = decide_run(store, "evil_old", "approve", agent_spec=OWN, client=real_client(project.url))
        assert decided.final_state == "done"
    assert project.imported() is None


def test_the_inspector_decides_with_the_classes_it_was_given(
    project: Project, sim: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", project.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with SQLiteStore(project.db) as store:
        # One class named: it decides every run (the row's name differs: a module renamed since, say).
        decide = decider_for(store, [OWN], None)
        outcome: Any = decide("evil_wait", "approve", None)
        assert outcome.final_state == "done" and store.load("evil_wait").state == "done"
        # Several named, none the run's: refused, saying so; nothing runs.
        several = decider_for(store, [OWN, "agentfsm:Agent"], None)
        with pytest.raises(ConfigurationError, match="recorded the class 'evil_mod:ReviewAgent', and this inspec"):
            several("evil_old", "approve", None)
        assert store.load("evil_old").waiting == "awaiting_review"
    assert project.imported() is None


# --- a stored graph is data ------------------------------------------------------------------------------------


@pytest.mark.slow  # hostile and oversized graphs, drawn
def test_a_stored_graph_is_data(project: Project) -> None:
    hostile = {
        "states": ["requesting", "end_turn", "done", '<script>alert("x")</script>'],
        "transitions": [
            {"source": "requesting", "trigger": "end_turn", "dest": "end_turn"},
            {"source": "end_turn", "trigger": "review", "dest": "awaiting_review", "guards": ["a</text><script>"]},
            {"source": "nowhere", "trigger": "x", "dest": '<script>alert("x")</script>'},  # ends not in states
        ],
        "waits": ["awaiting_review"],
    }
    set_graph(project.db, "evil_wait", hostile)
    chain = {  # a chain as long as the recursion limit would allow, bounded by MAX_GRAPH_STATES
        "states": [f"s{i}" for i in range(999)],
        "transitions": [{"source": f"s{i}", "trigger": "next", "dest": f"s{i + 1}"} for i in range(998)],
    }
    set_graph(project.db, "evil_done", chain)
    set_graph(project.db, "evil_old", {"states": [f"s{i}" for i in range(5000)], "transitions": []})  # too big
    served = serve(open_source(f"sqlite:///{project.db}"))
    try:
        page = served.html("/runs/evil_wait")
        assert "<script" not in page.replace('<script src="/static/', "")
        svg = served.get("/api/runs/evil_wait/graph.svg")[2].decode()
        assert "<script" not in svg and "&lt;script&gt;" in svg
        assert served.json("/api/runs/evil_wait")["graph"]["own"] is True
        assert served.get("/api/runs/evil_done/graph.svg")[0] == 200  # 999 states in a row
        assert "its row holds none" in served.html("/runs/evil_old")  # read as no graph: the row stays readable
    finally:
        served.stop()
    assert SQLiteStore(project.db).load("evil_old").graph is None
    assert project.imported() is None


@pytest.mark.slow  # a 1,500-state graph laid out
def test_a_trace_longer_than_the_recursion_limit_draws(project: Project) -> None:
    """The inspector's layout walks the graph with a stack of its own: 1,500 states visited in a row draw."""
    with closing(sqlite3.connect(project.db)) as conn, conn:
        (raw,) = conn.execute("SELECT snapshot FROM agentfsm_conversations WHERE id = 'evil_done'").fetchone()
        data = json.loads(raw)
        data["trace"] = [{"source": f"s{i}", "dest": f"s{i + 1}", "trigger": "next", "turn": 1} for i in range(1500)]
        data["state"] = "s1500"
        conn.execute("UPDATE agentfsm_conversations SET snapshot = ? WHERE id = 'evil_done'", (json.dumps(data),))
    served = serve(open_source(f"sqlite:///{project.db}"))
    try:
        assert served.get("/api/runs/evil_done/graph.svg")[0] == 200
        assert served.get("/runs/evil_done")[0] == 200
    finally:
        served.stop()


# --- the installed command, in a process of its own --------------------------------------------------------------


def installed_command() -> str:
    found = shutil.which("agentfsm", path=str(Path(sys.executable).parent))
    assert found is not None, "the agentfsm command is not installed beside this Python (pip install -e .)"
    return found


@pytest.mark.slow  # subprocesses
def test_the_installed_command_opens_the_stranger_folder_importing_nothing(project: Project) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AGENTFSM_", "PYTHON"))}
    proc = subprocess.Popen(
        [installed_command(), "ui", "--store", "runs.db", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=project.folder,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("agentfsm ui: serving the runs in runs.db at http://localhost:"), line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        for path in (
            "/",
            "/runs/evil_wait",
            "/runs/evil_old",
            "/api/runs/evil_wait",
            "/api/runs/evil_wait/graph.svg",
            "/api/runs/evil_wait/graph.mmd?step=1",
            "/api/runs/evil_wait/steps/1",
        ):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode()
            conn.close()
            assert response.status == 200, (path, body[:500])
            if path == "/api/runs/evil_wait/graph.mmd?step=1":
                assert "awaiting_review --> rejected: reject" in body
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and err == "", err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert project.imported() is None
    # `python -m agentfsm` puts the current directory on the path; the command takes it off again.
    for command in ([sys.executable, "-m", "agentfsm"], [sys.executable, "-m", "agentfsm.cli"], [installed_command()]):
        for argv in (["runs", "graph", "evil_wait", "--store", "runs.db"], ["replay", "run.jsonl"]):
            done = subprocess.run([*command, *argv], cwd=project.folder, env=env, capture_output=True, text=True)
            assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        named = [*command, "runs", "graph", "evil_wait", "--store", "runs.db", "--agent", "evil_mod:ReviewAgent"]
        refused = subprocess.run(named, cwd=project.folder, env=env, capture_output=True, text=True)
        assert refused.returncode == EXIT_ERROR and "no module named 'evil_mod'" in refused.stderr, refused.stderr
    assert project.imported() is None


def test_the_stored_graph_is_the_classs_table_as_data_worked_out_once(sim: tuple[Simulator, str]) -> None:
    """Every save stores the graph; it is derived once per Agent class (cached), not rebuilt at each save."""
    from agentfsm.machine.state import StoredGraph

    _, url = sim
    table = ReviewAgent.table()
    graph = StoredGraph.of(table)
    assert StoredGraph.of(ReviewAgent.table()) is graph  # the same object: computed once for the class
    assert graph.states == list(table.states) and set(graph.waits) == {"awaiting_review", "awaiting_tool_approval"}
    assert set(graph.terminal) == set(table.terminal) and "rejected" in graph.terminal
    edges = {(e.source, e.trigger, e.dest): e for e in graph.transitions}
    assert len(graph.transitions) == len(table.transitions)
    approve = edges[("awaiting_review", "approve", "done")]
    assert approve.action is not None and approve.action.endswith("keep_reply")
    guarded = [e for e in graph.transitions if e.guards]
    assert guarded and all(e.condition == " and ".join(e.guards) for e in guarded)  # labels, as the graph shows them
    with SQLiteStore(":memory:") as store:
        ReviewAgent(client=real_client(url), logger=None).run("Review.", store=store, conversation_id="c")
        stored = store.load("c").graph
    assert stored == graph  # saved with the snapshot, and read back as the same data


# --- item 8: what is kept on purpose ---------------------------------------------------------------------------


def test_a_credential_the_model_repeats_is_kept_as_sent_and_runs_show_hides_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stored history is what a resume sends next, so it is kept as sent — a credential the model repeats
    included (docs/06 "What is kept on purpose"); the inspector serves it redacted, and `runs show` prints none
    the environment holds."""
    said = f"Your key is {KEY}, and the other one is sk-ant-api03-{'x' * 40}."
    simulator = Simulator([r.text(said)])
    db = tmp_path / "kept.db"
    with simulator.serve() as url, SQLiteStore(db) as store:
        agent = Agent(client=real_client(url), logger=None)
        agent.run("What is my key?", store=store, conversation_id="kept")
        stored = store.load("kept")
        assert stored.messages[-1]["content"][0]["text"] == said  # as the model said it
        served = serve(open_source(f"sqlite:///{db}"))
        try:
            last = len(served.json("/api/runs/kept")["steps"])
            shown = served.json(f"/api/runs/kept/steps/{last}")["messages"][-1]["content"][0]["text"]
            assert shown == "Your key is [REDACTED], and the other one is [REDACTED]."  # redacted as it is served
        finally:
            served.stop()
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    assert main(["runs", "show", "kept", "--store", str(db)]) == 0
    assert main(["runs", "show", "kept", "--json", "--store", str(db)]) == 0
    printed = capsys.readouterr().out
    assert KEY not in printed and "Your key is" in printed
