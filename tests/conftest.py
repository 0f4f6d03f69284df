"""Suite-wide checks.

Every request any agent sends to the simulator, in every test, is checked
twice: against the wire rules of SPEC.md §3 (``agentfsm.wire.messages.wire_problems``)
and against the official request schema (``CreateMessageParams``, or
``BetaCreateMessageParams`` for beta calls) from the OpenAPI spec kept beside
the real-traffic corpus, with a JSON Schema validator built once per session.
Only the simulator's own tests (``test_sim*``), which send hand-made bad
requests on purpose, are exempt from both; a test marked ``beyond_schema``
(content the vendored schema does not know, sent on purpose) is exempt from
the schema check. Exempt requests are still counted: the terminal summary
says how many requests were validated. Without the corpus folder the schema
check is skipped, and the summary says so.

Tests that need a server or program the machine may lack (PostgreSQL, Chromium,
Graphviz, Node) install it when they can and skip, saying why, when they cannot.
``AGENTFSM_TEST_STRICT=1`` (``.ci/run`` sets it, after installing them) turns
such a skip into a failure: in CI a missing server must be red, not quietly absent.

Tests come in two tiers. ``pytest -m "not slow"`` is the fast lane: the unit and
in-process machine tests. A test that starts another process — a subprocess, a
multiprocessing worker, a PostgreSQL or Temporal server, a browser, mypy or
ruff — is marked ``slow`` (the whole module with ``pytestmark`` where all of it
is). That is enforced, not remembered: while a test not marked slow is set up or
run, starting a process fails it, saying to mark it slow (``_SpawnGuard``).
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pgserver
import pytest
import realtraffic

from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim.wire import MESSAGES_PATH
from agentfsm.wire.messages import wire_problems

#: Session totals of the schema check, for the terminal summary.
SCHEMA_TALLY: Counter[str] = Counter()
_TALLY_LOCK = threading.Lock()


def _exempt(request: pytest.FixtureRequest) -> bool:
    return str(request.node.module.__name__).split(".")[-1].startswith("test_sim")


@pytest.fixture(autouse=True)
def wire_rules_on_every_request(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    problems: list[str] = []
    exempt = _exempt(request)

    def check(sim_request: SimRequest) -> None:
        if sim_request.path != MESSAGES_PATH:  # the Message Batches calls; their requests are checked one by one
            return
        for problem in wire_problems(sim_request.messages):
            problems.append(f"request #{sim_request.n}: {problem}")

    Simulator.observers.append(check)
    try:
        yield problems
    finally:
        Simulator.observers.remove(check)
    if not exempt:
        assert not problems, "requests broke the wire rules of SPEC.md §3:\n" + "\n".join(problems)


@pytest.fixture(autouse=True)
def request_schema_on_every_request(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Validate every Messages request body against the API's own schema (skipped if the spec is absent).

    Yields the problems found; a test that sends a bad request on purpose may inspect and clear them.
    """
    problems: list[str] = []
    exempt = _exempt(request) or request.node.get_closest_marker("beyond_schema") is not None
    invalid = 0

    def check(sim_request: SimRequest) -> None:
        nonlocal invalid
        if sim_request.method != "POST" or sim_request.path != MESSAGES_PATH or not sim_request.body:
            outcome = "not a Messages request"
        else:
            name = realtraffic.schema_name(sim_request.query, sim_request.headers)
            found = realtraffic.schema_problems(sim_request.body, name)
            if found is None:
                outcome = "not checked (no spec)"
            elif not found:
                outcome = f"valid {name}"
            elif exempt:
                outcome = "invalid on purpose (test_sim*, or marked beyond_schema)"
            else:
                outcome = ""
                with _TALLY_LOCK:
                    invalid += 1
                    problems.append(f"request #{sim_request.n}: {found[0]}")
        if outcome:
            with _TALLY_LOCK:
                SCHEMA_TALLY[outcome] += 1

    Simulator.observers.append(check)
    try:
        yield problems
    finally:
        Simulator.observers.remove(check)
    with _TALLY_LOCK:
        SCHEMA_TALLY["invalid"] += len(problems)
        SCHEMA_TALLY["invalid, caught on purpose by a test"] += invalid - len(problems)
    assert not problems, "requests do not validate against the API's OpenAPI schema:\n" + "\n".join(problems)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SCHEMA_TALLY:
        return
    total = sum(SCHEMA_TALLY.values())
    parts = ", ".join(f"{outcome}: {n}" for outcome, n in sorted(SCHEMA_TALLY.items()) if n)
    terminalreporter.write_line(f"request schema check: {total} simulator requests ({parts})")
    if not realtraffic.available():
        terminalreporter.write_line(f"request schema check skipped: {realtraffic.SKIP_REASON}")


#: The beginnings of the skip reasons that mean "a server or program is missing here" (see the docstring).
MISSING_SOMETHING = (
    "PostgreSQL tests skipped",
    "browser tests skipped",
    "Graphviz's dot is not installed",
    "Mermaid parser tests skipped",
)


# --- the fast lane: a test that starts a process must be marked slow -------------------------------------


class SpawnInFastLaneError(RuntimeError):
    """A test not marked ``slow`` started a process."""


class _SpawnGuard:
    """Refuses to start a process while a test not marked ``slow`` is set up or run.

    It wraps the two doors every process of the suite goes through: ``subprocess.Popen``
    (``subprocess.run``, asyncio's subprocesses, pgserver, Chromium, Node, mypy, ruff) and
    ``multiprocessing``'s ``Process.start`` (the forkserver workers of the kill suites). Teardown is
    not guarded: a session fixture (the PostgreSQL server) is stopped in whichever test's teardown
    comes last. What was refused is also remembered, so a test whose code swallowed the error
    (``except OSError: skip``) still fails.
    """

    def __init__(self) -> None:
        self.fast_test: str | None = None  # the node id of the fast test being set up or run
        self.refused: dict[str, list[str]] = {}
        self._popen = subprocess.Popen._execute_child  # type: ignore[attr-defined]
        self._start = multiprocessing.process.BaseProcess.start

    def install(self) -> None:
        guard, popen, start = self, self._popen, self._start

        def execute_child(proc: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> Any:
            guard.check(f"subprocess {args!r}")
            return popen(proc, args, *rest, **kw)

        def process_start(proc: multiprocessing.process.BaseProcess) -> None:
            guard.check(f"multiprocessing process {proc.name!r}")
            start(proc)

        subprocess.Popen._execute_child = execute_child  # type: ignore[attr-defined]
        multiprocessing.process.BaseProcess.start = process_start  # type: ignore[method-assign]

    def uninstall(self) -> None:
        subprocess.Popen._execute_child = self._popen  # type: ignore[attr-defined]
        multiprocessing.process.BaseProcess.start = self._start  # type: ignore[method-assign]

    def check(self, what: str) -> None:
        test = self.fast_test
        if test is None:
            return
        self.refused.setdefault(test, []).append(what)
        raise SpawnInFastLaneError(
            f"{test} started a process ({what}) but is not marked slow: mark it "
            "@pytest.mark.slow (or the module, pytestmark = pytest.mark.slow) so that "
            '`pytest -m "not slow"` stays the fast, in-process lane'
        )


_SPAWN_GUARD = _SpawnGuard()


def pytest_configure(config: pytest.Config) -> None:
    _SPAWN_GUARD.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    _SPAWN_GUARD.uninstall()


def _guarded(item: pytest.Item) -> Iterator[None]:
    """While a fast test's setup or body runs, the guard refuses a process it starts (fixtures' teardown may)."""
    _SPAWN_GUARD.fast_test = None if item.get_closest_marker("slow") else item.nodeid
    try:
        yield
    finally:
        _SPAWN_GUARD.fast_test = None


pytest_runtest_setup = pytest.hookimpl(hookwrapper=True)(_guarded)
pytest_runtest_call = pytest.hookimpl(hookwrapper=True)(_guarded)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    refused = _SPAWN_GUARD.refused.pop(item.nodeid, None) if call.when != "teardown" else None
    if refused and not report.failed:  # the test swallowed the refusal (or skipped over it): fail it all the same
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started a process ({refused[0]}) but is not marked slow: mark it @pytest.mark.slow"
        )
        return
    if not report.skipped or os.environ.get("AGENTFSM_TEST_STRICT") != "1" or not isinstance(report.longrepr, tuple):
        return
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    if reason.startswith(MISSING_SOMETHING):
        report.outcome = "failed"
        report.longrepr = f"AGENTFSM_TEST_STRICT=1, and this test would have been skipped: {reason}"


@pytest.fixture
def no_foreign_observers() -> Iterator[None]:
    """For tests that send invalid requests on purpose: no suite-wide request observer sees them."""
    saved = list(Simulator.observers)
    Simulator.observers.clear()
    yield
    Simulator.observers[:] = saved


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The suite's one throwaway PostgreSQL server (``pgserver``); without one, the tests using it skip."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests skipped: psycopg is not installed (pip install 'agentfsm[postgres]')")
    try:
        server = pgserver.start()
    except pgserver.Unavailable as exc:
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
def postgres_database(postgres_dsn: str) -> str:
    """A new, empty database on the suite's PostgreSQL server, as a ``postgresql://`` URL."""
    import uuid

    return pgserver.fresh_database(postgres_dsn, f"agentfsm_{uuid.uuid4().hex[:10]}")
