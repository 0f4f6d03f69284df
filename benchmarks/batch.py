"""Benchmark: many conversations through the Message Batches API (``BatchRunner``) next to ``arun``.

    .venv/bin/python benchmarks/batch.py            # 1,000 conversations, 3 interleaved rounds
    .venv/bin/python benchmarks/batch.py --quick    # 30 conversations, 1 round (CI smoke run)

Each contender runs the same conversations — a 3-turn tool loop under a long
system prompt, so prompt caching matters — against a fresh simulator in its
own process (a loopback server started per contender and round: no prompt
cache is shared between contenders, and the CPU time measured here is the
client's alone: agentfsm, the SDK, the tools). Rounds are interleaved and
medians reported.

1. Billed cost: dollars (each result's ``cost_usd``, priced from the usage the
   API reported: list price for ``arun``, half of it for batched replies, cache
   pricing on top) and tokens, for the same conversations; the histories are
   checked equal.
2. CPU time of this process per conversation-turn (one request and what
   follows it): ``BatchRunner`` against ``arun`` (32 conversations in flight; the SDK
   retries a refused connection, for both).
   A real batch takes minutes to hours to end; the runner's CPU per turn is
   what must stay small next to that.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import anthropic

from agentfsm import Agent, Policy, tool
from agentfsm.batch import BatchRunner
from agentfsm.result import RunResult
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r

MODEL = "claude-haiku-4-5"
TURNS = 3
SYSTEM = "You answer support tickets. Look every fact up before you use it. " * 80  # ~1,300 tokens


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


class Support(Agent):
    model = MODEL
    system = SYSTEM
    tools = [lookup]
    policy = Policy(max_tokens=512)


def model(request: SimRequest) -> Any:
    """Two tool calls, then an answer; ids from the conversation's own text, so any run gets the same."""
    first = request.messages[0]["content"]
    prompt = first if isinstance(first, str) else "".join(b.get("text", "") for b in first)
    turn = (len(request.messages) + 1) // 2
    if turn < TURNS:
        tool_id = "toolu_01" + hashlib.sha256(f"{prompt}:{turn}".encode()).hexdigest()[:22]
        return r.tool_use("lookup", {"key": f"{prompt} #{turn}"}, id=tool_id, text="Let me look that up.")
    return r.text(f"Here is the answer to {prompt}, from what the two lookups returned. " * 3)


# --- the simulator, in its own process ------------------------------------------------------------------


def serve() -> None:
    sim = Simulator(model, keep_requests=False)
    sim.serve_forever("127.0.0.1", 0, on_ready=lambda url: print(url, flush=True))


class Server:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True, env={**os.environ}
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# --- the contenders ----------------------------------------------------------------------------------------


def prompts(n: int) -> dict[str, str]:
    return {f"ticket-{i}": f"ticket {i}: where is my order {i * 7919 % 100_000}?" for i in range(n)}


def batched(url: str, n: int) -> tuple[dict[str, RunResult], float]:
    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-bench-0000", max_retries=2)
    runner = BatchRunner(Support(client=client, logger=None), poll_interval=0)
    started = time.process_time()
    results: dict[str, RunResult] = runner.run(prompts(n))
    cpu = time.process_time() - started
    client.close()
    return results, cpu


def asynchronous(url: str, n: int) -> tuple[dict[str, RunResult], float]:
    client = anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-bench-0000", max_retries=2)
    agent = Support(client=client, logger=None)
    gate = asyncio.Semaphore(32)

    async def one(prompt: str) -> RunResult:
        async with gate:
            return await agent.arun(prompt)

    async def go() -> list[RunResult]:
        try:
            return await asyncio.gather(*(one(p) for p in prompts(n).values()))
        finally:
            await client.close()

    started = time.process_time()
    done = asyncio.run(go())
    cpu = time.process_time() - started
    return dict(zip(prompts(n), done, strict=True)), cpu


CONTENDERS = {"arun (baseline)": asynchronous, "BatchRunner": batched}


def totals(results: dict[str, RunResult]) -> dict[str, float]:
    costs = [res.cost_usd for res in results.values()]
    assert all(c is not None for c in costs)
    return {
        "usd": sum(c for c in costs if c is not None),
        "input": sum(res.usage.input_tokens for res in results.values()),
        "cache_write": sum(res.usage.cache_creation_input_tokens for res in results.values()),
        "cache_read": sum(res.usage.cache_read_input_tokens for res in results.values()),
        "output": sum(res.usage.output_tokens for res in results.values()),
        "requests": sum(res.usage.requests for res in results.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 conversations, one round")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    n, rounds = (30, 1) if args.quick else (1_000, 3)
    print(
        f"BatchRunner vs arun: {n:,} conversations of a {TURNS}-turn tool loop, {rounds} interleaved round(s) "
        f"(Python {sys.version.split()[0]}, anthropic {anthropic.__version__}, {os.cpu_count()} CPUs)\n"
    )
    cpu: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    bills: dict[str, dict[str, float]] = {}
    histories: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for name, contender in CONTENDERS.items():
            server = Server()
            try:
                results, seconds = contender(server.url, n)
            finally:
                server.close()
            assert all(res.final_state == "done" and res.turns == TURNS for res in results.values()), name
            cpu[name].append(seconds / sum(res.usage.requests for res in results.values()) * 1000)
            bills[name] = totals(results)
            histories[name] = {cid: res.messages for cid, res in results.items()}
    assert histories["BatchRunner"] == histories["arun (baseline)"], "the histories differ"

    print("1. Billed cost of the same conversations (identical histories)")
    print(f"   {'contender':<18} {'dollars':>10} {'input':>10} {'cache write':>12} {'cache read':>12} {'output':>9}")
    base = bills["arun (baseline)"]["usd"]
    for name, bill in bills.items():
        print(
            f"   {name:<18} {bill['usd']:>10.4f} {bill['input']:>10,.0f} {bill['cache_write']:>12,.0f} "
            f"{bill['cache_read']:>12,.0f} {bill['output']:>9,.0f}   {bill['usd'] / base:.2f}x"
        )
    print(f"\n2. CPU time of this process per conversation-turn, ms: median (min–max) of {rounds} round(s)")
    base_cpu = statistics.median(cpu["arun (baseline)"])
    for name, samples in cpu.items():
        spread = f"{statistics.median(samples):.3f} ({min(samples):.3f}–{max(samples):.3f})"
        print(f"   {name:<18} {spread:>24}   {statistics.median(samples) / base_cpu:.2f}x")
    print(
        f"\n   BatchRunner spends {statistics.median(cpu['BatchRunner']):.2f} ms of CPU per conversation-turn; "
        "a real batch takes minutes to hours to end."
    )


if __name__ == "__main__":
    main()
