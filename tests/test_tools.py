"""Tools: schema generation, input validation, result normalisation, the tools parameter."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema  # type: ignore[import-untyped]
import pytest
from anthropic.types import ToolUseBlock
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentfsm import Agent
from agentfsm.errors import ConfigurationError, ToolInputError, ToolTimeoutError
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.tools.calls import ToolCall, ToolResult, error_result, to_tool_result
from agentfsm.tools.definition import Tool, tool, tool_params

# --- tools used across the tests (module level: string annotations resolve against module globals) ---


class Ticket(BaseModel):
    title: str
    priority: int = 3
    tags: list[str] = []


class TicketOut(BaseModel):
    id: int
    title: str


@tool
def get_weather(location: str, unit: Literal["c", "f"] = "c") -> str:
    """Get the current weather
    for a city.

    Longer notes that are not part of the description.
    """
    return f"{location}:{unit}"


@tool(name="search", description="Search the index.", idempotent=True)
async def search_fn(
    query: Annotated[str, Field(description="what to look for")], limit: int = 5
) -> list[dict[str, Any]]:
    return [{"query": query, "limit": limit}]


@tool
def create_ticket(ticket: Ticket, notify: bool = False) -> TicketOut:
    """Create a ticket."""
    return TicketOut(id=1, title=ticket.title)


@tool
def kitchen_sink(
    text: str,
    count: int,
    ratio: float,
    flag: bool,
    mode: Literal["fast", "slow"],
    maybe: int | None = None,
    names: list[str] | None = None,
    days: Annotated[int, Field(description="how many days", ge=1)] = 2,
    level: int = Field(7, description="the level"),
) -> str:
    """Exercise every kind of parameter."""
    return "ok"


@tool
def clashing(schema: str, json: int = 0, model_config: str = "", copy: bool = False) -> dict[str, Any]:
    """Parameter names that are BaseModel attributes."""
    return {"schema": schema, "json": json, "model_config": model_config, "copy": copy}


@tool
def no_params() -> str:
    """Take nothing."""
    return "nothing"


def _walk(schema: Any) -> Iterator[dict[str, Any]]:
    """Every dict in a schema, with the key it sits under."""
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from _walk(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _walk(value)


def _problems(t: Tool, raw: object) -> list[str]:
    with pytest.raises(ToolInputError) as info:
        t.validate(raw)
    assert info.value.tool == t.name
    return info.value.problems


# --- the decorator and Tool -------------------------------------------------------------------


def test_decorator_without_arguments_builds_a_tool() -> None:
    assert isinstance(get_weather, Tool)
    assert get_weather.name == "get_weather"
    assert get_weather.description == "Get the current weather for a city."
    assert get_weather.is_async is False
    assert get_weather.idempotent is False


def test_decorator_with_arguments() -> None:
    assert isinstance(search_fn, Tool)
    assert search_fn.name == "search"
    assert search_fn.description == "Search the index."
    assert search_fn.is_async is True
    assert search_fn.idempotent is True


def test_tool_stays_callable_as_the_plain_function() -> None:
    assert get_weather("Paris") == "Paris:c"
    assert get_weather("Oslo", unit="f") == "Oslo:f"
    assert asyncio.run(search_fn("x")) == [{"query": "x", "limit": 5}]
    assert get_weather.__name__ == "get_weather"
    assert get_weather.__doc__ is not None and "weather" in get_weather.__doc__


def test_tool_constructor_and_rewrapping() -> None:
    def f(x: int) -> int:
        """Double."""
        return 2 * x

    t = Tool(f, name="double")
    assert t.name == "double" and t(2) == 4
    again = tool(name="twice")(t)
    assert again.name == "twice" and again.fn is f


def test_partial_needs_a_name_and_keeps_unbound_parameters() -> None:
    def convert(amount: float, currency: str, rounding: int = 2) -> str:
        """Convert an amount."""
        return f"{amount:.{rounding}f} {currency}"

    t = tool(name="to_euro")(functools.partial(convert, currency="EUR"))
    assert t.__name__ == "to_euro"
    assert t.description == "Convert an amount."
    assert t.input_schema["required"] == ["amount"]
    assert t.fn(**t.validate({"amount": 3})) == "3.00 EUR"


def test_async_callable_object_is_async() -> None:
    class Fetch:
        """Fetch a page."""

        __name__ = "fetch"

        async def __call__(self, url: str) -> str:
            return url

    t = tool(Fetch())
    assert t.is_async is True
    assert t.input_schema["required"] == ["url"]


def test_to_param_is_the_messages_api_tool_definition() -> None:
    param = get_weather.to_param()
    assert set(param) == {"name", "description", "input_schema"}
    assert param["name"] == "get_weather"
    assert param["description"] == "Get the current weather for a city."
    assert param["input_schema"] == get_weather.input_schema
    param["cache_control"] = {"type": "ephemeral"}
    assert "cache_control" not in get_weather.to_param()  # a fresh dict every call


# --- schema generation ---------------------------------------------------------------------------


def test_schema_of_scalar_literal_optional_list_and_annotated() -> None:
    schema = kitchen_sink.input_schema
    props = schema["properties"]
    assert schema["type"] == "object"
    assert list(schema)[:3] == ["type", "properties", "required"]
    assert props["text"] == {"type": "string"}
    assert props["count"] == {"type": "integer"}
    assert props["ratio"] == {"type": "number"}
    assert props["flag"] == {"type": "boolean"}
    assert props["mode"] == {"enum": ["fast", "slow"], "type": "string"}
    assert props["maybe"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert props["names"]["anyOf"][0] == {"items": {"type": "string"}, "type": "array"}
    assert props["days"] == {"type": "integer", "description": "how many days", "minimum": 1, "default": 2}
    assert props["level"] == {"type": "integer", "description": "the level", "default": 7}
    assert schema["required"] == ["text", "count", "ratio", "flag", "mode"]
    assert schema["additionalProperties"] is False


def test_schema_defaults_and_descriptions() -> None:
    props = get_weather.input_schema["properties"]
    assert props["unit"]["default"] == "c"
    assert get_weather.input_schema["required"] == ["location"]
    assert search_fn.input_schema["properties"]["query"]["description"] == "what to look for"
    assert search_fn.input_schema["properties"]["limit"] == {"type": "integer", "default": 5}


def test_schema_of_nested_pydantic_model() -> None:
    schema = create_ticket.input_schema
    assert schema["properties"]["ticket"] == {"$ref": "#/$defs/Ticket"}
    ticket = schema["$defs"]["Ticket"]
    assert ticket["type"] == "object"
    assert ticket["required"] == ["title"]
    assert ticket["properties"]["title"] == {"type": "string"}  # a property named "title" survives
    assert ticket["properties"]["priority"] == {"type": "integer", "default": 3}
    assert schema["required"] == ["ticket"]


def test_schema_has_no_title_noise() -> None:
    for t in (get_weather, search_fn, create_ticket, kitchen_sink, clashing):
        for node in _walk(t.input_schema):
            assert not isinstance(node.get("title"), str), (t.name, node)


def test_schema_of_a_tool_without_parameters() -> None:
    assert no_params.input_schema == {"type": "object", "properties": {}, "additionalProperties": False}
    assert no_params.validate({}) == {}


@pytest.mark.parametrize("t", [get_weather, search_fn, create_ticket, kitchen_sink, clashing, no_params])
def test_schema_is_valid_json_schema_and_agrees_with_validation(t: Tool) -> None:
    jsonschema.Draft202012Validator.check_schema(t.input_schema)
    validator = jsonschema.Draft202012Validator(t.input_schema)
    assert list(validator.iter_errors({"unexpected_field": 1}))  # extra fields refused by both
    with pytest.raises(ToolInputError):
        t.validate({"unexpected_field": 1})


def test_valid_inputs_pass_both_the_schema_and_validate() -> None:
    cases: list[tuple[Tool, dict[str, Any]]] = [
        (get_weather, {"location": "Paris", "unit": "f"}),
        (create_ticket, {"ticket": {"title": "broken", "tags": ["a"]}}),
        (kitchen_sink, {"text": "t", "count": 1, "ratio": 0.5, "flag": True, "mode": "fast", "names": ["x"]}),
    ]
    for t, raw in cases:
        jsonschema.validate(raw, t.input_schema)
        t.validate(raw)


def test_parameter_names_that_clash_with_basemodel_attributes() -> None:
    assert set(clashing.input_schema["properties"]) == {"schema", "json", "model_config", "copy"}
    kwargs = clashing.validate({"schema": "s", "json": 2, "model_config": "m", "copy": True})
    assert kwargs == {"schema": "s", "json": 2, "model_config": "m", "copy": True}
    assert clashing(**kwargs)["json"] == 2


def test_runtime_annotations_work_as_well_as_string_ones() -> None:
    f = _make("def f(x: int, y: str = 'a') -> str:\n    'Doc.'\n    return y * x")
    assert f.__annotations__["x"] is int  # not a string: this module's __future__ import is not inherited
    t = tool(f)
    assert t.input_schema["properties"] == {"x": {"type": "integer"}, "y": {"type": "string", "default": "a"}}


# --- configuration errors ------------------------------------------------------------------------


def _make(source: str) -> Any:
    """Define ``f`` from source, without this module's ``from __future__ import annotations``."""
    namespace: dict[str, Any] = {}
    exec(compile(source, "<tool source>", "exec", dont_inherit=True), namespace)
    return namespace["f"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(x: int, *args: int) -> None:\n    'Doc.'", "parameter 'args': *args/**kwargs"),
        ("def f(x: int, **kw: int) -> None:\n    'Doc.'", "parameter 'kw': *args/**kwargs"),
        ("def f(x: int, /) -> None:\n    'Doc.'", "parameter 'x' is positional-only"),
        ("def f(x) -> None:\n    'Doc.'", "parameter 'x' has no type hint"),
        ("def f(x: int) -> None:\n    pass", "has no description"),
        ("import socket\ndef f(s: socket.socket) -> None:\n    'Doc.'", "parameter 's': cannot build an input schema"),
        ("def f(x: 'Missing') -> None:\n    'Doc.'", "cannot read its signature"),
    ],
)
def test_configuration_errors_name_the_function_and_parameter(source: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        tool(_make(source))
    assert "tool 'f'" in str(info.value)
    assert expected in str(info.value)


def test_method_without_self_hint_names_the_qualified_function() -> None:
    class Service:
        def lookup(self, key: str) -> str:
            """Look up a key."""
            return key

    with pytest.raises(ConfigurationError, match=r"Service\.lookup.*parameter 'self' has no type hint"):
        tool(Service.lookup)
    assert tool(Service().lookup).input_schema["required"] == ["key"]  # a bound method works


@pytest.mark.parametrize("name", ["", "has space", "dots.not.allowed", "x" * 65])
def test_invalid_tool_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="not valid"):
        tool(name=name)(get_weather.fn)


def test_lambda_needs_a_name() -> None:
    with pytest.raises(ConfigurationError, match="'<lambda>' is not valid"):
        tool(lambda x: x)
    t = tool(name="ident", description="Identity.")(_make("def f(x: int) -> int:\n    return x"))
    assert t.name == "ident"


def test_explicit_description_replaces_a_missing_docstring() -> None:
    t = tool(description="Explicit.")(_make("def f(x: int) -> None:\n    pass"))
    assert t.description == "Explicit."
    with pytest.raises(ConfigurationError, match="no description"):
        tool(description="   ")(_make("def f(x: int) -> None:\n    pass"))


def test_non_callable_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="needs a function"):
        Tool(42)  # type: ignore[arg-type]


# --- validation ----------------------------------------------------------------------------------


def test_validate_returns_kwargs_with_defaults() -> None:
    assert get_weather.validate({"location": "Paris"}) == {"location": "Paris", "unit": "c"}
    assert search_fn.validate({"query": "q", "limit": 2}) == {"query": "q", "limit": 2}


def test_validate_gives_model_instances_for_model_parameters() -> None:
    kwargs = create_ticket.validate({"ticket": {"title": "broken"}})
    assert isinstance(kwargs["ticket"], Ticket)
    assert kwargs["ticket"].priority == 3
    assert create_ticket(**kwargs) == TicketOut(id=1, title="broken")


def test_validate_coerces_like_pydantic_lax_mode() -> None:
    assert search_fn.validate({"query": "q", "limit": "7"})["limit"] == 7


def test_problem_wrong_literal() -> None:
    problems = _problems(get_weather, {"location": "Paris", "unit": "kelvin"})
    assert problems == ["'unit': input should be 'c' or 'f' (got 'kelvin')"]


def test_problem_missing_field() -> None:
    assert _problems(get_weather, {}) == ["'location': field required"]


def test_problem_wrong_type() -> None:
    assert _problems(search_fn, {"query": "q", "limit": "three"}) == [
        "'limit': input should be a valid integer (got 'three')"
    ]
    assert _problems(get_weather, {"location": 3}) == ["'location': input should be a valid string (got 3)"]


def test_problem_constraint() -> None:
    problems = _problems(kitchen_sink, {"text": "t", "count": 1, "ratio": 1, "flag": True, "mode": "fast", "days": 0})
    assert problems == ["'days': input should be greater than or equal to 1 (got 0)"]


def test_problem_unexpected_field() -> None:
    assert _problems(get_weather, {"location": "Paris", "foo": 1}) == ["'foo': unexpected field"]


def test_problem_nested_paths() -> None:
    problems = _problems(create_ticket, {"ticket": {"priority": "high", "tags": ["ok", 5]}})
    assert problems == [
        "'ticket.title': field required",
        "'ticket.priority': input should be a valid integer (got 'high')",
        "'ticket.tags[1]': input should be a valid string (got 5)",
    ]


def test_problem_model_parameter_given_a_non_object() -> None:
    assert _problems(create_ticket, {"ticket": "fix it"}) == ["'ticket': input should be a JSON object (got 'fix it')"]


def test_every_problem_is_listed_and_the_message_tells_the_model_what_to_do() -> None:
    with pytest.raises(ToolInputError) as info:
        get_weather.validate({"unit": "kelvin", "foo": 1})
    text = str(info.value)
    assert text.startswith("invalid input for tool 'get_weather': ")
    for part in ("'location': field required", "'unit': input should be 'c' or 'f'", "'foo': unexpected field"):
        assert part in text
    assert text.endswith("Fix the input and call the tool again.")


@pytest.mark.parametrize(("raw", "got"), [([1, 2], "list [1, 2]"), ("Paris", "'Paris'"), (None, "None"), (3, "3")])
def test_problem_input_not_an_object(raw: object, got: str) -> None:
    assert _problems(get_weather, raw) == [f"input must be a JSON object of named parameters (got {got})"]


def test_long_offending_values_are_shortened() -> None:
    (problem,) = _problems(get_weather, {"location": "Paris", "unit": "k" * 500})
    assert problem.endswith("...)") and len(problem) < 150


# --- ToolCall / ToolResult ------------------------------------------------------------------------


def test_tool_call_from_block_dict_and_sdk_block() -> None:
    block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}
    call = ToolCall.from_block(block)
    assert call == ToolCall(id="toolu_1", name="get_weather", input={"location": "Paris"})
    sdk = ToolUseBlock(type="tool_use", id="toolu_2", name="search", input={"query": "q"})
    assert ToolCall.from_block(sdk) == ToolCall(id="toolu_2", name="search", input={"query": "q"})


def test_tool_call_input_may_be_anything_and_is_frozen() -> None:
    call = ToolCall.from_block({"type": "tool_use", "id": "t", "name": "x", "input": "not a dict"})
    assert call.input == "not a dict"
    with pytest.raises(ValidationError):
        call.name = "other"


def test_tool_call_from_block_refuses_other_blocks() -> None:
    with pytest.raises(ValueError, match="server_tool_use"):
        ToolCall.from_block({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}})
    with pytest.raises(ValidationError):
        ToolCall.from_block({"type": "tool_use", "name": "x", "input": {}})


def test_tool_result_to_block() -> None:
    ok = ToolResult(tool_use_id="t1", content="sunny", duration_ms=3.5)
    assert ok.to_block() == {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}
    bad = ToolResult(tool_use_id="t2", content="boom", is_error=True)
    assert bad.to_block() == {"type": "tool_result", "tool_use_id": "t2", "content": "boom", "is_error": True}


def test_error_result() -> None:
    call = ToolCall(id="t1", name="slow", input={})
    result = error_result(call, ToolTimeoutError("slow", 2.0))
    assert result == ToolResult(
        tool_use_id="t1", content="tool 'slow' did not finish within 2 s and was abandoned", is_error=True
    )


# --- to_tool_result --------------------------------------------------------------------------------

CALL = ToolCall(id="toolu_9", name="t", input={})


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "content"),
    [
        ("plain text", "plain text"),
        ("", ""),
        (None, ""),
        (TicketOut(id=7, title="x"), '{"id":7,"title":"x"}'),
        ({"temp": 21, "city": "Zürich"}, '{"temp": 21, "city": "Zürich"}'),
        ([1, "two", None], '[1, "two", null]'),
        ([], "[]"),
        (42, "42"),
        (2.5, "2.5"),
        (True, "true"),
        ([{"type": "bug", "title": "not a content block"}], '[{"type": "bug", "title": "not a content block"}]'),
        ([TicketOut(id=1, title="a")], '[{"id": 1, "title": "a"}]'),
        (Point(1, 2), '{"x": 1, "y": 2}'),
        ({"when": dt.date(2025, 1, 2)}, '{"when": "2025-01-02"}'),
        ((i * i for i in range(3)), "[0, 1, 4]"),
    ],
)
def test_to_tool_result_normalises(value: object, content: str) -> None:
    result = to_tool_result(CALL, value, "t")
    assert result == ToolResult(tool_use_id="toolu_9", content=content)


def test_to_tool_result_passes_content_blocks_through() -> None:
    blocks = [
        {"type": "text", "text": "see image"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
    ]
    result = to_tool_result(CALL, blocks, "t")
    assert result.content == blocks and result.is_error is False


class _Unserialisable:
    pass


class _BadModel(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    thing: _Unserialisable


@pytest.mark.parametrize(
    "value",
    [_Unserialisable(), {"x": _Unserialisable()}, [1, _Unserialisable()], _BadModel(thing=_Unserialisable())],
    ids=["object", "dict-with-object", "list-with-object", "model-that-cannot-dump"],
)
def test_to_tool_result_non_serialisable_is_an_error(value: object) -> None:
    result = to_tool_result(CALL, value, "t")
    assert result.is_error is True
    assert result.tool_use_id == "toolu_9"
    assert isinstance(result.content, str)
    assert result.content.startswith("tool 't' returned a non-serialisable value of type ")
    assert type(value).__name__ in result.content


# --- tool_params ------------------------------------------------------------------------------------


def test_tool_params_mixes_tools_and_server_tools() -> None:
    web = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    raw = {"name": "raw_tool", "description": "A raw definition.", "input_schema": {"type": "object"}}
    mcp = {"type": "mcp_toolset", "mcp_server_name": "files"}  # no name: nothing to clash
    params = tool_params([get_weather, web, raw, mcp])
    assert params[0] == get_weather.to_param()
    assert params[1] is web and params[2] is raw and params[3] is mcp
    assert json.loads(json.dumps(params)) == params


def test_tool_params_refuses_duplicate_names() -> None:
    with pytest.raises(ConfigurationError, match="'get_weather'"):
        tool_params([get_weather, get_weather])
    with pytest.raises(ConfigurationError, match="'web_search'"):
        tool_params([{"type": "web_search_20250305", "name": "web_search"}, tool(name="web_search")(get_weather.fn)])


def test_tool_params_refuses_other_types() -> None:
    with pytest.raises(ConfigurationError, match=r"tools\[1\] is a function"):
        tool_params([get_weather, get_weather.fn])  # type: ignore[list-item]


def test_tool_params_empty() -> None:
    assert tool_params([]) == []


# --- a tool that raises: the model reads what, the developer sees where ------------------------------------------


@tool
def average(values: list[float]) -> float:
    """Average some numbers."""
    return sum(values) / len(values)  # raises on an empty list: line AVERAGE_LINE


@pytest.mark.parametrize("driver", ["run", "arun"])
def test_a_tool_that_raises_shows_its_traceback_on_the_event_and_not_to_the_model(driver: str) -> None:
    sim = Simulator([r.tool_use("average", {"values": []}), r.text("There is nothing to average.")])
    client = sim.async_client() if driver == "arun" else sim.client()
    agent = Agent(client=client, tools=[average], logger=None)
    result = asyncio.run(agent.arun("Average nothing.")) if driver == "arun" else agent.run("Average nothing.")
    assert result.final_state == "done"
    # what the model read: the exception's type and message, exactly as before, no traceback, no path
    (sent,) = sim.requests[1].messages[-1]["content"]
    assert (sent["type"], sent["is_error"]) == ("tool_result", True)
    assert sent["content"] == "tool 'average' raised ZeroDivisionError: division by zero"
    assert set(sent) <= {"type", "tool_use_id", "content", "is_error", "cache_control"}
    # what the developer sees: the tool's file and line on the tool.finished event
    (finished,) = [e for e in result.events if e.event == "tool.finished"]
    assert finished.level == "warning" and finished.data["is_error"] is True
    lines = Path(__file__).read_text(encoding="utf-8").splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.endswith("line AVERAGE_LINE"))
    tb = finished.data["traceback"]
    assert f'File "{__file__}", line {line}, in average' in tb
    assert tb.startswith("Traceback (most recent call last):") and tb.endswith("ZeroDivisionError: division by zero\n")
    assert "Traceback" not in json.dumps(sim.requests[1].body)  # nowhere in the request


def test_a_call_that_did_not_raise_has_no_traceback_field_on_its_event() -> None:
    sim = Simulator([r.tool_use("average", {"values": [1, 2]}), r.tool_use("average", {}), r.text("Done.")])
    result = Agent(client=sim.client(), tools=[average], logger=None).run("Average.")
    finished = [e.data for e in result.events if e.event == "tool.finished"]
    assert [(d["is_error"], "traceback" in d) for d in finished] == [(False, False), (True, False)]  # bad input
