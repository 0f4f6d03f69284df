"""Durable engines next to agentfsm's own stores: per-transition overhead, and bytes kept per conversation.

    .venv/bin/python benchmarks/engines.py            # full run
    .venv/bin/python benchmarks/engines.py --quick    # one round, short conversations: keeps the script working

Needs ``agentfsm[dbos,temporal]``; PostgreSQL rows need its server programs (``tests/pgserver.py`` starts a
throwaway cluster; ``AGENTFSM_TEST_POSTGRES_DSN`` names one instead), else they are skipped with the reason.

Every contender talks to one simulator on a loopback port, over real HTTP, so the simulator's cost is in
every row alike. The baseline is ``Agent.arun`` with no store, in this process; then ``arun`` saving to
``SQLiteStore`` / ``PostgresStore`` after every transition; then the same conversation as a durable workflow,
started with ``DBOSEngine`` / ``TemporalEngine`` and run by an ``agentfsm worker`` process (DBOS on a SQLite
file and on PostgreSQL; Temporal's dev server with its SQLite file, as durable as the others). Rounds are
interleaved so a noisy neighbour hurts every contender alike. Overhead per transition is
(contender - baseline) / transitions, from the medians.

1. A 20-request tool conversation (39 transitions): ms per conversation and overhead per transition.
2. A 50-request conversation with 5 kB tool results: the bytes each engine keeps for it, next to the size
   of the final history and of the snapshot a store keeps (an engine keeping the whole history per step
   would grow quadratically).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic

from agentfsm import Agent, Policy, tool
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
SPEC = f"{HERE}:BenchAgent"  # what the workers serve (a file path: the worker imports it as a module)


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


@tool
def block(n: int) -> str:
    """Return about 5 kB of text."""
    return f"block {n}: " + "lorem ipsum dolor sit amet " * 190


class BenchAgent(Agent):
    """What the workers run: the tools both conversations call; the client from the environment."""

    model = "claude-haiku-4-5"
    tools = [lookup, block]
    policy = Policy(max_turns=60, max_tokens=1024)

    def __init__(self, client: anthropic.AsyncAnthropic | None = None) -> None:
        super().__init__(client=client or anthropic.AsyncAnthropic(max_retries=0), logger=None)


def script(turns: int) -> Callable[[SimRequest], Any]:
    """``lookup`` until ``turns`` requests; a prompt starting "long" calls ``block`` instead (5 kB results)."""

    def reply(request: SimRequest) -> Any:
        done = sum(1 for m in request.messages if m["role"] == "assistant")
        first = request.messages[0]["content"]
        long = isinstance(first, str) and first.startswith("long")
        if done + 1 < (50 if long else turns):
            if long:
                return r.tool_use("block", {"n": done})
            return r.tool_use("lookup", {"key": f"k{done}"}, text="Looking that up.")
        return r.text("All done; here is the summary you asked for.")

    return reply


# --- engines and workers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path, ready: str | None = None) -> None:
        self.log = log
        self.popen = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while ready is not None and ready not in log.read_text(errors="replace"):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[:3]} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def worker(kind: str, options: list[str], base_url: str, folder: Path) -> Process:
    env = {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": "sk-ant-bench-0000"}
    argv = [sys.executable, "-m", "agentfsm", "worker", kind, *options, "--agent", SPEC]
    return Process(argv, env, folder / f"{kind}-{len(list(folder.iterdir()))}.log", ready=" serving ")


def temporal_server(folder: Path) -> tuple[Process, str]:
    import sysconfig

    binary = Path(sysconfig.get_path("scripts")) / "temporal"
    port = free_port()
    argv = [str(binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
            "--db-filename", str(folder / "temporal.db"), "--log-level", "error",
            "--http-port", str(free_port()), "--metrics-port", str(free_port())]  # fmt: skip
    server = Process(argv, {}, folder / "temporal.log")
    address = f"127.0.0.1:{port}"

    async def ready() -> None:
        from temporalio.client import Client

        for _ in range(600):
            try:
                await (await Client.connect(address)).count_workflows()
                return
            except Exception:
                await asyncio.sleep(0.1)
        raise RuntimeError("the Temporal dev server did not start")

    asyncio.run(ready())
    return server, address


def postgres(folder: Path) -> tuple[Any, str] | tuple[None, str]:
    """A throwaway PostgreSQL (``tests/pgserver.py``): (server, dsn), or (None, why not)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import pgserver

    try:
        server = pgserver.start()
    except pgserver.Unavailable as exc:
        return None, str(exc)
    return server, server.dsn


def pg_url(dsn: str, database: str) -> str:
    import psycopg

    parts = dict(item.split("=", 1) for item in dsn.split())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    return f"postgresql://{parts.get('user', 'postgres')}@{parts['host']}:{parts['port']}/{database}"


# --- the contenders ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, short conversations")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds, turns = (1, 6) if args.quick else (args.rounds, 20)
    folder = Path(tempfile.mkdtemp(prefix="agentfsm-bench-engines-"))
    sim = Simulator(script(turns), prompt_cache=False)
    started: list[Process] = []
    engines: dict[str, Any] = {}
    pg_server: Any = None
    try:
        with sim.serve() as url:

            def client() -> anthropic.AsyncAnthropic:  # one per event loop (asyncio.run)
                return anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-bench-0000", max_retries=0)

            from agentfsm.engines.dbos import DBOSEngine
            from agentfsm.engines.temporal import TemporalEngine
            from agentfsm.stores.sqlite import SQLiteStore

            contenders: dict[str, Callable[[str, str | None], Any]] = {}

            def arun(store: Any = None) -> Callable[[str, str | None], Any]:
                async def go(prompt: str, cid: str | None) -> Any:
                    async with client() as c:
                        return await BenchAgent(c).arun(prompt, conversation_id=cid, store=store)

                return lambda prompt, cid: asyncio.run(go(prompt, cid))

            contenders["arun, no store (baseline)"] = arun()
            contenders["arun + SQLiteStore"] = arun(SQLiteStore(folder / "store.db"))
            pg_server, dsn = postgres(folder)
            if pg_server is not None:
                from agentfsm.stores.postgres import PostgresStore

                contenders["arun + PostgresStore"] = arun(PostgresStore(dsn))
            else:
                print(f"PostgreSQL rows skipped: {dsn}")

            sqlite_url = f"sqlite:///{folder / 'dbos.sqlite'}"
            dbos_options = ["--poll-interval", "0.01"]
            started.append(worker("dbos", ["--database", sqlite_url, *dbos_options], url, folder))
            engines["DBOS, SQLite"] = DBOSEngine(sqlite_url, poll_interval=0.02)
            if pg_server is not None:
                dbos_pg = pg_url(dsn, "dbos_bench")
                started.append(worker("dbos", ["--database", dbos_pg, *dbos_options], url, folder))
                engines["DBOS, PostgreSQL"] = DBOSEngine(dbos_pg, poll_interval=0.02)
            server, address = temporal_server(folder)
            started.append(server)
            started.append(worker("temporal", ["--address", address], url, folder))
            engines["Temporal (dev server, SQLite file)"] = TemporalEngine(address)
            for name, engine in engines.items():
                contenders[f"worker: {name}"] = lambda prompt, cid, e=engine: e.start(
                    SPEC, prompt, conversation_id=cid
                ).result(timeout=600)

            # 1. time per conversation, interleaved rounds (and one warm-up conversation each)
            times: dict[str, list[float]] = {name: [] for name in contenders}
            transitions = 0
            for n in range(rounds + 1):
                for i, (name, run) in enumerate(contenders.items()):
                    t0 = time.perf_counter()
                    result = run("Look the keys up.", f"conv_bench_{i}_{n}_{time.time_ns()}")
                    if n:
                        times[name].append((time.perf_counter() - t0) * 1000)
                    assert result.final_state == "done", (name, result.final_state, result.error)
                    transitions = len(result.trace)
            base = statistics.median(times["arun, no store (baseline)"])
            print(f"\n1. One {turns}-request tool conversation ({transitions} transitions), "
                  f"median (min-max) of {rounds} interleaved rounds")  # fmt: skip
            print(f"   {'contender':<46} {'ms / conversation':>24} {'overhead ms / transition':>26}")
            for name, values in times.items():
                median = statistics.median(values)
                spread = f"{median:.0f} ({min(values):.0f}-{max(values):.0f})"
                over = "" if "baseline" in name else f"{(median - base) / transitions:.1f}"
                print(f"   {name:<46} {spread:>24} {over:>26}")

            # 2. bytes kept for a 50-request conversation with 5 kB tool results
            print("\n2. Bytes kept for one 50-request conversation with 5 kB tool results")
            store_result = arun(SQLiteStore(folder / "long.db"))("long: echo the blocks", None)
            history = len(json.dumps(store_result.messages, ensure_ascii=False))
            snapshot = SQLiteStore(folder / "long.db").load(store_result.conversation_id).model_dump_json()
            print(f"   {'final history (JSON)':<46} {history:>12,} bytes")
            print(f"   {'SQLiteStore snapshot (one row, rewritten)':<46} {len(snapshot):>12,} bytes  "
                  f"{len(snapshot) / history:5.1f}x the history")  # fmt: skip
            for name, engine in engines.items():
                result = engine.start(SPEC, "long: echo the blocks").result(timeout=600)
                assert result.turns == 50, (name, result.turns)
                stored = engine.stored_bytes(result.conversation_id)
                print(f"   {name:<46} {stored:>12,} bytes  {stored / history:5.1f}x the history")
    finally:
        for engine in engines.values():
            engine.close()
        for process in reversed(started):
            process.stop()
        if pg_server is not None:
            pg_server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
