"""``writer``: one long document written across many max_tokens-limited requests, in both continuation styles."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import anthropic
import pytest

from agentfsm.sim import SimRequest, Simulator, count_tokens
from agentfsm.sim import replies as r
from agentfsm.sim.writer import writer

MODEL = "claude-haiku-4-5"
TASK: Any = {"role": "user", "content": "Write the essay about the Red River."}
CONTINUE = "Continue exactly where you stopped; do not repeat anything."
# Runs of spaces and newlines make cuts land right after whitespace, which the prefill style must strip.
DOCUMENT = "".join(
    f"Paragraph {i}: the Red River   carries silt  to the delta;\n\n  rice grows, cities grow, and so on.  "
    for i in range(12)
)
MAX_TOKENS = 23  # 92 characters at most per chunk: ~20 chunks


# These tests send invalid requests on purpose: keep wire-rule checkers registered elsewhere out.
pytestmark = pytest.mark.usefixtures("no_foreign_observers")


def _text(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def _ask(client: anthropic.Anthropic, messages: list[Any], stream: bool) -> anthropic.types.Message:
    if not stream:
        return client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=messages)
    with client.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, messages=messages) as s:
        return s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_prompt_style(stream: bool) -> None:
    sim = Simulator(writer(DOCUMENT))
    client = sim.client(max_retries=0)
    messages: list[Any] = [TASK]
    chunks: list[str] = []
    for _ in range(100):
        reply = _ask(client, messages, stream)
        chunk = _text(reply)
        chunks.append(chunk)
        assert count_tokens(chunk) <= MAX_TOKENS
        if reply.stop_reason != "max_tokens":
            break
        assert reply.usage.output_tokens == MAX_TOKENS
        messages += [{"role": "assistant", "content": chunk}, {"role": "user", "content": CONTINUE}]
    assert reply.stop_reason == "end_turn"
    assert len(chunks) >= 5
    assert "".join(chunks) == DOCUMENT
    assert any(a[-1].isalpha() and b[0].isalpha() for a, b in itertools.pairwise(chunks))  # cut mid-word


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_prefill_style(stream: bool) -> None:
    sim = Simulator(writer(DOCUMENT, end_stop_reason="stop_sequence"))
    client = sim.client(max_retries=0)
    written = ""
    replies: list[str] = []
    for _ in range(100):
        prefill = written.rstrip()  # the API rejects a final assistant turn ending in whitespace
        messages: list[Any] = [TASK] + ([{"role": "assistant", "content": prefill}] if prefill else [])
        reply = _ask(client, messages, stream)
        chunk = _text(reply)
        replies.append(chunk)
        written = prefill + chunk  # the reply continues exactly where the prefill ends
        if reply.stop_reason != "max_tokens":
            break
    assert reply.stop_reason == "stop_sequence"
    assert len(replies) >= 5
    assert written == DOCUMENT
    assert any(c[:1].isspace() for c in replies[1:])  # some replies restore the whitespace the prefill dropped
    assert all(q.status == 200 for q in sim.requests)


def test_mid_word_cuts_and_jittered_lengths() -> None:
    sim = Simulator(writer("abcdefghij" * 40))
    client = sim.client(max_retries=0)
    messages: list[Any] = [TASK]
    lengths = []
    while True:
        reply = client.messages.create(model=MODEL, max_tokens=5, messages=messages)
        lengths.append(len(_text(reply)))
        if reply.stop_reason == "end_turn":
            break
        messages += [{"role": "assistant", "content": _text(reply)}, {"role": "user", "content": "continue"}]
    assert all(17 <= n <= 20 for n in lengths[:-1]) and len(set(lengths[:-1])) > 1


def test_async_prompt_style() -> None:
    sim = Simulator(writer(DOCUMENT))

    async def go() -> str:
        client = sim.async_client(max_retries=0)
        messages: list[Any] = [TASK]
        out = ""
        while True:
            async with client.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, messages=messages) as s:
                reply = await s.get_final_message()
            out += _text(reply)
            if reply.stop_reason != "max_tokens":
                return out
            messages += [{"role": "assistant", "content": _text(reply)}, {"role": "user", "content": CONTINUE}]

    assert asyncio.run(go()) == DOCUMENT
    assert len(sim.requests) >= 5


def test_switching_from_prefill_to_prompt_after_a_prefill_400() -> None:
    sim = Simulator(writer(DOCUMENT))
    client = sim.client(max_retries=0)
    first = client.messages.create(model="claude-opus-4-7", max_tokens=MAX_TOKENS, messages=[TASK])
    prefill = _text(first).rstrip()
    with pytest.raises(anthropic.BadRequestError, match="does not support assistant message prefill"):
        client.messages.create(
            model="claude-opus-4-7", max_tokens=MAX_TOKENS, messages=[TASK, {"role": "assistant", "content": prefill}]
        )
    messages = [TASK, {"role": "assistant", "content": prefill}, {"role": "user", "content": CONTINUE}]
    second = client.messages.create(model="claude-opus-4-7", max_tokens=MAX_TOKENS, messages=messages)
    assert prefill + _text(second) == DOCUMENT[: len(prefill) + len(_text(second))]


def test_earlier_unrelated_turns_do_not_count() -> None:
    sim = Simulator([r.tool_use("lookup", {"q": "Red River"}, text="Let me look that up."), writer(DOCUMENT)])
    client = sim.client(max_retries=0)
    first = client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=[TASK])
    call = first.content[-1]
    assert call.type == "tool_use"
    messages: list[Any] = [
        TASK,
        {"role": "assistant", "content": [b.to_dict() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "found it"}]},
    ]
    reply = client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=messages)
    assert DOCUMENT.startswith(_text(reply)) and _text(reply)


@pytest.mark.parametrize(
    "history",
    [
        [TASK, {"role": "assistant", "content": "Something else entirely"}, {"role": "user", "content": CONTINUE}],
        [TASK, {"role": "assistant", "content": (DOCUMENT[:30] + DOCUMENT[20:50]).rstrip()}],  # duplicated text
    ],
    ids=["foreign text", "duplicated seam"],
)
def test_a_conversation_it_did_not_write_is_a_clear_400(history: list[Any]) -> None:
    sim = Simulator(writer(DOCUMENT))
    with pytest.raises(anthropic.BadRequestError, match="writer: the assistant text in this conversation is not a"):
        sim.client(max_retries=0).messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=history)
    assert sim.replies_served == 0


def test_finished_document_and_direct_use() -> None:
    write = writer("short doc")
    request = SimRequest(n=1, body={"model": MODEL, "max_tokens": 100, "messages": [TASK]})
    whole = write(request)
    assert whole.content == [{"type": "text", "text": "short doc"}] and whole.stop_reason == "end_turn"
    done = SimRequest(
        n=2,
        body={"model": MODEL, "max_tokens": 100, "messages": [TASK, {"role": "assistant", "content": "short doc"}]},
    )
    assert write(done).content == [] and write(done).stop_reason == "end_turn"
    assert r.writer is writer


@pytest.mark.parametrize("max_tokens", range(1, 31))
def test_every_chunk_fits_max_tokens_and_cut_chunks_fill_it(max_tokens: int) -> None:
    write = writer(DOCUMENT[:700])
    messages: list[Any] = [TASK]
    chunks: list[str] = []
    for n in range(1, 1000):
        reply = write(SimRequest(n=n, body={"model": MODEL, "max_tokens": max_tokens, "messages": messages}))
        chunk = reply.content[0]["text"]
        chunks.append(chunk)
        assert count_tokens(chunk) <= max_tokens
        if reply.stop_reason == "end_turn":
            break
        assert count_tokens(chunk) == max_tokens  # a cut reply used its whole budget, as the real API's
        messages += [{"role": "assistant", "content": chunk}, {"role": "user", "content": CONTINUE}]
    assert "".join(chunks) == DOCUMENT[:700]
