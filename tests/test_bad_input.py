"""Bad input: what tools return, what callers pass, and what the model calls must never break a run.

Non-serialisable returns, enormous outputs, invalid content blocks, unknown tool names and tools
that raise (even unprintably) all become a tool_result the API accepts — the suite's conftest
checks every request against the wire rules and the API's schema — and malformed message lists
are refused with a ``ValueError`` naming the problem before any request is sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from agentfsm import Agent, Policy, RunResult, Tool, ToolCall, ToolResult, tool
from agentfsm.errors import InvalidHistoryError
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.memory import MemoryStore
from agentfsm.testing import DRIVERS, client_for, drive
from agentfsm.tools.limits import MIN_TOOL_RESULT_CHARS, cut_content, cut_text

MODEL = "claude-haiku-4-5"
PNG = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def agent(sim: Simulator, tools: Sequence[Any], **kw: Any) -> Agent:
    return Agent(client=sim.client(max_retries=0), model=MODEL, tools=tools, logger=None, **kw)


def answered(sim: Simulator, n: int = 1) -> list[dict[str, Any]]:
    """The tool_result blocks the n-th request (0-based) sent back."""
    message = sim.requests[n].messages[-1]
    assert message["role"] == "user"
    return [b for b in message["content"] if b["type"] == "tool_result"]


def call_once(fn: Tool, value_input: dict[str, Any] | None = None, **kw: Any) -> tuple[Simulator, RunResult]:
    sim = Simulator([r.tool_use(fn.name, value_input or {}), r.text("Noted.")])
    result = agent(sim, [fn], **kw).run("Go")
    assert result.final_state == "done", result.error
    return sim, result


# --- non-serialisable returns -----------------------------------------------------------------------


class Opaque:
    """An object no encoder knows."""


class HoldsOpaque(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    thing: Opaque


def _circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Opaque(), "Opaque"),
        (b"\xff\xfe\x00", "bytes"),
        ({(1, 2): "tuple keys"}, "dict"),
        (_circular(), "list"),
        ({"when": Opaque()}, "dict"),
        (HoldsOpaque(thing=Opaque()), "HoldsOpaque"),
    ],
    ids=["object", "bytes", "tuple-keys", "circular", "nested-object", "model-with-object"],
)
def test_a_non_serialisable_return_is_an_error_result_naming_the_tool_and_the_type(value: Any, type_name: str) -> None:
    @tool
    def odd() -> Any:
        """Returns something odd."""
        return value

    sim, _ = call_once(odd)
    (block,) = answered(sim)
    assert block["is_error"] is True
    assert "tool 'odd'" in block["content"] and f"type {type_name}" in block["content"]


def test_unencodable_characters_are_replaced_instead_of_failing_the_request() -> None:
    # A lone surrogate cannot be encoded as UTF-8: sent as is, it fails the whole request.
    @tool
    def garbled() -> str:
        """Returns text decoded with surrogateescape."""
        return "caf\udce9 \ud83d\ude00 end"

    sim, _ = call_once(garbled)
    (block,) = answered(sim)
    assert block["content"] == "caf\ufffd \U0001f600 end"  # a lone one becomes U+FFFD, a pair its character


# --- enormous outputs -------------------------------------------------------------------------------------


HUGE = "HEAD-" + "x" * 2_345_668 + "-TAIL"  # 2,345,678 characters


@tool
def dump() -> str:
    """Returns a very long log."""
    return HUGE


def _check_cut(text: str, original: str, limit: int) -> None:
    """``text`` is ``original`` cut to ``limit``: head and tail kept, the marker says exactly how much is gone."""
    assert len(text) <= limit
    head, rest = text.split("\n\n[... ", 1)
    count, tail = rest.split(f" characters cut by agentfsm: Policy.max_tool_result_chars={limit} ...]\n\n", 1)
    removed = int(count.replace(",", ""))
    assert original.startswith(head) and original.endswith(tail) and tail
    assert len(head) + removed + len(tail) == len(original)
    assert len(head) > len(tail)  # most of what is kept is the start


@pytest.mark.parametrize("driver", ["run", "arun"])
def test_an_enormous_output_is_cut_to_the_policy_with_a_marker(driver: str) -> None:
    sim = Simulator([r.tool_use("dump", {}), r.text("The log ends in TAIL.")])
    if driver == "run":
        result = agent(sim, [dump]).run("Read the log")
    else:
        result = asyncio.run(
            Agent(client=sim.async_client(max_retries=0), model=MODEL, tools=[dump], logger=None).arun("Read the log")
        )
    assert result.final_state == "done"
    (block,) = answered(sim)
    _check_cut(block["content"], HUGE, Policy().max_tool_result_chars or 0)
    assert block["content"].startswith("HEAD-") and block["content"].endswith("-TAIL")
    assert "[... 2,245,7" in block["content"]  # 2,345,678 less the ~99,900 kept, written for people
    assert result.messages[2]["content"][0]["content"] == block["content"]  # the history holds what was sent


def test_the_limit_is_a_policy_field_and_none_turns_it_off() -> None:
    sim, _ = call_once(dump, policy=Policy(max_tool_result_chars=5000))
    _check_cut(answered(sim)[0]["content"], HUGE, 5000)
    sim, _ = call_once(dump, policy=Policy(max_tool_result_chars=None))
    assert answered(sim)[0]["content"] == HUGE
    with pytest.raises(ValidationError, match=str(MIN_TOOL_RESULT_CHARS)):
        Policy(max_tool_result_chars=10)


def test_a_list_result_cuts_its_long_text_blocks_and_keeps_the_others() -> None:
    short = {"type": "text", "text": "Summary: 3 rows."}

    @tool
    def report() -> list[dict[str, Any]]:
        """Returns a report with a picture."""
        return [short, PNG, {"type": "text", "text": HUGE}, {"type": "text", "text": "y" * 40_000}]

    sim, _ = call_once(report, policy=Policy(max_tool_result_chars=20_000))
    content = answered(sim)[0]["content"]
    assert [b["type"] for b in content] == ["text", "image", "text", "text"]
    assert content[0] == short and content[1] == PNG  # short text whole, image untouched
    assert sum(len(b["text"]) for b in content if b["type"] == "text") <= 20_000
    _check_cut(content[2]["text"], HUGE, 20_000)
    assert "characters cut by agentfsm" in content[3]["text"]


def test_a_huge_json_value_and_a_huge_error_are_cut_too() -> None:
    @tool
    def rows() -> dict[str, Any]:
        """Returns many rows."""
        return {"rows": [{"id": i, "name": f"row {i}"} for i in range(20_000)]}

    @tool
    def crash() -> str:
        """Raises with an enormous message."""
        raise RuntimeError("boom " * 100_000)

    sim = Simulator([r.tool_uses([("rows", {}), ("crash", {})]), r.text("ok")])
    agent(sim, [rows, crash], policy=Policy(max_tool_result_chars=3000)).run("Go")
    data, error = answered(sim)
    assert data["content"].startswith('{"rows": [{"id": 0') and len(data["content"]) <= 3000
    assert error["is_error"] is True and error["content"].startswith("tool 'crash' raised RuntimeError: boom")
    assert len(error["content"]) <= 3000 and "characters cut by agentfsm" in error["content"]


class Remote:
    """A custom executor whose worker sends back whatever it got, unchecked."""

    def __init__(self, content: str | list[dict[str, Any]]) -> None:
        self.content = content

    def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        return [ToolResult(tool_use_id=c.id, content=self.content) for c in calls]

    async def aexecute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        return self.execute(calls, tools, timeout)


def test_a_custom_executors_results_are_cut_as_well() -> None:
    sim = Simulator([r.tool_use("dump", {}), r.text("ok")])
    agent(sim, [dump], executor=Remote(HUGE), policy=Policy(max_tool_result_chars=1000)).run("Go")
    _check_cut(answered(sim)[0]["content"], HUGE, 1000)


def test_stored_rows_hold_the_cut_result_not_the_whole_output() -> None:
    store = MemoryStore()
    sim = Simulator([r.tool_use("dump", {}), r.text("ok")])
    result = agent(sim, [dump]).run("Go", store=store)
    row = store._rows[result.conversation_id]
    assert len(row) < 150_000  # the last snapshot; every snapshot was saved through the same bound
    assert store.load(result.conversation_id).messages == result.messages


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=3000)
blocks = st.one_of(texts.filter(str.strip).map(lambda t: {"type": "text", "text": t}), st.just(PNG))


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    content=st.one_of(texts, st.lists(blocks, min_size=1, max_size=6)), limit=st.integers(MIN_TOOL_RESULT_CHARS, 4000)
)
def test_cutting_keeps_head_and_tail_bounds_the_text_and_is_idempotent(
    content: str | list[dict[str, Any]], limit: int
) -> None:
    out = cut_content(content, limit)
    assert cut_content(out, limit) == out  # cutting again changes nothing
    if isinstance(content, str):
        assert isinstance(out, str)
        pairs = [(content, out)]
    else:
        assert isinstance(out, list) and len(out) == len(content)
        assert [b["type"] for b in out] == [b["type"] for b in content]
        assert [b for b in out if b["type"] != "text"] == [b for b in content if b["type"] != "text"]
        pairs = [(a["text"], b["text"]) for a, b in zip(content, out, strict=True) if a["type"] == "text"]
        assert all(text.strip() for _, text in pairs)  # a text block never ends up empty
        if len(pairs) * MIN_TOOL_RESULT_CHARS <= limit:
            assert sum(len(text) for _, text in pairs) <= limit
    for original, text in pairs:
        if text != original:
            head, rest = text.split("\n\n[... ", 1)
            count, tail = rest.split(" characters cut by agentfsm", 1)
            tail = tail.split(" ...]\n\n", 1)[1]
            assert original.startswith(head) and original.endswith(tail)
            assert len(head) + int(count.replace(",", "")) + len(tail) == len(original)
    if isinstance(content, str) and len(content) <= limit:
        assert out is content


def test_cut_text_fits_exactly_and_never_below_the_minimum() -> None:
    for size in (MIN_TOOL_RESULT_CHARS, 999, 1000, 1001, 100_000):
        out = cut_text("z" * 10**6, size)
        assert size - 1 <= len(out) <= size
    assert len(cut_text("z" * 10_000, 5)) == MIN_TOOL_RESULT_CHARS


# --- invalid content blocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        [{"type": "text"}],
        [{"type": "text", "text": ""}],
        [{"type": "text", "text": "  \n"}],
        [{"type": "image", "source": "https://example.com/cat.png"}],
        [{"type": "search_result", "title": "no source or content"}],
        [{"type": "text", "text": "ok"}, "a loose string"],
        [{"type": "bug", "id": 7}],
    ],
    ids=["no-text", "empty-text", "blank-text", "image-source-not-object", "search-result-fields", "loose", "data"],
)
def test_a_list_that_is_not_valid_content_blocks_is_sent_as_json_text(value: list[Any]) -> None:
    @tool
    def listing() -> list[Any]:
        """Returns a list."""
        return value

    sim, _ = call_once(listing)
    (block,) = answered(sim)
    assert "is_error" not in block and json.loads(block["content"]) == value


def test_valid_content_blocks_pass_through_unchanged() -> None:
    value: list[dict[str, Any]] = [{"type": "text", "text": "A cat."}, PNG]

    @tool
    def picture() -> list[dict[str, Any]]:
        """Returns a picture."""
        return value

    sim, _ = call_once(picture)
    assert answered(sim)[0]["content"] == value


def test_a_custom_executors_invalid_blocks_are_sent_as_json_text() -> None:
    bad = [{"type": "text", "text": ""}, {"type": "image"}]
    sim = Simulator([r.tool_use("dump", {}), r.text("ok")])
    agent(sim, [dump], executor=Remote(bad)).run("Go")
    assert json.loads(answered(sim)[0]["content"]) == bad


# --- unknown tools, tools that raise --------------------------------------------------------------------------


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def test_an_unknown_tool_name_gets_an_error_listing_the_tools_there_are() -> None:
    sim = Simulator([r.tool_uses([("lookpu", {"key": "k"}), ("web_search", {"query": "q"})]), r.text("ok")])
    result = agent(sim, [lookup, dump, {"type": "web_search_20250305", "name": "web_search"}]).run("Go")
    typo, server = answered(sim)
    assert typo["is_error"] is True and "unknown tool 'lookpu'" in typo["content"]
    assert "'lookup'" in typo["content"] and "'dump'" in typo["content"]
    # a server tool called as a client tool is not ours to run either
    assert server["is_error"] is True and "unknown tool 'web_search'" in server["content"]
    assert result.final_state == "done"


def test_an_unknown_tool_with_no_client_tools_says_there_are_none() -> None:
    sim = Simulator([r.tool_use("anything", {}), r.text("ok")])
    agent(sim, [{"type": "web_search_20250305", "name": "web_search"}]).run("Go")
    assert "the tools you can call are: none" in answered(sim)[0]["content"]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("cannot print me")


@tool
def raises_plain(key: str) -> str:
    """Raises."""
    raise KeyError(key)


@tool
def raises_unprintable() -> str:
    """Raises an exception that cannot be printed."""
    raise Unprintable()


@tool
async def raises_async() -> str:
    """Raises, asynchronously."""
    await asyncio.sleep(0)
    raise ConnectionResetError("peer went away")


@pytest.mark.parametrize("driver", ["run", "arun"])
def test_a_raising_tool_is_an_error_result_and_never_a_crash(driver: str) -> None:
    script = [
        r.tool_uses([("raises_plain", {"key": "k9"}), ("raises_unprintable", {}), ("raises_async", {})]),
        r.text("ok"),
    ]
    sim = Simulator(script)
    tools = [raises_plain, raises_unprintable, raises_async]
    if driver == "run":
        result = agent(sim, tools).run("Go")
    else:
        client = sim.async_client(max_retries=0)
        result = asyncio.run(Agent(client=client, model=MODEL, tools=tools, logger=None).arun("Go"))
    plain, unprintable, failed = answered(sim)
    assert plain["content"] == "tool 'raises_plain' raised KeyError: 'k9'"
    assert (
        unprintable["content"]
        == "tool 'raises_unprintable' raised Unprintable: <Unprintable whose message cannot be read>"
    )
    assert failed["content"] == "tool 'raises_async' raised ConnectionResetError: peer went away"
    assert all(b["is_error"] is True for b in (plain, unprintable, failed))
    assert result.final_state == "done"


# --- malformed message lists, under every driver (tests/test_agent.py has the full list for run) -------------


MALFORMED: list[tuple[Any, str]] = [
    (None, "non-empty list"),
    ({"role": "user", "content": "a dict, not a list"}, "non-empty list"),
    ([{"role": "user", "content": "ok"}, "not a dict"], r"messages\[1\]: expected a dict, got str"),
    ([{"role": "user"}], r"messages\[0\]: content must be a string or a list of blocks, got NoneType"),
    ([{"role": "user", "content": ["loose text"]}], r"messages\[0\]: content\[0\] must be a dict"),
    (
        [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "?"}]}],
        r"tool_result id\(s\) \['toolu_x'\] answer no tool_use",
    ),
]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("history", "match"), MALFORMED, ids=[f"case{i}" for i in range(len(MALFORMED))])
def test_a_malformed_history_is_a_value_error_before_any_request(driver: str, history: Any, match: str) -> None:
    sim = Simulator([r.text("never")])
    a = Agent(client=client_for(sim, driver), model=MODEL, logger=None)
    with pytest.raises(ValueError, match=match) as info:
        drive(a, history, driver)
    assert isinstance(info.value, InvalidHistoryError)
    assert sim.requests == []
