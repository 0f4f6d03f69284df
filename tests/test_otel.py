"""OpenTelemetry spans (``agentfsm.otel``), read back from the SDK's in-memory exporter.

Every run goes through the real anthropic client on the simulator; the spans are checked as a
tree (names, kinds, parents, attributes, events, statuses) for all four drivers, stream resends,
resumed conversations, failures, concurrency, and the caller's own context.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentfsm import Agent, MemoryStore, Policy, RunResult, testing, tool
from agentfsm.otel import CONTENT_ENV, instrument, instrumented, uninstrument
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.simulator import SIM_API_KEY
from agentfsm.testing import DRIVERS, drive

MODEL = "claude-haiku-4-5"
FAST = Policy(stream_retry_backoff=0.0)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    yield exp
    exp.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


@pytest.fixture(autouse=True)
def _no_global_instrumentation() -> Iterator[None]:
    yield
    uninstrument()


def user_tracer(provider: TracerProvider) -> trace.Tracer:
    return trace.get_tracer("tests", tracer_provider=provider)


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


class Weather(Agent):
    model = MODEL
    tools = [lookup]
    policy = FAST


def two_turns() -> Simulator:
    return Simulator([r.tool_use("lookup", {"key": "hanoi"}), r.text("31°C in Hanoi.")])


def client_for(sim: Simulator, driver: str, **kw: Any) -> Any:
    return testing.client_for(sim, driver, max_retries=0, **kw)


class Tree:
    """The finished spans, with their parents."""

    def __init__(self, spans: tuple[ReadableSpan, ...]) -> None:
        self.spans = sorted(spans, key=lambda s: s.start_time or 0)
        self.by_id = {s.context.span_id: s for s in self.spans}

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def one(self, prefix: str) -> ReadableSpan:
        found = self.named(prefix)
        assert len(found) == 1, [s.name for s in self.spans]
        return found[0]

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        return self.by_id.get(span.parent.span_id) if span.parent is not None else None

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent is not None and s.parent.span_id == span.context.span_id]

    def shape(self, span: ReadableSpan | None = None) -> list[Any]:
        """Names as a nested list, children in start order."""
        if span is None:
            return [self.shape(s) for s in self.spans if self.parent(s) is None]
        kids = self.children(span)
        return [span.name, [self.shape(k) for k in kids]] if kids else [span.name]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- the span tree of a run ------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_driver_makes_the_same_span_tree(
    driver: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    sim = two_turns()
    result = drive(Weather(client=client_for(sim, driver), tracer_provider=provider), "Weather in Hanoi?", driver)
    assert result.final_state == "done"
    tree = Tree(exporter.get_finished_spans())
    assert tree.shape() == [
        [
            "invoke_agent Weather",
            [[f"chat {MODEL}"], ["execute_tool lookup"], [f"chat {MODEL}"]],
        ]
    ]
    run = tree.one("invoke_agent")
    assert run.kind is SpanKind.INTERNAL and run.status.status_code is StatusCode.OK
    for span in tree.spans:  # the conversation id on every span, one trace
        assert attrs(span)["gen_ai.conversation.id"] == result.conversation_id
        assert span.context.trace_id == run.context.trace_id
    first, second = tree.named("chat")
    assert attrs(first)["gen_ai.request.stream"] is driver.endswith("stream")
    assert attrs(second)["gen_ai.response.finish_reasons"] == ("end_turn",)


def test_run_span_attributes_and_transition_events(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    sim = two_turns()
    result = Weather(client=sim.client(max_retries=0), tracer_provider=provider).run("Weather in Hanoi?")
    run = Tree(exporter.get_finished_spans()).one("invoke_agent")
    a = attrs(run)
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "anthropic"
    assert a["gen_ai.agent.name"] == "Weather"
    assert a["agentfsm.agent"] == Weather.qualified_name()
    assert a["gen_ai.request.model"] == MODEL
    assert (a["agentfsm.final_state"], a["agentfsm.reason"], a["agentfsm.turns"]) == ("done", "end_turn", 2)
    assert a["gen_ai.usage.output_tokens"] == result.usage.output_tokens
    assert a["gen_ai.usage.input_tokens"] == result.usage.input_tokens  # no cache tokens in this run
    transitions = [e for e in run.events if e.name == "transition"]
    assert [(e.attributes["source"], e.attributes["dest"], e.attributes["trigger"]) for e in transitions] == [  # type: ignore[index]
        (t.source, t.dest, t.trigger) for t in result.trace
    ]
    assert [e.name for e in run.events][-1] == "run.finished"


def test_chat_and_tool_spans_carry_the_genai_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    sim = Simulator(
        [r.tool_use("lookup", {"key": "hanoi"}), r.text("31°C in Hanoi.")],
    )
    agent = Weather(client=sim.client(max_retries=0), tracer_provider=provider, request_params={"temperature": 0.5})
    result = agent.run("Weather in Hanoi?")
    tree = Tree(exporter.get_finished_spans())
    chat = tree.named("chat")[0]
    a = attrs(chat)
    assert chat.kind is SpanKind.CLIENT and chat.status.status_code is StatusCode.OK
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "anthropic"
    assert a["gen_ai.request.model"] == MODEL and a["gen_ai.request.max_tokens"] == 1024
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.response.model"] == MODEL and a["gen_ai.response.id"].startswith("msg_")
    assert a["gen_ai.response.finish_reasons"] == ("tool_use",) and a["anthropic.message.stop_reason"] == "tool_use"
    usage = next(e.data["usage"] for e in result.events if e.event == "response.received")
    assert a["gen_ai.usage.output_tokens"] == usage["output_tokens"]
    assert a["gen_ai.usage.input_tokens"] == (
        usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    )
    assert a["gen_ai.usage.cache_read.input_tokens"] == usage["cache_read_input_tokens"]
    assert a["gen_ai.usage.cache_write.input_tokens"] == usage["cache_creation_input_tokens"]
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # no content unless asked
    call = next(b for b in result.messages[1]["content"] if b["type"] == "tool_use")
    t = attrs(tree.one("execute_tool"))
    assert t["gen_ai.operation.name"] == "execute_tool" and t["gen_ai.tool.type"] == "function"
    assert (t["gen_ai.tool.name"], t["gen_ai.tool.call.id"]) == ("lookup", call["id"])
    assert t["gen_ai.tool.description"] == "Look a key up."
    assert "gen_ai.tool.call.arguments" not in t
    assert tree.one("execute_tool").status.status_code is StatusCode.OK


def test_the_sdks_own_spans_nest_under_ours_and_share_attribute_names(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    sim = two_turns()
    client = sim.client(max_retries=0, open_telemetry={"tracer_provider": provider})
    Weather(client=client, tracer_provider=provider).run("Weather in Hanoi?")
    tree = Tree(exporter.get_finished_spans())
    sdk = tree.named("anthropic.messages.create")
    assert len(sdk) == 2
    for span in sdk:
        chat = tree.parent(span)
        assert chat is not None and chat.name == f"chat {MODEL}"
        ours, theirs = attrs(chat), attrs(span)
        shared = {k for k in ours if k in theirs} - {"gen_ai.request.stream"}
        assert {
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "gen_ai.request.model",
            "gen_ai.request.max_tokens",
            "gen_ai.response.id",
            "gen_ai.response.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_write.input_tokens",
            "anthropic.message.stop_reason",
        } <= shared
        assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_spans_a_tool_makes_are_children_of_its_execute_tool_span(
    driver: str, kind: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = user_tracer(provider)

    def body(key: str) -> str:
        with tracer.start_as_current_span(f"inside {key}"):
            return key

    if kind == "sync":

        @tool
        def probe(key: str) -> str:
            """Probe."""
            return body(key)

    else:

        @tool
        async def probe(key: str) -> str:
            """Probe."""
            return body(key)

    sim = Simulator([r.tool_uses([("probe", {"key": "a"}), ("probe", {"key": "b"})]), r.text("ok")])
    agent = Agent(client=client_for(sim, driver), model=MODEL, tools=[probe], tracer_provider=provider)
    drive(agent, "go", driver)
    tree = Tree(exporter.get_finished_spans())
    tools = tree.named("execute_tool")
    assert len(tools) == 2
    for name, call in (("inside a", tools[0]), ("inside b", tools[1])):
        inside = tree.one(name)
        assert tree.parent(inside) is call


def test_a_lone_sync_tool_run_inline_still_gets_its_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = user_tracer(provider)

    @tool
    def probe(key: str) -> str:
        """Probe."""
        with tracer.start_as_current_span("inside"):
            return key

    sim = Simulator([r.tool_use("probe", {"key": "a"}), r.text("ok")])
    policy = Policy(tool_timeout=None)
    Agent(client=sim.client(max_retries=0), model=MODEL, tools=[probe], policy=policy, tracer_provider=provider).run(
        "go"
    )
    tree = Tree(exporter.get_finished_spans())
    assert tree.parent(tree.one("inside")) is tree.one("execute_tool")
    assert tree.parent(tree.one("execute_tool")) is tree.one("invoke_agent")


# --- resends, failures, resumes ---------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["stream", "astream"])
def test_a_stream_resend_is_its_own_chat_span_and_the_broken_one_failed(
    driver: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    sim = Simulator([r.with_fault(r.text("It is 31°C"), "drop"), r.text("It is 31°C in Hanoi.")])
    client = client_for(sim, driver, open_telemetry={"tracer_provider": provider})
    result = drive(Weather(client=client, tracer_provider=provider), "Weather?", driver)
    assert result.final_state == "done" and result.turns == 2  # a resend is a request: it counts as a turn
    tree = Tree(exporter.get_finished_spans())
    broken, resent = tree.named("chat")
    run = tree.one("invoke_agent")
    assert tree.parent(broken) is run and tree.parent(resent) is run
    assert broken.status.status_code is StatusCode.ERROR
    assert attrs(broken)["error.type"] and attrs(broken)["agentfsm.stream.fault"] == "dropped"
    assert resent.status.status_code is StatusCode.OK and attrs(resent)["agentfsm.request.resend"] == 1
    assert broken.end_time is not None and resent.start_time is not None and broken.end_time <= resent.start_time
    # the SDK's span of each attempt hangs under that attempt's span
    assert [tree.parent(s) for s in tree.named("anthropic.messages.create")] == [broken, resent]
    assert run.status.status_code is StatusCode.OK


def test_a_failed_request_fails_its_chat_span_and_the_run(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    sim = Simulator([r.overloaded()])
    result = Weather(client=sim.client(max_retries=0), tracer_provider=provider).run("Weather?")
    assert result.final_state == "failed"
    tree = Tree(exporter.get_finished_spans())
    chat, run = tree.one("chat"), tree.one("invoke_agent")
    assert chat.status.status_code is StatusCode.ERROR
    assert attrs(chat)["error.type"] == "overloaded_error" and attrs(chat)["http.response.status_code"] == 529
    assert run.status.status_code is StatusCode.ERROR and attrs(run)["error.type"] == "overloaded_error"
    assert SIM_API_KEY not in json.dumps([attrs(s) for s in tree.spans], default=str)


def test_a_failing_tool_fails_its_span_only(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    @tool
    def broken(key: str) -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    sim = Simulator([r.tool_use("broken", {"key": "k"}), r.text("Sorry.")])
    Agent(client=sim.client(max_retries=0), model=MODEL, tools=[broken], tracer_provider=provider).run("go")
    tree = Tree(exporter.get_finished_spans())
    span = tree.one("execute_tool")
    assert span.status.status_code is StatusCode.ERROR and attrs(span)["error.type"] == "tool_error"
    assert tree.one("invoke_agent").status.status_code is StatusCode.OK


def test_an_exception_out_of_a_hook_ends_every_span_with_it(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    class Boom(Weather):
        def on_end_turn(self, conv: Any) -> str | None:
            raise ValueError(f"hook failed for {SIM_API_KEY}")

    sim = two_turns()
    tracer = user_tracer(provider)
    with tracer.start_as_current_span("caller") as caller:
        with pytest.raises(ValueError):
            Boom(client=sim.client(max_retries=0), tracer_provider=provider).run("Weather?")
        assert trace.get_current_span() is caller  # the caller's context is back
    tree = Tree(exporter.get_finished_spans())
    run = tree.one("invoke_agent")
    assert tree.parent(run) is tree.one("caller")
    assert run.status.status_code is StatusCode.ERROR and attrs(run)["error.type"] == "ValueError"
    (exc,) = [e for e in run.events if e.name == "exception"]
    assert "[REDACTED]" in exc.attributes["exception.message"]  # type: ignore[index,operator]
    assert SIM_API_KEY not in json.dumps([[attrs(s), [dict(e.attributes or {}) for e in s.events]] for s in tree.spans])
    assert all(s.end_time is not None for s in tree.spans)


def test_a_resumed_conversation_is_a_new_run_span(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    store = MemoryStore()
    sim = two_turns()
    agent = Weather(client=sim.client(max_retries=0), tracer_provider=provider)
    conv = agent.start("Weather in Hanoi?", store=store)
    conv.step()  # requesting -> tool_use; then this worker stops
    conv.release()
    exporter.clear()
    result = agent.resume(conv.id, store=store)
    assert result.final_state == "done"
    tree = Tree(exporter.get_finished_spans())
    run = tree.one("invoke_agent")
    a = attrs(run)
    assert a["agentfsm.resumed"] is True and a["agentfsm.resumed.at_state"] == "tool_use"
    assert a["gen_ai.conversation.id"] == conv.id
    assert tree.shape() == [["invoke_agent Weather", [["execute_tool lookup"], [f"chat {MODEL}"]]]]
    assert attrs(tree.one("chat"))["agentfsm.turn"] == 2


def test_a_cancelled_arun_ends_its_spans_and_a_later_arun_gets_new_ones(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    gate = asyncio.Event()
    runs = 0

    @tool(idempotent=True)  # run again after the cancellation (a non-idempotent one is answered "interrupted")
    async def slow(key: str) -> str:
        """Blocks the first time."""
        nonlocal runs
        runs += 1
        if runs == 1:
            await gate.wait()
        return "ok"

    sim = Simulator([r.tool_use("slow", {"key": "k"}), r.text("finished")])
    agent = Agent(client=sim.async_client(max_retries=0), model=MODEL, tools=[slow], tracer_provider=provider)
    conv = agent.start("Q", asynchronous=True)

    async def go() -> RunResult:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conv.arun(), 0.2)
        return await conv.arun()

    assert asyncio.run(go()).final_state == "done"
    tree = Tree(exporter.get_finished_spans())
    first, second = tree.named("invoke_agent")
    assert first.status.status_code is StatusCode.UNSET  # a cancellation is not an error
    assert attrs(second)["agentfsm.continued"] is True and second.status.status_code is StatusCode.OK
    cut, done = tree.named("execute_tool")
    assert tree.parent(cut) is first and tree.parent(done) is second


# --- concurrency and the caller's context ---------------------------------------------------------------


@pytest.mark.parametrize("driver", ["arun", "astream"])
def test_concurrent_runs_on_one_loop_keep_their_own_trees(
    driver: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @tool
    async def nap(key: str) -> str:
        """Yields to the loop, so the runs interleave."""
        await asyncio.sleep(0.01)
        return key

    sim = Simulator(lambda req: r.tool_use("nap", {"key": "k"}) if len(req.messages) == 1 else r.text("ok"))
    agent = Agent(client=sim.async_client(max_retries=0), model=MODEL, tools=[nap], tracer_provider=provider)
    tracer = user_tracer(provider)

    async def one(i: int) -> str:
        with tracer.start_as_current_span(f"request {i:02d}"):
            if driver == "arun":
                return (await agent.arun(f"q{i}")).conversation_id
            events = [e async for e in agent.astream(f"q{i}")]
            return events[-1].result.conversation_id  # type: ignore[union-attr]

    async def go() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(12)))

    ids = asyncio.run(go())
    tree = Tree(exporter.get_finished_spans())
    for i, conversation_id in enumerate(ids):
        outer = tree.one(f"request {i:02d}")
        (run,) = tree.children(outer)
        assert attrs(run)["gen_ai.conversation.id"] == conversation_id
        kids = tree.children(run)
        assert [k.name for k in kids] == [f"chat {MODEL}", "execute_tool nap", f"chat {MODEL}"]
        assert all(attrs(k)["gen_ai.conversation.id"] == conversation_id for k in kids)


def test_a_streams_spans_are_never_current_in_the_callers_loop(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = user_tracer(provider)
    one = Weather(client=two_turns().client(max_retries=0), tracer_provider=provider)
    two = Weather(client=two_turns().client(max_retries=0), tracer_provider=provider)
    with tracer.start_as_current_span("caller") as caller:
        for a, b in zip(one.stream("Weather?"), two.stream("Weather?"), strict=False):  # interleaved, one thread
            assert trace.get_current_span() is caller
            with tracer.start_as_current_span(f"handle {a.type} {b.type}"):
                pass
        assert trace.get_current_span() is caller
    tree = Tree(exporter.get_finished_spans())
    runs = tree.named("invoke_agent")
    assert len(runs) == 2 and all(tree.parent(run) is tree.one("caller") for run in runs)
    for span in tree.named("handle"):
        assert tree.parent(span) is tree.one("caller")
    for run in runs:
        assert [k.name for k in tree.children(run)] == [f"chat {MODEL}", "execute_tool lookup", f"chat {MODEL}"]


def test_a_stream_left_early_ends_its_spans(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    stream = Weather(client=two_turns().client(max_retries=0), tracer_provider=provider).stream("Weather?")
    next(stream)
    stream.close()
    tree = Tree(exporter.get_finished_spans())
    run = tree.one("invoke_agent")
    assert run.status.status_code is StatusCode.UNSET and run.end_time is not None
    assert trace.get_current_span() is trace.INVALID_SPAN


# --- content, global switch, cost ------------------------------------------------------------------------


def test_content_is_recorded_only_when_asked_and_scrubbed(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    instrument(tracer_provider=provider, capture_content=True)
    sim = two_turns()
    agent = Agent(client=sim.client(max_retries=0), model=MODEL, tools=[lookup], system="Be brief.")
    agent.run(f"Weather in Hanoi? my key is {SIM_API_KEY}")
    tree = Tree(exporter.get_finished_spans())
    first, second = tree.named("chat")
    a = attrs(first)
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    sent = json.loads(a["gen_ai.input.messages"])
    assert sent == [{"role": "user", "parts": [{"type": "text", "content": "Weather in Hanoi? my key is [REDACTED]"}]}]
    (output,) = json.loads(a["gen_ai.output.messages"])
    assert output["role"] == "assistant" and output["finish_reason"] == "tool_use"
    assert output["parts"][0]["type"] == "tool_call" and output["parts"][0]["arguments"] == {"key": "hanoi"}
    assert [m["role"] for m in json.loads(attrs(second)["gen_ai.input.messages"])] == ["user", "assistant", "user"]
    t = attrs(tree.one("execute_tool"))
    assert json.loads(t["gen_ai.tool.call.arguments"]) == {"key": "hanoi"}
    assert json.loads(t["gen_ai.tool.call.result"]) == [{"type": "text", "text": "value of hanoi"}]
    assert t["anthropic.tool_result.content"] == t["gen_ai.tool.call.result"]
    assert SIM_API_KEY not in json.dumps([attrs(s) for s in tree.spans])


def test_content_follows_the_environment_and_is_capped(
    provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONTENT_ENV, "true")
    instrument(tracer_provider=provider, max_content_bytes=400)
    sim = Simulator([r.tool_use("lookup", {"key": "x" * 30}), r.text("ok")])
    Agent(client=sim.client(max_retries=0), model=MODEL, tools=[lookup]).run("a long question " * 20)
    second = Tree(exporter.get_finished_spans()).named("chat")[1]
    a = attrs(second)
    kept = json.loads(a["gen_ai.input.messages"])  # the oldest message went first
    assert [m["role"] for m in kept] == ["assistant", "user"] and a["anthropic.content.truncated"] is True
    assert len(a["gen_ai.input.messages"].encode()) <= 400


def test_instrument_switches_every_agent_on_and_uninstrument_off(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    assert not instrumented()
    Weather(client=two_turns().client(max_retries=0)).run("Weather?")
    assert exporter.get_finished_spans() == ()
    instrument(tracer_provider=provider)
    assert instrumented()
    Weather(client=two_turns().client(max_retries=0)).run("Weather?")
    assert len(Tree(exporter.get_finished_spans()).named("invoke_agent")) == 1
    uninstrument()
    exporter.clear()
    Weather(client=two_turns().client(max_retries=0)).run("Weather?")
    assert exporter.get_finished_spans() == ()


def test_a_tracer_provider_must_be_one() -> None:
    from agentfsm.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="TracerProvider"):
        Agent(client=two_turns().client(), model=MODEL, tracer_provider="jaeger")  # type: ignore[arg-type]


@pytest.mark.slow  # a subprocess
def test_without_tracing_nothing_of_it_is_loaded_and_instrument_uses_the_global_provider() -> None:
    """In a fresh interpreter: a run loads nothing of agentfsm's tracing; then, with OpenTelemetry's
    global provider set (which a test process can do only once), ``instrument()`` sends every agent's
    spans there, and the SDK's own spans (on by default with a global provider) nest under them."""
    code = (
        "import sys\n"
        "from agentfsm import Agent\n"
        "from agentfsm.sim import Simulator, replies as r\n"
        "def agent():\n"
        "    return Agent(client=Simulator([r.text('hi')]).client(), model='claude-haiku-4-5')\n"
        "conv = agent().start('hi'); conv.run()\n"
        "assert conv.log.observer is None\n"
        "assert 'agentfsm.observe.otel' not in sys.modules, 'otel loaded'\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "exporter = InMemorySpanExporter(); provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "from agentfsm.otel import instrument\n"
        "instrument()\n"
        "trace.set_tracer_provider(provider)  # after instrument(): the global provider is looked up at each run\n"
        "agent().run('hi')\n"
        "spans = {s.name: s for s in exporter.get_finished_spans()}\n"
        "assert sorted(spans) == ['anthropic.messages.create', 'chat claude-haiku-4-5', 'invoke_agent Agent'], spans\n"
        "assert spans['anthropic.messages.create'].parent.span_id == spans['chat claude-haiku-4-5'].context.span_id\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
