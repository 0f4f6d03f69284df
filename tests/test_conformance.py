"""Conformance with real API traffic: every recorded answer, fed to the machine, routes as SPEC.md §1 says.

Each real recording (``../shared/realtraffic``, see ``realtraffic.py``) is
served by the simulator exactly as recorded, to an agent whose first request
it answers. The run must reach the state its stop_reason names (errors:
``failed`` with the recorded status), carry every recorded content block into
the history and the next request unchanged (compared as JSON), and raise
nothing. Unknown tool names become is_error tool results, as they should; a
scripted ``end_turn`` answers whatever request follows.

Requests made here also pass the suite-wide checks (``conftest.py``): the
wire rules and the official request schema.

Another driver is one ``Driver`` (a runner, and whether it needs an async
client): add a plain one to ``PLAIN_DRIVERS``; for streaming drivers, replay
``REAL_SSE`` through them with ``replay(record, driver)`` and ``assert_routed``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from realtraffic import SKIP_REASON, Record, by_name, ga_input_block_types, load_corpus, params

from agentfsm import Agent, Policy, RunResult, tool
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import drive
from agentfsm.tools.calls import ToolCall, ToolResult
from agentfsm.tools.definition import Tool
from agentfsm.tools.executor import DefaultExecutor
from agentfsm.wire.caching import unmarked

# The SDK warns about every retired model name it sees, and the recordings span three years of them.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

PROMPT = "Replay the recorded answer."
FOLLOW_UP = "Done."
DEFAULT_MODEL = "claude-sonnet-4-6"
#: Beta names sent when a recorded answer holds blocks only the beta API accepts back (labels for the simulator).
BETA_FOR_BLOCK = {
    "mcp_tool_use": "mcp-client-2025-04-04",
    "mcp_tool_result": "mcp-client-2025-04-04",
    "compaction": "compact-2026-01-12",
    "advisor_tool_result": "advisor-tool-2026-03-01",
}

Runner = Callable[[Agent, str], RunResult]
"""Runs an agent on a prompt to its result (a streaming driver consumes its events and returns the last one's)."""


@dataclass(frozen=True)
class Driver:
    """One way to run an agent: its runner, and whether it needs an async client."""

    run: Runner
    asynchronous: bool = False


def through(driver: str) -> Runner:
    """A runner of ``agentfsm.testing.drive`` with ``driver``."""
    return lambda agent, prompt: drive(agent, prompt, driver)


#: Drivers that send plain requests; every JSON recording (and every SSE one, folded) is replayed through each.
PLAIN_DRIVERS: dict[str, Driver] = {"run": Driver(through("run"))}
#: Drivers that stream: every SSE recording is served to them byte for byte.
STREAM_DRIVERS: dict[str, Driver] = {
    "stream": Driver(through("stream")),
    "astream": Driver(through("astream"), asynchronous=True),
}


# --- replaying one recording ------------------------------------------------------------------


def model_for(record: Record) -> str:
    for source in (record.request, record.message):
        model = (source or {}).get("model")
        if isinstance(model, str) and model:
            return model
    return DEFAULT_MODEL


def client_tool_names(content: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(b["name"]) for b in content if b.get("type") == "tool_use" and "name" in b))


def betas_for(content: list[dict[str, Any]]) -> list[str]:
    """The beta API is needed when the answer holds blocks a GA request may not send back."""
    ga = ga_input_block_types() or frozenset()
    kinds = {str(b.get("type")) for b in content}
    return sorted({BETA_FOR_BLOCK.get(kind, "beta") for kind in kinds - ga}) if ga else []


@dataclass
class Replay:
    record: Record
    message: dict[str, Any] | None  # the Message as served to the first request (None for an error)
    sim: Simulator
    result: RunResult
    executed: list[str]

    @property
    def content(self) -> list[dict[str, Any]]:
        return list((self.message or {}).get("content") or [])


class WatchingExecutor(DefaultExecutor):
    """The default executor, noting every call it is asked to run."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ToolCall] = []

    def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        self.calls.extend(calls)
        return super().execute(calls, tools, timeout)

    async def aexecute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        self.calls.extend(calls)
        return await super().aexecute(calls, tools, timeout)


def replay(record: Record, driver: Driver = PLAIN_DRIVERS["run"], **policy: Any) -> Replay:
    """Run an agent whose first request is answered by ``record``, and later ones by a plain end_turn.

    The recorded client tools are declared (as plain definitions, so every call
    of one is answered as an unknown tool); the executor notes each call.
    """
    message = copy.deepcopy(record.message)
    content = list((message or {}).get("content") or [])
    sim = Simulator([r.recorded(record.recording), r.text(FOLLOW_UP)])
    client = sim.async_client(max_retries=0) if driver.asynchronous else sim.client(max_retries=0)
    executor = WatchingExecutor()
    names = client_tool_names(content)
    agent = Agent(
        client=client,
        model=model_for(record),
        tools=[{"name": n, "description": "recorded tool", "input_schema": {"type": "object"}} for n in names],
        betas=betas_for(content),
        policy=Policy(**policy),
        executor=executor,
        logger=None,
    )
    result = driver.run(agent, PROMPT)
    return Replay(record, message, sim, result, [c.name for c in executor.calls])


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def assert_routed(rp: Replay) -> None:
    """The run reached the state SPEC.md §1 names and carried the recorded blocks unchanged."""
    record, result, sim = rp.record, rp.result, rp.sim
    first = sim.requests[0].messages
    assert first == [{"role": "user", "content": PROMPT}]
    if record.is_error:
        assert result.path == ["requesting", "failed"], result.path
        assert result.error is not None and result.error.status_code == record.status_code
        assert result.messages == first  # the history is kept, nothing added
        return
    expected = record.expected_state
    assert result.path[:2] == ["requesting", expected], (result.path, record.stop_reason)
    assert result.final_state in ("done", "truncated", "refused", "failed")
    content = rp.content
    if expected == "tool_use":
        assert_tool_use(rp, content)
    elif expected == "max_tokens":
        assert_max_tokens(rp, content)
    elif expected == "pause_turn":
        resumed = sim.requests[1].messages
        assert unmarked(resumed[:-1]) == unmarked(first)
        assert as_json(resumed[-1]) == as_json({"role": "assistant", "content": content})
    else:  # finished: end_turn, stop_sequence, refusal, unknown stop reasons
        assert len(sim.requests) == 1
        kept = [{"role": "assistant", "content": content}] if content else []
        assert as_json(result.messages) == as_json(first + kept)


def assert_tool_use(rp: Replay, content: list[dict[str, Any]]) -> None:
    result, sim = rp.result, rp.sim
    calls = [b for b in content if b.get("type") == "tool_use"]
    if not calls:  # a tool_use stop with no client call to answer: fail rather than send an empty message
        assert result.final_state == "failed" and result.reason == "no_tool_calls"
        return
    second = sim.requests[1].messages
    assert as_json(second[1]) == as_json({"role": "assistant", "content": content})
    assert [b["tool_use_id"] for b in second[2]["content"]] == [b["id"] for b in calls]
    assert all(b["type"] == "tool_result" and b.get("is_error") for b in second[2]["content"])
    assert result.final_state == "done" and result.text == FOLLOW_UP


def assert_max_tokens(rp: Replay, content: list[dict[str, Any]]) -> None:
    result, sim = rp.result, rp.sim
    trigger = result.trace[1].trigger
    if not content or content[-1].get("type") != "text":  # cut inside a block: the ladder, never the cut call
        assert trigger == "retry_larger", result.trace
        again = sim.requests[1]
        assert unmarked(again.messages) == unmarked(sim.requests[0].messages)
        assert again.max_tokens == Policy().max_tokens_ladder[0]
        assert rp.executed == []
        assert result.final_state == "done" and result.text == FOLLOW_UP
        return
    assert trigger == "continue_text", result.trace
    sent = sim.requests[-1].messages  # after a rejected prefill, the prompt continuation is the last request
    assistant = sent[1]
    assert assistant["role"] == "assistant"
    if sent[-1]["role"] == "assistant":  # prefill: the cut text goes back without trailing whitespace
        head = content[-1]
        stripped = [*content[:-1], {**head, "text": head["text"].rstrip()}] if head["text"].strip() else content[:-1]
        assert as_json(unmarked([assistant])) == as_json(unmarked([{**assistant, "content": stripped}]))
    else:
        assert as_json(assistant["content"]) == as_json(content)
    assert result.final_state == "done"


# --- the corpus --------------------------------------------------------------------------------

REAL_JSON = load_corpus("real", streaming=False)
REAL_SSE = load_corpus("real", streaming=True)


@pytest.mark.parametrize("driver", PLAIN_DRIVERS.values(), ids=PLAIN_DRIVERS.keys())
@pytest.mark.parametrize("record", params(REAL_JSON))
def test_real_json_answer_routes_as_its_stop_reason(record: Record, driver: Driver) -> None:
    assert_routed(replay(record, driver))


@pytest.mark.parametrize("driver", PLAIN_DRIVERS.values(), ids=PLAIN_DRIVERS.keys())
@pytest.mark.parametrize("record", params(REAL_SSE))
def test_real_sse_answer_folded_to_json_routes_as_its_stop_reason(record: Record, driver: Driver) -> None:
    """A streamed recording served to a plain request: the simulator folds it into its Message."""
    assert_routed(replay(record, driver))


def test_corpus_counts_match_the_manifest() -> None:
    if not REAL_JSON:
        pytest.skip(SKIP_REASON)
    assert (len(REAL_JSON), len(REAL_SSE)) == (986, 432)
    errors = [rec for rec in REAL_JSON if rec.is_error]
    assert len(errors) == 33 and {rec.status_code for rec in errors} == {400, 401, 404, 429}


# --- streamed recordings, through the raw SDK (the agent-level stream test builds on these) -------------


def sdk_messages(client: Any, record: Record) -> Any:
    """``client.messages``, or ``client.beta.messages`` when the answer holds beta-only blocks."""
    return client.beta.messages if betas_for(list((record.message or {}).get("content") or [])) else client.messages


def cut_tool_call(content: list[dict[str, Any]], stop_reason: str | None) -> bool:
    return stop_reason == "max_tokens" and bool(content) and content[-1].get("type") == "tool_use"


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize("driver", STREAM_DRIVERS.values(), ids=STREAM_DRIVERS.keys())
@pytest.mark.parametrize("record", params(REAL_SSE))
def test_real_sse_answer_streamed_routes_as_its_stop_reason(record: Record, driver: Driver) -> None:
    """The recorded stream itself, byte for byte, through the streaming drivers: same states, same blocks."""
    rp = replay(record, driver, stream_retries=0)
    assert_routed(rp)
    assert rp.sim.requests[0].stream


@pytest.mark.parametrize("record", params(REAL_SSE))
def test_real_sse_is_served_byte_for_byte_and_the_sdk_parses_it(record: Record) -> None:
    sim = Simulator([r.recorded(record.recording)] * 2)
    resource = sdk_messages(sim.client(max_retries=0), record)
    ask: dict[str, Any] = {
        "model": model_for(record),
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with resource.with_streaming_response.create(stream=True, **ask) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert b"".join(response.iter_bytes()) == (record.sse or "").encode("utf-8")
    with resource.stream(**ask) as stream:
        for _ in stream:
            pass
        final = stream.get_final_message()
    assert final.stop_reason == record.stop_reason == record.recorded_stop_reason
    # The simulator's own fold of the stream (what a non-streaming request is served) agrees with the SDK's,
    # except for a tool call cut by max_tokens: the SDK keeps its partial input, the non-streaming API says {}.
    sdk_content, folded = without_nulls(final.to_dict()["content"]), without_nulls(record.message)["content"]
    if cut_tool_call(folded, record.stop_reason):
        assert folded[-1]["input"] == {} and sdk_content[-1]["input"] != {}
        sdk_content[-1]["input"] = {}
    assert sdk_content == folded


# --- the two real pause_turns -------------------------------------------------------------------


def agent_like(record: Record, sim: Simulator, **kw: Any) -> Agent:
    """An agent that sends what the recorded request sent: model, max_tokens, tools and other parameters."""
    request = dict(record.request or {})
    params = {k: v for k, v in request.items() if k not in ("model", "max_tokens", "messages", "stream", "tools")}
    kw.setdefault("client", sim.client(max_retries=0))
    return Agent(
        model=request["model"],
        tools=request.get("tools") or [],
        request_params=params,
        policy=Policy(max_tokens=request["max_tokens"], max_tokens_ladder=[2 * request["max_tokens"]]),
        logger=None,
        **kw,
    )


def test_real_pause_turn_resumes_with_the_paused_content_exactly_as_the_recorded_follow_up() -> None:
    paused, resumed = (
        by_name("pyd__test_pause_turn_web_search_vcr__0.json"),
        by_name("pyd__test_pause_turn_web_search_vcr__1.json"),
    )
    sim = Simulator.from_recording(paused.recording, resumed.recording)
    result = agent_like(paused, sim).run(paused.request["messages"])  # type: ignore[index]
    assert result.path == ["requesting", "pause_turn", "requesting", "end_turn", "done"]
    assert paused.message is not None and paused.message["content"][-1]["type"] == "server_tool_use"
    sent = sim.requests[1].body
    assert as_json(unmarked(sent["messages"])) == as_json(unmarked(resumed.request["messages"]))  # type: ignore[index]
    for key in ("model", "max_tokens", "tools", "thinking", "tool_choice"):
        assert sent[key] == resumed.request[key]  # type: ignore[index]
    # The resumed answer continues the same assistant turn: one turn holds both parts, roles alternate.
    assert resumed.message is not None
    assert [m["role"] for m in result.messages] == ["user", "assistant"]
    assert as_json(result.messages[1]["content"]) == as_json(paused.message["content"] + resumed.message["content"])
    assert result.text.endswith(resumed.message["content"][-1]["text"])


def test_real_streamed_pause_turn_folded_to_json_resumes_unchanged() -> None:
    """The streamed twin, served to a non-streaming request: the resume carries the folded stream unchanged.

    Its recorded follow-up request is not a byte-for-byte echo of the stream (the recording client dropped
    each result's ``caller`` and the cassette holds ASCII-folded titles), so it agrees once those are undone.
    """
    paused = by_name("pyd__test_pause_turn_web_search_streaming_vcr__0.json")
    resumed = by_name("pyd__test_pause_turn_web_search_streaming_vcr__1.json")
    sim = Simulator.from_recording(paused.recording, resumed.recording)
    result = agent_like(paused, sim).run(paused.request["messages"])  # type: ignore[index]
    assert result.path == ["requesting", "pause_turn", "requesting", "end_turn", "done"]
    assert paused.message is not None
    sent = sim.requests[1].body["messages"]
    assert as_json(sent[-1]) == as_json({"role": "assistant", "content": paused.message["content"]})
    recorded = resumed.request["messages"]  # type: ignore[index]
    assert unmarked(sent[:-1]) == unmarked(recorded[:-1])
    assert ascii_folded(without_key(sent[-1], "caller")) == ascii_folded(recorded[-1])


@pytest.mark.parametrize("driver", STREAM_DRIVERS.values(), ids=STREAM_DRIVERS.keys())
def test_real_streamed_pause_turn_resumes_end_to_end_over_the_stream(driver: Driver) -> None:
    """The streamed twin served as recorded, byte for byte, to a streaming agent: resumed, then finished."""
    paused = by_name("pyd__test_pause_turn_web_search_streaming_vcr__0.json")
    resumed = by_name("pyd__test_pause_turn_web_search_streaming_vcr__1.json")
    sim = Simulator.from_recording(paused.recording, resumed.recording)
    client = sim.async_client(max_retries=0) if driver.asynchronous else sim.client(max_retries=0)
    agent = agent_like(paused, sim, client=client)
    result = driver.run(agent, paused.request["messages"])  # type: ignore[arg-type,index]
    assert result.path == ["requesting", "pause_turn", "requesting", "end_turn", "done"]
    assert paused.message is not None and resumed.message is not None
    sent = sim.requests[1].body["messages"]
    assert sim.requests[0].stream and sim.requests[1].stream
    # the resume carries the paused turn exactly as it streamed in, and no new user text
    assert as_json(sent[-1]) == as_json({"role": "assistant", "content": paused.message["content"]})
    assert unmarked(sent[:-1]) == unmarked(paused.request["messages"])  # type: ignore[index]
    assert ascii_folded(without_key(sent[-1], "caller")) == ascii_folded(resumed.request["messages"][-1])  # type: ignore[index]
    assert as_json(result.messages[1]["content"]) == as_json(paused.message["content"] + resumed.message["content"])


def without_key(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: without_key(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [without_key(v, key) for v in value]
    return value


def ascii_folded(value: Any) -> str:
    return as_json(value).translate({0x2013: "-", 0x2014: "-", 0x2018: "'", 0x2019: "'", 0x201C: '"', 0x201D: '"'})


# --- the two real tool calls cut by max_tokens ------------------------------------------------------


def test_real_non_streamed_cut_tool_call_climbs_the_ladder_and_never_runs() -> None:
    """Bedrock, Claude 3 Sonnet, max_tokens=100: two parallel calls, the second cut to ``input: {}``."""
    record = by_name("openinference-bedrock__should-handle-multiple-tools-in-single-request__0.json")
    assert record.message is not None
    cut = record.message["content"][-1]
    assert cut["type"] == "tool_use" and cut["input"] == {} and record.stop_reason == "max_tokens"
    ran: list[tuple[str, dict[str, Any]]] = []

    @tool
    def get_weather(location: str, unit: str = "celsius") -> str:
        """Get current weather for a location."""
        ran.append(("get_weather", {"location": location, "unit": unit}))
        return f"18 degrees in {location}"

    @tool
    def calculate(expression: str) -> str:
        """Perform mathematical calculations."""
        ran.append(("calculate", {"expression": expression}))
        return "345"

    whole = r.tool_uses([("get_weather", {"location": "San Francisco, CA"}), ("calculate", {"expression": "15 * 23"})])
    sim = Simulator.from_recording(record.recording, then=[whole, r.text("18 degrees, and 15 * 23 = 345.")])
    agent = Agent(
        client=sim.client(max_retries=0),
        model="claude-3-sonnet-20240229",
        tools=[get_weather, calculate],
        policy=Policy(max_tokens=100, max_tokens_ladder=[1024, 4096]),
        logger=None,
    )
    result = agent.run(record.request["messages"])  # type: ignore[index]
    assert [s.trigger for s in result.trace[:2]] == ["max_tokens", "retry_larger"]
    assert [q.max_tokens for q in sim.requests] == [100, 1024, 1024]
    assert unmarked(sim.requests[1].messages) == unmarked(sim.requests[0].messages)  # the same request, more room
    # Neither call of the cut reply ran (not even the complete first one), and the reply is in no request.
    # Each call of the whole reply ran once (concurrently: in either order).
    assert sorted(ran) == [
        ("calculate", {"expression": "15 * 23"}),
        ("get_weather", {"location": "San Francisco, CA", "unit": "celsius"}),
    ]
    for request in sim.requests:
        assert cut["id"] not in json.dumps(request.body)
    assert result.final_state == "done" and result.text == "18 degrees, and 15 * 23 = 345."


def test_real_streamed_cut_tool_call_folded_to_json_climbs_the_ladder() -> None:
    """Claude 3.7 Sonnet, fine-grained tool streaming: the stream stops inside the tool input, no block stop."""
    record = by_name("anthropic-sdk-python__lib__streaming__fixtures__incomplete_partial_json_response.json")
    assert record.sse is not None and '"index":1 }' not in record.sse.split("content_block_stop")[-1]
    rp = replay(record)
    assert_routed(rp)
    assert [s.trigger for s in rp.result.trace[:2]] == ["max_tokens", "retry_larger"] and rp.executed == []
    assert rp.message is not None and rp.message["content"][-1]["input"] == {}


@pytest.mark.parametrize("driver", STREAM_DRIVERS.values(), ids=STREAM_DRIVERS.keys())
def test_real_streamed_cut_tool_call_climbs_the_ladder_over_the_stream(driver: Driver) -> None:
    """The same recording streamed byte for byte: the partial JSON is never parsed into a call, never run."""
    record = by_name("anthropic-sdk-python__lib__streaming__fixtures__incomplete_partial_json_response.json")
    rp = replay(record, driver, stream_retries=0)
    assert_routed(rp)
    assert [s.trigger for s in rp.result.trace[:2]] == ["max_tokens", "retry_larger"]
    assert rp.executed == []
    assert rp.sim.requests[1].max_tokens > rp.sim.requests[0].max_tokens
    assert unmarked(rp.sim.requests[1].messages) == unmarked(rp.sim.requests[0].messages)


# --- not real recordings: hand-made fixtures and pasted error bodies, run apart ------------------------


#: Hand-made fixtures holding content the API does not send, which therefore cannot validate when sent back.
HAND_MADE_OFF_SCHEMA = {
    "anthropic-sdk-python__hist__lib__streaming__fixtures__server_tool_result_response": "server tool id 'svu_web_001'",
    "prism__structured-with-provider-tool-toolcalling-1": "a web_search_tool_result whose content holds a text block",
    "vercel-ai__anthropic-message-start-prepopulated-content.chunks": "code_execution_result with abort_reason",
}


def synthetic_params() -> list[Any]:
    out = params(load_corpus("synthetic"))
    for i, param in enumerate(out):
        if param.id in HAND_MADE_OFF_SCHEMA:
            out[i] = pytest.param(*param.values, id=param.id, marks=pytest.mark.beyond_schema)
    return out


@pytest.mark.parametrize("record", synthetic_params())
def test_suspect_synthetic_fixture_routes_as_its_stop_reason(record: Record) -> None:
    """Hand-made or edited fixtures (``_suspect_synthetic/``): not counted as real, but they must route too.

    Three hold made-up content (``HAND_MADE_OFF_SCHEMA``) that the machine rightly sends back unchanged and the
    request schema rightly rejects; their requests are counted but not failed (``beyond_schema``).
    """
    assert_routed(replay(record))


@pytest.mark.parametrize("record", params(load_corpus("issue")))
def test_error_body_from_an_issue_report_is_a_request_failure(record: Record) -> None:
    """Error bodies users pasted into GitHub issues (``_from_issue_reports/``): not recordings."""
    assert_routed(replay(record))


def test_the_simulator_guide_states_the_counts_that_pass() -> None:
    if not REAL_JSON:
        pytest.skip(SKIP_REASON)
    page = Path(__file__).resolve().parents[1] / "docs" / "07-testing-with-the-simulator.md"
    guide = " ".join(page.read_text().split())  # wherever the Markdown wraps its lines
    total = len(REAL_JSON) + len(REAL_SSE)
    errors = sum(rec.is_error for rec in REAL_JSON)
    for claim in (
        f"**{total:,} of {total:,}**",
        f"{len(REAL_JSON)}/{len(REAL_JSON)} JSON",
        f"{len(REAL_SSE)}/{len(REAL_SSE)} SSE answers folded",
        f"{errors}/{errors} error bodies",
        f"{len(REAL_SSE)}/{len(REAL_SSE)} SSE recordings are served byte for byte",
        f"{len(REAL_SSE)}/{len(REAL_SSE)} route the same way through `agent.stream` and "
        f"{len(REAL_SSE)}/{len(REAL_SSE)} through `agent.astream`",
        f"{len(load_corpus('synthetic'))} hand-made fixtures",
    ):
        assert claim in guide, claim


# --- a real programmatic tool call: the follow-up must run in the reply's container ---------------------


def test_real_programmatic_tool_call_is_answered_in_the_reply_s_container() -> None:
    """Opus 4.5 calls a client tool from inside code execution (recorded by the SDK's own tool runner).

    The reply names the code-execution container the call is waiting in; the API needs every later request
    of the run to name it again, as the recorded follow-up request did.
    """
    stem = "anthropic-sdk-python__inline_snapshot__test_runners__TestSyncRunTools__092be1de-d3f8-4c22-a4ea-a7ad54689836"
    called, follow_up = by_name(f"{stem}__0.json"), by_name(f"{stem}__1.json")
    assert called.message is not None and called.message["content"][-1]["caller"]["type"] == "code_execution_20260120"
    container = called.message["container"]["id"]

    @tool
    def get_weather(location: str, units: Literal["c", "f"]) -> str:
        """Lookup the weather for a given city in either celsius or fahrenheit."""
        return json.dumps({"location": location, "temperature": f"20°{units.upper()}", "condition": "Sunny"})

    sim = Simulator.from_recording(called.recording, follow_up.recording, then=[r.text("20°C in all three.")])
    agent = Agent(
        client=sim.client(max_retries=0),
        model="claude-haiku-4-5",
        tools=[get_weather],
        betas=["advanced-tool-use-2025-11-20"],
        logger=None,
    )
    result = agent.run(called.request["messages"])  # type: ignore[index]
    assert "container" not in sim.requests[0].body
    recorded = follow_up.request or {}
    assert as_json(unmarked(sim.requests[1].body["messages"])) == as_json(unmarked(recorded["messages"]))
    assert sim.requests[1].body["container"] == recorded["container"] == container
    assert sim.requests[2].body["container"] == container  # still the same container on the next turn
    assert result.final_state == "done" and result.text == "20°C in all three."
