"""``agentfsm runs list|show|graph``: reading stored conversations from the command line."""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import scenario as sc

from agentfsm.cli import EXIT_ERROR, main
from agentfsm.demo import WeatherAgent
from agentfsm.observe import graph as g
from agentfsm.stores.sqlite import SQLiteStore


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding a finished conversation and one that crashed while its tools ran."""
    path = tmp_path_factory.mktemp("runs") / "agentfsm.db"
    store = SQLiteStore(path)
    sc.agent().run(sc.PROMPT, store=store, conversation_id="conv_done")
    sc.RAISE_ON.add("b")
    try:
        with pytest.raises(KeyboardInterrupt):
            sc.agent().run(sc.PROMPT, store=store, conversation_id="conv_crashed")
    finally:
        sc.RAISE_ON.clear()
        sc.CALLS.clear()
    store.close()
    return str(path)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentfsm: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_list_shows_one_line_per_conversation(store_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "list", "--store", store_file]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "FINISHED", "TURNS", "UPDATED", "AGENT"]
    done = next(line for line in lines if line.startswith("conv_done"))
    crashed = next(line for line in lines if line.startswith("conv_crashed"))
    assert done.split()[1:4] == ["done", "yes", "8"] and done.endswith("agentfsm.agent:Agent")
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
    assert "turns        : 8 (continuations 3, pause resumes 1" in out
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
