"""Where the machine places prompt-caching breakpoints, and what they save, against the simulator's cache.

Every request here also passes the suite-wide checks (wire rules, the API's schema), and the
simulator answers a request that breaks the API's caching rules (more than 4 breakpoints, a mark on
an empty or thinking block, ...) with a 400, which would fail the run.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentfsm import Agent, Policy, tool
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import DRIVERS, client_for, drive
from agentfsm.wire.caching import BREAKPOINT, MarkCounter, count_breakpoints, prefill_pieces, unmarked, with_breakpoint

MODEL = "claude-haiku-4-5"
LONG_SYSTEM = "You are a meticulous assistant. Follow the house style guide to the letter. " * 120  # 2,280 tokens


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def make(sim: Simulator, driver: str = "run", **kw: Any) -> Agent:
    client = client_for(sim, driver, max_retries=0)
    kw.setdefault("model", MODEL)
    kw.setdefault("tools", [lookup])
    return Agent(client=client, logger=None, **kw)


def marks(request: SimRequest) -> list[str]:
    """Where a request's breakpoints are: ``messages.i.content.j`` paths (and ``system.j``, ``tools.j``)."""
    found = []
    for section in ("tools", "system"):
        items = request.body.get(section)
        for j, item in enumerate(items if isinstance(items, list) else []):
            if "cache_control" in item:
                found.append(f"{section}.{j}")
    for i, message in enumerate(request.messages):
        content = message["content"]
        for j, block in enumerate(content if isinstance(content, list) else []):
            if "cache_control" in block:
                found.append(f"messages.{i}.content.{j}")
    return found


def no_marks_in(messages: list[dict[str, Any]]) -> None:
    assert "cache_control" not in json.dumps(messages)


def lookups(n: int) -> Any:
    """A model that calls ``lookup`` until it has made ``n`` calls, then answers."""

    def reply(request: SimRequest) -> Any:
        done = sum(1 for m in request.messages if m["role"] == "assistant")
        return r.tool_use("lookup", {"key": f"k{done}"}) if done < n else r.text("All looked up.")

    return reply


# --- where the marks go ------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_tool_loop_marks_the_last_tool_result_and_the_history_stays_clean(driver: str) -> None:
    sim = Simulator(lookups(3))
    result = drive(make(sim, driver), "Look up three keys.", driver)
    assert result.final_state == "done" and len(sim.requests) == 4
    assert marks(sim.requests[0]) == []  # the first request goes as the caller wrote it
    for n, request in enumerate(sim.requests[1:], start=1):
        assert marks(request) == [f"messages.{2 * n}.content.0"]
        assert request.messages[-1]["content"][-1]["type"] == "tool_result"
        assert request.messages[-1]["content"][-1]["cache_control"] == BREAKPOINT
    no_marks_in(result.messages)
    assert unmarked(sim.requests[-1].messages) == unmarked(result.messages[:-1])


def test_a_prompt_continuation_marks_the_continuation_prompt() -> None:
    document = "".join(f"Point {i} of the plan. " for i in range(100))
    sim = Simulator(r.writer(document))
    agent = make(sim, policy=Policy(max_tokens=200, continuation="prompt", max_continuations=5))
    result = agent.run("Write it.")
    assert result.final_state == "done" and result.text == document
    for request in sim.requests[1:]:
        last = request.messages[-1]
        assert last["role"] == "user" and last["content"] == [
            {"type": "text", "text": Policy().continuation_prompt, "cache_control": BREAKPOINT}
        ]
        assert len(marks(request)) == 1
    assert all(m["content"] == Policy().continuation_prompt for m in result.messages[2::2])  # stored as strings


def test_a_prefill_continuation_is_cut_into_stable_pieces_with_the_last_full_one_marked() -> None:
    document = "".join(f"Sentence {i} of a long document. " for i in range(200))
    sim = Simulator(r.writer(document))
    agent = make(sim, policy=Policy(max_tokens=300, continuation="prefill", max_continuations=10))
    result = agent.run("Write it.")
    assert result.final_state == "done" and result.text == document
    no_marks_in(result.messages)
    sent_pieces: list[list[str]] = []
    for request in sim.requests[1:]:
        prefill = request.messages[-1]
        assert prefill["role"] == "assistant"
        pieces = prefill["content"]
        text = "".join(b["text"] for b in pieces)
        assert document.startswith(text) and text == text.rstrip()  # the whole prefill, stripped, in order
        assert [b.get("cache_control") for b in pieces] == [None] * (len(pieces) - 2) + [BREAKPOINT, None]
        assert all(b["text"].strip() for b in pieces)  # no blank block
        sent_pieces.append([b["text"] for b in pieces])
    for before, after in itertools.pairwise(sent_pieces):
        assert after[: len(before) - 1] == before[:-1]  # earlier pieces come back unchanged
        assert len(after) - len(before) < 20  # a continuation adds fewer pieces than the lookback window


def test_a_prefill_too_short_to_cut_marks_the_user_message_before_it() -> None:
    sim = Simulator([r.max_tokens("Short start"), r.text(" and the end.")])
    agent = make(sim, policy=Policy(max_tokens=100, continuation="prefill"))
    result = agent.run("Go.")
    assert result.text == "Short start and the end."
    second = sim.requests[1]
    assert marks(second) == ["messages.0.content.0"]
    assert second.messages[-1] == {"role": "assistant", "content": [{"type": "text", "text": "Short start"}]}


def test_a_paused_turn_goes_back_byte_for_byte_and_the_mark_goes_before_it() -> None:
    sim = Simulator([r.pause_turn(query="Hanoi news", completed_searches=2), r.text("Here is the news.")])
    agent = make(sim, tools=[{"type": "web_search_20250305", "name": "web_search"}])
    conv = agent.start([{"role": "user", "content": [{"type": "text", "text": "Today's news in Hanoi?"}]}])
    conv.step()
    paused = json.dumps(conv.require_reply().content)
    result = conv.run()
    assert result.final_state == "done"
    resumed = sim.requests[1]
    assert json.dumps(resumed.messages[-1]["content"]) == paused  # byte for byte, no mark added
    assert marks(resumed) == ["messages.0.content.0"]
    no_marks_in(result.messages)


def test_a_nudge_is_marked() -> None:
    sim = Simulator([r.tool_use("lookup", {"key": "a"}), r.empty_end_turn(), r.text("Done.")])
    result = make(sim).run("Look a up.")
    assert result.final_state == "done"
    nudged = sim.requests[2]
    assert [m["role"] for m in nudged.messages] == ["user", "assistant", "user", "user"]
    assert marks(nudged) == ["messages.3.content.0"]
    assert nudged.messages[3]["content"][0]["text"] == Policy().nudge_prompt
    no_marks_in(result.messages)


def test_a_ladder_retry_repeats_the_request_with_its_mark() -> None:
    sim = Simulator([r.truncated_tool_use("lookup", '{"key": "lo'), r.tool_use("lookup", {"key": "a"}), r.text("ok")])
    make(sim).run("Look a up.")
    assert marks(sim.requests[0]) == [] and marks(sim.requests[1]) == ["messages.0.content.0"]
    assert unmarked(sim.requests[0].messages) == unmarked(sim.requests[1].messages)


def test_prompt_caching_off_sends_no_mark() -> None:
    sim = Simulator(lookups(2))
    result = make(sim, policy=Policy(prompt_caching=False)).run("Look up two keys.")
    assert result.final_state == "done"
    assert all(marks(q) == [] for q in sim.requests)
    assert result.usage.cache_read_input_tokens == result.usage.cache_creation_input_tokens == 0


# --- never more than four ------------------------------------------------------------------------------------


def system_blocks(n_marked: int) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": f"Section {i}.", **({"cache_control": {"type": "ephemeral"}} if i < n_marked else {})}
        for i in range(4)
    ]


@pytest.mark.parametrize(("callers", "added"), [(0, 1), (3, 1), (4, 0)])
def test_the_callers_own_marks_count_toward_four(callers: int, added: int) -> None:
    sim = Simulator(lookups(2))
    result = make(sim, system=system_blocks(callers)).run("Look up two keys.")
    assert result.final_state == "done"  # the simulator would have answered a fifth mark with a 400
    for request in sim.requests[1:]:
        assert count_breakpoints(request.body) == callers + added <= 4


def test_marks_in_the_callers_history_and_tools_count_too() -> None:
    marked_tool = {**lookup.to_param(), "cache_control": {"type": "ephemeral"}}
    cc = {"cache_control": {"type": "ephemeral"}}
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Context.", **cc}]},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": [{"type": "text", "text": "Look up two keys.", **cc}]},
    ]
    sim = Simulator(lookups(3))
    result = make(sim, tools=[marked_tool], system=system_blocks(1)).run(history)
    assert result.final_state == "done"
    assert [count_breakpoints(q.body) for q in sim.requests] == [4, 4, 4]
    assert result.messages[:3] == history  # the caller's own marks are kept, as given


def test_automatic_caching_by_the_caller_adds_no_mark() -> None:
    sim = Simulator(lookups(2))
    agent = make(sim, request_params={"cache_control": {"type": "ephemeral"}}, system=LONG_SYSTEM)
    result = agent.run("Look up two keys.")
    assert result.final_state == "done" and all(marks(q) == [] for q in sim.requests)
    assert result.usage.cache_read_input_tokens > 0  # the API's own moving breakpoint did the work


# --- the pieces ------------------------------------------------------------------------------------------------


def test_prefill_pieces_are_stable_as_the_text_grows_and_never_blank() -> None:
    text = "".join(("    " * (i % 7)) + f"line {i}\n" for i in range(300)).rstrip()
    for size in (64, 100, 333):
        pieces = prefill_pieces(text, size)
        assert "".join(pieces) == text and all(p.strip() for p in pieces)
        for cut in range(1, len(text), 97):
            head = text[:cut].rstrip()
            if not head:
                continue
            short = prefill_pieces(head, size)
            assert "".join(short) == head and all(p.strip() for p in short)
            assert pieces[: len(short) - 1] == short[:-1]
    assert prefill_pieces("x" * 10 + " " * 100 + "y", 10) == ["x" * 10, " " * 100 + "y"]


# --- what it saves ------------------------------------------------------------------------------------------------


def test_a_tool_loop_with_a_long_system_prompt_reads_the_growing_prefix() -> None:
    runs = {}
    for caching in (False, True):
        sim = Simulator(lookups(5))
        runs[caching] = make(sim, system=LONG_SYSTEM, policy=Policy(prompt_caching=caching)).run("Look up five.")
    plain, cached = runs[False], runs[True]
    total = plain.usage.input_tokens
    assert (
        cached.usage.input_tokens + cached.usage.cache_read_input_tokens + cached.usage.cache_creation_input_tokens
        == total
    )
    assert cached.usage.cache_read_input_tokens > total / 2
    assert cached.cost_usd is not None and plain.cost_usd is not None and cached.cost_usd < 0.6 * plain.cost_usd


@pytest.mark.parametrize("strategy", ["prefill", "prompt"])
def test_a_long_continuation_reads_most_of_its_prefix(strategy: str) -> None:
    document = "".join(f"Paragraph {i}: a sentence that keeps the document going. " for i in range(300))
    costs = {}
    for caching in (False, True):
        sim = Simulator(r.writer(document))
        policy = Policy(max_tokens=1024, continuation=strategy, max_continuations=10, prompt_caching=caching)
        result = make(sim, system=LONG_SYSTEM, policy=policy).run("Write the document.")
        assert result.final_state == "done" and result.text == document
        costs[caching] = result
    usage = costs[True].usage
    assert usage.cache_read_input_tokens > 2 * (usage.input_tokens + usage.cache_creation_input_tokens) / 3
    assert costs[True].cost_usd is not None and costs[False].cost_usd is not None
    assert costs[True].cost_usd < costs[False].cost_usd


@pytest.mark.slow  # a benchmark in a subprocess
def test_the_configuration_guide_s_cost_table_is_what_the_benchmark_prints() -> None:
    root = Path(__file__).resolve().parents[1]
    page = root / "docs" / "11-configuration.md"
    command = ".venv/bin/python benchmarks/bench.py --cost"
    block = re.search(re.escape(command) + r"\n```\n\n```text\n(.*?)\n```", page.read_text(), re.S)
    assert block is not None, f"{page.relative_to(root)} shows the cost table after its command"
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench.py"), "--cost"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.rstrip("\n") == block.group(1), (
        f"{page.relative_to(root)}'s cost table is out of date: rerun {command}"
    )


# --- the incremental count -------------------------------------------------------------------------


def test_the_incremental_count_always_equals_a_full_count_and_so_does_the_placement() -> None:
    """A conversation's MarkCounter walks each message once; whatever happens to the history (turns
    appended, replies dropped, a compaction replacing its start, an action editing the tail in place,
    tools and system swapped), its count and the mark placed are those of a full walk."""
    import random

    rng = random.Random(13)
    mark = {"type": "ephemeral"}

    def message(i: int) -> dict[str, Any]:
        role = "user" if i % 2 == 0 else "assistant"
        if rng.random() < 0.3:
            return {"role": role, "content": f"text {i}"}
        content: list[dict[str, Any]] = [{"type": "text", "text": f"block {i}.{k}"} for k in range(rng.randint(1, 3))]
        if rng.random() < 0.08:
            content[-1] = {**content[-1], "cache_control": dict(mark)}
        return {"role": role, "content": content}

    counter = MarkCounter()
    messages: list[dict[str, Any]] = [message(0)]
    tools: list[dict[str, Any]] = [{"name": "t", "input_schema": {"type": "object"}}]
    system: Any = "plain"
    for step in range(600):
        roll = rng.random()
        if roll < 0.55:
            messages.append(message(len(messages)))
        elif roll < 0.65 and len(messages) > 2:
            messages.pop()  # a reply discarded
        elif roll < 0.7 and len(messages) > 4:
            messages[: rng.randint(1, len(messages) - 2)] = [message(0)]  # a compaction replaces the start
        elif roll < 0.8 and isinstance(messages[-1]["content"], list):
            messages[-1]["content"].append({"type": "text", "text": "edited", "cache_control": dict(mark)})  # in place
            messages.append(message(len(messages)))  # and a turn appended after the edit
            messages.append(message(len(messages)))
        elif roll < 0.85 and len(messages) > 3:
            k = rng.randrange(len(messages) - 2)
            messages[k] = message(k)  # an earlier message replaced by another object
        elif roll < 0.9:
            tools = [*tools, {"name": f"t{step}", "input_schema": {"type": "object"}, "cache_control": dict(mark)}]
        elif roll < 0.95:
            system = [{"type": "text", "text": "s", "cache_control": dict(mark)}] if rng.random() < 0.5 else "plain"
        if messages[0]["role"] != "user":
            messages.insert(0, message(0))
        params = {"model": MODEL, "max_tokens": 100, "messages": list(messages), "tools": tools, "system": system}
        assert counter.count(params) == count_breakpoints(params), step
        prefill = messages[-1]["role"] == "assistant"
        assert with_breakpoint(params, prefill=prefill, max_tokens=100, counter=counter) == with_breakpoint(
            params, prefill=prefill, max_tokens=100
        )
