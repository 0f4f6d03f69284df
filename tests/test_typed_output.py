"""Typed output: ``Agent(output_type=...)`` makes ``result.output`` a validated object (``agentfsm.machine.output``).

Every run goes through the real ``anthropic`` client over HTTP (its in-process transport) to the
simulator, which checks ``output_config`` as the API does (the shape, the model, the schema subset), and
every request is checked against the wire rules by the suite-wide fixture. Native (the API's structured
outputs) and tool mode (a ``final_answer`` tool, for models without them) are both driven: valid,
invalid then fixed, invalid to the limit, tools in the loop, streamed partial outputs, a non-model type,
a continuation after ``max_tokens``, a resume from a snapshot taken mid-retry, and every driver.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
import pytest
from pydantic import BaseModel, Field

from agentfsm import Agent, ConfigurationError, MemoryStore, NoOutputError, Policy, RunResult, tool
from agentfsm.machine.output import OUTPUT_TOOL
from agentfsm.machine.streaming import OutputEvent, StreamEvent
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.lineup import KNOWN_MODELS
from agentfsm.testing import DRIVERS, capture_events, client_for, drive
from agentfsm.wire.structured import schema_problems, supports_structured_outputs

NATIVE_MODEL = "claude-haiku-4-5"  # structured outputs, and prefill
NO_PREFILL_MODEL = "claude-sonnet-4-6"  # structured outputs; rejects prefill
FINE_TUNE = "my-fine-tune"  # a model the rule does not know to take structured outputs: auto picks the tool
TOOL = Policy(output_mode="tool")  # the final_answer tool, as on a model without structured outputs


class Invoice(BaseModel):
    number: str
    total: float = Field(gt=0)  # not in the API's schema subset: checked by validation


VALID = '{"number": "INV-7", "total": 120.5}'
NEGATIVE = '{"number": "INV-7", "total": -3}'


@tool
def lookup(order: str) -> str:
    """Look an order up."""
    return f"order {order}: 120.5 EUR"


def fine_tune_sim(*replies: Any) -> Simulator:
    return Simulator(list(replies), models=[*KNOWN_MODELS, FINE_TUNE])


def agent(sim: Simulator, driver: str = "run", **kw: Any) -> Agent:
    kw.setdefault("model", NATIVE_MODEL)
    kw.setdefault("output_type", Invoice)
    return Agent(client=client_for(sim, driver, max_retries=0), logger=None, **kw)


def bodies(sim: Simulator) -> list[dict[str, Any]]:
    return [q.body for q in sim.requests]


def formats(sim: Simulator) -> list[Any]:
    return [(b.get("output_config") or {}).get("format") for b in bodies(sim)]


def last_user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)


# --- native: the API's structured outputs ------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_valid_answer_is_the_typed_output_under_every_driver(driver: str) -> None:
    sim = Simulator([r.text(VALID)])
    result = drive(agent(sim, driver), "Invoice for order 7?", driver)
    assert (result.final_state, result.reason) == ("done", "end_turn")
    assert isinstance(result.output, Invoice) and result.output == Invoice(number="INV-7", total=120.5)
    assert result.output_as(Invoice) is result.output
    assert result.text == VALID
    (fmt,) = formats(sim)
    assert fmt["type"] == "json_schema" and fmt["schema"]["additionalProperties"] is False
    assert "exclusiveMinimum" not in json.dumps(fmt["schema"]["properties"]["total"].get("type"))
    assert schema_problems(fmt["schema"]) is None
    assert "anthropic-beta" not in sim.requests[0].headers  # GA: no beta header


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_invalid_answer_is_sent_back_with_its_errors_and_the_fixed_one_is_the_output(driver: str) -> None:
    sim = Simulator([r.text(NEGATIVE), r.text(VALID)])
    with capture_events() as events:
        result = drive(agent(sim, driver), "Invoice?", driver)
    assert result.final_state == "done" and result.output == Invoice(number="INV-7", total=120.5)
    assert result.path == ["requesting", "end_turn", "requesting", "end_turn", "done"]
    second = bodies(sim)[1]
    assert second["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": NEGATIVE}]}
    told = last_user_text(second)
    assert "total: Input should be greater than 0" in told and "Invoice" in told
    assert formats(sim)[1] is not None  # the retry asks for the format again
    invalid = [e for e in events if e.event == "output.invalid"]
    assert [(e.data["retry"], e.data["mode"]) for e in invalid] == [(1, "native")]
    assert "greater than 0" in invalid[0].data["errors"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_invalid_to_the_limit_fails_with_the_errors_and_keeps_the_history(driver: str) -> None:
    sim = Simulator([r.text(NEGATIVE), r.text("not json at all"), r.text(VALID)])
    result = drive(agent(sim, driver, policy=Policy(max_output_retries=1)), "Invoice?", driver)
    assert (result.final_state, result.reason) == ("failed", "invalid_output")
    assert result.error is not None and result.error.type == "invalid_output"
    assert "Invalid JSON" in result.error.message and "max_output_retries=1" in result.error.message
    assert result.output is None and len(sim.requests) == 2
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user", "assistant"]
    assert result.messages[-1]["content"][0]["text"] == "not json at all"
    with pytest.raises(NoOutputError, match="invalid_output"):
        result.output_as(Invoice)


def test_no_retries_fails_on_the_first_invalid_answer() -> None:
    sim = Simulator([r.text(NEGATIVE)])
    result = agent(sim, policy=Policy(max_output_retries=0)).run("Invoice?")
    assert (result.final_state, result.reason, result.turns) == ("failed", "invalid_output", 1)
    assert "after 0 retries" in (result.error.message if result.error else "")


def test_tools_in_the_loop_with_structured_outputs_in_every_request() -> None:
    sim = Simulator([r.tool_use("lookup", {"order": "7"}), r.text(VALID)])
    result = agent(sim, tools=[lookup]).run("Invoice for order 7?")
    assert result.path == ["requesting", "tool_use", "requesting", "end_turn", "done"]
    assert result.output == Invoice(number="INV-7", total=120.5)
    assert all(f is not None for f in formats(sim)) and all("tools" in b for b in bodies(sim))
    assert [t["name"] for t in bodies(sim)[0]["tools"]] == ["lookup"]  # no final_answer tool natively


def test_a_list_of_ints_is_an_output_type_too() -> None:
    sim = Simulator([r.text("[3, 1, 2]")])
    result = agent(sim, output_type=list[int]).run("Three numbers?")
    assert result.output == [3, 1, 2] and result.output_as(list[int]) == [3, 1, 2]
    assert formats(sim)[0]["schema"] == {"type": "array", "items": {"type": "integer"}}


def test_a_long_json_answer_cut_at_max_tokens_is_continued_without_the_format_and_validated_whole() -> None:
    sim = Simulator([r.max_tokens('{"number": "INV-7", "to'), r.text('tal": 120.5}')])
    result = agent(sim).run("Invoice?")
    assert result.path == ["requesting", "max_tokens", "requesting", "end_turn", "done"]
    assert result.text == VALID and result.output == Invoice(number="INV-7", total=120.5)
    _, second = bodies(sim)
    assert formats(sim)[0] is not None and "output_config" not in second  # constrained decoding would restart
    assert second["messages"][-1]["role"] == "assistant"  # continued by prefill


def test_a_continuation_by_prompt_on_a_model_without_prefill_is_validated_whole() -> None:
    sim = Simulator([r.max_tokens('{"number": "INV-7", '), r.text('"total": 120.5}')])
    result = agent(sim, model=NO_PREFILL_MODEL, policy=Policy(continuation="prompt")).run("Invoice?")
    assert result.output == Invoice(number="INV-7", total=120.5)
    assert "output_config" not in bodies(sim)[1] and bodies(sim)[1]["messages"][-1]["role"] == "user"


def test_a_refusal_is_refused_not_an_invalid_output() -> None:
    sim = Simulator([r.refusal()])
    result = agent(sim).run("Invoice?")
    assert (result.final_state, result.output, len(sim.requests)) == ("refused", None, 1)
    with pytest.raises(NoOutputError, match="refused"):
        result.output_as(Invoice)


def test_other_output_config_keys_are_kept_beside_the_format() -> None:
    sim = Simulator([r.text(VALID)])
    agent(sim, request_params={"output_config": {"effort": "low"}}).run("Invoice?")
    assert bodies(sim)[0]["output_config"]["effort"] == "low" and formats(sim)[0] is not None


# --- streamed: the partial output as it arrives --------------------------------------------------------------


@pytest.mark.parametrize("driver", ["stream", "astream"])
def test_a_streamed_run_shows_the_output_as_it_arrives(driver: str) -> None:
    text = '{"number": "INV-7", "total": 120.5, "note": "' + "paid in full, thank you " * 4 + '"}'

    class Noted(BaseModel):
        number: str
        total: float
        note: str

    sim = Simulator([r.text(text)])
    events: list[StreamEvent] = []
    result = drive(agent(sim, driver, output_type=Noted), "Invoice?", driver, stream_events=events)
    partials = [e.partial for e in events if isinstance(e, OutputEvent)]
    assert len(partials) >= 3 and partials[-1] == json.loads(text)
    assert partials[0] != partials[-1] and all(p != q for p, q in itertools.pairwise(partials))
    for earlier, later in itertools.pairwise(partials):  # each grows the one before
        assert all(k in later for k in earlier)
        assert all(str(later[k]).startswith(str(earlier[k])) for k in earlier if isinstance(earlier[k], str))
    assert isinstance(result.output, Noted) and result.output.note.startswith("paid in full")
    last_output = max(i for i, e in enumerate(events) if isinstance(e, OutputEvent))
    assert events[-1].type == "result" and last_output < len(events) - 1


def test_a_streamed_continuation_shows_the_stitched_output() -> None:
    sim = Simulator([r.max_tokens('{"number": "INV-7", "to'), r.text('tal": 120.5}')])
    events: list[StreamEvent] = []
    result = drive(agent(sim, "stream"), "Invoice?", "stream", stream_events=events)
    partials = [e.partial for e in events if isinstance(e, OutputEvent)]
    assert partials[-1] == {"number": "INV-7", "total": 120.5} and result.output == Invoice(number="INV-7", total=120.5)


# --- tool mode: the final_answer tool ----------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_model_without_structured_outputs_answers_through_the_final_answer_tool(driver: str) -> None:
    sim = fine_tune_sim(
        r.tool_use("lookup", {"order": "7"}),
        r.tool_use(OUTPUT_TOOL, {"number": "INV-7", "total": -1}),
        r.tool_use(OUTPUT_TOOL, {"number": "INV-7", "total": 120.5}),
    )
    result = drive(agent(sim, driver, model=FINE_TUNE, tools=[lookup]), "Invoice for order 7?", driver)
    assert (result.final_state, result.reason) == ("done", OUTPUT_TOOL)
    assert result.output == Invoice(number="INV-7", total=120.5)
    assert all("output_config" not in b for b in bodies(sim))
    assert [t["name"] for t in bodies(sim)[0]["tools"]] == ["lookup", OUTPUT_TOOL]
    assert "tool_choice" not in bodies(sim)[0]  # never forced
    (answer,) = bodies(sim)[2]["messages"][-1]["content"]
    assert answer["type"] == "tool_result" and answer["is_error"] is True
    assert "total: Input should be greater than 0" in answer["content"]


def test_a_text_answer_in_tool_mode_is_asked_to_call_the_tool() -> None:
    sim = Simulator([r.text(VALID), r.tool_use(OUTPUT_TOOL, json.loads(VALID))])
    result = agent(sim, policy=TOOL).run("Invoice?")
    assert result.output == Invoice(number="INV-7", total=120.5)
    assert OUTPUT_TOOL in last_user_text(bodies(sim)[1])


def test_tool_mode_to_the_limit_fails_with_the_errors() -> None:
    sim = Simulator([r.tool_use(OUTPUT_TOOL, {"number": 7}), r.tool_use(OUTPUT_TOOL, {"number": 7})])
    result = agent(sim, policy=Policy(output_mode="tool", max_output_retries=1)).run("Invoice?")
    assert (result.final_state, result.reason) == ("failed", "invalid_output")
    assert result.error is not None and "total: Field required" in result.error.message


def test_a_valid_final_answer_beside_other_calls_ends_the_run_without_running_them() -> None:
    ran: list[str] = []

    @tool
    def side(x: str) -> str:
        """A call with an effect."""
        ran.append(x)
        return x

    sim = Simulator([r.tool_uses([("side", {"x": "a"}), (OUTPUT_TOOL, json.loads(VALID))])])
    result = agent(sim, policy=TOOL, tools=[side]).run("Invoice?")
    assert result.final_state == "done" and result.output is not None and ran == []


def test_tool_mode_wraps_a_type_that_is_not_an_object() -> None:
    sim = Simulator([r.tool_use(OUTPUT_TOOL, {"response": [1, 2]})])
    result = agent(sim, policy=TOOL, output_type=list[int]).run("Numbers?")
    assert result.output == [1, 2]
    schema = bodies(sim)[0]["tools"][-1]["input_schema"]
    assert schema["required"] == ["response"] and schema["properties"]["response"]["type"] == "array"


def test_the_mode_can_be_forced_either_way() -> None:
    sim = Simulator([r.tool_use(OUTPUT_TOOL, json.loads(VALID))])
    assert agent(sim, policy=TOOL).run("Invoice?").output is not None
    assert "output_config" not in bodies(sim)[0]
    # Forced native on a model served without structured outputs: the API's 400, history kept.
    sim = fine_tune_sim(r.text(VALID))
    result = agent(sim, model=FINE_TUNE, policy=Policy(output_mode="native")).run("Invoice?")
    assert result.final_state == "failed" and result.error is not None and result.error.status_code == 400
    assert "structured outputs are not supported" in result.error.message


def test_a_fallback_model_without_structured_outputs_makes_auto_choose_the_tool() -> None:
    sim = Simulator([r.tool_use(OUTPUT_TOOL, json.loads(VALID))])
    result = agent(sim, policy=Policy(fallback_model=FINE_TUNE)).run("Invoice?")
    assert result.output is not None and "output_config" not in bodies(sim)[0]


# --- a run stored mid-retry carries its retry count on ------------------------------------------------------------


def test_a_run_resumed_from_a_snapshot_mid_retry_keeps_counting_its_retries() -> None:
    store = MemoryStore()
    first = Simulator([r.text(NEGATIVE)])
    conv = agent(first, policy=Policy(max_output_retries=1)).start("Invoice?", store=store)
    while conv.counters.output_retries == 0:
        conv.step()
    assert conv.state == "requesting" and len(first.requests) == 1  # the retry is not sent yet: the process dies
    conv.release()
    stored = store.load(conv.id)
    assert stored.counters.output_retries == 1
    # Another process carries it on: the second invalid answer is the last one allowed.
    second = Simulator([r.text(NEGATIVE)])
    result = agent(second, policy=Policy(max_output_retries=1)).resume(conv.id, store=store)
    assert (result.final_state, result.reason) == ("failed", "invalid_output")
    assert "greater than 0" in last_user_text(second.requests[0].body) and len(second.requests) == 1
    assert result.messages[1]["content"][0]["text"] == NEGATIVE  # the first process's reply, kept


def test_a_run_resumed_mid_retry_that_gets_a_valid_answer_is_done_with_it() -> None:
    store = MemoryStore()
    conv = agent(Simulator([r.text(NEGATIVE)])).start("Invoice?", store=store)
    while conv.counters.output_retries == 0:
        conv.step()
    conv.release()
    result = agent(Simulator([r.text(VALID)])).resume(conv.id, store=store)
    assert result.output == Invoice(number="INV-7", total=120.5) and result.turns == 2


def test_a_result_read_back_from_json_gives_its_output_typed() -> None:
    sim = Simulator([r.text(VALID)])
    result = agent(sim).run("Invoice?")
    again = RunResult.model_validate_json(result.model_dump_json())
    assert again.output == {"number": "INV-7", "total": 120.5}
    assert again.output_as(Invoice) == Invoice(number="INV-7", total=120.5)
    with pytest.raises(NoOutputError, match="not a valid list"):
        again.output_as(list[int])


# --- configuration --------------------------------------------------------------------------------------------------


def test_configuration_mistakes_are_caught_when_the_agent_is_made() -> None:
    sim = Simulator([])

    @tool
    def final_answer(x: str) -> str:
        """Clashes."""
        return x

    with pytest.raises(ConfigurationError, match="final_answer"):
        agent(sim, policy=TOOL, tools=[final_answer])
    with pytest.raises(ConfigurationError, match="output_config"):
        agent(sim, request_params={"output_config": {"format": {"type": "json_schema", "schema": {}}}})

    class NotPydantic:
        pass

    with pytest.raises(ConfigurationError, match="NotPydantic"):
        agent(sim, output_type=NotPydantic)
    assert sim.requests == []


def test_an_agent_without_output_type_has_no_output() -> None:
    sim = Simulator([r.text("Hello.")])
    result = Agent(client=sim.client(), model=NATIVE_MODEL, logger=None).run("Hi")
    assert result.output is None and "output_config" not in bodies(sim)[0]
    with pytest.raises(NoOutputError, match="output_type"):
        result.output_as(Invoice)


# --- the rules on the wire -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "supported"),
    [
        ("claude-opus-4-5", True),
        ("claude-sonnet-4-5-20250929", True),
        ("claude-haiku-4-5", True),
        ("claude-opus-4-6", True),
        ("claude-sonnet-4-6", True),
        ("claude-opus-4-8", True),
        ("claude-sonnet-5-5", True),
        ("claude-fable-5", True),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", True),
        ("claude-opus-4-1", False),
        ("claude-opus-4-20250514", False),
        ("claude-sonnet-4-0", False),
        ("claude-3-7-sonnet-latest", False),
        ("claude-3-5-haiku-20241022", False),
        ("my-fine-tune", False),
    ],
)
def test_which_models_take_structured_outputs(model: str, supported: bool) -> None:
    assert supports_structured_outputs(model) is supported


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": {}}, "additionalProperties"),
        ({"type": "integer", "minimum": 1}, "minimum"),
        ({"type": "array", "items": {"type": "string"}, "minItems": 2}, "minItems"),
        ({"$ref": "https://example.com/s.json"}, "$ref"),
        (
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"pattern": {"type": "string"}, "minimum": {"type": "integer"}},
            },
            None,
        ),
    ],
)
def test_the_simulator_holds_a_format_to_the_apis_schema_subset(schema: dict[str, Any], problem: str | None) -> None:
    assert (schema_problems(schema) or None) is None if problem is None else problem in str(schema_problems(schema))
    sim = Simulator([r.text("{}")])
    fmt = {"format": {"type": "json_schema", "schema": schema}}
    call = sim.client(max_retries=0).messages.with_raw_response.create
    kw: Any = {"model": NATIVE_MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]}
    if problem is None:
        assert call(**kw, extra_body={"output_config": fmt}).status_code == 200
    else:
        with pytest.raises(anthropic.BadRequestError, match=problem.replace("$", r"\$")):
            call(**kw, extra_body={"output_config": fmt})
