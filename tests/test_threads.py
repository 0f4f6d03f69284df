"""Message threads (beta ``message-threads-2026-08-12``): the simulator serves them, and
``Policy(transport="thread")`` runs every state on one.

Every test talks HTTP to ``Simulator(...).serve()`` through the real ``anthropic`` client (the
SDK's own ``tool_runner`` included); nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic import beta_async_tool, beta_tool
from test_compaction import schema_where_it_covers  # noqa: F401  (autouse: the schema, where it covers a body)

from agentfsm import Agent, Policy, tool
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.simulator import SIM_API_KEY
from agentfsm.stores.memory import MemoryStore
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.testing import DRIVERS, capture_events, drive
from agentfsm.wire.threads import THREADS_BETA

THREAD = Policy(transport="thread")

#: The OpenAPI spec the suite checks bodies against predates message threads (no `thread` property): each
#: body is checked without it (``schema_where_it_covers``).
pytestmark = pytest.mark.beyond_schema


@contextmanager
def served(sim: Simulator, driver: str = "run") -> Iterator[anthropic.Anthropic | anthropic.AsyncAnthropic]:
    """A real client of the kind ``driver`` needs, talking HTTP to ``sim`` on a loopback socket."""
    with sim.serve() as url:
        kind = anthropic.AsyncAnthropic if driver.startswith("a") else anthropic.Anthropic
        yield kind(base_url=url, api_key=SIM_API_KEY, max_retries=0)


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def kinds(sim: Simulator) -> list[str]:
    """How each request went: create, continue (with how many messages sent), full (no thread)."""
    out = []
    for q in sim.requests:
        thread = q.body.get("thread")
        if thread is None:
            out.append("full")
        elif thread["type"] == "create":
            out.append("create")
        else:
            out.append(f"continue+{len(q.sent_messages)}" if q.thread_held is not None else "continue?")
    return out


def wire_messages(q: SimRequest) -> list[dict[str, Any]]:
    """The messages as they went on the wire (the raw body), not as the thread rebuilt them."""
    return list(json.loads(q.raw_body)["messages"])


# --- 1. the simulator serves threads --------------------------------------------------------------


@beta_tool
def multiply(a: int, b: int) -> str:
    """Multiply two numbers."""
    return str(a * b)


@pytest.mark.parametrize("thread", [True, False])
def test_the_sdks_own_tool_runner_works_against_the_simulator(thread: bool) -> None:
    """The issue's bug: the SDK's tool_runner threads by default and failed with a 400 on its second request."""
    sim = Simulator([*(r.tool_use("multiply", {"a": i, "b": 2}) for i in range(4)), r.text("Done.")])
    with served(sim) as client:
        assert isinstance(client, anthropic.Anthropic)
        kw: dict[str, Any] = {} if thread else {"thread": False}
        runner = client.beta.messages.tool_runner(
            model="claude-sonnet-4-5", max_tokens=512, tools=[multiply], system="Multiply.",
            messages=[{"role": "user", "content": "Multiply."}], **kw,
        )  # fmt: skip
        replies = list(runner)
    assert [m.stop_reason for m in replies] == ["tool_use"] * 4 + ["end_turn"]
    assert all(q.status == 200 for q in sim.requests)
    if thread:
        assert kinds(sim) == ["create"] + ["continue+1"] * 4
        assert all(THREADS_BETA in q.betas for q in sim.requests)
        continued = sim.requests[-1]
        assert "system" not in json.loads(continued.raw_body) and continued.system == "Multiply."
        assert len(continued.messages) == 9  # the model saw the whole conversation
        assert continued.body["thread"]["previous_message_id"] == replies[-2].id
    else:
        assert kinds(sim) == ["full"] * 5


def test_the_async_tool_runner_threads_too() -> None:
    @beta_async_tool
    async def echo(text: str) -> str:
        """Echo."""
        return text

    sim = Simulator([r.tool_use("echo", {"text": "a"}), r.tool_use("echo", {"text": "b"}), r.text("Done.")])

    async def main(url: str) -> list[str | None]:
        client = anthropic.AsyncAnthropic(base_url=url, api_key=SIM_API_KEY, max_retries=0)
        runner = client.beta.messages.tool_runner(
            model="claude-sonnet-4-5", max_tokens=512, tools=[echo], messages=[{"role": "user", "content": "Hi"}]
        )
        return [m.stop_reason async for m in runner]

    with sim.serve() as url:
        assert asyncio.run(main(url)) == ["tool_use", "tool_use", "end_turn"]
    assert kinds(sim) == ["create", "continue+1", "continue+1"]


def raw(client: anthropic.Anthropic, **body: Any) -> anthropic.types.beta.BetaMessage:
    body.setdefault("model", "claude-sonnet-4-5")
    body.setdefault("max_tokens", 100)
    return client.beta.messages.create(betas=[THREADS_BETA], **body)


def error_of(excinfo: pytest.ExceptionInfo[anthropic.APIStatusError]) -> tuple[int, str | None]:
    body = excinfo.value.body
    assert isinstance(body, dict)
    return excinfo.value.status_code, body["error"].get("details", {}).get("error_code")


def test_each_reply_is_continued_once_and_an_unknown_one_is_not_found() -> None:
    sim = Simulator([r.text("One."), r.text("Two."), r.text("never")])
    with served(sim) as client:
        assert isinstance(client, anthropic.Anthropic)
        first = raw(client, messages=[{"role": "user", "content": "Hi"}], thread={"type": "create"})
        more = [{"role": "user", "content": "More"}]
        second = raw(client, messages=more, thread={"type": "continue", "previous_message_id": first.id})
        assert second.content[0].text == "Two."  # type: ignore[union-attr]
        with pytest.raises(anthropic.BadRequestError) as again:
            raw(client, messages=more, thread={"type": "continue", "previous_message_id": first.id})
        assert error_of(again) == (400, "thread_already_continued")
        with pytest.raises(anthropic.NotFoundError) as unknown:
            raw(client, messages=more, thread={"type": "continue", "previous_message_id": "msg_nope"})
        assert error_of(unknown) == (404, "thread_not_found")
        assert sim.replies_served == 2  # a rejected continue uses no script item
    # the model saw the history the thread held, then the new message
    assert [m["content"] for m in sim.requests[1].messages][1:] == [[{"type": "text", "text": "One."}], "More"]


def test_a_continue_may_not_resend_system_or_tools_and_needs_the_beta() -> None:
    sim = Simulator([r.text("One.")])
    with served(sim) as client:
        assert isinstance(client, anthropic.Anthropic)
        first = raw(client, system="S", messages=[{"role": "user", "content": "Hi"}], thread={"type": "create"})
        cont = {"type": "continue", "previous_message_id": first.id}
        with pytest.raises(anthropic.BadRequestError, match="cannot set `system`"):
            raw(client, system="S", messages=[{"role": "user", "content": "x"}], thread=cont)
        with pytest.raises(anthropic.BadRequestError, match=THREADS_BETA):
            client.messages.create(
                model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                extra_body={"thread": cont},
            )  # fmt: skip


def test_a_thread_idle_past_its_limit_expires_on_the_simulators_clock() -> None:
    now = [0.0]
    sim = Simulator([r.text("One."), r.text("Two.")], clock=lambda: now[0], thread_idle_limit=60)
    with served(sim) as client:
        assert isinstance(client, anthropic.Anthropic)
        first = raw(client, messages=[{"role": "user", "content": "Hi"}], thread={"type": "create"})
        now[0] = 61.0
        with pytest.raises(anthropic.NotFoundError) as expired:
            raw(client, messages=[{"role": "user", "content": "x"}],
                thread={"type": "continue", "previous_message_id": first.id})  # fmt: skip
        assert error_of(expired) == (404, "thread_not_found")
        assert len(sim.threads) == 0


def test_a_continue_rebuilt_history_is_validated_like_a_full_one(wire_rules_on_every_request: list[str]) -> None:
    """The wire rules hold on the rebuilt history: tool results must answer the held tool_use."""
    sim = Simulator([r.tool_use("add", {"a": 1, "b": 2}, id="toolu_1"), r.text("never")])
    with served(sim) as client:
        assert isinstance(client, anthropic.Anthropic)
        first = raw(client, messages=[{"role": "user", "content": "Hi"}], thread={"type": "create"})
        wrong = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "3"}]}]
        with pytest.raises(anthropic.BadRequestError, match="toolu_1"):
            raw(client, messages=wrong, thread={"type": "continue", "previous_message_id": first.id})
        # rejected, so not continued: the right results may still go
        right = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "3"}]}]
        assert raw(client, messages=right, thread={"type": "continue", "previous_message_id": first.id}).id
    # the suite's own wire-rule check saw the bad request whole, too (the rebuilt history)
    assert len(wire_rules_on_every_request) == 1 and "toolu_2" in wire_rules_on_every_request[0]
    wire_rules_on_every_request.clear()


# --- 2. Policy(transport="thread") ---------------------------------------------------------------


def tool_turns(n: int) -> list[Any]:
    return [r.tool_use("add", {"a": i, "b": 1}) for i in range(n)]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_tool_loop_continues_its_thread_sending_only_the_new_messages(driver: str) -> None:
    sim = Simulator([*tool_turns(4), r.text("Done.")])
    plain = Simulator([*tool_turns(4), r.text("Done.")])
    with served(sim, driver) as client, served(plain, driver) as plain_client:
        threaded = drive(Agent(client, system="You add.", tools=[add], policy=THREAD, logger=None), "Add.", driver)
        full = drive(Agent(plain_client, system="You add.", tools=[add], logger=None), "Add.", driver)
    assert threaded.final_state == full.final_state == "done" and threaded.text == full.text == "Done."
    assert threaded.messages == full.messages  # our history is whole: the store is the source of truth
    assert kinds(sim) == ["create"] + ["continue+1"] * 4
    assert kinds(plain) == ["full"] * 5
    # the model saw the same conversation either way
    strip = [_unmarked(q.messages) for q in sim.requests], [_unmarked(q.messages) for q in plain.requests]
    assert [[m["role"] for m in ms] for ms in strip[0]] == [[m["role"] for m in ms] for ms in strip[1]]
    assert sum(len(q.raw_body) for q in sim.requests) < sum(len(q.raw_body) for q in plain.requests)


def _unmarked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_unmarked(v) for v in value]
    return value


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_lost_thread_resends_the_turn_with_the_full_history_and_the_run_goes_on(driver: str) -> None:
    sim = Simulator([*tool_turns(3), r.text("Done.")])

    @tool(name="add")
    def forgetful(a: int, b: int) -> int:
        """Add two numbers (the server loses its threads meanwhile)."""
        if a == 1:
            sim.threads.forget()
        return a + b

    with served(sim, driver) as client, capture_events() as events:
        agent = Agent(client, tools=[forgetful], policy=THREAD, logger=None)
        result = drive(agent, "Add.", driver)
    assert result.final_state == "done" and result.text == "Done."
    assert kinds(sim) == ["create", "continue+1", "continue?", "create", "continue+1"]
    assert sim.requests[2].status == 404 and sim.requests[3].status == 200
    assert len(sim.requests[3].messages) == 5  # the whole history, on a new thread
    lost = [e for e in events if e.event == "thread.lost"]
    assert len(lost) == 1 and lost[0].data["reason"] == "thread_not_found"
    assert lost[0].data["status_code"] == 404
    assert result.turns == 5  # the resend is a request like any other


def test_an_expired_thread_is_replaced_after_a_wait(tmp_path: Path) -> None:
    """A run that waits past the thread's idle limit (an approval) continues on a new thread when resumed."""
    now = [0.0]
    sim = Simulator([*tool_turns(1), r.tool_use("danger", {}), r.text("Done.")], clock=lambda: now[0],
                    thread_idle_limit=3600)  # fmt: skip

    @tool(needs_approval=True)
    def danger() -> str:
        """Do something a person approves."""
        return "done it"

    store = SQLiteStore(tmp_path / "runs.db")
    with served(sim) as client:
        first = Agent(client, tools=[add, danger], policy=THREAD, logger=None).run("Go.", store=store)
        assert first.waiting is not None
        now[0] = 7200.0
    with served(sim) as client, capture_events() as events:
        # another process: a new agent, a new store object on the same file
        agent = Agent(client, tools=[add, danger], policy=THREAD, logger=None)
        done = agent.resume(first.conversation_id, store=SQLiteStore(tmp_path / "runs.db"), approve=True)
    assert done.final_state == "done"
    assert kinds(sim) == ["create", "continue+1", "continue?", "create"]
    assert [e.data["reason"] for e in events if e.event == "thread.lost"] == ["thread_not_found"]


def test_a_resume_in_another_process_continues_the_thread(tmp_path: Path) -> None:
    sim = Simulator([*tool_turns(1), r.tool_use("danger", {}), r.text("Done.")])

    @tool(needs_approval=True)
    def danger() -> str:
        """Do something a person approves."""
        return "done it"

    with served(sim) as client:
        first = Agent(client, tools=[add, danger], policy=THREAD, logger=None).run(
            "Go.", store=SQLiteStore(tmp_path / "runs.db")
        )
        stored = SQLiteStore(tmp_path / "runs.db").load(first.conversation_id)
        assert stored.thread is not None and stored.thread.previous_message_id is not None
        agent = Agent(client, tools=[add, danger], policy=THREAD, logger=None)
        done = agent.resume(first.conversation_id, store=SQLiteStore(tmp_path / "runs.db"), approve=True)
    assert done.final_state == "done"
    assert kinds(sim) == ["create", "continue+1", "continue+1"]
    assert sim.requests[2].body["thread"]["previous_message_id"] == stored.thread.previous_message_id


class _CrashOnSave:
    """A store that dies on its ``n``-th save: the reply arrived, its snapshot never landed."""

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.n = inner, n

    def save(self, snapshot: Any) -> None:
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt
        self.inner.save(snapshot)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_crash_after_a_reply_was_continued_recovers_by_a_full_replay(tmp_path: Path) -> None:
    """The snapshot says continue reply 1; the server continued it already (the lost turn): 400
    thread_already_continued, and the same turn goes again with the full history."""
    sim = Simulator([*tool_turns(2), r.tool_use("add", {"a": 9, "b": 9}), r.text("Done.")])
    store = MemoryStore()
    with served(sim) as client:
        agent = Agent(client, tools=[add], policy=THREAD, logger=None)
        saves = _count_saves_until_second_reply(tmp_path)
        with pytest.raises(KeyboardInterrupt):
            agent.run("Add.", store=_CrashOnSave(store, saves), conversation_id="conv_crash")  # type: ignore[arg-type]
        assert kinds(sim) == ["create", "continue+1"]
        with capture_events() as events:
            done = Agent(client, tools=[add], policy=THREAD, logger=None).resume("conv_crash", store=store)
    assert done.final_state == "done"
    assert kinds(sim)[2:] == ["continue?", "create", "continue+1"]
    assert sim.requests[2].status == 400
    assert [e.data["reason"] for e in events if e.event == "thread.lost"] == ["thread_already_continued"]


def _count_saves_until_second_reply(tmp_path: Path) -> int:
    """The save that would record the second reply, counted on a run of the same script."""
    sim = Simulator([*tool_turns(2), r.tool_use("add", {"a": 9, "b": 9}), r.text("Done.")])
    saves: list[int] = []

    class Counting(MemoryStore):
        def save(self, snapshot: Any) -> None:
            saves.append(snapshot.counters.turns)
            super().save(snapshot)

    Agent(sim.client(), tools=[add], policy=THREAD, logger=None).run("Add.", store=Counting())
    return saves.index(2) + 1  # the first save after the second request


def test_pause_turn_resumes_on_the_thread_with_no_messages() -> None:
    sim = Simulator([r.pause_turn(query="Hanoi news"), r.text("Here is the news.")])
    with served(sim) as client:
        agent = Agent(client, tools=[{"type": "web_search_20250305", "name": "web_search"}], policy=THREAD,
                      logger=None)  # fmt: skip
        result = agent.run("News?")
    assert result.final_state == "done"
    assert kinds(sim) == ["create", "continue+0"]
    assert wire_messages(sim.requests[1]) == []
    # the server held the paused turn, and the model saw it last, unchanged
    paused = _unmarked(sim.requests[1].messages)
    assert paused[-1]["role"] == "assistant" and paused[-1]["content"][-1]["type"] == "server_tool_use"
    assert paused == _unmarked(sim.requests[0].messages) + [paused[-1]]  # noqa: RUF005
    assert result.messages[-1]["content"][: len(paused[-1]["content"])] == paused[-1]["content"]


def test_a_ladder_retry_creates_a_new_thread_without_the_cut_reply() -> None:
    """A reply cut inside a tool call is dropped from our history; the server holds it (and its predecessor
    was continued already), so the retry is a create with our history, which never had the cut reply."""
    sim = Simulator([r.tool_use("add", {"a": 1, "b": 1}), r.truncated_tool_use("add", '{"a": 2'),
                     r.tool_use("add", {"a": 2, "b": 2}), r.text("Done.")])  # fmt: skip
    with served(sim) as client:
        result = Agent(client, tools=[add], policy=THREAD, logger=None).run("Add.")
    assert result.final_state == "done"
    assert kinds(sim) == ["create", "continue+1", "create", "continue+1"]
    retry = sim.requests[2]
    assert retry.max_tokens is not None and retry.max_tokens > (sim.requests[1].max_tokens or 0)
    assert _unmarked(retry.messages) == _unmarked(sim.requests[1].messages)


def test_a_prompted_text_continuation_continues_the_thread() -> None:
    sim = Simulator([r.max_tokens("The first half"), r.text(" and the second.")])
    with served(sim) as client:
        result = Agent(client, policy=Policy(transport="thread", continuation="prompt"), logger=None).run("Tell.")
    assert result.final_state == "done" and result.text.startswith("The first half")
    assert kinds(sim) == ["create", "continue+1"]
    assert wire_messages(sim.requests[1])[0]["role"] == "user"


def test_a_prefill_continuation_resumes_the_turn_then_creates_anew() -> None:
    """A prefill goes as ``[]`` (the server holds the cut turn); our history joins the seam into one text
    block, which is not what the server holds, so the next request creates a thread."""
    sim = Simulator([r.max_tokens("The first half"), r.text(" and the second."), r.text("Again.")])
    policy = Policy(transport="thread", continuation="prefill")
    with served(sim) as client:
        agent = Agent(client, model="claude-sonnet-4-5", policy=policy, logger=None)
        result = agent.run("Tell.")
        assert result.final_state == "done" and result.text == "The first half and the second."
        again = agent.run([*result.messages, {"role": "user", "content": "Once more."}])
    assert again.final_state == "done"
    assert kinds(sim) == ["create", "continue+0", "create"]


@pytest.mark.beyond_schema  # the compaction parameter
def test_a_compaction_request_goes_unthreaded_and_the_compacted_history_starts_a_thread() -> None:
    sim = Simulator([*tool_turns(1), r.compaction("Summary."), *tool_turns(1), r.text("Answer.")])
    policy = Policy(transport="thread", compact_at_input_tokens=40, max_compactions=1)
    with served(sim) as client:
        result = Agent(client, tools=[add], policy=policy, logger=None).run("Add.")
    assert result.final_state == "done" and result.text == "Answer."
    assert kinds(sim) == ["create", "full", "create", "continue+1"]
    assert sim.requests[1].is_compaction


def test_a_refused_reply_is_not_continued() -> None:
    sim = Simulator([*tool_turns(1), r.refusal(), r.text("Fine.")])
    with served(sim) as client:
        agent = Agent(client, tools=[add], policy=Policy(transport="thread", fallback_model="claude-haiku-4-5",
                                                         fallback_credit_tokens=False), logger=None)  # fmt: skip
        result = agent.run("Add.")
    assert result.final_state == "done" and result.text == "Fine."
    assert kinds(sim) == ["create", "continue+1", "create"]
    assert sim.requests[2].model == "claude-haiku-4-5"


def test_a_dropped_stream_is_sent_again_as_the_same_continue() -> None:
    """The server holds none of a reply it never finished: the resend continues the same reply."""
    sim = Simulator([*tool_turns(1), r.with_fault(r.text("Done."), "drop"), r.text("Done.")])
    with served(sim, "stream") as client:
        agent = Agent(client, tools=[add], policy=Policy(transport="thread", stream_retry_backoff=0), logger=None)
        result = drive(agent, "Add.", "stream")
    assert result.final_state == "done"
    assert kinds(sim) == ["create", "continue+1", "continue+1"]
    assert sim.requests[1].body["thread"] == sim.requests[2].body["thread"]


def test_changed_tools_start_a_new_thread() -> None:
    """A continue cannot change the tools the thread was created with: a run given other tools creates."""
    sim = Simulator([*tool_turns(1), r.text("Done."), r.text("Again.")])
    with served(sim) as client:
        agent = Agent(client, tools=[add], policy=THREAD, logger=None)
        first = agent.run("Add.", store=(store := MemoryStore()))
        other = Agent(client, tools=[add, multiply_tool], policy=THREAD, logger=None)
        other.run([*first.messages, {"role": "user", "content": "More."}], store=store)
    assert kinds(sim) == ["create", "continue+1", "create"]


@tool(name="multiply")
def multiply_tool(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def test_the_default_transport_sends_the_full_history_without_the_beta() -> None:
    sim = Simulator([*tool_turns(1), r.text("Done.")])
    with served(sim) as client:
        Agent(client, tools=[add], logger=None).run("Add.")
    assert kinds(sim) == ["full", "full"] and not any(THREADS_BETA in q.betas for q in sim.requests)


@pytest.mark.slow  # starts a process
def test_the_benchmark_runs_and_finds_the_histories_equal() -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "threads.py"), "--quick"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("message threads (quick: a smoke run")
    assert [line.split()[0] for line in lines[2:4]] == ["messages", "thread"]
    assert lines[-1].endswith("fewer bytes; the histories are equal")


def test_a_server_that_cannot_thread_the_run_gets_the_full_history_from_then_on() -> None:
    """``thread_unsupported_request`` (a 400 the simulator never gives; a server the library did not write
    does): the turn goes again without a thread, and so does every later one."""
    from hostile_server import HostileServer, call, json_body, message, text

    unsupported = {"error_code": "thread_unsupported_request", "unsupported": ["mcp_servers"]}
    error = {"type": "invalid_request_error", "message": "this request cannot be threaded", "details": unsupported}
    script = [
        json_body({"type": "error", "error": error}, status=400),
        json_body(message([call("add", {"a": 1, "b": 2}, "toolu_1")], "tool_use", id="msg_1")),
        json_body(message([text("Three.")], id="msg_2")),
    ]
    with HostileServer(script) as server, capture_events() as events:
        client = anthropic.Anthropic(base_url=server.url, api_key=SIM_API_KEY, max_retries=0)
        result = Agent(client, tools=[add], policy=THREAD, logger=None).run("Add.")
    assert result.final_state == "done" and result.text == "Three."
    assert [q.get("thread") for q in server.requests] == [{"type": "create"}, None, None]
    assert [THREADS_BETA in h.get("anthropic-beta", "") for h in server.headers] == [True, False, False]
    assert [e.data["reason"] for e in events if e.event == "thread.lost"] == ["thread_unsupported_request"]
    assert all("thread" in p for p in server.problems)  # the vendored schema predates `thread`; nothing else


RESUME_IN_A_CHILD = """
import sys
import anthropic
from agentfsm import Agent, Policy, tool
from agentfsm.stores.sqlite import SQLiteStore

@tool
def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.\"\"\"
    return a + b

@tool(needs_approval=True)
def danger() -> str:
    \"\"\"Do something a person approves.\"\"\"
    return "done it"

url, db, conversation = sys.argv[1:4]
client = anthropic.Anthropic(base_url=url, api_key="sk-ant-sim-0000000000000000", max_retries=0)
agent = Agent(client, tools=[add, danger], policy=Policy(transport="thread"), logger=None)
print(agent.resume(conversation, store=SQLiteStore(db), approve=True).final_state)
"""


@pytest.mark.slow  # starts a process
def test_a_resume_in_a_child_process_continues_the_thread(tmp_path: Path) -> None:
    sim = Simulator([*tool_turns(1), r.tool_use("danger", {}), r.text("Done.")])

    @tool(needs_approval=True)
    def danger() -> str:
        """Do something a person approves."""
        return "done it"

    db = tmp_path / "runs.db"
    with served(sim) as client:
        first = Agent(client, tools=[add, danger], policy=THREAD, logger=None).run("Go.", store=SQLiteStore(db))
        assert first.waiting is not None
        url = str(client.base_url).rstrip("/")
        child = subprocess.run(
            [sys.executable, "-c", RESUME_IN_A_CHILD, url, str(db), first.conversation_id],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "done"
    assert kinds(sim) == ["create", "continue+1", "continue+1"]
    stored = SQLiteStore(db).load(first.conversation_id)
    assert stored.thread is not None  # the thread is the one the first process created
    assert stored.thread.thread_id == sim.requests[1].body["thread"]["previous_message_id"]
