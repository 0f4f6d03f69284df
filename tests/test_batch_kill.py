"""SIGKILL a ``BatchRunner`` process while a batch is in flight, and after results were partly applied.

The simulator runs in this (the test's) process, served on a loopback port, so
the batches it holds outlive the runner; each runner is a fresh process (forked
from a warm forkserver, ``scenario.forkserver``) on one SQLite store. After every
kill a new process resumes the run to its end, and then:

* every conversation's history equals the one ``Agent.run`` gives for it;
* no (conversation, point in it) was ever sent in two batches — nothing paid twice;
* the ledger has no open batch left.

Kills land at chosen places (by the simulator, on a poll: a batch in flight; by the
runner's store, just before it saves the k-th reply applied: results partly applied)
and at seeded random events of the run: the n-th call to the Batches API of any kind,
or the n-th save of any kind (so anywhere, including between creating a batch and
storing its id, where the resumed runner must find the batch and adopt it). Every kill
is tied to an event the runner cannot skip, never to a fraction of a measured time:
on a busy machine a timer can fire after the runner has finished.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import scenario as sc
from test_batch import Looker, agent, assert_no_turn_sent_twice, model

from agentfsm import Tool
from agentfsm.batch import BatchRunner, SQLiteLedger
from agentfsm.sim import SimRequest, Simulator

pytestmark = pytest.mark.slow  # every test forks BatchRunner processes and SIGKILLs them


def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


#: ``test_batch``'s tool, idempotent: a call a kill interrupted is run again, so every history is exact.
TOOLS = [Tool(lookup, idempotent=True)]
PROMPTS = {f"k{i}": f"kill {i}" + ("/1" if i % 4 == 0 else "/2" if i % 4 == 1 else "") for i in range(12)}
POLLS = 3  # each batch ends on its third poll


class KillAtSave:
    """A store that SIGKILLs its process just before its ``n``-th save (of a reply's transition only, when
    ``replies_only``); given ``n=None`` it only counts the saves, and writes the count to ``count_to``."""

    def __init__(self, inner: Any, n: int | None, *, replies_only: bool, count_to: Path | None = None) -> None:
        self.inner, self.n, self.replies_only, self.count_to = inner, n, replies_only, count_to
        self.saves = 0

    def save(self, snapshot: Any) -> None:
        step = snapshot.trace[-1] if snapshot.trace else None
        is_reply = (
            step is not None
            and step.source == "requesting"
            and not snapshot.tools_started
            and not snapshot.tool_results
        )
        if is_reply or not self.replies_only:
            self.saves += 1
            if self.saves == self.n:
                os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(60)
        self.inner.save(snapshot)
        if self.count_to is not None:
            self.count_to.write_text(str(self.saves))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def worker(base_url: str, db: str, out: str, kill_at_reply: int | None = None, kill_at_save: int | None = None) -> None:
    """Run (or resume) the batch run on the store at ``db``; write every conversation's history to ``out``
    (and how many saves the run made to ``out.saves``)."""
    import anthropic

    from agentfsm.stores.sqlite import SQLiteStore

    # NORMAL: a killed process loses nothing in WAL mode (only a power cut would), and the test runs faster.
    store: Any = SQLiteStore(db, synchronous="NORMAL")
    if kill_at_reply is not None:
        store = KillAtSave(store, kill_at_reply, replies_only=True)
    else:
        store = KillAtSave(store, kill_at_save, replies_only=False, count_to=Path(out + ".saves"))
    client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test-0000", max_retries=0)
    looker = Looker(client=client, logger=None, tools=TOOLS)
    ledger = SQLiteLedger(db, synchronous="NORMAL")
    runner = BatchRunner(looker, store=store, ledger=ledger, poll_interval=0)
    results = runner.run(PROMPTS)
    Path(out).write_text(json.dumps({cid: r.messages for cid, r in results.items()}))


@pytest.fixture(scope="module")
def ctx() -> Any:
    return sc.forkserver()


@pytest.fixture(scope="module")
def uninterrupted(ctx: Any, tmp_path_factory: pytest.TempPathFactory, expected: dict[str, Any]) -> dict[str, int]:
    """How many Batches API calls and saves an uninterrupted runner makes (random kills land among them)."""
    served = Served(kill_at=("call", 0))  # counts every call, kills at none
    folder = tmp_path_factory.mktemp("uninterrupted")
    Simulator.observers.append(served.observe)
    try:
        with served.sim.serve() as url:
            code, report = _run(ctx, served, url, folder, "run")
    finally:
        Simulator.observers.remove(served.observe)
    assert code == 0 and report == expected
    assert len(served.sim.batches.batches) == 3  # one batch per turn of the longest conversation
    return {"call": len(served.calls), "save": int((folder / "run.json.saves").read_text())}


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    plain = agent(Simulator(model), tools=TOOLS)
    return {cid: plain.run(prompt).messages for cid, prompt in PROMPTS.items()}


class Served:
    """A simulator on a loopback port that SIGKILLs the runner process on its ``n``-th call of a kind.

    The kinds: ``create`` (the batch is created all the same: the runner dies before it learns the id),
    ``poll`` (a batch in flight) and ``results`` (a batch ended, nothing applied yet); ``call`` counts
    every call of any kind.
    """

    def __init__(self, kill_at: tuple[str, int] | None = None) -> None:
        self.sim = Simulator(model, batch_polls=POLLS)
        self.kill_at = kill_at
        self.calls: list[str] = []
        self.victim: int | None = None

    def observe(self, request: SimRequest) -> None:
        parts = request.path.strip("/").split("/")
        if parts[:3] != ["v1", "messages", "batches"]:
            return
        kind = {3: "create", 4: "poll", 5: parts[-1]}[len(parts)] if request.method != "DELETE" else "delete"
        if kind == "create" and request.method == "GET":
            kind = "list"
        self.calls.append(kind)
        counted = len(self.calls) if self.kill_at is not None and self.kill_at[0] == "call" else self.calls.count(kind)
        wanted = self.kill_at is not None and self.kill_at[0] in (kind, "call") and counted == self.kill_at[1]
        if wanted and self.victim is not None:
            os.kill(self.victim, signal.SIGKILL)


def _run(ctx: Any, served: Served, base_url: str, folder: Path, name: str, **kwargs: Any) -> tuple[int | None, Any]:
    out = folder / f"{name}.json"
    process = ctx.Process(target=worker, args=(base_url, str(folder / "store.db"), str(out)), kwargs=kwargs)
    process.start()
    served.victim = process.pid
    process.join(60)
    if process.exitcode is None:
        process.kill()
        process.join()
        return None, None
    return sc.exit_code(process, out), json.loads(out.read_text()) if out.exists() else None


def _kill_and_resume(
    ctx: Any, folder: Path, expected: dict[str, Any], *, kill_at: tuple[str, int] | None = None, **kwargs: Any
) -> Served:
    served = Served(kill_at)
    Simulator.observers.append(served.observe)
    try:
        with served.sim.serve() as url:
            code, _ = _run(ctx, served, url, folder, "killed", **kwargs)
            assert code == -signal.SIGKILL, f"the runner was to be killed, but exited with {code}"
            code, report = _run(ctx, served, url, folder, "resumed")
            assert code == 0 and report is not None, f"the resuming runner exited with {code}"
    finally:
        Simulator.observers.remove(served.observe)
    assert report == expected
    assert_no_turn_sent_twice(served.sim)
    assert SQLiteLedger(folder / "store.db").open_batches() == []
    return served


@pytest.mark.parametrize(
    ("poll", "what"),
    [(1, "batch 1 in flight, just created"), (POLLS + 2, "batch 2 on its second poll"), (3 * POLLS, "batch 3 ending")],
)
def test_killed_while_a_batch_is_in_flight(
    ctx: Any, tmp_path: Path, expected: dict[str, Any], poll: int, what: str
) -> None:
    served = _kill_and_resume(ctx, tmp_path, expected, kill_at=("poll", poll))
    assert served.calls.count("create") == 3, what  # the batch in flight was polled again, not sent again


@pytest.mark.parametrize("reply", [1, 12 + 4, 12 + 9 + 5])
def test_killed_after_results_were_partly_applied(
    ctx: Any, tmp_path: Path, expected: dict[str, Any], reply: int
) -> None:
    _kill_and_resume(ctx, tmp_path, expected, kill_at_reply=reply)


@pytest.mark.parametrize("create", [1, 2])
def test_killed_between_creating_a_batch_and_storing_its_id(
    ctx: Any, tmp_path: Path, expected: dict[str, Any], create: int
) -> None:
    served = _kill_and_resume(ctx, tmp_path, expected, kill_at=("create", create))
    assert served.calls.count("create") == 3  # the batch the dead runner made was found (listed) and adopted
    assert "list" in served.calls


def test_killed_when_a_batch_ended_before_its_results_were_read(
    ctx: Any, tmp_path: Path, expected: dict[str, Any]
) -> None:
    served = _kill_and_resume(ctx, tmp_path, expected, kill_at=("results", 2))
    assert served.calls.count("create") == 3


@pytest.mark.parametrize(("kind", "seed"), [("call", 1), ("call", 2), ("save", 1), ("save", 2)])
def test_killed_at_a_random_event(
    ctx: Any, tmp_path: Path, expected: dict[str, Any], uninterrupted: dict[str, int], kind: str, seed: int
) -> None:
    n = random.Random(seed).randint(1, uninterrupted[kind])
    if kind == "call":
        _kill_and_resume(ctx, tmp_path, expected, kill_at=("call", n))
    else:
        _kill_and_resume(ctx, tmp_path, expected, kill_at_save=n)
