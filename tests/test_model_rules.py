"""Today's models, obeyed: one table of per-model request rules (``agentfsm.wire.models``), read by the machine
and by the simulator.

Every model of the installed SDK's lineup has its rules, each from an official page; the machine chooses its
strategies from them up front (continuation by prompt on a model refusing prefill, with no 400 eaten; typed
output never forced; a request parameter the model refuses said before any request; a fallback's request made
fit for its model); the simulator refuses what the real API refuses, in its wording. Everything runs through the
real ``anthropic`` client over HTTP (its in-process transport) to the simulator.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anthropic
import pytest
from pydantic import BaseModel

from agentfsm import Agent, ConfigurationError, Policy, tool
from agentfsm.machine.streaming import StreamEvent
from agentfsm.sim import Simulator, validation
from agentfsm.sim import replies as r
from agentfsm.sim.lineup import LEGACY_MODELS, sdk_lineup
from agentfsm.testing import DRIVERS, client_for, drive, shown_text
from agentfsm.wire import models

DOCS = Path(__file__).resolve().parent.parent / "docs"
DEFAULT = "claude-sonnet-5-5"
DOC = " ".join(f"Sentence number {i} of a long answer." for i in range(40))


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}."


class Invoice(BaseModel):
    number: str
    total: float


# --- the table ------------------------------------------------------------------------------------------------

#: model → (prefill, forced tool_choice, sampling, thinking budget, thinking disabled), as the pages say.
EXPECTED: dict[str, tuple[bool, bool, str, bool, bool]] = {
    "claude-sonnet-5-5": (False, False, "refused", False, False),
    "claude-opus-5-5": (False, False, "refused", False, False),
    "claude-haiku-5-5": (False, True, "refused", False, False),
    "claude-fable-5-2": (False, False, "refused", False, False),
    "claude-mythos-5-2": (False, False, "refused", False, False),
    "claude-fable-5-1": (False, False, "refused", False, False),
    "claude-mythos-5-1": (False, False, "refused", False, False),
    "claude-fable-5": (False, True, "refused", False, False),
    "claude-mythos-5": (False, True, "refused", False, False),
    "claude-sonnet-5": (False, True, "refused", False, True),
    "claude-opus-5": (False, True, "refused", False, True),
    "claude-opus-4-8": (False, True, "refused", False, True),
    "claude-opus-4-7": (False, True, "refused", False, True),
    "claude-mythos-preview": (False, False, "refused", True, False),
    "claude-opus-4-6": (False, True, "accepted", True, True),
    "claude-sonnet-4-6": (False, True, "accepted", True, True),
    "claude-haiku-4-5": (True, True, "one_of", True, True),
    "claude-haiku-4-5-20251001": (True, True, "one_of", True, True),
    "claude-opus-4-5": (True, True, "one_of", True, True),
    "claude-opus-4-5-20251101": (True, True, "one_of", True, True),
}


def test_every_model_of_the_lineup_has_its_rules_from_an_official_page() -> None:
    assert set(sdk_lineup()) == set(EXPECTED)  # a new SDK model needs its row (and its page) before it is used
    for name in sdk_lineup():
        rules = models.rules_for(name)
        assert rules.model == name
        assert rules.sources and all(u.startswith("https://platform.claude.com/docs/") for u in rules.sources)
        got = (rules.prefill, rules.forced_tool_choice, rules.sampling, rules.thinking_budget, rules.thinking_disabled)
        assert got == EXPECTED[name], name
    assert models.rules_for(DEFAULT).thinking_off == "between_tools"  # the only model with between_tools
    assert [m for m in sdk_lineup() if models.rules_for(m).thinking_off] == [DEFAULT]
    assert not models.rules_for(DEFAULT).thinking_text_by_default  # display omitted by default


def test_names_resolve_to_their_model_and_unknown_ones_get_the_strictest_rules() -> None:
    assert models.rules_for("claude-sonnet-5-5-20260928").model == "claude-sonnet-5-5"
    assert models.rules_for("claude-sonnet-5-20260101").model == "claude-sonnet-5"
    assert models.rules_for("us.anthropic.claude-opus-4-6-v1").model == "claude-opus-4-6"
    assert models.rules_for("claude-opus-4-6@20260205").model == "claude-opus-4-6"
    strict = models.rules_for("my-fine-tune")
    assert strict is models.DEFAULT and strict.refused == models.rules_for(DEFAULT).refused
    for legacy in LEGACY_MODELS:
        assert models.rules_for(legacy) is models.LEGACY and models.LEGACY.refused == ()


def test_docs_11_lists_the_table_as_the_data_has_it() -> None:
    page = (DOCS / "11-configuration.md").read_text()
    part = page[page.index("## Today's models") :]
    rows = [line for line in part.splitlines() if line.startswith("| `claude") or line.startswith("| (")]
    shown = [tuple(cell.strip() for cell in row.strip("|").split("|")) for row in rows]
    assert shown == models.table_rows()


# --- continuation: chosen up front ------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_continuation_on_the_default_model_sends_no_prefill_and_never_eats_a_400(driver: str) -> None:
    for _process in range(2):  # a new agent (as in a new process) chooses the same way: from the table
        sim = Simulator([r.writer(DOC)] * 40)
        agent = Agent(client=client_for(sim, driver, max_retries=0), policy=Policy(max_tokens=80, max_continuations=30))
        events: list[StreamEvent] = []
        result = drive(agent, "Write.", driver, stream_events=events)
        assert agent.model == DEFAULT and result.final_state == "done" and result.text == DOC
        continued = [e.data for e in result.events if e.event == "continuation.requested"]
        assert len(sim.requests) == len(continued) + 1 > 3  # one request per chunk: no rejected attempt among them
        assert all(q.messages[-1]["role"] == "user" for q in sim.requests)
        assert {c["strategy"] for c in continued} == {"prompt"}
        assert not [e for e in result.events if e.event in ("request.failed", "continuation.fallback")]
        if events:
            assert shown_text(events) == DOC


def test_continuation_on_a_model_taking_prefill_still_prefills() -> None:
    sim = Simulator([r.max_tokens("Hello"), r.text(" world.")])
    result = Agent(client=sim.client(), model="claude-haiku-4-5", logger=None).run("Greet")
    assert result.text == "Hello world." and sim.requests[1].messages[-1]["role"] == "assistant"


# --- request parameters the agent's model refuses: said before any request --------------------------------------


@pytest.mark.parametrize(
    ("model", "params", "says"),
    [
        (DEFAULT, {"temperature": 0.2}, "temperature: leave sampling parameters out"),
        (DEFAULT, {"top_p": 0.9, "top_k": 5}, "top_p/top_k"),
        (DEFAULT, {"tool_choice": {"type": "any"}}, "forced tool_choice"),
        (DEFAULT, {"tool_choice": {"type": "tool", "name": "get_weather"}}, "use auto or none"),
        (DEFAULT, {"thinking": {"type": "enabled", "budget_tokens": 2048}}, '"adaptive"'),
        (DEFAULT, {"thinking": {"type": "disabled"}}, '"between_tools"'),
        ("claude-opus-5-5", {"thinking": {"type": "disabled"}}, "leave thinking out"),
        ("claude-haiku-4-5", {"temperature": 0.2, "top_p": 0.9}, "send one of the two"),
        ("my-fine-tune", {"temperature": 0.2}, "the strictest rules"),
    ],
)
def test_a_parameter_the_model_refuses_is_a_configuration_error_before_any_request(
    model: str, params: dict[str, Any], says: str
) -> None:
    sim = Simulator([r.text("never sent")])
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        Agent(client=sim.client(), model=model, tools=[get_weather], request_params=params, logger=None)
    assert sim.requests == []


def test_a_prefill_strategy_is_checked_against_the_fallback_model_too() -> None:
    policy = Policy(continuation="prefill", fallback_model=DEFAULT)
    with pytest.raises(ConfigurationError, match=r"^claude-sonnet-5-5 answers HTTP 400 to Policy\(continuation"):
        Agent(client=Simulator([]).client(), model="claude-haiku-4-5", policy=policy, logger=None)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("claude-sonnet-4-6", {"temperature": 0.2, "top_p": 0.9, "top_k": 5}),
        ("claude-opus-5", {"tool_choice": {"type": "any"}, "thinking": {"type": "disabled"}}),
        ("claude-sonnet-5", {"thinking": {"type": "disabled"}}),
        ("claude-haiku-4-5", {"thinking": {"type": "enabled", "budget_tokens": 2048}, "temperature": 1}),
        (DEFAULT, {"thinking": {"type": "adaptive"}, "tool_choice": {"type": "auto"}}),
    ],
)
def test_what_the_model_takes_goes_out_and_the_simulator_accepts_it(model: str, params: dict[str, Any]) -> None:
    sim = Simulator([r.tool_use("get_weather", {"city": "Hanoi"}), r.text("Sunny.")])
    result = Agent(client=sim.client(), model=model, tools=[get_weather], request_params=params, logger=None).run("?")
    assert result.final_state == "done" and len(sim.requests) == 2
    assert all(q.body[k] == v for q in sim.requests for k, v in params.items())


# --- typed output on a model that refuses a forced tool_choice --------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("mode", ["tool", "auto"])
def test_typed_output_on_a_model_refusing_forced_tool_choice(driver: str, mode: str) -> None:
    answer = '{"number": "INV-7", "total": 120.5}'
    first = r.tool_use("final_answer", {"number": "INV-7", "total": 120.5}) if mode == "tool" else r.text(answer)
    sim = Simulator([first])
    agent = Agent(
        client=client_for(sim, driver, max_retries=0),
        output_type=Invoice,
        policy=Policy(output_mode=mode),  # type: ignore[arg-type]
        logger=None,
    )
    result = drive(agent, "The invoice?", driver)
    assert result.final_state == "done" and result.output == Invoice(number="INV-7", total=120.5)
    assert len(sim.requests) == 1 and "tool_choice" not in sim.requests[0].body  # asked for, never forced
    chosen = "final_answer" in [t["name"] for t in sim.requests[0].body.get("tools", [])]
    assert chosen is (mode == "tool")  # auto: the API's structured outputs on Sonnet 5.5


# --- the simulator refuses each rule in the API's wording ----------------------------------------------------


def _ask(model: str, **extra: Any) -> dict[str, Any]:
    """A request's keyword arguments; the sampling parameters go as ``extra_body`` (the SDK's ``create`` has
    no argument for them any more)."""
    body: dict[str, Any] = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    return {**body, **extra}


TOOLS = [{"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object", "properties": {}}}]
PREFILL = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_ask(DEFAULT, messages=PREFILL), validation.PREFILL_NOT_SUPPORTED),
        (_ask("claude-opus-4-6", messages=PREFILL), validation.PREFILL_NOT_SUPPORTED),
        (_ask(DEFAULT, tools=TOOLS, tool_choice={"type": "any"}), validation.FORCED_TOOL_CHOICE.format(kind="any")),
        (
            _ask("claude-fable-5-1", tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"}),
            validation.FORCED_TOOL_CHOICE.format(kind="tool"),
        ),
        (_ask(DEFAULT, extra_body={"temperature": 0.5}), "`temperature` is deprecated for this model."),
        (_ask("claude-opus-4-7", extra_body={"top_p": 0.9}), "`top_p` is deprecated for this model."),
        (_ask("claude-haiku-5-5", extra_body={"top_k": 5}), "`top_k` is deprecated for this model."),
        (_ask("claude-haiku-4-5", extra_body={"temperature": 0.5, "top_p": 0.9}), validation.SAMPLING_ONE_OF),
        (
            _ask("claude-opus-5-5", thinking={"type": "enabled", "budget_tokens": 1024}),
            '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
            '"output_config.effort" to control thinking behavior.',
        ),
        (
            _ask("claude-opus-5-5", thinking={"type": "disabled"}),
            '"thinking.type.disabled" is not supported for this model. Use "thinking.type.adaptive" and '
            '"output_config.effort" to control thinking behavior.',
        ),
        (_ask(DEFAULT, thinking={"type": "disabled"}), validation.THINKING_OFF_INSTEAD.format(off="between_tools")),
    ],
)
def test_the_simulator_refuses_what_the_model_refuses_in_the_apis_words(body: dict[str, Any], message: str) -> None:
    sim = Simulator([r.text("ok")])
    with pytest.raises(anthropic.BadRequestError) as caught:
        sim.client(max_retries=0).messages.create(**body)
    assert caught.value.status_code == 400
    assert caught.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": message}} | {
        "request_id": caught.value.body["request_id"]  # type: ignore[index]
    }


def test_the_simulator_accepts_the_same_on_a_model_that_takes_it() -> None:
    client = Simulator([r.text("ok")] * 5).client(max_retries=0)
    client.messages.create(**_ask("claude-haiku-4-5", messages=PREFILL))
    client.messages.create(**_ask("claude-opus-5", tools=TOOLS, tool_choice={"type": "any"}))
    client.messages.create(**_ask("claude-sonnet-4-6", extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5}))
    client.messages.create(**_ask("claude-haiku-4-5", thinking={"type": "enabled", "budget_tokens": 1024}))
    client.messages.create(**_ask("claude-sonnet-5", thinking={"type": "disabled"}))


# --- another model mid-run: the request made fit for it ----------------------------------------------------------


def test_request_for_model_adapts_a_request_written_for_another_model() -> None:
    thought = {"type": "thinking", "thinking": "", "signature": "c2ln"}
    body = {
        "model": "claude-opus-5",
        "max_tokens": 64,
        "temperature": 0.3,
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "disabled"},
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [thought, {"type": "tool_use", "id": "t1", "name": "x", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
        ],
    }
    out, changed = models.request_for_model(body, DEFAULT, from_model="claude-opus-5")
    assert out["model"] == DEFAULT and "temperature" not in out
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert out["thinking"] == {"type": "between_tools"}
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_use"]
    assert changed == [
        "tool_choice any -> auto",
        "temperature dropped",
        "thinking disabled -> between_tools",
        "thinking blocks of claude-opus-5 left out",
    ]
    assert body["temperature"] == 0.3 and body["messages"][1]["content"][0] == thought  # the original is untouched
    taken = {k: v for k, v in body.items() if k != "temperature"}
    same, nothing = models.request_for_model(taken, "claude-opus-5", from_model="claude-opus-5")
    assert nothing == [] and same == taken
    fable, _ = models.request_for_model({**body, "thinking": {"type": "enabled", "budget_tokens": 9}}, "claude-fable-5")
    assert fable["thinking"] == {"type": "adaptive"}


@pytest.mark.beyond_schema  # thinking between_tools: in the SDK's types (2.17), not in the vendored OpenAPI document
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_refusal_fallback_to_a_stricter_model_sends_what_that_model_takes(driver: str) -> None:
    thought = r.thinking_block("", "c2lnbmF0dXJl")
    sim = Simulator(
        [
            r.message([thought, r.tool_use_block("get_weather", {"city": "Hanoi"})], "tool_use"),
            r.refusal(),
            r.text("Sunny in Hanoi."),
        ]
    )
    agent = Agent(
        client=client_for(sim, driver, max_retries=0),
        model="claude-opus-5",
        tools=[get_weather],
        request_params={"tool_choice": {"type": "any"}, "thinking": {"type": "disabled"}},
        policy=Policy(fallback_model=DEFAULT),
        logger=None,
    )
    result = drive(agent, "Weather?", driver)
    assert result.final_state == "done" and result.text == "Sunny in Hanoi."
    _first, refused, retried = sim.requests
    assert refused.body["tool_choice"] == {"type": "any"} and retried.body["model"] == DEFAULT
    assert retried.body["tool_choice"] == {"type": "auto"} and retried.body["thinking"] == {"type": "between_tools"}
    assert all(b["type"] != "thinking" for m in retried.messages for b in m["content"] if isinstance(b, dict))
    assert any(b["type"] == "thinking" for b in refused.messages[1]["content"])  # kept for the model that made it
    adapted = [e.data for e in result.events if e.event == "request.adapted"]
    assert adapted and adapted[0]["model"] == DEFAULT and "tool_choice any -> auto" in adapted[0]["changed"]


# --- text between tool calls, as thinking blocks with display omitted -------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_thinking_blocks_between_tool_calls_are_kept_and_never_shown_as_text(driver: str) -> None:
    """On the 5.x models a reply may open with thinking blocks, empty at the default display (omitted): they go
    back verbatim, and neither result.text nor the stream's text shows them; a cut text is stitched across them."""
    note = r.thinking_block("", "bm90ZQ==")
    sim = Simulator(
        [
            r.message([note, r.tool_use_block("get_weather", {"city": "Hanoi"})], "tool_use"),
            r.message([r.thinking_block("", "YQ=="), r.text_block("It is sunny")], "max_tokens"),
            r.message([r.thinking_block("", "Yg=="), r.text_block(" in Hanoi.")], "end_turn"),
        ]
    )
    agent = Agent(client=client_for(sim, driver, max_retries=0), tools=[get_weather], logger=None)
    events: list[StreamEvent] = []
    result = drive(agent, "Weather?", driver, stream_events=events)
    assert result.final_state == "done" and result.text == "It is sunny in Hanoi."
    assert sim.requests[1].messages[1]["content"][0] == note  # sent back unchanged
    assert sim.requests[2].messages[-1]["role"] == "user"  # the default model: continued by prompt
    if events:
        assert shown_text(events) == "It is sunny in Hanoi."
