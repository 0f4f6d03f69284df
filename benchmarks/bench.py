"""Benchmarks: agentfsm next to the loops it replaces, in one process, on the same in-process simulator.

    .venv/bin/python benchmarks/bench.py            # full run (the numbers the README and docs quote)
    .venv/bin/python benchmarks/bench.py --cost     # only section 4, the cost table (deterministic)
    .venv/bin/python benchmarks/bench.py --quick    # a smoke test, NOT a measurement (see below)

``--quick`` runs every contender for 2 rounds x 2 conversations and 200
concurrent conversations: it proves the script and every contender still run
(the test suite does exactly that), and measures nothing. Its ratios swing by
50% between two runs on a busy machine; never quote them. Quote the full run.

Every contender talks to the same ``Simulator`` over the SDK's real HTTP
stack (httpx2 MockTransport), so the simulator's own cost is in every row
alike; compare rows, not absolute numbers. (Sections 1-3 run it with
``prompt_cache=False``: agentfsm marks its follow-up requests for prompt
caching and the hand-written loops do not, and hashing prompts is the
server's work, not the client's.) Rounds are interleaved so a noisy
neighbour hurts every contender the same.

1. Per-turn cost of a 20-turn tool conversation: a hand-written
   ``messages.create`` loop (the baseline), the SDK's
   ``client.beta.messages.tool_runner(..., thread=False)``, agentfsm ``run``
   and ``arun``; then the streamed versions (``messages.stream`` loop,
   agentfsm ``stream`` and ``astream``). Each agentfsm driver twice: with
   every default (the default logging goes to the standard library logger
   ``agentfsm``, which nothing in this process listens to, as in a program
   that never configured logging) and with ``logger=None``; ``run`` once more
   with a 60 s ``tool_timeout``, which puts every sync call in a pool thread.
2. Many concurrent conversations (10,000 by default) through ``arun`` on one
   event loop, in a fresh subprocess: wall time, conversations per second,
   peak RSS above the process's baseline, bytes per conversation.
3. Time to first text delta: ``astream`` against a raw SDK async stream.
4. Billed cost of one long document written in 6 chunks (``--cost`` prints only this; it is
   deterministic): a naive continuation loop (resend everything, then "continue") against
   agentfsm without and with prompt caching, tokens as the simulator bills them and dollars at the list price.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic

from agentfsm import Agent, Policy, tool
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.wire.pricing import DEFAULT_PRICES

MODEL = "claude-haiku-4-5"
TURNS = 20
TOOL_SPEC = {
    "name": "lookup",
    "description": "Look a key up.",
    "input_schema": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
}


def lookup_impl(key: str) -> str:
    return f"value of {key}"


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return lookup_impl(key)


def conversation_script(turns: int) -> Callable[[SimRequest], Any]:
    """A model that calls the tool until ``turns`` requests have been made, then answers."""

    def reply(request: SimRequest) -> Any:
        done = sum(1 for m in request.messages if m["role"] == "assistant")
        if done + 1 < turns:
            return r.tool_use("lookup", {"key": f"k{done}"}, text="Looking that up.")
        return r.text("All keys looked up; here is the summary you asked for.")

    return reply


# --- contenders: one 20-turn conversation each --------------------------------------------------


def hand_loop(client: anthropic.Anthropic) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Look up twenty keys."}]
    while True:
        reply = client.messages.create(model=MODEL, max_tokens=1024, messages=messages, tools=[TOOL_SPEC])  # type: ignore[arg-type,list-item]
        if reply.stop_reason != "tool_use":
            return
        content = [b.model_dump(exclude_none=True) for b in reply.content]
        results = [
            {"type": "tool_result", "tool_use_id": b.id, "content": lookup_impl(**b.input)}  # type: ignore[arg-type]
            for b in reply.content
            if b.type == "tool_use"
        ]
        messages += [{"role": "assistant", "content": content}, {"role": "user", "content": results}]


def hand_stream_loop(client: anthropic.Anthropic) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Look up twenty keys."}]
    while True:
        with client.messages.stream(model=MODEL, max_tokens=1024, messages=messages, tools=[TOOL_SPEC]) as s:  # type: ignore[arg-type,list-item]
            for _ in s.text_stream:
                pass
            reply = s.get_final_message()
        if reply.stop_reason != "tool_use":
            return
        content = [b.model_dump(exclude_none=True) for b in reply.content]
        results = [
            {"type": "tool_result", "tool_use_id": b.id, "content": lookup_impl(**b.input)}  # type: ignore[arg-type]
            for b in reply.content
            if b.type == "tool_use"
        ]
        messages += [{"role": "assistant", "content": content}, {"role": "user", "content": results}]


def hand_async_loop(client: anthropic.AsyncAnthropic) -> None:
    async def go() -> None:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Look up twenty keys."}]
        while True:
            reply = await client.messages.create(model=MODEL, max_tokens=1024, messages=messages, tools=[TOOL_SPEC])  # type: ignore[arg-type,list-item]
            if reply.stop_reason != "tool_use":
                return
            content = [b.model_dump(exclude_none=True) for b in reply.content]
            results = [
                {"type": "tool_result", "tool_use_id": b.id, "content": await asyncio.to_thread(lookup_impl, **b.input)}  # type: ignore[arg-type]
                for b in reply.content
                if b.type == "tool_use"
            ]
            messages += [{"role": "assistant", "content": content}, {"role": "user", "content": results}]

    asyncio.run(go())


def sdk_runner(client: anthropic.Anthropic) -> None:
    @anthropic.beta_tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return lookup_impl(key)

    runner = client.beta.messages.tool_runner(
        model=MODEL,
        max_tokens=1024,
        tools=[lookup],
        messages=[{"role": "user", "content": "Look up twenty keys."}],
        thread=False,
    )
    for _ in runner:
        pass


def agent_for(
    client: anthropic.Anthropic | anthropic.AsyncAnthropic, *, timeout: bool = False, logs: bool = False
) -> Agent:
    """The agent under test; ``logs``: the default logger (else ``logger=None``); ``timeout``: a 60 s
    ``tool_timeout`` (else the default, none: a lone sync call runs in the caller's thread)."""
    policy = Policy(max_turns=TURNS + 5, tool_timeout=60) if timeout else Policy(max_turns=TURNS + 5)
    if logs:
        return Agent(client=client, model=MODEL, tools=[lookup], policy=policy)
    return Agent(client=client, model=MODEL, tools=[lookup], logger=None, policy=policy)


def fsm_run(client: anthropic.Anthropic, *, timeout: bool = False, logs: bool = False) -> None:
    assert agent_for(client, timeout=timeout, logs=logs).run("Look up twenty keys.").final_state == "done"


def fsm_stream(client: anthropic.Anthropic, *, logs: bool = False) -> None:
    for _ in agent_for(client, logs=logs).stream("Look up twenty keys."):
        pass


def fsm_arun(client: anthropic.AsyncAnthropic, *, logs: bool = False) -> None:
    async def go() -> None:
        result = await agent_for(client, logs=logs).arun("Look up twenty keys.")
        assert result.final_state == "done"

    # The coroutine returns None, as the hand-written loop's does: on the main thread, Python 3.11's
    # asyncio.run formats the repr of its task (result included) twice on the way out (signal.getsignal
    # builds a ValueError message from the SIGINT handler's repr), and a 20-turn RunResult's repr costs ~1.5 ms.
    asyncio.run(go())


def fsm_astream(client: anthropic.AsyncAnthropic, *, logs: bool = False) -> None:
    async def go() -> None:
        async for _ in agent_for(client, logs=logs).astream("Look up twenty keys."):
            pass

    asyncio.run(go())


def _with(fn: Callable[..., None], **options: Any) -> Callable[[Any], None]:
    return lambda client: fn(client, **options)


CONTENDERS: list[tuple[str, str, Callable[[Any], None], bool]] = [
    # group, name, function, async client?
    ("plain", "hand-written messages.create loop (baseline)", hand_loop, False),
    ("plain", "SDK beta tool_runner(thread=False)", sdk_runner, False),
    ("plain", "agentfsm run, default logging (all defaults)", _with(fsm_run, logs=True), False),
    ("plain", "agentfsm run, logger=None", fsm_run, False),
    ("plain", "agentfsm run, 60 s tool_timeout (thread hop)", _with(fsm_run, timeout=True, logs=True), False),
    ("async", "hand-written async create loop, tool in a thread (baseline)", hand_async_loop, True),
    ("async", "agentfsm arun, default logging (all defaults)", _with(fsm_arun, logs=True), True),
    ("async", "agentfsm arun, logger=None", fsm_arun, True),
    ("streamed", "hand-written messages.stream loop (baseline)", hand_stream_loop, False),
    ("streamed", "agentfsm stream, logger=None", fsm_stream, False),
    ("streamed", "agentfsm stream, default logging", _with(fsm_stream, logs=True), False),
    ("streamed", "agentfsm astream, logger=None", fsm_astream, True),
    ("streamed", "agentfsm astream, default logging", _with(fsm_astream, logs=True), True),
]


def per_turn(rounds: int, conversations: int) -> list[tuple[str, str, list[float], list[float]]]:
    """Per-turn milliseconds of each contender's conversations: wall time, and the CPU time of this process
    (all its threads), which a busy machine disturbs less.

    Interleaved finely: in each round every contender gets a fresh simulator and client and a warm-up
    conversation, then the contenders take turns, one conversation each, ``conversations`` times, so a
    noisy neighbour hurts every contender alike; sample ``k`` of every contender is one conversation, run
    within moments of the others' sample ``k``. The order of the turns is shuffled each time (seeded):
    whoever runs right after the SDK's ``tool_runner`` (which leaves the most garbage) pays for
    collecting it, about 4% of a turn, and a fixed order would charge that to one contender.
    """
    wall: dict[str, list[float]] = {name: [] for _, name, _, _ in CONTENDERS}
    cpu: dict[str, list[float]] = {name: [] for _, name, _, _ in CONTENDERS}
    shuffler = random.Random(13)
    for _ in range(rounds):
        clients: dict[str, Any] = {}
        for _, name, fn, is_async in CONTENDERS:
            sim = Simulator(conversation_script(TURNS), prompt_cache=False)
            clients[name] = sim.async_client(max_retries=0) if is_async else sim.client(max_retries=0)
            fn(clients[name])  # warm-up conversation (connection pool, caches)
        for _ in range(conversations):
            for _, name, fn, _ in shuffler.sample(CONTENDERS, len(CONTENDERS)):
                started, started_cpu = time.perf_counter(), time.process_time()
                fn(clients[name])
                wall[name].append((time.perf_counter() - started) / TURNS * 1000)
                cpu[name].append((time.process_time() - started_cpu) / TURNS * 1000)
    return [(group, name, wall[name], cpu[name]) for group, name, _, _ in CONTENDERS]


# --- many conversations, in a fresh process ---------------------------------------------------------


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def many_child(n: int) -> None:
    """Run ``n`` concurrent two-turn conversations; print one JSON line of measurements."""
    script = conversation_script(2)
    sim = Simulator(
        script, keep_requests=False, prompt_cache=False
    )  # the harness keeps nothing: what grows is agentfsm
    agent = agent_for(sim.async_client(max_retries=0))
    asyncio.run(agent.arun("warm up"))
    baseline = _rss_kib("VmRSS:")

    async def go() -> list[Any]:
        return await asyncio.gather(*(agent.arun(f"conversation {i}") for i in range(n)))

    started = time.perf_counter()
    results = asyncio.run(go())
    wall = time.perf_counter() - started
    peak = _rss_kib("VmHWM:")
    payload = sum(len(json.dumps(res.messages)) for res in results)
    assert all(res.final_state == "done" for res in results)
    print(json.dumps({"n": n, "wall_s": wall, "peak_above_baseline_kib": peak - baseline, "payload_bytes": payload}))


def many(n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--many-child", str(n)], capture_output=True, text=True, check=True, timeout=1800
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --- memory per in-flight conversation, in a fresh process ----------------------------------------------

#: The memory row pauses every conversation in this turn, in its tool call: each holds 9 whole exchanges
#: (the tool_use reply and its tool_result) and the 10th reply, whose tool call has not returned.
MEMORY_TURN = 10


def customer_record(key: str) -> str:
    """What a lookup returns in the ``records`` history: one customer's row as JSON, about 1 KiB."""
    n = int(key.lstrip("k") or 0)
    orders = [
        {"order": f"SO-{n:04d}-{i}", "placed": f"2025-0{1 + i}-1{n % 10}", "status": "shipped", "total_eur": 120.5 + i}
        for i in range(5)
    ]
    row = {
        "key": key,
        "name": f"Customer {n}",
        "email": f"customer{n}@example.com",
        "address": {"street": f"{n} Harbour Road", "city": "Rotterdam", "postcode": f"30{n:02d} AB", "country": "NL"},
        "tier": "gold",
        "notes": "Prefers e-mail; asked for invoices to go to the accounts address from March on.",
        "orders": orders,
    }
    return json.dumps(row)


#: The histories the memory row holds: (what it is, the model's text before each call, the tool's result).
HISTORIES: dict[str, tuple[str, Callable[[str], str], Callable[[str], str]]] = {
    "short": ("the per-turn conversation: short texts and results", lambda key: "Looking that up.", lookup_impl),
    "records": (
        "1 KiB tool results (a customer record each), a sentence before each call",
        lambda key: f"I'll look up {key} in the customer ledger, then check its open orders before going on.",
        customer_record,
    ),
}


def memory_script(text: Callable[[str], str]) -> Callable[[SimRequest], Any]:
    """The model of the memory row: a tool call a turn, each after a sentence, then an answer."""

    def reply(request: SimRequest) -> Any:
        done = sum(1 for m in request.messages if m["role"] == "assistant")
        if done < MEMORY_TURN:
            return r.tool_use("lookup", {"key": f"k{done}"}, text=text(f"k{done}"))
        return r.text("All keys looked up; here is the summary you asked for.")

    return reply


class Gate:
    """Where every conversation of the memory row stops: in its ``MEMORY_TURN``-th tool call, awaiting one
    event, so all of them are in flight at once; ``all_in`` is set when the last one arrives."""

    def __init__(self, n: int, result: Callable[[str], str]) -> None:
        self.n = n
        self.result = result
        self.arrived = 0
        self.all_in = asyncio.Event()
        self.open = asyncio.Event()

    async def lookup(self, key: str) -> str:
        if key == f"k{MEMORY_TURN - 1}":
            self.arrived += 1
            if self.arrived == self.n:
                self.all_in.set()
            await self.open.wait()
        return self.result(key)


async def sdk_memory_loop(
    client: anthropic.AsyncAnthropic, prompt: str, gate: Gate
) -> tuple[int, list[dict[str, Any]]]:
    """The hand-written ``AsyncAnthropic`` loop of the memory row: it awaits the (async) tool as it goes,
    holding its history as the API wants it back; returns the number of requests it sent and the history."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    sent = 0
    while True:
        reply = await client.messages.create(model=MODEL, max_tokens=1024, messages=messages, tools=[TOOL_SPEC])  # type: ignore[arg-type,list-item]
        sent += 1
        if reply.stop_reason != "tool_use":
            return sent, messages
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
        results = [
            {"type": "tool_result", "tool_use_id": b.id, "content": await gate.lookup(**b.input)}  # type: ignore[arg-type]
            for b in reply.content
            if b.type == "tool_use"
        ]
        messages.append({"role": "user", "content": results})


def memory_child(kind: str, history: str, n: int, top: int) -> None:
    """Hold ``n`` conversations (``kind``: "sdk" or "agentfsm", every default) of ``history`` paused in turn
    ``MEMORY_TURN``; print one JSON line: traced bytes above the baseline (after gc) per conversation, and what
    the history itself weighs as JSON. ``top`` > 0 prints that many ``tracemalloc`` lines (by line) to stderr."""
    import gc
    import tracemalloc

    _, text, result = HISTORIES[history]
    gate = Gate(n, result)
    sim = Simulator(memory_script(text), keep_requests=False, prompt_cache=False)
    client = sim.async_client(max_retries=0)

    @tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        return await gate.lookup(key)

    agent = Agent(client=client, model=MODEL, tools=[lookup], policy=Policy(max_turns=TURNS + 5))

    async def one(i: int) -> tuple[int, int]:
        """Requests sent, and the JSON size of the history held at the pause (the first 20 messages)."""
        if kind == "sdk":
            sent, messages = await sdk_memory_loop(client, f"Look up twenty keys ({i}).", gate)
        else:
            done = await agent.arun(f"Look up twenty keys ({i}).")
            assert done.final_state == "done", done.reason
            sent, messages = done.turns, done.messages
        return sent, len(json.dumps(messages[: 2 * MEMORY_TURN]))

    async def go() -> dict[str, Any]:
        gate.open.set()
        await one(-1)  # warm-up: imports, caches, the connection pool
        gate.open.clear()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot() if top else None
        baseline = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        await gate.all_in.wait()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
        if before is not None:
            for stat in tracemalloc.take_snapshot().compare_to(before, "lineno")[:top]:
                print(stat, file=sys.stderr)
        tracemalloc.stop()
        gate.open.set()
        done = await asyncio.gather(*tasks)
        assert [sent for sent, _ in done] == [MEMORY_TURN + 1] * n, "every one paused in one turn, then finished"
        size = statistics.mean(size for _, size in done)
        return {"kind": kind, "history": history, "n": n, "bytes_per_conversation": held / n, "history_bytes": size}

    print(json.dumps(asyncio.run(go())))


def memory(history: str, n: int, top: int = 0) -> dict[str, dict[str, Any]]:
    """The memory row: each contender in a fresh process (one's garbage is not the other's baseline)."""
    rows = {}
    for kind in ("sdk", "agentfsm"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", kind, history, str(n), str(top)],
            capture_output=True, text=True, check=True, timeout=3600,
        )  # fmt: skip
        if top:
            print(out.stderr, file=sys.stderr)
        rows[kind] = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def print_memory(n: int, top: int) -> None:
    print(
        f"   memory per in-flight conversation: {n:,} arun conversations at once, each paused in the async tool "
        f"call of turn {MEMORY_TURN} ({MEMORY_TURN - 1} exchanges held);"
    )
    print("   tracemalloc after gc, above the baseline, each contender in a fresh process:")
    names = {"sdk": "hand-written AsyncAnthropic loop (baseline)", "agentfsm": "agentfsm arun (all defaults)"}
    for history, (what, _, _) in HISTORIES.items():
        rows = memory(history, n, top)
        print(f"   {what} ({rows['sdk']['history_bytes']:,.0f} bytes of history as JSON):")
        base = rows["sdk"]["bytes_per_conversation"]
        for kind, row in rows.items():
            held = row["bytes_per_conversation"]
            print(f"     {names[kind]:<64} {held / 1024:>8.1f} KiB/conversation {held / base:>6.2f}x")


# --- time to first text delta ---------------------------------------------------------------------


def first_delta(rounds: int) -> dict[str, list[float]]:
    text = "A first sentence arrives, and then a great many more follow it. " * 20
    samples: dict[str, list[float]] = {"raw SDK async stream": [], "agentfsm astream": []}

    async def raw(client: anthropic.AsyncAnthropic) -> float:
        started = time.perf_counter()
        async with client.messages.stream(
            model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": "Go"}]
        ) as s:
            async for _ in s.text_stream:
                first = time.perf_counter() - started
                break
            async for _ in s.text_stream:
                pass
        return first * 1000

    async def fsm(client: anthropic.AsyncAnthropic) -> float:
        started = time.perf_counter()
        first = 0.0
        async for event in agent_for(client).astream("Go"):
            if event.type == "text" and not first:
                first = time.perf_counter() - started
        return first * 1000

    for _ in range(rounds):
        for name, fn in (("raw SDK async stream", raw), ("agentfsm astream", fsm)):
            sim = Simulator(lambda req: r.text(text))
            client = sim.async_client(max_retries=0)
            samples[name].append(asyncio.run(fn(client)))
    return samples


# --- billed cost of a 6-chunk continuation ---------------------------------------------------------------

COST_MODEL = "claude-haiku-4-5"  # $1 / $5 per MTok; cache writes 1.25x, reads 0.1x the input price; accepts prefill
CHUNK_TOKENS = 2048  # max_tokens per chunk, as in the naive loop this is compared with
# A Vietnamese writing task's system prompt and request, with the reference notes a real writer would be given
# (about 4,000 tokens of context: enough to be cached; the minimum is 1,024 tokens for this model).
SEED_SYSTEM = (
    "Viết văn tiếng Việt rõ ràng, súc tích. QUAN TRỌNG: Không dùng dấu chấm lửng (...) khi kết thúc câu. "
    "Hoàn thành đầy đủ mọi ý tưởng."
)
SEED_PROMPT = (
    "Viết bài viết đầy đủ về lịch sử lập trình từ 1940 đến nay, bao gồm các ngôn ngữ lập trình quan trọng "
    "và milestone lớn."
)
REFERENCE = "\n".join(
    f"Reference note {i}: in {1940 + i}, milestone {i} of the history of programming is recorded with its "
    f"people, its machines and its languages; cite it as [{i}] and keep its dates exactly as given here."
    for i in range(75)
)
COST_SYSTEM = f"{SEED_SYSTEM}\n\n{REFERENCE}"
# A document the writer model writes in exactly 6 chunks of CHUNK_TOKENS tokens (5.6 chunks' worth).
COST_DOCUMENT = "".join(
    f"Đoạn {i}: năm {1940 + i % 85}, một cột mốc mới của lịch sử lập trình được ghi lại, số {i * 7919 % 10007}. "
    for i in range(800)
)[: int(5.6 * CHUNK_TOKENS * 4)]


@dataclass
class Bill:
    """What one way of writing the document was billed."""

    name: str
    requests: int = 0
    input: int = 0
    cache_write: int = 0
    cache_read: int = 0
    output: int = 0
    dollars: float = 0.0

    def add(self, usage: dict[str, Any]) -> None:
        self.requests += 1
        self.input += int(usage.get("input_tokens") or 0)
        self.cache_write += int(usage.get("cache_creation_input_tokens") or 0)
        self.cache_read += int(usage.get("cache_read_input_tokens") or 0)
        self.output += int(usage.get("output_tokens") or 0)
        self.dollars += DEFAULT_PRICES[COST_MODEL].cost(usage)


def generate_with_continuation(
    client: anthropic.Anthropic,
    messages: list[dict[str, Any]],
    system_prompt: str = "",
    max_tokens_per_call: int = 4096,
    max_continuations: int = 10,
    model: str = COST_MODEL,
    bill: Bill | None = None,
) -> dict[str, Any]:
    """A naive continuation loop, as it is commonly written (prints left out): every continuation resends
    the whole history, the chunk so far as an assistant turn and "Tiếp tục." ("Continue.") after it."""
    full_text = ""
    total_input_tokens = 0
    total_output_tokens = 0
    continuation_count = 0
    current_messages = messages.copy()
    while continuation_count <= max_continuations:
        response = client.messages.create(
            model=model,
            max_tokens=max_tokens_per_call,
            system=system_prompt,
            messages=current_messages,  # type: ignore[arg-type]
        )
        if bill is not None:
            bill.add(response.usage.model_dump())
        total_input_tokens += response.usage.input_tokens
        total_output_tokens += response.usage.output_tokens
        chunk = response.content[0].text  # type: ignore[union-attr]
        full_text += chunk
        if response.stop_reason == "end_turn":
            return {
                "full_text": full_text,
                "total_input_tokens": total_input_tokens,
                "total_output_tokens": total_output_tokens,
                "continuation_count": continuation_count,
                "completed": True,
            }
        elif response.stop_reason == "max_tokens":
            continuation_count += 1
            if continuation_count > max_continuations:
                break
            current_messages.append({"role": "assistant", "content": chunk})
            current_messages.append({"role": "user", "content": "Tiếp tục."})
        else:
            break
    return {
        "full_text": full_text,
        "total_input_tokens": total_input_tokens,
        "total_output_tokens": total_output_tokens,
        "continuation_count": continuation_count,
        "completed": False,
    }


def naive_bill() -> Bill:
    bill = Bill("naive continuation loop (no caching)")
    sim = Simulator(r.writer(COST_DOCUMENT, continuation_marker="tiếp tục"))
    out = generate_with_continuation(
        sim.client(max_retries=0),
        [{"role": "user", "content": SEED_PROMPT}],
        system_prompt=COST_SYSTEM,
        max_tokens_per_call=CHUNK_TOKENS,
        max_continuations=5,
        bill=bill,
    )
    assert out["completed"] and out["full_text"] == COST_DOCUMENT, "the naive loop did not write the document"
    assert (out["total_input_tokens"], out["total_output_tokens"]) == (bill.input, bill.output)
    return bill


def agentfsm_bill(name: str, *, system: Any = COST_SYSTEM, **policy: Any) -> Bill:
    bill = Bill(name)
    sim = Simulator(r.writer(COST_DOCUMENT))
    agent = Agent(
        client=sim.client(max_retries=0),
        model=COST_MODEL,
        system=system,
        policy=Policy(max_tokens=CHUNK_TOKENS, max_continuations=5, **policy),
        logger=None,
    )
    result = agent.run(SEED_PROMPT)
    assert result.final_state == "done" and result.text == COST_DOCUMENT, f"{name}: {result.reason}"
    for event in result.events:
        if event.event == "response.received":
            bill.add(event.data["usage"])
    assert result.cost_usd is not None and abs(result.cost_usd - bill.dollars) < 1e-9
    return bill


def continuation_bills() -> list[Bill]:
    marked_system = [{"type": "text", "text": COST_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    bills = [
        naive_bill(),
        agentfsm_bill("agentfsm, prompt_caching=False", prompt_caching=False),
        agentfsm_bill("agentfsm, prompt caching (default)"),
        agentfsm_bill("agentfsm, prompt caching + caller marks the system prompt", system=marked_system),
        agentfsm_bill("agentfsm, prompt caching, continuation='prompt'", continuation="prompt"),
    ]
    assert all(b.requests == 6 for b in bills), [b.requests for b in bills]
    return bills


def print_cost_table() -> None:
    bills = continuation_bills()
    price = DEFAULT_PRICES[COST_MODEL]
    print(
        f"4. Billed cost of one {len(COST_DOCUMENT):,}-character document written in 6 chunks "
        f"(max_tokens={CHUNK_TOKENS})"
    )
    print(
        f"   {COST_MODEL} at ${price.input:g} / ${price.output:g} per MTok; cache writes 1.25x, reads 0.1x the input "
        "price; tokens as the simulator bills them"
    )
    header = ("", "requests", "input", "cache write", "cache read", "output", "dollars", "saving")
    print(f"   {header[0]:<58} {header[1]:>8} {header[2]:>8} {header[3]:>11} {header[4]:>10} {header[5]:>7} "
          f"{header[6]:>8} {header[7]:>10}")  # fmt: skip
    naive = bills[0].dollars
    for b in bills:
        saving = "(baseline)" if b is bills[0] else f"{(1 - b.dollars / naive) * 100:.0f}%"
        print(
            f"   {b.name:<58} {b.requests:>8} {b.input:>8,} {b.cache_write:>11,} {b.cache_read:>10,} "
            f"{b.output:>7,} {b.dollars:>8.4f} {saving:>10}"
        )


# --- report ---------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test that every contender still runs (2 rounds x 2 conversations, 200 concurrent): "
        "it measures nothing, so never quote its numbers",
    )
    parser.add_argument("--cost", action="store_true", help="only the cost table (section 4; deterministic)")
    parser.add_argument("--per-turn", action="store_true", help="only the per-turn table (section 1)")
    parser.add_argument("--rounds", type=int, help="rounds of section 1 (default 14; 2 with --quick)")
    parser.add_argument("--memory", action="store_true", help="only the memory row (section 2)")
    parser.add_argument(
        "--in-flight", type=int, help="conversations held at once in the memory row (default 1,000; 50 with --quick)"
    )
    parser.add_argument(
        "--memory-top",
        type=int,
        default=0,
        metavar="LINES",
        help="also print the memory row's top LINES tracemalloc lines (by line) of each contender, to stderr",
    )
    parser.add_argument("--many-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.many_child:
        many_child(args.many_child)
        return
    if args.memory_child:
        kind, history, n, top = args.memory_child
        memory_child(kind, history, int(n), int(top))
        return
    if args.cost:
        print_cost_table()
        return
    rounds, conversations, n, in_flight, first_rounds = (
        (2, 2, 200, 50, 3) if args.quick else (14, 10, 10_000, 1_000, 30)
    )
    rounds = args.rounds or rounds
    in_flight = args.in_flight or in_flight

    print(
        f"agentfsm benchmarks ({'quick: a smoke test, these numbers measure nothing' if args.quick else 'full'}; "
        f"Python {sys.version.split()[0]}, "
        f"anthropic {anthropic.__version__}, {os.cpu_count()} CPUs)\n"
    )
    if args.memory:
        print("2. Many conversations in flight")
        print_memory(in_flight, args.memory_top)
        return
    print(
        f"1. Per-turn cost, {TURNS}-turn tool conversation, ms/turn: median (min–max) of {rounds} rounds "
        f"x {conversations} conversations, contenders taking turns"
    )
    print(
        "   x baseline: the median of (contender / its group's baseline) over the conversations run side by "
        "side; CPU: this process's CPU time"
    )
    rows = per_turn(rounds, conversations)
    walls = {group: w for group, name, w, _ in rows if "baseline" in name}
    cpus = {group: c for group, name, _, c in rows if "baseline" in name}

    def ratio(values: list[float], base: list[float]) -> float:
        return statistics.median(a / b for a, b in zip(values, base, strict=True))

    print(f"   {'contender':<66} {'wall ms/turn':>22} {'x baseline':>10} {'CPU ms/turn':>12} {'x baseline':>10}")
    for group, name, w, c in rows:
        print(
            f"   {name:<66} {spread(w):>22} {ratio(w, walls[group]):>9.2f}x "
            f"{statistics.median(c):>12.3f} {ratio(c, cpus[group]):>9.2f}x"
        )
    if args.per_turn:
        return

    print("\n2. Many conversations in flight")
    print(f"   {n:,} concurrent conversations (2 turns each) through arun, one event loop, fresh process:")
    m = many(n)
    print(
        f"   wall {m['wall_s']:.2f} s · {n / m['wall_s']:,.0f} conversations/s · "
        f"peak RSS +{m['peak_above_baseline_kib'] / 1024:.1f} MiB · "
        f"{m['peak_above_baseline_kib'] * 1024 / n:,.0f} bytes/conversation "
        f"(message payloads {m['payload_bytes'] / n:,.0f} bytes/conversation)"
    )

    print_memory(in_flight, args.memory_top)

    print(f"\n3. Time to first text delta, ms: median (min–max) of {first_rounds} rounds")
    for name, s in first_delta(first_rounds).items():
        print(f"   {name:<62} {spread(s):>22}")

    print()
    print_cost_table()


if __name__ == "__main__":
    main()
