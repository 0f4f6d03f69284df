"""The simulator's prompt cache, through the real ``anthropic`` client: breakpoints, lookback, TTLs, 400s."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import pytest

from agentfsm.sim import Simulator, count_tokens
from agentfsm.sim import replies as r
from agentfsm.sim.caching import without_cache_control
from agentfsm.sim.tokens import count_input_tokens

MODEL = "claude-haiku-4-5"
CC: dict[str, str] = {"type": "ephemeral"}
BIG = "The reference manual, paragraph after paragraph. " * 160  # 8,000 characters: 2,000 tokens


# These tests send invalid requests on purpose: keep wire-rule checkers registered elsewhere out.
pytestmark = pytest.mark.usefixtures("no_foreign_observers")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sim_with(clock: Clock | None = None, **kw: Any) -> Simulator:
    return Simulator(lambda req: r.text("ok"), clock=clock or Clock(), **kw)


def send(sim: Simulator, messages: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    """One request; the reply's usage as a dict (checked to add up to the prompt's tokens)."""
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 50, "messages": messages or [user("Hi")], **kw}
    usage = sim.client(max_retries=0).messages.create(**params).usage.model_dump()
    total = usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    assert total == count_input_tokens(without_cache_control(params))
    assert usage["cache_creation_input_tokens"] == sum(usage["cache_creation"].values())
    return usage


def user(text: str, mark: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    return {"role": "user", "content": [{**block, "cache_control": CC} if mark else block]}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def system(mark: bool = True, text: str = BIG, **control: str) -> list[dict[str, Any]]:
    block: dict[str, Any] = {"type": "text", "text": text}
    return [{**block, "cache_control": {**CC, **control}} if mark else block]


def billed(usage: dict[str, Any]) -> tuple[int, int, int]:
    return usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"], usage["input_tokens"]


SYSTEM_TOKENS = count_tokens(BIG)


# --- no caching unless asked ------------------------------------------------------------------------


def test_without_a_breakpoint_nothing_is_cached() -> None:
    sim = sim_with()
    for _ in range(2):
        assert billed(send(sim, system=system(mark=False))) == (0, 0, SYSTEM_TOKENS + 1)
    assert len(sim.cache) == 0


def test_a_breakpoint_writes_its_prefix_and_the_next_request_reads_it() -> None:
    sim = sim_with()
    first = send(sim, system=system(), messages=[user("What does it say about caching?")])
    assert billed(first) == (0, SYSTEM_TOKENS, count_tokens("What does it say about caching?"))
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": SYSTEM_TOKENS, "ephemeral_1h_input_tokens": 0}
    second = send(sim, system=system(), messages=[user("And about budgets?")])
    assert billed(second) == (SYSTEM_TOKENS, 0, count_tokens("And about budgets?"))


def test_a_string_system_prompt_and_its_text_block_are_the_same_prefix() -> None:
    sim = sim_with()
    send(sim, system=system(), messages=[user("one")])
    # automatic caching marks the last block; the lookback finds the system prompt's entry
    usage = send(sim, system=BIG, messages=[{"role": "user", "content": "two"}], cache_control=CC)
    assert billed(usage) == (SYSTEM_TOKENS, 1, 0)


def test_a_prefix_below_the_minimum_is_not_cached_and_not_an_error() -> None:
    sim = sim_with()
    short = "Short instructions."
    for _ in range(2):
        assert billed(send(sim, system=system(text=short))) == (0, 0, count_tokens(short) + 1)
    strict = sim_with(min_cacheable_tokens=4096)  # e.g. Opus 4.5's minimum
    for _ in range(2):
        assert billed(send(strict, system=system()))[:2] == (0, 0)
    assert len(sim.cache) == len(strict.cache) == 0


# --- where the breakpoint is ------------------------------------------------------------------------------


def test_a_breakpoint_on_a_block_that_changes_every_request_never_reads() -> None:
    sim = sim_with()
    for n in range(3):
        usage = send(sim, system=system(mark=False), messages=[user(f"Request {n} at 12:0{n}", mark=True)])
        assert usage["cache_read_input_tokens"] == 0 and usage["cache_creation_input_tokens"] > SYSTEM_TOKENS


def test_a_growing_conversation_reads_the_last_turn_and_writes_only_the_new_part() -> None:
    sim = sim_with()
    history = [user(BIG)]
    first = send(sim, messages=[*history[:-1], user(BIG, mark=True)])
    assert billed(first) == (0, SYSTEM_TOKENS, 0)
    history += [assistant("A long answer."), user("A follow-up question.")]
    second = send(sim, messages=[*history[:-1], user("A follow-up question.", mark=True)])
    new = count_tokens("A long answer.") + count_tokens("A follow-up question.")
    assert billed(second) == (SYSTEM_TOKENS, new, 0)


def conversation(blocks: int) -> list[dict[str, Any]]:
    """A first user message of 2,000 tokens, then one assistant message of ``blocks`` text blocks."""
    return [user(BIG), {"role": "assistant", "content": [{"type": "text", "text": f"b{i}"} for i in range(blocks)]}]


def mark_last(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    *head, last = messages
    content = last["content"]
    return [*head, {**last, "content": [*content[:-1], {**content[-1], "cache_control": CC}]}]


@pytest.mark.parametrize(("added", "hit"), [(19, True), (20, False)])
def test_the_lookback_sees_19_blocks_back_from_a_breakpoint(added: int, hit: bool) -> None:
    sim = sim_with()
    send(sim, messages=[user(BIG, mark=True), assistant("x")])  # writes at block 1 (the user message)
    usage = send(sim, messages=mark_last(conversation(added)))  # breakpoint `added` blocks further on
    assert usage["cache_read_input_tokens"] == (SYSTEM_TOKENS if hit else 0)


def test_a_second_breakpoint_finds_an_entry_beyond_the_first_ones_window() -> None:
    sim = sim_with()
    send(sim, messages=[user(BIG, mark=True), assistant("x")])
    usage = send(sim, messages=mark_last([user(BIG, mark=True), *conversation(30)[1:]]))
    assert usage["cache_read_input_tokens"] == SYSTEM_TOKENS


def test_a_breakpoint_on_the_final_assistant_prefill_is_allowed() -> None:
    sim = sim_with()
    prefill = {"role": "assistant", "content": [{"type": "text", "text": "The answer is", "cache_control": CC}]}
    usage = send(sim, messages=[user(BIG), prefill])
    assert billed(usage) == (0, SYSTEM_TOKENS + count_tokens("The answer is"), 0)


def test_cache_control_inside_a_tool_result_marks_the_tool_result() -> None:
    sim = sim_with()
    call = {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": BIG}]}
    marked = {**result, "content": [{"type": "text", "text": BIG, "cache_control": CC}]}
    messages = [user("Read it."), {"role": "assistant", "content": [call]}, {"role": "user", "content": [marked]}]
    first = send(sim, messages=messages)
    assert first["cache_creation_input_tokens"] > SYSTEM_TOKENS
    again = send(sim, messages=[*messages[:2], {"role": "user", "content": [{**result, "cache_control": CC}]}])
    assert again["cache_read_input_tokens"] == first["cache_creation_input_tokens"]


# --- what is part of the prefix ---------------------------------------------------------------------------


def test_the_cache_is_per_model_and_per_simulator() -> None:
    sim = sim_with()
    send(sim, system=system())
    assert send(sim, system=system(), model="claude-sonnet-4-6")["cache_read_input_tokens"] == 0
    assert send(sim, system=system())["cache_read_input_tokens"] == SYSTEM_TOKENS
    assert send(sim_with(), system=system())["cache_read_input_tokens"] == 0


def test_tool_choice_invalidates_the_messages_but_not_the_tools_and_system() -> None:
    sim = sim_with()
    tools = [{"name": "lookup", "description": "Look a key up.", "input_schema": {"type": "object"}}]
    messages = [user(BIG, mark=True)]
    send(sim, tools=tools, system=system(), messages=messages, tool_choice={"type": "auto"})
    usage = send(sim, tools=tools, system=system(), messages=messages, tool_choice={"type": "any"})
    tools_and_system = count_tokens(json.dumps(tools, ensure_ascii=False)) + SYSTEM_TOKENS
    assert billed(usage) == (tools_and_system, SYSTEM_TOKENS, 0)  # the user message is written again
    changed_tools = [{**tools[0], "description": "Look a key up, fast."}]
    usage = send(sim, tools=changed_tools, system=system(), messages=messages, tool_choice={"type": "any"})
    assert usage["cache_read_input_tokens"] == 0  # a tool change invalidates everything after it


# --- lifetime -------------------------------------------------------------------------------------------------


def test_an_entry_expires_five_minutes_after_its_last_use() -> None:
    clock = Clock()
    sim = sim_with(clock)
    send(sim, system=system())
    clock.now += 299
    assert send(sim, system=system())["cache_read_input_tokens"] == SYSTEM_TOKENS  # a read refreshes it ...
    clock.now += 299
    assert send(sim, system=system())["cache_read_input_tokens"] == SYSTEM_TOKENS  # ... so it lives on
    clock.now += 301
    usage = send(sim, system=system())
    assert billed(usage)[:2] == (0, SYSTEM_TOKENS)  # expired: written again


def test_a_one_hour_entry_outlives_five_minutes_and_is_billed_as_such() -> None:
    clock = Clock()
    sim = sim_with(clock)
    usage = send(sim, system=system(ttl="1h"))
    assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": SYSTEM_TOKENS}
    clock.now += 3000
    assert send(sim, system=system(ttl="1h"))["cache_read_input_tokens"] == SYSTEM_TOKENS
    clock.now += 3601
    assert send(sim, system=system(ttl="1h"))["cache_read_input_tokens"] == 0


def test_mixed_ttls_split_the_write() -> None:
    sim = sim_with()
    usage = send(sim, system=system(ttl="1h"), messages=[user(BIG, mark=True)])
    assert usage["cache_creation"] == {
        "ephemeral_1h_input_tokens": SYSTEM_TOKENS,
        "ephemeral_5m_input_tokens": SYSTEM_TOKENS,
    }


# --- automatic caching --------------------------------------------------------------------------------------


def test_top_level_cache_control_marks_the_last_block_and_moves_with_the_conversation() -> None:
    sim = sim_with()
    history = [user(BIG)]
    assert billed(send(sim, messages=history, cache_control=CC)) == (0, SYSTEM_TOKENS, 0)
    history += [assistant("Answer."), user("More?")]
    new = count_tokens("Answer.") + count_tokens("More?")
    assert billed(send(sim, messages=history, cache_control=CC)) == (SYSTEM_TOKENS, new, 0)


# --- the API's 400s -------------------------------------------------------------------------------------------


def rejected(sim: Simulator, **kw: Any) -> str:
    with pytest.raises(anthropic.BadRequestError) as info:
        send(sim, **kw)
    body: Any = info.value.body
    assert body["error"]["type"] == "invalid_request_error"
    return str(body["error"]["message"])


def test_more_than_four_breakpoints_is_a_400_with_the_api_message() -> None:
    sim = sim_with()
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": CC} for i in range(5)]
    message = rejected(sim, system=blocks)
    assert message == "A maximum of 4 blocks with cache_control may be provided. Found 5."
    # the top-level (automatic) breakpoint takes a slot too
    assert rejected(sim, system=blocks[:4], cache_control=CC).endswith("Found 5.")
    send(sim, system=blocks[:4])  # four is fine
    assert sim.replies_served == 1


def test_cache_control_on_an_empty_text_block_is_a_400() -> None:
    message = rejected(
        sim_with(), messages=[{"role": "user", "content": [{"type": "text", "text": "", "cache_control": CC}]}]
    )
    assert message == "messages.0.content.0.text: cache_control cannot be set for empty text blocks"


def test_cache_control_on_a_thinking_block_is_a_400() -> None:
    thinking = {"type": "thinking", "thinking": "Hmm.", "signature": "sig", "cache_control": CC}
    messages = [user("Q"), {"role": "assistant", "content": [thinking, {"type": "text", "text": "A"}]}, user("Q2")]
    message = rejected(sim_with(), messages=messages)
    assert message == "messages.1.content.0.thinking.cache_control: Extra inputs are not permitted"


def test_a_one_hour_breakpoint_after_a_five_minute_one_is_a_400() -> None:
    hour = {"type": "text", "text": "Q", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    message = rejected(sim_with(), system=system(), messages=[{"role": "user", "content": [hour]}])
    assert message.startswith("messages.0.content.0.cache_control.ttl: a ttl='1h' cache_control block must not")
    assert "`tools`, `system`, `messages`" in message


def test_a_top_level_ttl_that_differs_from_the_last_blocks_is_a_400() -> None:
    message = rejected(sim_with(), messages=[user("Q", mark=True)], cache_control={"type": "ephemeral", "ttl": "1h"})
    assert (
        message == "Top-level cache_control has ttl='1h' but the target block already has cache_control with ttl='5m'"
    )


def test_a_rejected_request_writes_nothing() -> None:
    sim = sim_with()
    blocks = [{"type": "text", "text": BIG, "cache_control": CC} for _ in range(5)]
    rejected(sim, system=blocks)
    assert len(sim.cache) == 0


# --- every client path ----------------------------------------------------------------------------------------


def test_streamed_and_async_requests_report_the_same_cache_usage() -> None:
    sim = sim_with()
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 50, "system": system(), "messages": [user("Hi")]}
    with sim.client(max_retries=0).messages.stream(**params) as stream:
        streamed = stream.get_final_message().usage
    assert (streamed.cache_read_input_tokens, streamed.cache_creation_input_tokens) == (0, SYSTEM_TOKENS)

    async def go() -> anthropic.types.Usage:
        message = await sim.async_client(max_retries=0).messages.create(**params)
        return message.usage

    usage = asyncio.run(go())
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.input_tokens) == (
        SYSTEM_TOKENS,
        0,
        1,
    )
    with sim.serve() as base_url:
        over_http = anthropic.Anthropic(api_key="sk-ant-sim", base_url=base_url, max_retries=0)
        assert over_http.messages.create(**params).usage.cache_read_input_tokens == SYSTEM_TOKENS


def test_a_simulator_without_the_cache_model_still_checks_the_marks() -> None:
    sim = sim_with(prompt_cache=False)
    for _ in range(2):
        assert billed(send(sim, system=system())) == (0, 0, SYSTEM_TOKENS + 1)
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": CC} for i in range(5)]
    assert rejected(sim, system=blocks).endswith("Found 5.")


def test_marks_are_not_counted_as_input_tokens_and_the_body_is_not_copied_to_leave_them_out() -> None:
    mark = {"type": "ephemeral"}
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "cache_control": mark,
        "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": mark}],
        "system": [{"type": "text", "text": "sys", "cache_control": mark}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "document", "source": {"type": "text", "data": "d"}, "cache_control": mark}],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "t", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "a",
                        "content": [
                            {"type": "search_result", "source": "s", "title": "t", "content": [], "cache_control": mark}
                        ],
                        "cache_control": mark,
                    }
                ],
            },
        ],
    }
    before = repr(body)
    assert count_input_tokens(body, unmarked=True) == count_input_tokens(without_cache_control(body))
    assert count_input_tokens(body, unmarked=True) < count_input_tokens(body)
    assert repr(body) == before
