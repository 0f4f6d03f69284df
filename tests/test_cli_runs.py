"""``agentfsm runs list|show|graph|decide``: stored conversations from the command line, and deciding a waiting one."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import scenario as sc
from waits_worker import ApprovalAgent

from agentfsm import (
    Agent,
    AgentfsmError,
    ConfigurationError,
    Conversation,
    ConversationLockedError,
    InvalidTransitionError,
    Policy,
    RunResult,
    StaleConversationError,
    UnknownConversationError,
    Wait,
    tool,
)
from agentfsm.cli import EXIT_ERROR, EXIT_NOT_DONE, EXIT_USAGE, main
from agentfsm.cli.runs import call_signature, decide_run
from agentfsm.demo import WeatherAgent
from agentfsm.observe import graph as g
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import RunSummary, Snapshot
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.tools.approval import DEFAULT_DENIAL
from agentfsm.tools.calls import ToolCall


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding a finished conversation and one that crashed while its tools ran."""
    path = tmp_path_factory.mktemp("runs") / "agentfsm.db"
    store = SQLiteStore(path)
    sc.agent().run(sc.PROMPT, store=store, conversation_id="conv_done")
    sc.RAISE_ON.update("bc")  # both calls of the parallel reply die: neither result is committed
    try:
        with pytest.raises(KeyboardInterrupt):
            sc.agent().run(sc.PROMPT, store=store, conversation_id="conv_crashed")
    finally:
        sc.RAISE_ON.clear()
        sc.CALLS.clear()
    store.close()
    return str(path)


#: The class the waiting runs below are of, as an operator names it to decide one (``--agent``).
APPROVAL = "waits_worker:ApprovalAgent"


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentfsm: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_list_shows_one_line_per_conversation(store_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "list", "--store", store_file]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "FINISHED", "TURNS", "UPDATED", "FORKED", "AGENT"]
    done = next(line for line in lines if line.startswith("conv_done"))
    crashed = next(line for line in lines if line.startswith("conv_crashed"))
    assert done.split()[1:4] == ["done", "yes", "7"] and done.endswith("agentfsm.agent:Agent")
    assert crashed.split()[1:4] == ["tool_use", "no", "3"]
    assert len(lines) == 3


def test_list_reads_the_store_from_the_environment(
    store_file: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFSM_STORE", store_file)
    assert main(["runs", "list"]) == 0
    assert "conv_done" in capsys.readouterr().out


def test_list_of_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SQLiteStore(tmp_path / "empty.db").close()
    assert main(["runs", "list", "--store", str(tmp_path / "empty.db")]) == 0
    assert capsys.readouterr().out.strip() == f"no conversations in {tmp_path / 'empty.db'}"


def test_show_describes_a_finished_conversation(store_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "show", "conv_done", "--store", store_file]) == 0
    out = capsys.readouterr().out
    assert "conversation : conv_done" in out and "state        : done (end_turn)" in out
    assert "turns        : 7 (continuations 3, pause resumes 1" in out
    assert 'tool_use count({"label": "b"})' in out and "tool_result [" in out and '"counted b"' in out
    assert "requesting --pause_turn--> pause_turn" in out and "end_turn --finish--> done" in out
    messages = SQLiteStore(store_file).load("conv_done").messages
    assert len(re.findall(r"^  \[\d+\] (user|assistant): ", out, re.M)) == len(messages)  # one line per message


def test_show_of_a_crashed_conversation_names_its_running_tools(
    store_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "show", "conv_cr", "--store", store_file]) == 0  # the start of an id is enough
    out = capsys.readouterr().out
    assert "conversation : conv_crashed" in out and "at tool_use (unfinished" in out
    assert "tool calls   : 0 committed, 2 running at the last save" in out


def test_show_json_is_the_stored_snapshot(store_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "show", "conv_done", "--store", store_file, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    stored = SQLiteStore(store_file).load("conv_done")
    assert shown == json.loads(stored.model_dump_json())
    assert shown["schema_version"] == 1 and shown["state"] == "done"


def test_graph_draws_the_path_taken(store_file: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    snap = SQLiteStore(store_file).load("conv_done")
    assert main(["runs", "graph", "conv_done", "--store", store_file]) == 0
    assert capsys.readouterr().out == g.path_graph(snap.trace, "done", agent=snap.agent)
    assert main(["runs", "graph", "conv_done", "--store", store_file, "-o", str(tmp_path / "path.dot")]) == 0
    assert (tmp_path / "path.dot").read_text() == g.path_graph(snap.trace, "done", "dot", agent=snap.agent)
    assert main(["runs", "graph", "conv_crashed", "--store", store_file, "--format", "dot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "Agent (at tool_use)"')
    assert main(["runs", "graph", "conv_done", "--store", store_file, "--agent", "agentfsm.demo:WeatherAgent"]) == 0
    assert 'title: "WeatherAgent (done)"' in capsys.readouterr().out and WeatherAgent.table()


def test_an_unknown_id_is_a_one_line_error(store_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "show", "nope", "--store", store_file]) == EXIT_ERROR
    assert "no conversation 'nope' in" in one_line_error(capsys)
    assert main(["runs", "graph", "conv", "--store", store_file]) == EXIT_ERROR  # begins both ids
    assert "'conv' begins 2 conversations" in one_line_error(capsys)


def test_a_missing_store_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.db"
    assert main(["runs", "list", "--store", str(missing)]) == EXIT_ERROR
    assert f"no agentfsm store at {missing}" in one_line_error(capsys)
    assert not missing.exists()  # reading never creates a store
    assert main(["runs", "list", "--store", f"sqlite:///{missing}"]) == EXIT_ERROR  # a URL names it too
    assert "name a store with --store PATH or $AGENTFSM_STORE" in one_line_error(capsys)
    assert main(["runs", "list", "--store", "mysql://root@db/runs"]) == EXIT_ERROR
    assert "unsupported store URL" in one_line_error(capsys)


def test_a_store_can_be_named_by_a_sqlite_url(store_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "list", "--store", f"sqlite:///{store_file}"]) == 0
    assert "conv_done" in capsys.readouterr().out


def test_a_file_that_is_not_a_store_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 200)
    assert main(["runs", "list", "--store", str(notes)]) == EXIT_ERROR
    assert "not an agentfsm store" in one_line_error(capsys)


def test_a_corrupt_row_is_marked_in_list_and_a_one_line_error_in_show(
    store_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.db"
    copy.write_bytes(Path(store_file).read_bytes())
    with closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("UPDATE agentfsm_conversations SET snapshot = '{\"broken' WHERE id = 'conv_crashed'")
    assert main(["runs", "list", "--store", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "conv_crashed" in out and "cannot be read: the stored row is not valid JSON" in out
    assert main(["runs", "show", "conv_crashed", "--store", str(copy)]) == EXIT_ERROR
    assert "stored conversation 'conv_crashed' cannot be read: the stored row is not valid JSON" in one_line_error(
        capsys
    )
    assert main(["runs", "show", "conv_done", "--store", str(copy)]) == 0  # the other one is unaffected


# --- a waiting run: what it waits for, and deciding it from the command line --------------------------------

ASK = [{"type": "tool_use", "name": "delete_file", "input": {"path": "/tmp/old.log"}, "id": "toolu_01"}]
THEN = [{"type": "text", "text": "Deleted it."}]


def script_file(folder: Path, name: str, replies: list[dict[str, Any]]) -> str:
    path = folder / name
    path.write_text(json.dumps(replies))
    return str(path)


@pytest.fixture
def tool_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``waits_worker.delete_file`` writes each path it really deletes."""
    log = tmp_path / "tool.log"
    monkeypatch.setenv("WAITS_TOOL_LOG", str(log))
    return log


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.fixture
def waiting(tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A store holding run ``w1`` of ``waits_worker:ApprovalAgent``, stopped to wait before ``delete_file``,
    made as an operator makes one: ``agentfsm run --store``."""
    db = str(tmp_path / "runs.db")
    ask = script_file(tmp_path, "ask.json", ASK)
    argv = ["run", "waits_worker:ApprovalAgent", "Delete /tmp/old.log", "--sim", ask, "--store", db, "--id", "w1"]
    assert main(argv) == EXIT_NOT_DONE
    out = capsys.readouterr().out
    assert f"stored      : w1 (agentfsm runs show w1 --store {db})" in out
    assert (
        "waiting     : at awaiting_approval for approve | refuse (agentfsm runs decide w1 TRIGGER --agent "
        f"waits_worker:ApprovalAgent --store {db})" in out
    )
    assert ran(tool_log) == []
    return db


def test_show_says_what_a_waiting_run_waits_for(waiting: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "show", "w1", "--store", waiting]) == 0
    out = capsys.readouterr().out
    assert "state        : waiting at awaiting_approval (agentfsm runs decide carries it on)" in out
    assert (
        f"waiting for  : approve | refuse  (agentfsm runs decide w1 TRIGGER --agent MODULE:Class --store {waiting})"
        in out
    )
    assert "because      : a dangerous tool was called" in out  # the guard of the transition into the wait
    assert 'pending call : delete_file(path="/tmp/old.log") [toolu_01]' in out

    assert main(["runs", "show", "w1", "--store", waiting, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["waiting"] == "awaiting_approval"
    assert shown["pending_decision"] == {
        "state": "awaiting_approval",
        "triggers": ["approve", "refuse"],
        "tool_calls": [{"id": "toolu_01", "name": "delete_file", "input": {"path": "/tmp/old.log"}}],
        "why": "a dangerous tool was called",
    }


def test_a_pending_call_shows_each_value_as_json_cut_short() -> None:
    call = ToolCall(
        id="t", name="issue_refund", input={"order_id": "A-100", "amount": 24.0, "notify": True, "to": None}
    )
    assert call_signature(call) == 'issue_refund(order_id="A-100", amount=24.0, notify=true, to=null)'
    long = ToolCall(id="t", name="write", input={"text": "line one\nline two " + "x" * 200, "tags": ["a", "b"]})
    shown = call_signature(long, limit=30)
    assert shown == 'write(text="line one\\nline two xxxxxxxxx…, tags=["a", "b"])' and "\n" not in shown
    assert (
        call_signature(ToolCall(id="t", name="odd", input=[1, 2])) == "odd([1, 2])"
    )  # raw input, as the model sent it


@pytest.mark.slow  # subprocesses
def test_showing_a_waiting_run_imports_no_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The triggers come from the row: a module that says when it is imported is not imported, even where it
    is importable (run as a new process, its folder on PYTHONPATH as the one who ran it put it)."""
    project = tmp_path / "project"
    project.mkdir()
    marker = tmp_path / "imported"
    (project / "loud_agents.py").write_text(
        "import os\nfrom pathlib import Path\nfrom waits_worker import ApprovalAgent\n\n"
        "Path(os.environ['LOUD_MARKER']).write_text('imported')\n\n\nclass LoudAgent(ApprovalAgent):\n    pass\n"
    )
    env = {
        **os.environ,
        "LOUD_MARKER": str(marker),
        "PYTHONPATH": os.pathsep.join([str(project), str(Path(__file__).parent)]),
    }
    db, ask = str(project / "runs.db"), script_file(tmp_path, "ask.json", ASK)
    cli = [sys.executable, "-m", "agentfsm.cli"]
    run = [*cli, "run", "loud_agents:LoudAgent", "Delete it", "--sim", ask, "--store", db, "--id", "w1", "--json"]
    started = subprocess.run(run, cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == EXIT_NOT_DONE, started.stderr
    assert marker.read_text() == "imported"
    marker.unlink()
    shown = subprocess.run(
        [*cli, "runs", "show", "w1", "--store", db], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert "agent        : loud_agents:LoudAgent" in shown.stdout and "waiting for  : approve | refuse" in shown.stdout
    assert not marker.exists(), "runs show imported the agent's module"
    graph = [*cli, "runs", "graph", "w1", "--store", db]
    drawn = subprocess.run(graph, cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0 and drawn.stderr == "", drawn.stderr
    assert 'title: "LoudAgent (at awaiting_approval)"' in drawn.stdout  # the graph stored with the run
    assert not marker.exists(), "runs graph imported the agent's module"


def test_decide_approve_runs_the_tool_once_and_finishes(
    waiting: str, tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    then = script_file(tmp_path, "then.json", THEN)
    assert main(["runs", "decide", "w1", "approve", "--agent", APPROVAL, "--store", waiting, "--sim", then]) == 0
    out = capsys.readouterr().out
    assert "wait.decided" in out and "awaiting_approval --approve--> requesting" in out
    assert out.rstrip().endswith("answer      : Deleted it.")
    assert ran(tool_log) == ["/tmp/old.log"]
    snap = SQLiteStore(waiting).load("w1")
    assert (snap.state, snap.waiting, snap.pending_decision) == ("done", None, None)
    assert snap.messages[2]["content"][0]["content"] == "deleted /tmp/old.log"

    again = ["runs", "decide", "w1", "approve", "--agent", APPROVAL, "--store", waiting, "--sim", then]
    assert main(again) == EXIT_ERROR  # not again
    assert "conversation 'w1' is not waiting (finished, at state 'done'): there is nothing to decide" in (
        one_line_error(capsys)
    )
    assert ran(tool_log) == ["/tmp/old.log"]


def test_decide_refuse_with_input_gives_the_model_the_reason(
    waiting: str, tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    then = script_file(tmp_path, "then.json", [{"type": "text", "text": "Understood."}])
    argv = ["runs", "decide", "w", "refuse", "--input", '{"reason": "not today"}', "--store", waiting, "--sim", then]
    argv += ["--agent", APPROVAL]
    assert main([*argv, "--json"]) == 0  # the start of an id is enough, as for show
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["trigger"] for e in events if e["event"] == "wait.decided"] == ["refuse"]
    assert events[-1]["event"] == "run.finished" and events[-1]["final_state"] == "done"
    answer = SQLiteStore(waiting).load("w1").messages[2]["content"][0]
    assert (answer["tool_use_id"], answer["content"], answer["is_error"]) == ("toolu_01", "not today", True)
    assert ran(tool_log) == []


def test_decide_waiting_again_exits_3(waiting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    again = script_file(tmp_path, "again.json", [{**ASK[0], "id": "toolu_02"}])  # approved, it asks again
    assert main(["runs", "decide", "w1", "approve", "--agent", APPROVAL, "--store", waiting, "--sim", again]) == (
        EXIT_NOT_DONE
    )
    assert "waiting     : at awaiting_approval for approve | refuse" in capsys.readouterr().out
    snap = SQLiteStore(waiting).load("w1")
    assert snap.pending_decision is not None and [c.id for c in snap.pending_decision.tool_calls] == ["toolu_02"]


def test_decide_with_a_trigger_that_does_not_leave_the_wait_changes_nothing(
    waiting: str, tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = SQLiteStore(waiting).load("w1")
    then = script_file(tmp_path, "then.json", THEN)
    finish = ["runs", "decide", "w1", "finish", "--agent", APPROVAL, "--store", waiting, "--sim", then]
    assert main(finish) == EXIT_ERROR
    assert one_line_error(capsys) == (
        "agentfsm: error: trigger 'finish' does not leave the waiting state 'awaiting_approval'; the triggers "
        "that can: approve, refuse"
    )
    assert SQLiteStore(waiting).load("w1") == before and ran(tool_log) == []


def test_decide_with_input_that_is_not_json_is_a_usage_error(waiting: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "decide", "w1", "refuse", "--input", "{reason: no}", "--store", waiting]) == EXIT_USAGE
    line = one_line_error(capsys)
    assert "argument --input: not JSON (Expecting property name" in line and "'{reason: no}'" in line


def test_decide_a_run_that_is_not_waiting(store_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    then = script_file(tmp_path, "then.json", THEN)
    assert main(["runs", "decide", "conv_done", "approve", "--store", store_file, "--sim", then]) == EXIT_ERROR
    assert "'conv_done' is not waiting (finished, at state 'done')" in one_line_error(capsys)
    before = SQLiteStore(store_file).load("conv_crashed")
    crashed = ["runs", "decide", "conv_crashed", "approve", "--store", store_file, "--sim", then]
    assert main([*crashed, "--agent", "agentfsm:Agent"]) == EXIT_ERROR  # a class's table tells (it names the code)
    assert "'conv_crashed' is not waiting (running, at state 'tool_use')" in one_line_error(capsys)
    assert SQLiteStore(store_file).load("conv_crashed") == before


def test_decide_needs_the_agent_class_named_and_never_loads_the_rows(
    waiting: str, tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    then = script_file(tmp_path, "then.json", THEN)
    # The row names an importable class; it is not loaded for the operator: deciding runs code, they name it.
    assert main(["runs", "decide", "w1", "approve", "--store", waiting, "--sim", then]) == EXIT_ERROR
    line = one_line_error(capsys)
    assert "deciding conversation 'w1' runs its agent's hooks, actions and tools: name the Agent class" in line
    assert "with --agent MODULE:Class" in line and "the run recorded 'waits_worker:ApprovalAgent'" in line
    store = SQLiteStore(waiting)
    snap = store.load("w1")
    store.save(snap.model_copy(update={"agent": "moved_away_xyz:ApprovalAgent", "revision": snap.revision + 1}))
    store.close()
    assert main(["runs", "decide", "w1", "approve", "--store", waiting, "--sim", then, "--agent", "nowhere_xyz:A"]) == (
        EXIT_ERROR
    )
    assert "no module named 'nowhere_xyz'" in one_line_error(capsys)
    assert SQLiteStore(waiting).load("w1").waiting == "awaiting_approval" and ran(tool_log) == []

    agent = "waits_worker:ApprovalAgent"  # named on the command line, the run goes on
    assert main(["runs", "decide", "w1", "approve", "--store", waiting, "--sim", then, "--agent", agent]) == 0
    assert ran(tool_log) == ["/tmp/old.log"]


def test_decide_needs_a_key_or_a_script(
    waiting: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    assert main(["runs", "decide", "w1", "approve", "--agent", APPROVAL, "--store", waiting]) == EXIT_ERROR
    assert "no Anthropic API key: set ANTHROPIC_API_KEY" in one_line_error(capsys)


class AsyncReviewedAgent(ApprovalAgent):
    """The approval agent with an ``async def`` hook on its wait (no answer yet: it waits): only ``arun`` and
    ``aresume`` can run it, so the command line runs and decides it with them."""

    async def on_awaiting_approval(self, conv: Conversation) -> Any:
        return Wait


def test_run_and_decide_an_agent_with_async_hooks(
    tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, ask, then = (
        str(tmp_path / "runs.db"),
        script_file(tmp_path, "ask.json", ASK),
        script_file(tmp_path, "t.json", THEN),
    )
    agent = f"{__name__}:AsyncReviewedAgent"
    assert main(["run", agent, "Delete /tmp/old.log", "--sim", ask, "--store", db, "--id", "a1"]) == EXIT_NOT_DONE
    assert "waiting     : at awaiting_approval for approve | refuse" in capsys.readouterr().out
    assert main(["runs", "decide", "a1", "approve", "--agent", agent, "--store", db, "--sim", then]) == 0
    assert "answer      : Deleted it." in capsys.readouterr().out and ran(tool_log) == ["/tmp/old.log"]


class _MeetingStore:
    """A SQLite store (one per decider, as if in two processes) whose first ``acquire`` waits for the other
    decider's: both have loaded the waiting run before either takes the lease, the race to survive."""

    def __init__(self, path: str, meet: threading.Barrier) -> None:
        self.inner = SQLiteStore(path)
        self.meet = meet
        self.met = False

    def save(self, snapshot: Snapshot) -> None:
        self.inner.save(snapshot)

    def load(self, conversation_id: str) -> Snapshot:
        return self.inner.load(conversation_id)

    def list(self) -> list[RunSummary]:
        return self.inner.list()

    def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool:
        if not self.met:
            self.met = True
            self.meet.wait()
        return self.inner.acquire(conversation_id, owner, lease_s)

    def release(self, conversation_id: str, owner: str) -> None:
        self.inner.release(conversation_id, owner)


def test_two_deciders_at_once_run_the_tool_once(waiting: str, tool_log: Path) -> None:
    meet = threading.Barrier(2, timeout=60)
    outcomes: dict[str, Any] = {}

    def decider(name: str) -> None:
        store = _MeetingStore(waiting, meet)
        sim = Simulator([r.text("Deleted it.")])
        try:
            outcomes[name] = decide_run(store, "w1", "approve", agent_spec=APPROVAL, client=sim.client(max_retries=0))
        except AgentfsmError as exc:
            outcomes[name] = exc
        finally:
            store.inner.close()

    threads = [threading.Thread(target=decider, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["a", "b"]
    results = [o for o in outcomes.values() if isinstance(o, RunResult)]
    errors = [o for o in outcomes.values() if not isinstance(o, RunResult)]
    assert len(results) == 1 and results[0].final_state == "done" and results[0].text == "Deleted it."
    assert len(errors) == 1 and isinstance(errors[0], ConversationLockedError | StaleConversationError), errors
    assert ran(tool_log) == ["/tmp/old.log"]  # once


def test_decide_run_is_the_library_call(waiting: str, tool_log: Path) -> None:
    store = SQLiteStore(waiting)
    sim = Simulator([r.text("Deleted it.")])
    with pytest.raises(UnknownConversationError, match="no conversation 'w2' in the store"):
        decide_run(store, "w2", "approve", agent_spec=APPROVAL, client=sim.client())
    with pytest.raises(InvalidTransitionError, match="the triggers that can: approve, refuse"):
        decide_run(store, "w1", "delete", agent_spec=APPROVAL, client=sim.client())
    with pytest.raises(ConfigurationError, match="the run recorded 'waits_worker:ApprovalAgent', which is not imp"):
        decide_run(store, "w1", "approve", client=sim.client())  # the caller names the code that will run
    assert store.load("w1").waiting == "awaiting_approval" and ran(tool_log) == []
    result = decide_run(
        store, "w1", "refuse", {"reason": "no"}, agent_spec="waits_worker:ApprovalAgent", client=sim.client()
    )
    assert result.final_state == "done" and ran(tool_log) == [] and len(sim.requests) == 1
    assert sim.requests[0].messages[-1]["content"][0]["content"] == "no"
    store.close()


def test_an_old_waiting_row_without_its_triggers_still_shows(waiting: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A row an earlier agentfsm wrote has no ``pending_decision``: it loads, and show says so."""
    with closing(sqlite3.connect(waiting)) as conn, conn:
        (raw,) = conn.execute("SELECT snapshot FROM agentfsm_conversations WHERE id = 'w1'").fetchone()
        data = json.loads(raw)
        del data["pending_decision"]
        conn.execute("UPDATE agentfsm_conversations SET snapshot = ? WHERE id = 'w1'", (json.dumps(data),))
    assert main(["runs", "show", "w1", "--store", waiting]) == 0
    out = capsys.readouterr().out
    assert "waiting for  : a trigger not recorded with this run (agentfsm runs decide w1 TRIGGER" in out


# --- approval on a tool: runs decide --approve / --approve-all / --deny ------------------------------------------


@tool(needs_approval=True)
def remove(path: str) -> str:
    """Delete a file (each call waits for a person's approval)."""
    log = os.environ.get("WAITS_TOOL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(path + "\n")
    return f"deleted {path}"


class Cleaner(Agent):
    model = "claude-haiku-4-5"
    tools = [remove]
    policy = Policy(max_tokens=512)


CLEANER = f"{__name__}:Cleaner"
TWO_CALLS = [
    {
        "type": "message",
        "stop_reason": "tool_use",
        "content": [
            {"type": "tool_use", "name": "remove", "input": {"path": "/tmp/old.log"}, "id": "toolu_01"},
            {"type": "tool_use", "name": "remove", "input": {"path": "/"}, "id": "toolu_02"},
        ],
    }
]


@pytest.fixture
def tool_wait(tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A store holding run ``c1`` of ``Cleaner``, waiting in ``awaiting_tool_approval`` on two calls."""
    db = str(tmp_path / "runs.db")
    ask = script_file(tmp_path, "ask.json", TWO_CALLS)
    assert main(["run", CLEANER, "Clean up /tmp", "--sim", ask, "--store", db, "--id", "c1"]) == EXIT_NOT_DONE
    assert "waiting     : at awaiting_tool_approval for run_tools" in capsys.readouterr().out
    assert ran(tool_log) == []
    return db


def decide_argv(db: str, then: str, *flags: str) -> list[str]:
    return ["runs", "decide", "c1", *flags, "--agent", CLEANER, "--store", db, "--sim", then]


def answers(db: str) -> list[tuple[str, str, bool]]:
    blocks = SQLiteStore(db).load("c1").messages[2]["content"]
    return [(b["tool_use_id"], b["content"], b.get("is_error", False)) for b in blocks]


def test_show_lists_the_calls_awaiting_approval(tool_wait: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "show", "c1", "--store", tool_wait]) == 0
    out = capsys.readouterr().out
    assert (
        "waiting for  : run_tools  (agentfsm runs decide c1 --approve TOOL_USE_ID | --approve-all | "
        f"--deny TOOL_USE_ID[=REASON] ... --agent MODULE:Class --store {tool_wait})" in out
    )
    assert 'pending call : remove(path="/tmp/old.log") [toolu_01]' in out
    assert '             : remove(path="/") [toolu_02]' in out


def test_decide_approves_one_call_and_denies_one_with_a_reason(
    tool_wait: str, tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    then = script_file(tmp_path, "then.json", [{"type": "text", "text": "Deleted /tmp/old.log only."}])
    argv = decide_argv(tool_wait, then, "--approve", "toolu_01", "--deny", "toolu_02=Never delete /.")
    assert main(argv) == 0  # no TRIGGER: it is run_tools
    out = capsys.readouterr().out
    assert "awaiting_tool_approval --run_tools--> requesting" in out
    assert out.rstrip().endswith("answer      : Deleted /tmp/old.log only.")
    assert ran(tool_log) == ["/tmp/old.log"]
    assert answers(tool_wait) == [("toolu_01", "deleted /tmp/old.log", False), ("toolu_02", "Never delete /.", True)]
    assert SQLiteStore(tool_wait).load("c1").state == "done"


def test_decide_denies_without_a_reason_with_the_default_text(
    tool_wait: str, tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    then = script_file(tmp_path, "then.json", [{"type": "text", "text": "I left them."}])
    argv = decide_argv(
        tool_wait, then, "run_tools", "--deny", "toolu_01", "--deny", "toolu_02="
    )  # run_tools may be said
    assert main(argv) == 0
    assert ran(tool_log) == []
    assert answers(tool_wait) == [("toolu_01", DEFAULT_DENIAL, True), ("toolu_02", DEFAULT_DENIAL, True)]


def test_decide_approve_all_runs_every_call_not_denied(
    tool_wait: str, tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    then = script_file(tmp_path, "then.json", [{"type": "text", "text": "Done."}])
    assert main(decide_argv(tool_wait, then, "--approve-all")) == 0
    assert sorted(ran(tool_log)) == ["/", "/tmp/old.log"]  # the calls may run concurrently
    assert [a[2] for a in answers(tool_wait)] == [False, False]


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            ["--approve", "toolu_01", "--input", '{"approve": true}'],
            "--approve make the decision's input: give them without --input",
        ),
        (
            ["refuse", "--deny", "toolu_01"],
            "--deny decide a run awaiting_tool_approval along run_tools: give them without TRIGGER (got 'refuse')",
        ),
        (["--approve", "toolu_01", "--approve-all"], "argument --approve-all: not allowed with argument --approve"),
        (["--deny", "=no"], "argument --deny: no tool_use id before '='"),
        (["--deny", "toolu_01", "--deny", "toolu_01=no"], "--deny toolu_01 is given twice"),
        ([], "the following arguments are required: TRIGGER (or, for a run awaiting_tool_approval, --approve/"),
    ],
)
def test_decide_approval_flags_misused_are_usage_errors(
    tool_wait: str, tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    before = SQLiteStore(tool_wait).load("c1")
    then = script_file(tmp_path, "then.json", THEN)
    assert main(decide_argv(tool_wait, then, *flags)) == EXIT_USAGE
    assert said in one_line_error(capsys)
    assert SQLiteStore(tool_wait).load("c1") == before and ran(tool_log) == []


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            ["--approve", "toolu_01", "--deny", "toolu_02", "--approve", "toolu_99"],
            "the run is not waiting on 'toolu_99'. The calls awaiting approval: toolu_01 (remove), toolu_02 (remove)",
        ),
        (["--approve", "toolu_01"], "no decision for 'toolu_02'. The calls awaiting approval: toolu_01 (remove)"),
    ],
)
def test_decide_an_unknown_or_undecided_call_changes_nothing(
    tool_wait: str, tmp_path: Path, tool_log: Path, capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    before = SQLiteStore(tool_wait).load("c1")
    then = script_file(tmp_path, "then.json", THEN)
    assert main(decide_argv(tool_wait, then, *flags)) == EXIT_ERROR
    assert said in one_line_error(capsys)
    assert SQLiteStore(tool_wait).load("c1") == before and ran(tool_log) == []
