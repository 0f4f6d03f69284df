"""The command line: run, graph, replay, diagrams, the live view, and one-line errors with their exit codes."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentfsm import Agent, Policy, tool
from agentfsm.cli import EXIT_ERROR, EXIT_NOT_DONE, EXIT_USAGE, main
from agentfsm.demo import WeatherAgent, run_demo
from agentfsm.observe import graph as g
from agentfsm.observe.live import LiveView
from agentfsm.observe.replay import replay_one
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r

ROOT = Path(__file__).resolve().parent.parent
WEATHER_FILE = str(ROOT / "examples" / "weather_agent.py")
needs_dot = pytest.mark.skipif(
    g.shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz): SVG/PNG skipped"
)


@pytest.fixture
def refusal_script(tmp_path: Path) -> str:
    path = tmp_path / "refusal.json"
    path.write_text(json.dumps([{"type": "refusal", "category": "cyber", "explanation": "No."}]))
    return str(path)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentfsm: error: "), err
    return lines[0]


# --- graph ----------------------------------------------------------------------------------------------


def test_graph_prints_mermaid_for_a_module_class_or_a_file_class(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "agentfsm.demo:WeatherAgent"]) == 0
    assert capsys.readouterr().out == WeatherAgent.graph()
    assert main(["graph", f"{WEATHER_FILE}:WeatherAgent", "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith('digraph "WeatherAgent" {')


def test_graph_writes_the_format_its_file_name_asks_for(tmp_path: Path) -> None:
    assert main(["graph", "agentfsm:Agent", "-o", str(tmp_path / "a.mmd")]) == 0
    assert (tmp_path / "a.mmd").read_text() == Agent.graph()
    assert main(["graph", "agentfsm:Agent", "-o", str(tmp_path / "a.gv")]) == 0
    assert (tmp_path / "a.gv").read_text() == Agent.graph(format="dot")


@pytest.mark.slow  # Graphviz's dot
@needs_dot
def test_graph_renders_svg_and_png(tmp_path: Path) -> None:
    assert main(["graph", "agentfsm:Agent", "-o", str(tmp_path / "a.svg")]) == 0
    assert "<svg" in (tmp_path / "a.svg").read_text()
    assert main(["graph", "agentfsm:Agent", "--format", "png", "-o", str(tmp_path / "a.out")]) == 0
    assert (tmp_path / "a.out").read_bytes().startswith(b"\x89PNG")


# --- errors: one line, non-zero ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["graph", "no_such_module_xyz:Agent"], "no module named 'no_such_module_xyz'"),
        (["graph", "agentfsm.demo:NoSuchAgent"], "has no 'NoSuchAgent' (Agent classes defined there: WeatherAgent)"),
        (["graph", "agentfsm.demo:run_demo"], "is a function, not an agentfsm.Agent subclass"),
        (["graph", "agentfsm.demo"], "names no class: write MODULE:NAME"),
        (["graph", "examples/no_such_file.py:X"], "no such Python file"),
        (["run", "agentfsm.demo:WeatherAgent", "hi", "--sim", "no_such.json"], "no such simulator script"),
        (["replay", "no_such_events.jsonl"], "no_such_events.jsonl: no such file"),
    ],
)
def test_errors_are_one_line_with_exit_1(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_ERROR
    assert needle in one_line_error(capsys)


def test_a_module_that_fails_to_import_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken_agent.py"
    bad.write_text("import no_such_dependency_xyz\n")
    assert main(["graph", f"{bad}:Agent"]) == EXIT_ERROR
    assert "importing" in one_line_error(capsys) and "no_such_dependency_xyz" in bad.read_text()


def test_a_malformed_events_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text('{"event": "run.started", "conversation_id": "c", "turn": 0, "state": "requesting"}\n{oops\n')
    assert main(["replay", str(path)]) == EXIT_ERROR
    assert f"{path} line 2: not a JSON line" in one_line_error(capsys)


def test_missing_graphviz_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(g.shutil, "which", lambda name: None)
    assert main(["graph", "agentfsm:Agent", "--format", "svg"]) == EXIT_ERROR
    assert "install the system package `graphviz`" in one_line_error(capsys)


def test_missing_api_key_for_the_real_api_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    assert main(["run", "agentfsm.demo:WeatherAgent", "Weather?"]) == EXIT_ERROR
    line = one_line_error(capsys)
    assert "no Anthropic API key: set ANTHROPIC_API_KEY" in line and "--sim SCRIPT" in line


def test_usage_errors_are_one_line_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph"]) == EXIT_USAGE
    assert "required: MODULE:AgentClass" in one_line_error(capsys)
    assert main(["graph", "agentfsm:Agent", "--format", "gif"]) == EXIT_USAGE
    one_line_error(capsys)
    assert main(["--help"]) == 0


@pytest.mark.slow  # a subprocess
@pytest.mark.parametrize(
    "argv",
    [
        ["graph", "no_such_module_xyz:Agent"],
        ["replay", "missing.jsonl"],
        ["run", "agentfsm.demo:WeatherAgent", "hi"],
        ["frobnicate"],
    ],
)
def test_no_traceback_from_the_installed_command(argv: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "agentfsm.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode in (EXIT_ERROR, EXIT_USAGE), proc
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --- run, demo, replay -----------------------------------------------------------------------------------


def test_run_on_a_json_script_with_events_and_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                {"type": "tool_use", "name": "get_weather", "input": {"location": "Hanoi"}},
                {"type": "max_tokens", "text": "It is 31°C in Hanoi"},
                {"type": "text", "text": " and humid."},
            ]
        )
    )
    events, graph = tmp_path / "run.jsonl", tmp_path / "run.mmd"
    argv = [f"{WEATHER_FILE}:WeatherAgent", "Weather in Hanoi?", "--sim", str(script)]
    assert main(["run", *argv, "--events", str(events), "--graph", str(graph)]) == 0
    out = capsys.readouterr().out
    assert "answer      : It is 31°C in Hanoi and humid." in out
    assert "  turn  1      requesting --tool_use--> tool_use" in out
    replayed = replay_one(events)
    assert replayed.final_state == "done" and replayed.path[:3] == ["requesting", "tool_use", "requesting"]
    assert "class done current" in graph.read_text()

    assert main(["replay", str(events), "--graph", "-"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("---\ntitle:") and "class done current" in printed.out
    assert "path taken" in printed.err  # the trace goes to stderr when the graph takes stdout


def test_run_with_a_python_script_and_a_run_that_does_not_finish_done(
    refusal_script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "agentfsm.demo:WeatherAgent", "Weather?", "--sim", "agentfsm.demo:demo_script"]) == 0
    assert "final state : done (end_turn)" in capsys.readouterr().out
    assert main(["run", "agentfsm.demo:WeatherAgent", "x", "--sim", refusal_script]) == EXIT_NOT_DONE
    assert "final state : refused" in capsys.readouterr().out


def test_run_with_json_prints_events_as_json_lines(refusal_script: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "agentfsm.demo:WeatherAgent", "x", "--sim", refusal_script, "--json"]) == 3
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "run.started" and lines[-1]["final_state"] == "refused"


def test_demo_events_replay_to_the_demo_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "demo.jsonl"
    assert main(["demo", "--events", str(events)]) == 0
    expected, _ = run_demo()
    replayed = replay_one(events)
    assert [(s.source, s.trigger, s.dest, s.turn) for s in replayed.trace] == [
        (s.source, s.trigger, s.dest, s.turn) for s in expected.trace
    ]
    capsys.readouterr()
    assert main(["replay", str(events)]) == 0
    out = capsys.readouterr().out
    assert "done (end_turn), 6 requests, 12 transitions" in out  # continued by prompt: no prefill 400 on the way
    assert "tool_use → requesting ×2" in out and "--retry_larger--> requesting" in out


def test_demo_json_output_replays_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json"]) == 0
    path = tmp_path / "demo.jsonl"
    path.write_text(capsys.readouterr().out)
    assert replay_one(path).final_state == "done"


def test_replay_of_several_conversations(
    tmp_path: Path, refusal_script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "two.jsonl"
    assert main(["demo", "--json"]) == 0
    first = capsys.readouterr().out
    assert main(["run", "agentfsm.demo:WeatherAgent", "x", "--sim", refusal_script, "--json"]) == 3
    path.write_text(first + capsys.readouterr().out)
    assert main(["replay", str(path)]) == 0
    assert capsys.readouterr().out.count("conversation conv_") == 2
    assert main(["replay", str(path), "--graph", str(tmp_path / "g.mmd")]) == EXIT_ERROR
    assert "pick one with --conversation ID" in one_line_error(capsys)
    cid = replay_one(path.read_text().splitlines()[-3:]).conversation_id
    assert main(["replay", str(path), "--conversation", cid, "--graph", str(tmp_path / "g.dot")]) == 0
    assert '"refused" [peripheries="2", style="rounded,filled", fillcolor="#ffd166"' in (tmp_path / "g.dot").read_text()


# --- the live view ---------------------------------------------------------------------------------------

SNAPSHOTS: list[str] = []
STREAM = io.StringIO()


@tool
def slow_lookup(city: str) -> str:
    """Look a city up (and snapshot the terminal while running)."""
    SNAPSHOTS.append(STREAM.getvalue())
    return f"{city}: 31°C"


class Looker(Agent):
    model = "claude-haiku-4-5"
    tools = [slow_lookup]
    policy = Policy(max_turns=5)


def test_the_live_view_shows_state_turn_tokens_running_tools_and_the_path() -> None:
    SNAPSHOTS.clear()
    STREAM.seek(0)
    STREAM.truncate()
    view = LiveView(STREAM, tty=True, colors=False)
    sim = Simulator([r.tool_uses([("slow_lookup", {"city": "Hanoi"}), ("slow_lookup", {"city": "Hue"})]), r.text("ok")])
    result = Looker(client=sim.client(), logger=view.logger()).run("Weather?")
    assert result.final_state == "done"
    # While the tools ran, the status line (the last line on screen) said so.
    status = SNAPSHOTS[0].rsplit("\r\x1b[2K", 1)[-1]
    assert status.startswith("● tool_use │ turn 1 │ tokens ") and status.endswith("running slow_lookup ×2")
    first = next(e for e in result.events if e.event == "response.received").data["usage"]
    assert f"tokens {first['input_tokens']:,} in / {first['output_tokens']:,} out" in status
    screen = STREAM.getvalue()
    assert "path taken  :" in screen and "  turn  1      requesting --tool_use--> tool_use" in screen
    assert "edges taken : requesting → tool_use ×1 · tool_use → requesting ×1" in screen
    assert "final state : done (end_turn)" in screen
    assert view.runs[result.conversation_id].input_tokens == result.usage.input_tokens
    assert view.runs[result.conversation_id].output_tokens == result.usage.output_tokens


def test_the_live_view_on_a_pipe_has_no_control_codes() -> None:
    out = io.StringIO()
    view = LiveView(out)  # StringIO is not a terminal
    sim = Simulator([r.text("hello")])
    Agent(client=sim.client(), logger=view.logger()).run("hi")
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert "   1  end_turn         transition             requesting --end_turn--> end_turn" in text
    assert "final state : done (end_turn)" in text


def test_demo_shows_the_live_view(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "ladder.climbed" in out and "pause.resumed" in out
    assert "final state : done (end_turn)" in out and "edges taken :" in out
    assert "usage       : " in out and "answer      : Hanoi is at 31°C" in out


# --- diagrams --------------------------------------------------------------------------------------------


def test_diagrams_check_reports_missing_and_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    assert main(["diagrams", "--out", str(out), "agentfsm:Agent", "--check"]) == EXIT_ERROR
    assert "Agent.mmd (differs from the code)" in one_line_error(capsys)
    out.mkdir()
    monkey_svg = out / "Agent.svg"
    dot = Agent.graph(format="dot")
    (out / "Agent.mmd").write_text(Agent.graph())
    (out / "Agent.dot").write_text(dot)
    monkey_svg.write_text(f"<!-- {g.SOURCE_MARK}: {g.source_digest(dot)} -->\n<svg></svg>\n")
    (out / "Old.mmd").write_text("stale")
    assert main(["diagrams", "--out", str(out), "agentfsm:Agent", "--check"]) == EXIT_ERROR
    line = one_line_error(capsys)
    assert "README.md (differs" in line and "Old.mmd (no target makes it)" in line and "Agent.svg" not in line
    monkey_svg.write_text(f"<!-- {g.SOURCE_MARK}: {'0' * 64} -->\n<svg></svg>\n")
    assert main(["diagrams", "--out", str(out), "agentfsm:Agent", "--check"]) == EXIT_ERROR
    assert "Agent.svg (not rendered from the current Agent.dot)" in one_line_error(capsys)


@pytest.mark.slow  # Graphviz's dot
@needs_dot
def test_diagrams_writes_then_checks_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    targets = ["agentfsm:Agent", WEATHER_FILE, "agentfsm.demo:run_demo"]
    assert main(["diagrams", "--out", str(out), *targets]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", *(f"{n}.{s}" for n in ("Agent", "WeatherAgent", "run_demo") for s in ("mmd", "dot", "svg"))]
    )
    assert main(["diagrams", "--out", str(out), *targets, "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert "class done current" in (out / "run_demo.mmd").read_text()


def test_replay_draws_the_path_as_mermaid_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "demo.jsonl"
    assert main(["demo", "--events", str(events)]) == 0
    capsys.readouterr()
    assert main(["replay", str(events)]) == 0
    shown = capsys.readouterr()
    # An events file records no graph, and the class it names (the demo's WeatherAgent) is not imported to draw
    # one: the base Agent's graph, said so on stderr in one line.
    assert 'graph (mermaid) :\n---\ntitle: "Agent (done)"\n---\nstateDiagram-v2\n' in shown.out
    assert "tool_use --> requesting: run_tools [reply has client tool_use blocks] ×2" in shown.out
    assert shown.err.splitlines() == [
        "agentfsm: note: drawn on the base Agent's graph: an events file records no graph, and the class it recorded "
        "('agentfsm.demo:WeatherAgent') is not imported to draw it; name it with --agent MODULE:Class to draw on its "
        "graph"
    ]
    assert main(["replay", str(events), "--format", "svg"]) == EXIT_ERROR
    assert "write it to a file with --graph FILE.svg" in one_line_error(capsys)
    assert main(["replay", str(events), "--agent", "agentfsm.demo:WeatherAgent", "--format", "dot"]) == 0
    named = capsys.readouterr()  # the class named on the command line is loaded, and drawn on
    assert 'digraph "WeatherAgent (done)"' in named.out and named.err == ""


# --- run and demo --store: a run the command line can look at, and decide, later ---------------------------


def test_run_with_a_store_is_seen_later_with_runs_show(
    refusal_script: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "new" / "runs.db"
    db.parent.mkdir()
    argv = ["run", "agentfsm.demo:WeatherAgent", "Weather?", "--sim", "agentfsm.demo:demo_script", "--store", str(db)]
    assert main(argv) == 0  # the store file is made
    out = capsys.readouterr().out
    run_id = out.split("stored      : ", 1)[1].split()[0]
    assert f"stored      : {run_id} (agentfsm runs show {run_id} --store {db})" in out
    assert main(["runs", "show", run_id, "--store", str(db)]) == 0
    shown = capsys.readouterr().out
    assert "agent        : agentfsm.demo:WeatherAgent" in shown and "state        : done (end_turn)" in shown

    named = ["run", "agentfsm.demo:WeatherAgent", "x", "--sim", refusal_script, "--store", f"sqlite:///{db}"]
    assert main([*named, "--id", "refused-1", "--json"]) == EXIT_NOT_DONE  # a URL names the store too
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # --json: JSON lines only
    assert {line["conversation_id"] for line in lines} == {"refused-1"}
    assert main(["runs", "show", "refused-1", "--store", str(db)]) == 0
    assert "state        : refused" in capsys.readouterr().out

    assert main([*named, "--id", "refused-1"]) == EXIT_ERROR  # an id the store holds: refused before running
    assert one_line_error(capsys) == (
        f"agentfsm: error: conversation 'refused-1' is already in sqlite:///{db}: pick another --id, or see it "
        f"with agentfsm runs show refused-1 --store sqlite:///{db}"
    )
    assert main(["runs", "list", "--store", str(db)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # the header and two runs: nothing was overwritten


def test_demo_with_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "demo.db")
    assert main(["demo", "--store", db, "--id", "demo-1"]) == 0
    assert "stored      : demo-1 (agentfsm runs show demo-1 --store " in capsys.readouterr().out
    assert main(["runs", "show", "demo-1", "--store", db]) == 0
    shown = capsys.readouterr().out
    assert "state        : done (end_turn)" in shown and "requesting --pause_turn--> pause_turn" in shown
    expected, _ = run_demo()
    assert main(["runs", "show", "demo-1", "--store", db, "--json"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert [(s["source"], s["trigger"], s["dest"]) for s in snap["trace"]] == [
        (s.source, s.trigger, s.dest) for s in expected.trace
    ]
    assert main(["demo", "--store", db, "--id", "demo-1"]) == EXIT_ERROR
    assert "conversation 'demo-1' is already in" in one_line_error(capsys)


# --- --version -----------------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess
def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"agentfsm {importlib.metadata.version('agentfsm')}\n" and captured.err == ""
    proc = subprocess.run(
        [sys.executable, "-m", "agentfsm.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == captured.out


# --- sim serve --script ----------------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess
def test_sim_serve_answers_from_a_script_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker on the command line, tried with tool calls: ``agentfsm run`` (the real API's code path,
    pointed by ANTHROPIC_BASE_URL) against ``agentfsm sim serve --script`` in another process."""
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                {"type": "tool_use", "name": "get_weather", "input": {"location": "Hanoi"}},
                {"type": "text", "text": "Hanoi is at 31°C."},
            ]
        )
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "agentfsm.cli", "sim", "serve", "--script", str(script), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()  # said once the socket listens
        assert ready.startswith("agentfsm simulator on http://127.0.0.1:") and f"the script {script}" in ready, ready
        url = ready.split()[3]
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-sim-0000")
        assert main(["run", "agentfsm.demo:WeatherAgent", "Weather in Hanoi?"]) == 0
        out = capsys.readouterr().out
        assert "tool.finished" in out and "tool=get_weather" in out and "answer      : Hanoi is at 31°C." in out
        assert main(["run", "agentfsm.demo:WeatherAgent", "Again?"]) == EXIT_NOT_DONE  # the script is used up
        assert "simulator script exhausted: 2 replies were scripted" in capsys.readouterr().out
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_sim_serve_with_a_bad_script_fails_before_serving(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "serve", "--script", str(tmp_path / "missing.json"), "--port", "0"]) == EXIT_ERROR
    assert "no such simulator script" in one_line_error(capsys)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"type": "nonsense"}]))
    assert main(["sim", "serve", "--script", str(bad), "--port", "0"]) == EXIT_ERROR
    assert "item 0: 'type' must be one of" in one_line_error(capsys)


# --- the examples, run as a reader runs them -------------------------------------------------------------------

#: Runs example scripts as ``python examples/NAME.py [ARGS]`` does (``__name__ == "__main__"``), one after the
#: other in one process (starting Python and importing the SDK is most of each run's time): prints one JSON line
#: per script with its exit code and the last line it printed.
RUN_SCRIPTS = """
import contextlib, io, json, os, runpy, sys
for path, args, env in json.loads(sys.argv[1]):
    saved = dict(os.environ)
    os.environ.update(env)
    sys.argv = [path, *args]
    out, code = io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    lines = out.getvalue().strip().splitlines()
    print(json.dumps({"script": path, "args": args, "code": code, "last": lines[-1] if lines else ""}), flush=True)
"""


@pytest.mark.slow  # subprocesses
def test_the_examples_run_as_scripts_with_no_key_and_exit_non_zero_when_not_done(tmp_path: Path) -> None:
    """Each example on the simulator exits 0 and says last how its run ended; one whose run ends otherwise
    (``--real`` sent, by ANTHROPIC_BASE_URL, to a simulator that refuses) exits 1."""
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*.py"))
    sim = Simulator([r.refusal(explanation="No.")])
    with sim.serve() as url:
        refusing = {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "sk-ant-sim-0000"}
        runs = [(path, [], {}) for path in examples] + [(WEATHER_FILE, ["--real"], refusing)]
        proc = subprocess.run(
            [sys.executable, "-c", RUN_SCRIPTS, json.dumps(runs)],
            input="y\n",  # approval_terminal asks at the terminal
            capture_output=True,
            text=True,
            timeout=600,
            env={k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")},
            cwd=tmp_path,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(o["script"], o["args"]) for o in outcomes] == [(path, args) for path, args, _ in runs], proc.stderr
    for o in outcomes[:-1]:
        assert (o["code"], o["last"]) == (0, "done (end_turn)"), o
    refused = outcomes[-1]
    assert refused["code"] == 1 and refused["last"].startswith("refused ("), refused
    assert len(sim.requests) == 1
