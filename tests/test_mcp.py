"""MCP, the parts that start no process: the schema check (held to jsonschema), the approval rule, results
mapped to tool_result content, configuration errors, and the API's MCP connector through the simulator.

The servers themselves (stdio and streamable HTTP, started by the tests) are in test_mcp_servers.py.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import jsonschema
import pytest

from agentfsm import Agent
from agentfsm.errors import ConfigurationError, MCPToolError
from agentfsm.machine.serverside import MCP_CONNECTOR_BETA
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.memory import MemoryStore
from agentfsm.testing import capture_events
from agentfsm.tools.calls import ToolCall
from agentfsm.tools.mcp import MCPServer, is_destructive, needs_approval_for, result_content
from agentfsm.tools.mcp.schema import schema_problems

# --- the schema check, against jsonschema's verdict ------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2, "maxLength": 20, "pattern": "^[A-Z]"},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "units": {"enum": ["metric", "imperial"]},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.5},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3, "uniqueItems": True},
        "point": {"$ref": "#/$defs/point"},
        "either": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "one": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 10}]},
        "flag": {"const": True},
        "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
        "meta": {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 2},
    },
    "required": ["city"],
    "additionalProperties": False,
    "$defs": {
        "point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
        }
    },
}

CASES: list[dict[str, Any]] = [
    {"city": "Hanoi"},
    {"city": "Hanoi", "days": 3, "units": "metric", "ratio": 1.5, "tags": ["a"], "point": {"x": 1, "y": 2.5}},
    {"city": "Hanoi", "days": 3.0},
    {"city": "Hanoi", "days": True},
    {"city": "Hanoi", "days": 15},
    {"city": "h"},
    {"city": "hanoi"},
    {},
    {"city": 5},
    {"city": "Hanoi", "extra": 1},
    {"city": "Hanoi", "units": "kelvin"},
    {"city": "Hanoi", "ratio": 0},
    {"city": "Hanoi", "ratio": 0.7},
    {"city": "Hanoi", "tags": []},
    {"city": "Hanoi", "tags": ["a", "a"]},
    {"city": "Hanoi", "tags": ["a", "b", "c", "d"]},
    {"city": "Hanoi", "tags": [1]},
    {"city": "Hanoi", "point": {"x": 1}},
    {"city": "Hanoi", "point": {"x": "1", "y": 2}},
    {"city": "Hanoi", "either": None},
    {"city": "Hanoi", "either": 3},
    {"city": "Hanoi", "one": 3},
    {"city": "Hanoi", "one": 12},
    {"city": "Hanoi", "one": 12.5},
    {"city": "Hanoi", "flag": True},
    {"city": "Hanoi", "flag": 1},
    {"city": "Hanoi", "pair": ["a", 1]},
    {"city": "Hanoi", "pair": ["a", "b"]},
    {"city": "Hanoi", "pair": ["a", 1, 2]},
    {"city": "Hanoi", "meta": {"a": 1, "b": 2}},
    {"city": "Hanoi", "meta": {"a": "x"}},
    {"city": "Hanoi", "meta": {"a": 1, "b": 2, "c": 3}},
]


@pytest.mark.parametrize("value", CASES, ids=[json.dumps(c)[:40] for c in CASES])
def test_schema_check_agrees_with_jsonschema(value: dict[str, Any]) -> None:
    expected = jsonschema.Draft202012Validator(SCHEMA).is_valid(value)
    problems = schema_problems(SCHEMA, value)
    assert (not problems) == expected, problems


def test_schema_problems_name_the_field_as_tool_does() -> None:
    problems = schema_problems(SCHEMA, {"days": "3", "extra": 1})
    assert "'city': field required" in problems
    assert "'extra': unexpected field" in problems
    assert "'days': input should be of type integer (got '3')" in problems


def test_schema_check_leaves_unknown_keywords_and_remote_refs_to_the_server() -> None:
    schema = {"type": "object", "properties": {"when": {"type": "string", "format": "date"}, "r": {"$ref": "x.json"}}}
    assert schema_problems(schema, {"when": "not a date", "r": 1}) == []


def test_schema_check_stops_on_a_self_referring_schema() -> None:
    schema: dict[str, Any] = {"$ref": "#"}
    assert schema_problems(schema, {"a": 1}) == []


# --- annotations and approval ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "destructive"),
    [
        ({}, True),  # MCP's defaults: not read-only, destructive
        ({"readOnlyHint": True}, False),
        ({"readOnlyHint": False}, True),
        ({"destructiveHint": False}, False),
        ({"destructiveHint": True}, True),
        ({"readOnlyHint": True, "destructiveHint": True}, False),  # read-only wins: it changes nothing
        ({"readOnlyHint": False, "destructiveHint": False}, False),
        ({"idempotentHint": True}, True),
    ],
)
def test_is_destructive_follows_mcp_defaults(annotations: dict[str, Any], destructive: bool) -> None:
    assert is_destructive(annotations) is destructive
    assert needs_approval_for(annotations, "destructive") is destructive


def test_needs_approval_for_each_setting() -> None:
    def rule(call: ToolCall) -> bool:
        return call.input.get("path") == "/"

    assert needs_approval_for({"readOnlyHint": True}, True) is True
    assert needs_approval_for({}, None) is False
    assert needs_approval_for({}, False) is False
    assert needs_approval_for({}, rule) is rule
    with pytest.raises(ConfigurationError, match="needs_approval must be"):
        needs_approval_for({}, "always")  # type: ignore[arg-type]


# --- results -------------------------------------------------------------------------------------------------

PNG = "iVBORw0KGgo="
PDF, ZIP = "application/pdf", "application/zip"


def test_result_content_text_alone_is_a_string() -> None:
    assert result_content("t", {"content": [{"type": "text", "text": "5"}], "isError": False}) == "5"
    assert result_content("t", {"content": []}) == ""


def test_result_content_maps_every_block_kind() -> None:
    content = result_content(
        "t",
        {
            "content": [
                {"type": "text", "text": "caption"},
                {"type": "text", "text": "  "},
                {"type": "image", "data": PNG, "mimeType": "image/png"},
                {"type": "image", "data": PNG, "mimeType": "image/bmp"},
                {"type": "audio", "data": "AAAA", "mimeType": "audio/wav"},
                {"type": "resource", "resource": {"uri": "file:///a.md", "mimeType": "text/markdown", "text": "# A"}},
                {"type": "resource", "resource": {"uri": "file:///a.pdf", "mimeType": PDF, "blob": "JVBE"}},
                {"type": "resource", "resource": {"uri": "file:///a.bin", "mimeType": ZIP, "blob": "AAAA"}},
                {"type": "resource_link", "uri": "file:///b.txt", "name": "b"},
            ]
        },
    )
    assert isinstance(content, list)
    assert content[0] == {"type": "text", "text": "caption"}
    assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert content[2]["type"] == "text" and "image/bmp left out" in content[2]["text"]
    assert "audio (audio/wav) left out" in content[3]["text"]
    assert content[4] == {"type": "text", "text": "# A"}
    assert content[5] == {"type": "document", "source": {"type": "base64", "media_type": PDF, "data": "JVBE"}}
    assert content[6]["text"] == "[resource file:///a.bin (application/zip, about 3 bytes) left out: binary]"
    assert content[7]["text"] == "[resource file:///b.txt (b)]"


def test_structured_content_is_json_text_only_without_content() -> None:
    assert result_content("t", {"content": [], "structuredContent": {"result": 3}}) == '{"result": 3}'
    both = {"content": [{"type": "text", "text": "3"}], "structuredContent": {"result": 3}}
    assert result_content("t", both) == "3"


def test_is_error_raises_the_text_for_the_model() -> None:
    with pytest.raises(MCPToolError, match="disk full") as caught:
        result_content("save", {"content": [{"type": "text", "text": "disk full"}], "isError": True})
    assert caught.value.tool == "save"
    with pytest.raises(MCPToolError, match="MCP tool 'save' reported an error"):
        result_content("save", {"content": [], "isError": True})


# --- configuration ---------------------------------------------------------------------------------------


def test_without_the_mcp_package_making_a_server_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)  # import mcp raises ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'agentfsm\[mcp\]'"):
        MCPServer.stdio("python", ["server.py"])


def test_bad_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        MCPServer.stdio("python", ["s.py"], prefix="my files")
    with pytest.raises(ConfigurationError, match="list of strings"):
        MCPServer.stdio("python", "s.py")
    with pytest.raises(ConfigurationError, match="timeout"):
        MCPServer.http("http://127.0.0.1:1/mcp", timeout=0)
    with pytest.raises(ConfigurationError, match="needs_approval"):
        MCPServer.stdio("python", ["s.py"], needs_approval="sometimes")  # type: ignore[arg-type]


def test_http_header_values_are_secrets_of_the_agent() -> None:
    server = MCPServer.http("http://127.0.0.1:1/mcp", headers={"Authorization": "Bearer mcp-secret-123"})
    agent = Agent(client=Simulator([]).client(), tools=[server])
    assert "Bearer mcp-secret-123" in agent.secrets()
    assert "mcp-secret-123" in agent.secrets()


# --- the API's MCP connector --------------------------------------------------------------------------------

CONNECTOR = {"type": "url", "name": "docs", "url": "https://mcp.example.com/sse", "authorization_token": "tok-SECRET-9"}


def test_connector_sends_mcp_servers_a_toolset_and_the_beta() -> None:
    sim = Simulator(
        [r.mcp_tool_call("docs", "search", {"q": "leases"}, "3 pages about leases", answer="Leases expire.")]
    )
    store = MemoryStore()
    with capture_events() as events:
        result = Agent(client=sim.client(), mcp_servers=[CONNECTOR]).run("What about leases?", store=store)
    assert result.final_state == "done" and result.text == "Leases expire."
    request = sim.requests[0]
    assert request.body["mcp_servers"] == [CONNECTOR]
    assert request.body["tools"] == [{"type": "mcp_toolset", "mcp_server_name": "docs"}]
    assert MCP_CONNECTOR_BETA in request.headers.get("anthropic-beta", "")
    # The server's blocks, kept verbatim; nothing ran on the client.
    reply = result.messages[-1]["content"]
    assert [b["type"] for b in reply] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert reply[0]["server_name"] == "docs" and reply[0]["input"] == {"q": "leases"}
    assert reply[1]["tool_use_id"] == reply[0]["id"] and reply[1]["content"] == "3 pages about leases"
    assert not [e for e in events if e.event.startswith("tool.")]
    # The token is a credential: in no event, and redacted in the stored request.
    assert "tok-SECRET-9" not in json.dumps([e.model_dump(mode="json") for e in events])
    assert "tok-SECRET-9" not in store.load(result.conversation_id).model_dump_json()


def test_connector_keeps_a_toolset_the_agent_configures() -> None:
    toolset = {"type": "mcp_toolset", "mcp_server_name": "docs", "default_config": {"enabled": False}}
    sim = Simulator([r.text("ok")])
    Agent(client=sim.client(), mcp_servers=[CONNECTOR], tools=[toolset]).run("hi")
    assert sim.requests[0].body["tools"] == [toolset]


def test_connector_blocks_go_back_verbatim_on_the_next_turn_and_are_not_run() -> None:
    from agentfsm.tools import tool

    @tool
    def note(text: str) -> str:
        """Keep a note."""
        return "kept"

    no_index = [{"type": "text", "text": "no index"}]
    failed = r.mcp_tool_call("docs", "search", {"q": "x"}, no_index, is_error=True, answer=None)
    turn = r.message([*failed.content, r.tool_use_block("note", {"text": "x"})], "tool_use")
    sim = Simulator([turn, r.text("noted")])
    result = Agent(client=sim.client(), mcp_servers=[CONNECTOR], tools=[note]).run("search then note")
    assert result.final_state == "done"
    sent = sim.requests[1].body["messages"][1]["content"]
    assert [b["type"] for b in sent] == ["mcp_tool_use", "mcp_tool_result", "tool_use"]
    assert sent[1]["is_error"] is True and sent[1]["content"] == [{"type": "text", "text": "no index"}]
    answered = sim.requests[1].body["messages"][2]["content"]
    assert [b["tool_use_id"] for b in answered] == [sent[2]["id"]]  # only the client tool call is answered


def test_connector_entries_must_be_server_definitions() -> None:
    with pytest.raises(ConfigurationError, match="mcp_servers entries"):
        Agent(client=Simulator([]).client(), mcp_servers=["https://mcp.example.com"])  # type: ignore[list-item]
