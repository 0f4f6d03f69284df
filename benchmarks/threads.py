"""Benchmark: a 50-turn tool conversation with and without message threads, side by side.

    .venv/bin/python benchmarks/threads.py            # 50 turns, 5 interleaved rounds
    .venv/bin/python benchmarks/threads.py --quick    # 6 turns, 1 round (a smoke run; measures nothing)

The same conversation — a tool loop of 49 calls and an answer, under a system
prompt of ~1,300 tokens, each tool result ~200 bytes — runs on
``Policy(transport="messages")`` (every request carries the whole history) and on
``Policy(transport="thread")`` (each turn continues the server-held thread with
only the new messages), each against a fresh ``Simulator`` in its own process
over real HTTP (a loopback server started per contender and round). Rounds are
interleaved, their order alternating, and medians reported:

* bytes sent: the request bodies as they went on the wire (counted by an ``httpx`` request hook), in
  total and for the last request;
* time per turn: the run's wall time divided by its requests (client, HTTP and the simulator's own
  work, which rebuilds and validates the full history either way);
* CPU per turn: this process's CPU time over the run per request: the client's alone (agentfsm, the
  SDK, the tool), the simulator being another process.

The histories are checked equal: the thread changes what goes on the wire, not the conversation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import anthropic
import httpx2

from agentfsm import Agent, Policy, tool
from agentfsm.result import RunResult
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.simulator import SIM_API_KEY

MODEL = "claude-haiku-4-5"
SYSTEM = "You answer support tickets. Look every fact up before you use it. " * 80  # ~1,300 tokens
TRANSPORTS = ("messages", "thread")


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}: " + "the record says what the ticket needs to know. " * 4


def model_for(turns: int) -> Any:
    def model(request: SimRequest) -> Any:
        done = sum(1 for m in request.messages if m["role"] == "user" and isinstance(m["content"], list))
        if done < turns - 1:
            return r.tool_use("lookup", {"key": f"fact-{done}"}, text=f"Looking up fact {done}.")
        return r.text("Every fact is looked up; the ticket is answered.")

    return model


def serve(turns: int) -> None:
    """The simulator, in this process (run by ``one_run`` as a subprocess): prints its URL, serves until killed."""
    sim = Simulator(model_for(turns), keep_requests=False)
    sim.serve_forever("127.0.0.1", 0, on_ready=lambda url: print(url, flush=True))


def one_run(transport: str, turns: int) -> tuple[RunResult, dict[str, float]]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--turns", str(turns)], stdout=subprocess.PIPE, text=True,
        env={**os.environ},
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        sizes: list[int] = []
        http = httpx2.Client(event_hooks={"request": [lambda request: sizes.append(len(request.content))]})
        client = anthropic.Anthropic(base_url=url, api_key=SIM_API_KEY, max_retries=0, http_client=http)
        policy = Policy(transport=transport, max_turns=turns + 5, max_tokens=512)  # type: ignore[arg-type]
        agent = Agent(client, model=MODEL, system=SYSTEM, tools=[lookup], policy=policy, logger=None)
        wall, cpu = time.perf_counter(), time.process_time()
        result = agent.run("Answer the ticket.")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        server.terminate()
        server.wait(10)
    if result.final_state != "done" or len(sizes) != turns:
        raise SystemExit(f"{transport}: the run ended {result.final_state} after {len(sizes)} requests")
    return result, {
        "bytes": float(sum(sizes)),
        "last_bytes": float(sizes[-1]),
        "ms_per_turn": wall * 1000 / turns,
        "cpu_ms_per_turn": cpu * 1000 / turns,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 turns, 1 round: a smoke run")
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.turns)
        return
    turns, rounds = (6, 1) if args.quick else (args.turns, args.rounds)
    rows: dict[str, list[dict[str, float]]] = {t: [] for t in TRANSPORTS}
    histories: dict[str, list[dict[str, Any]]] = {}
    for i in range(rounds):
        for transport in TRANSPORTS if i % 2 == 0 else reversed(TRANSPORTS):
            result, row = one_run(transport, turns)
            rows[transport].append(row)
            histories[transport] = result.messages
    if histories["messages"] != histories["thread"]:
        raise SystemExit("the histories differ between the two transports")
    med = {t: {k: statistics.median(row[k] for row in rows[t]) for k in rows[t][0]} for t in TRANSPORTS}
    title = "quick: a smoke run, these numbers measure nothing; " if args.quick else ""
    print(f"message threads ({title}{turns}-turn tool conversation, {rounds} interleaved rounds, medians)")
    print(f"{'transport':<10} {'bytes sent':>12} {'last request':>13} {'ms/turn':>9} {'client CPU ms/turn':>19}")
    for t in TRANSPORTS:
        m = med[t]
        print(
            f"{t:<10} {m['bytes']:>12,.0f} {m['last_bytes']:>13,.0f} {m['ms_per_turn']:>9.2f} "
            f"{m['cpu_ms_per_turn']:>19.2f}"
        )
    ratio = med["messages"]["bytes"] / med["thread"]["bytes"]
    print(f"threads send {ratio:.1f}x fewer bytes; the histories are equal")


if __name__ == "__main__":
    main()
