"""MCP servers as tools, against real MCP servers the tests start (tests/mcp_servers/toolbox.py, written with the
mcp package), over stdio and streamable HTTP: nothing of the client session is mocked.

Listed and called, prefixes and clashes, annotations, isError, images, list_changed, validation before the
call, timeouts, a server that exits mid-run or never starts, servers kept open across runs, every driver,
a SIGKILL mid-call then a resume from the store (the exactly-once rules), and a DBOS and a Temporal worker
calling one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp_servers.agents import TOOLBOX, ToolboxAgent, toolbox

from agentfsm import Agent, Policy, tool
from agentfsm.errors import ConfigurationError, MCPServerError
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.testing import DRIVERS, drive
from agentfsm.tools.calls import idempotency_key
from agentfsm.tools.mcp import MCPServer, MCPTool
from agentfsm.wire.messages import history_problems

pytestmark = pytest.mark.slow  # every test starts MCP server processes

TESTS = Path(__file__).parent


@contextmanager
def http_toolbox() -> Iterator[str]:
    """A toolbox process over streamable HTTP on a free loopback port; its URL once uvicorn says it listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, TOOLBOX, "--http", str(port)], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL)  # fmt: skip
    assert process.stderr is not None
    try:
        seen = b""  # read unbuffered: a buffered readline may hold the line select() no longer reports
        for _ in range(200):  # bounded: uvicorn prints a handful of lines before it listens
            ready, _, _ = select.select([process.stderr], [], [], 30)
            assert ready, f"the HTTP toolbox said nothing for 30 s: {seen!r}"
            chunk = os.read(process.stderr.fileno(), 4096)
            assert chunk, f"the HTTP toolbox exited: {seen!r}"
            seen += chunk
            if b"Uvicorn running on" in seen:
                break
        else:
            raise AssertionError(f"the HTTP toolbox never listened: {seen!r}")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)
        process.stderr.close()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """The toolbox over streamable HTTP, shared by the module's tests."""
    with http_toolbox() as url:
        yield url


@pytest.fixture(scope="module")
def temporal_server() -> Iterator[str]:
    import engines_support as es

    yield from es.temporal_server()


@pytest.fixture(params=["stdio", "http"])
def box(request: pytest.FixtureRequest) -> MCPServer:
    if request.param == "stdio":
        return toolbox()
    return MCPServer.http(request.getfixturevalue("http_url"), prefix="box", headers={"Authorization": "Bearer x1"})


def run(agent: Agent, prompt: str = "Use the toolbox.") -> Any:
    result = agent.run(prompt)
    assert history_problems(result.messages, sending=False) == [], result.messages
    return result


def results_of(result: Any, index: int) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = result.messages[index]["content"]
    assert all(b["type"] == "tool_result" for b in content)
    return content


# --- listed and called ---------------------------------------------------------------------------------------


def test_tools_are_listed_with_their_schemas_and_called(box: MCPServer) -> None:
    sim = Simulator([r.tool_use("box_add", {"a": 2, "b": 3}), r.text("5.")])
    result = run(Agent(client=sim.client(), tools=[box]))
    assert result.final_state == "done"
    assert results_of(result, 2)[0]["content"] == "5"
    tools = {t["name"]: t for t in sim.requests[0].body["tools"]}
    assert {"box_add", "box_delete_file", "box_picture", "box_grow", "box_die"} <= set(tools)
    assert tools["box_add"]["description"] == "Add two integers."
    schema = tools["box_add"]["input_schema"]  # as the server gave it, title and all
    assert schema["required"] == ["a", "b"] and schema["properties"]["a"]["type"] == "integer"
    assert schema.get("title") == "addArguments"


def test_the_call_key_reaches_the_server_in_the_request_meta(box: MCPServer) -> None:
    sim = Simulator([r.tool_use("box_call_key", {}, id="toolu_k"), r.text("Keyed.")])
    result = Agent(client=sim.client(), tools=[box]).run("Key?", conversation_id="conv_key")
    (answer,) = results_of(result, 2)
    assert answer["content"] == f"{idempotency_key('conv_key', 'toolu_k')} 1 toolu_k"


def test_annotations_are_on_the_tools_and_idempotent_hint_counts() -> None:
    server = toolbox(needs_approval="destructive")
    agent = Agent(client=Simulator([]).client(), tools=[server])
    with agent:
        tools = {t.name: t for t in server.tools}
        assert all(isinstance(t, MCPTool) for t in tools.values())
        assert agent.tool_map["box_add"] is tools["box_add"]
    add, delete, append, fail = tools["box_add"], tools["box_delete_file"], tools["box_append_line"], tools["box_fail"]
    assert add.annotations == {"readOnlyHint": True, "idempotentHint": True} and add.idempotent
    assert delete.annotations == {"destructiveHint": True} and not delete.idempotent
    assert (add.needs_approval, delete.needs_approval, append.needs_approval, fail.needs_approval) == (
        False,
        True,
        False,
        True,  # no hints: MCP's defaults say it may destroy
    )
    assert add.remote_name == "add"


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_driver_runs_mcp_tools(driver: str) -> None:
    sim = Simulator([r.tool_uses([("box_add", {"a": 1, "b": 1}), ("box_pid", {})]), r.text("Two.")])
    result = drive(Agent(client=sim.client() if driver in ("run", "stream") else sim.async_client(), tools=[toolbox()]),
                   "Add.", driver)  # fmt: skip
    assert result.final_state == "done"
    answers = results_of(result, 2)
    assert answers[0]["content"] == "2" and answers[1]["content"].isdigit()
    assert int(answers[1]["content"]) != os.getpid()


def test_is_error_images_resources_and_validation_before_the_call(box: MCPServer) -> None:
    calls = [
        ("box_fail", {"reason": "the disk is full"}),
        ("box_picture", {}),
        ("box_readme", {}),
        ("box_add", {"a": "two"}),
        ("box_append_line", {"text": "x", "where": "middle"}),
    ]
    sim = Simulator([r.tool_uses(calls), r.text("Seen.")])
    result = run(Agent(client=sim.client(), tools=[box]))
    failed, picture, readme, bad_add, bad_where = results_of(result, 2)
    assert failed["is_error"] is True and "the disk is full" in failed["content"]
    assert picture["content"][0] == {"type": "text", "text": "a red pixel"}
    assert picture["content"][1]["type"] == "image" and picture["content"][1]["source"]["media_type"] == "image/png"
    assert readme["content"] == "# Toolbox"
    assert bad_add["is_error"] and "'b': field required" in bad_add["content"]
    assert "'a': input should be of type integer (got 'two')" in bad_add["content"]
    assert bad_where["is_error"] and "'where': input should be one of 'top', 'bottom'" in bad_where["content"]


def test_list_changed_is_listed_again_before_the_next_request(box: MCPServer) -> None:
    sim = Simulator([r.tool_use("box_grow", {}), r.tool_use("box_shout", {"text": "hi"}), r.text("Loud.")])
    result = run(Agent(client=sim.client(), tools=[box]))
    assert result.final_state == "done"
    names = [[t["name"] for t in request.body["tools"]] for request in sim.requests]
    assert "box_shout" not in names[0] and "box_shout" in names[1]
    assert results_of(result, 4)[0]["content"] == "HI!"


def test_a_call_past_the_timeout_is_cancelled_and_the_server_goes_on() -> None:
    sim = Simulator([r.tool_use("box_hang", {"label": "x"}), r.tool_use("box_add", {"a": 1, "b": 2}), r.text("3.")])
    result = run(Agent(client=sim.client(), tools=[toolbox()], policy=Policy(tool_timeout=1)))
    assert result.final_state == "done"
    timed_out = results_of(result, 2)[0]
    assert timed_out["is_error"] and "box_hang" in timed_out["content"] and "1" in timed_out["content"]
    assert results_of(result, 4)[0]["content"] == "3"


# --- names -----------------------------------------------------------------------------------------------------


def test_a_clash_without_a_prefix_names_both_sources() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add locally."""
        return a + b

    bare = MCPServer.stdio(sys.executable, [TOOLBOX], name="toolbox")
    sim = Simulator([r.text("never")])
    with pytest.raises(ConfigurationError, match="two tools are named 'add'") as caught:
        Agent(client=sim.client(), tools=[add, bare]).run("Add.")
    assert "@tool 'add'" in str(caught.value) and "MCP server 'toolbox'" in str(caught.value)
    assert "prefix" in str(caught.value)
    assert sim.requests == []  # nothing was sent
    other = MCPServer.stdio(sys.executable, [TOOLBOX], name="again")
    with pytest.raises(ConfigurationError, match=r"MCP server 'toolbox'.*MCP server 'again'"):
        Agent(client=sim.client(), tools=[bare, other]).run("Add.")
    # With prefixes both serve.
    sim = Simulator([r.tool_uses([("add", {"a": 1, "b": 1}), ("box_add", {"a": 2, "b": 2})]), r.text("2 and 4.")])
    result = run(Agent(client=sim.client(), tools=[add, toolbox()]))
    assert [b["content"] for b in results_of(result, 2)] == ["2", "4"]


# --- failures ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_server_that_exits_mid_run_fails_the_run_with_the_history_kept(tmp_path: Path, transport: str) -> None:
    # Over HTTP a toolbox process of its own: the module's HTTP toolbox is shared, and this one dies.
    with contextlib.ExitStack() as stack:
        over_http = transport == "http"
        box = MCPServer.http(stack.enter_context(http_toolbox()), prefix="box") if over_http else toolbox()
        store = SQLiteStore(tmp_path / "runs.db")
        sim = Simulator([r.tool_use("box_add", {"a": 1, "b": 1}), r.tool_use("box_die", {}), r.text("never")])
        result = Agent(client=sim.client(), tools=[box]).run("Add, then die.", store=store)
    assert result.final_state == "failed"
    assert result.error is not None and result.error.type == "MCPServerError"
    assert "MCP server 'box'" in result.error.message and "box_die" not in result.error.message
    assert results_of(result, 2)[0]["content"] == "2"
    died = results_of(result, 4)[0]
    assert died["is_error"] and "exited during the call" in died["content"]
    assert len(sim.requests) == 2  # no request without the tools
    assert history_problems(result.messages, sending=False) == []
    assert store.load(result.conversation_id).messages == result.messages


def test_a_server_that_never_starts_fails_the_run() -> None:
    broken = MCPServer.stdio(sys.executable, ["-c", "import sys; sys.exit(2)"], name="broken")
    sim = Simulator([r.text("never")])
    result = Agent(client=sim.client(), tools=[broken]).run("Hello.")
    assert result.final_state == "failed" and result.error is not None
    assert result.error.type == "MCPServerError" and "MCP server 'broken'" in result.error.message
    assert "failed to start" in result.error.message
    assert result.messages == [{"role": "user", "content": "Hello."}] and sim.requests == []
    with pytest.raises(MCPServerError, match="failed to start"), Agent(client=sim.client(), tools=[broken]):
        pass


# --- lifecycle ----------------------------------------------------------------------------------------------------


def test_each_run_starts_its_servers_and_with_agent_keeps_them() -> None:
    def pid_of(agent: Agent) -> str:
        result = agent.run("Your pid?")
        content: str = results_of(result, 2)[0]["content"]
        return content

    sim = Simulator(lambda request: r.text("ok") if len(request.messages) > 1 else r.tool_use("box_pid", {}))
    server = toolbox()
    agent = Agent(client=sim.client(), tools=[server])
    first, second = pid_of(agent), pid_of(agent)
    assert first != second and not server.is_open  # started and stopped per run
    with agent:
        held = pid_of(agent), pid_of(agent)
    assert held[0] == held[1] and not server.is_open

    async def both() -> tuple[str, str]:
        async with Agent(client=sim.async_client(), tools=[server]) as agent:
            runs = await asyncio.gather(agent.arun("Your pid?"), agent.arun("Your pid?"))
        return runs[0].messages[2]["content"][0]["content"], runs[1].messages[2]["content"][0]["content"]

    one, two = asyncio.run(both())
    assert one == two and not server.is_open


def test_import_agentfsm_without_mcp() -> None:
    code = (
        "import sys; sys.modules['mcp'] = None\n"
        "import agentfsm, agentfsm.tools.mcp\n"
        "from agentfsm import Agent\n"
        "assert 'mcp_types' not in sys.modules\n"
        "try:\n    agentfsm.tools.mcp.MCPServer.stdio('python', ['s.py'])\n"
        "except agentfsm.errors.ConfigurationError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "MCP servers need the official mcp package: pip install 'agentfsm[mcp]'"


# --- a crash mid-call, then a resume ------------------------------------------------------------------------------


def test_sigkill_mid_mcp_call_then_resume_keeps_exactly_once(tmp_path: Path) -> None:
    """The worker SIGKILLed (with its server: one process group) while ``box_hang`` runs beside ``box_tally`` and
    ``box_add``: on resume the two that are not idempotent are answered "interrupted" and not run again;
    ``box_add`` (``idempotentHint``) runs again."""
    fifo, tally, store = tmp_path / "mark", tmp_path / "tally", tmp_path / "runs.db"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    env = {**os.environ, "TOOLBOX_MARK": str(fifo), "TOOLBOX_TALLY": str(tally), "PYTHONPATH": str(TESTS)}
    env = {k: v for k, v in env.items() if not k.startswith("ANTHROPIC_")}
    worker = subprocess.Popen([sys.executable, str(TESTS / "mcp_servers" / "agents.py"), "run", str(store)],
                              env=env, start_new_session=True, stderr=subprocess.PIPE)  # fmt: skip
    try:
        ready, _, _ = select.select([reader], [], [], 60)
        assert ready, "box_hang never started"
        assert os.read(reader, 100).startswith(b"hang h")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
        os.close(reader)
    assert worker.returncode == -signal.SIGKILL
    out = subprocess.run([sys.executable, str(TESTS / "mcp_servers" / "agents.py"), "resume", str(store)],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["final_state"] == "done" and result["text"] == "Resumed."
    hang, counted, added = result["messages"][2]["content"]
    not_again = "was not run again because it is not marked idempotent"
    assert hang["is_error"] and "'box_hang' was running" in hang["content"] and not_again in hang["content"]
    assert counted["is_error"] and "'box_tally' was running" in counted["content"] and not_again in counted["content"]
    assert added == {"type": "tool_result", "tool_use_id": added["tool_use_id"], "content": "5"}
    runs = tally.read_text().splitlines() if tally.exists() else []
    assert runs in ([], ["tally t"])  # at most once: before the kill, never again
    assert history_problems(result["messages"], sending=False) == []


# --- a durable engine -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dbos-sqlite", "temporal"])
def test_a_durable_worker_runs_the_mcp_call(tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> None:
    import engines_support as es

    setup = es.Setup(kind, tmp_path, request)
    sim = Simulator(lambda req: r.text("4.") if len(req.messages) > 1 else r.tool_use("box_pid", {}))
    argv = setup.argv("mcp_servers.agents:ToolboxAgent")
    with sim.serve() as url, es.workers(es.forkserver(), argv, es.test_env(setup.folder, url), setup.folder) as ws:
        engine = setup.engine()
        try:
            result = engine.start("mcp_servers.agents:ToolboxAgent", "Your pid?", conversation_id="conv_mcp").result(
                timeout=120
            )
        finally:
            engine.close()
        worker_pid = ws[0].pid
    assert result.final_state == "done" and result.text == "4."
    assert "box_pid" in [t["name"] for t in sim.requests[0].body["tools"]]
    # The call ran in the worker: the toolbox it started answered, not one of this process.
    server_pid = int(result.messages[2]["content"][0]["content"])
    assert server_pid not in (os.getpid(), worker_pid)
    assert ToolboxAgent.tools[0].version == 0  # this process never started or listed the toolbox
    # Its result reached the model: the second request carries it.
    sent = sim.requests[1].body["messages"][2]["content"][0]
    assert sent["type"] == "tool_result" and sent["content"] == str(server_pid)
