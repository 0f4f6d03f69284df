"""The kill suite: SIGKILL a worker at every kill point of a conversation, resume it in a fresh process.

The conversation (``scenario``) pauses a server tool, calls client tools (one, then two
in parallel), and continues a text cut at ``max_tokens``; its model is a pure function
of the request. A worker process runs it on a ``SQLiteStore``; the kill points are
numbered in the order the uninterrupted run reaches them — before and after every save,
on every request the model answers, after every real tool execution — so each is a
real, distinct place to die, and the same one every time. For each point N a worker
kills itself with SIGKILL at point N, and a fresh worker resumes the conversation to
its end. Every point is swept with a non-idempotent tool; the points where tool calls
are in flight (the only ones where it matters) again with an idempotent one; and SIGKILLs
sent from outside at seeded random moments land anywhere else (mid-write, mid-request).
Then, per kill:

* the final history equals the uninterrupted run's; with a non-idempotent tool, except
  that a call that was running at the kill is answered with the "interrupted" is_error
  result (and an idempotent one is run again, so its history is exactly the same);
* every tool call whose result was committed ran exactly once (an interrupted call at
  most once, or — idempotent — at most twice);
* every request the simulator saw keeps the wire rules (``wire_problems``);
* the dead worker's lease did not stop the resume.
"""

from __future__ import annotations

import json
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import scenario as sc

from agentfsm.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.slow  # every test forks worker processes and SIGKILLs them


def _worker(
    ctx: Any,
    folder: Path,
    name: str,
    *,
    kill_after: float | None = None,
    where: str | None = None,
    **kwargs: Any,
) -> tuple[int | None, dict[str, Any] | None]:
    """Run ``scenario.worker`` in a fresh process (SIGKILLed after ``kill_after`` seconds if given), on the
    folder's SQLite store, or on the PostgreSQL database ``where`` names."""
    out = folder / f"{name}.json"
    kind, store = ("postgres", where) if where else ("sqlite", str(folder / "store.db"))
    process = ctx.Process(target=sc.worker, args=(kind, store, str(folder / "tool.log"), str(out)), kwargs=kwargs)
    process.start()
    if kill_after is not None:
        process.join(kill_after)
        if process.exitcode is None:
            process.kill()
    process.join(60)
    if process.exitcode is None:
        process.kill()
        process.join()
        return None, None
    return sc.exit_code(process, out), json.loads(out.read_text()) if out.exists() else None


def _requests_checked(root: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in root.rglob("*.requests"))


@pytest.fixture(scope="module")
def ctx() -> Any:
    return sc.forkserver()


@pytest.fixture(scope="module")
def baseline(ctx: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run: its history, and how many kill points it passes."""
    folder = tmp_path_factory.mktemp("baseline")
    code, report = _worker(ctx, folder, "run")
    assert code == 0 and report is not None and report["outcome"] == "done", report
    assert not report["problems"]
    assert sorted(label for label, _ in sc.logged(folder / "tool.log")) == ["a", "b", "c"]
    return report


def in_flight(passed: list[str]) -> list[int]:
    """The kill points at which the store says tool calls are running (started, not committed).

    Only there does a tool's idempotency change what resume does. ``passed`` names each point of
    the uninterrupted run; ``saved:N`` is the moment a save committed with N calls running.
    """
    running, points = False, []
    for n, what in enumerate(passed, start=1):
        if what.startswith("saved:"):
            running = what != "saved:0"
        if running:
            points.append(n)
    return points


def _labels_by_id(messages: list[dict[str, Any]]) -> dict[str, str]:
    return {
        b["id"]: b["input"]["label"]
        for m in messages
        if m["role"] == "assistant" and isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_use"
    }


def _interrupted_at_kill(db: Path, where: str | None = None) -> set[str]:
    """The tool calls the killed worker had started and not committed (what resume treats as in doubt)."""
    store = sc.open_store("postgres", where) if where else SQLiteStore(db)
    try:
        snap = store.load(sc.CONVERSATION)
    except KeyError:
        return set()
    finally:
        store.close()
    return {t for t in snap.tools_started if t not in snap.tool_results}


def _one_kill(
    ctx: Any,
    root: Path,
    point: int,
    idempotent: bool,
    baseline: dict[str, Any],
    after: float | None = None,
    interrupted_at: dict[int, set[str]] | None = None,
    reconcile: str | None = None,
    where: str | None = None,
    reconciled: dict[int, list[list[str]]] | None = None,
) -> str | None:
    """Kill at kill point ``point`` (or, given ``after``, that many seconds in), resume, and check.

    Returns the problem found, or None; records in ``interrupted_at`` the calls the kill interrupted (in doubt),
    and in ``reconciled`` what the resume's reconcile checks said (``tool.reconciled``: [id, outcome] pairs).
    With ``reconcile="log"`` (a check that reads the tool's log) no call is answered interrupted: the history is
    exactly the uninterrupted run's and every call ran exactly once.
    """
    folder = root / f"kill{point:03d}"
    folder.mkdir()
    options: dict[str, Any] = {"idempotent": idempotent, "reconcile": reconcile, "where": where}
    if after is None:
        code, _ = _worker(ctx, folder, "killed", kill_at=point, **options)
    else:
        code, _ = _worker(ctx, folder, "killed", kill_after=after, **options)
        if code == 0:
            return None  # it finished first: resuming a finished conversation is tested elsewhere
    if code != -signal.SIGKILL:
        return f"point {point}: the worker was to be killed there, but exited with {code}"
    interrupted = _interrupted_at_kill(folder / "store.db", where)
    if interrupted_at is not None:
        interrupted_at[point] = interrupted
    code, report = _worker(ctx, folder, "resumed", **options)
    if reconciled is not None and report is not None:
        reconciled[point] = report.get("reconciled", [])
    if code != 0 or report is None:
        return f"point {point}: the resuming worker exited with {code}"
    if report["outcome"] != "done":
        return f"point {point}: resumed to {report['outcome']!r} ({report.get('error')})"
    for name in ("killed", "resumed"):
        checked = folder / f"{name}.json.requests"
        text = checked.read_text() if checked.exists() else ""
        if name == "killed" and not text.endswith("\n"):
            text = text.rpartition("\n")[0]  # SIGKILL can land mid-write: the last line may be cut short
        for line in text.splitlines():
            if json.loads(line):
                return f"point {point}: a request of the {name} worker broke the wire rules: {line}"
    expected = baseline["messages"]
    labels = _labels_by_id(expected)
    final = report["messages"]
    if not idempotent and reconcile != "log":  # a call in doubt is answered interrupted; the rest is the same
        answered = []
        for m in final:
            content = m["content"]
            if m["role"] == "user" and isinstance(content, list):
                for block in content:
                    if block.get("type") == "tool_result" and sc.INTERRUPTED in str(block.get("content")):
                        if block["tool_use_id"] not in interrupted or block.get("is_error") is not True:
                            return f"point {point}: {block['tool_use_id']} answered as interrupted, wrongly"
                        answered.append(block["tool_use_id"])
                        block.pop("is_error")
                        block["content"] = f"counted {labels[block['tool_use_id']]}"
        if sorted(answered) != sorted(interrupted):
            return f"point {point}: interrupted calls {sorted(interrupted)}, answered as such {sorted(answered)}"
    if final != expected:
        return f"point {point}: the final history differs from the uninterrupted run's"
    if report["text"] != baseline["text"]:
        return f"point {point}: the final text differs"
    runs = {label: 0 for label in sc.LABELS}
    for label, _ in sc.logged(folder / "tool.log"):
        runs[label] += 1
    for call_id, label in labels.items():
        if (call_id not in interrupted or reconcile == "log") and runs[label] != 1:
            return f"point {point}: committed call {label!r} ran {runs[label]} times"
        if call_id in interrupted and runs[label] > (2 if idempotent else 1):
            return f"point {point}: interrupted call {label!r} ran {runs[label]} times"
    return None


def _sweep(
    ctx: Any, root: Path, points: list[int], idempotent: bool, baseline: dict[str, Any]
) -> tuple[list[str], dict[int, set[str]]]:
    interrupted: dict[int, set[str]] = {}
    with ThreadPoolExecutor(2) as pool:
        found = pool.map(lambda n: _one_kill(ctx, root, n, idempotent, baseline, interrupted_at=interrupted), points)
        problems = [p for p in found if p is not None]
    return problems, interrupted


def test_sigkill_at_every_kill_point_then_resume(
    ctx: Any, baseline: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every kill point, with a non-idempotent tool: calls in flight at the kill are answered as interrupted."""
    points = list(range(1, baseline["points"] + 1))
    assert len(points) >= 36, f"the scenario has only {len(points)} kill points; dozens are wanted"
    problems, interrupted = _sweep(ctx, tmp_path, points, False, baseline)
    with capsys.disabled():
        print(
            f"\nkill suite (non-idempotent tool): {len(points) - len(problems)} of {len(points)} SIGKILL points "
            f"survived, {sum(1 for n in points if interrupted.get(n))} of them with tool calls in flight "
            f"({_requests_checked(tmp_path)} requests checked against the wire rules)"
        )
    assert not problems, "\n".join(problems)
    # The kill points are what they say: calls were in flight exactly where the uninterrupted run had them so.
    assert sorted(n for n in points if interrupted.get(n)) == in_flight(baseline["passed"])


def test_sigkill_while_an_idempotent_tool_runs_then_resume(
    ctx: Any, baseline: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every kill point with calls in flight (the only ones where idempotency matters): they are run again."""
    points = in_flight(baseline["passed"])
    assert len(points) >= 5, baseline["passed"]
    problems, interrupted = _sweep(ctx, tmp_path, points, True, baseline)
    with capsys.disabled():
        print(
            f"\nkill suite (idempotent tool): {len(points) - len(problems)} of {len(points)} SIGKILL points with "
            f"tool calls in flight survived ({_requests_checked(tmp_path)} requests checked against the wire rules)"
        )
    assert not problems, "\n".join(problems)
    assert all(interrupted[n] for n in points)


RANDOM_KILLS = 24


def test_sigkill_at_random_moments_then_resume(
    ctx: Any, baseline: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL from outside after seeded random delays: the kill lands anywhere, mid-write and mid-request too."""
    folder = tmp_path / "timing"
    folder.mkdir()
    started = time.perf_counter()
    assert _worker(ctx, folder, "run")[0] == 0
    span = (time.perf_counter() - started) * 1.1
    rng = random.Random(20240606)
    delays = [rng.uniform(0, span) for _ in range(RANDOM_KILLS)]
    with ThreadPoolExecutor(2) as pool:
        found = list(
            pool.map(lambda n: _one_kill(ctx, tmp_path, n, False, baseline, after=delays[n]), range(RANDOM_KILLS))
        )
    killed = sum(1 for n in range(RANDOM_KILLS) if (tmp_path / f"kill{n:03d}" / "resumed.json").exists())
    problems = [p for p in found if p is not None]
    with capsys.disabled():
        print(
            f"\nkill suite (random moments): {killed - len(problems)} of {killed} SIGKILLs survived "
            f"({_requests_checked(tmp_path)} requests checked against the wire rules)"
        )
    assert not problems, "\n".join(problems)


# --- a commit per call, and reconcile (issue 25) ------------------------------------------------------------------


def _parallel_points(passed: list[str]) -> tuple[int, int]:
    """In the two-call reply (b, then c: the workers order them): the point just after b's result was committed
    while c runs (``saved:1`` after ``saved:2``), and the point just after c's effect, before it is committed."""
    two = passed.index("saved:2")
    b_committed = passed.index("saved:1", two) + 1
    c_effect = passed.index("tool", b_committed) + 1
    return b_committed, c_effect


def _ids(baseline: dict[str, Any]) -> dict[str, str]:
    return {label: call_id for call_id, label in _labels_by_id(baseline["messages"]).items()}


def test_a_call_that_finished_is_committed_while_its_sibling_runs(
    ctx: Any, baseline: dict[str, Any], tmp_path: Path
) -> None:
    """Killed once b's result is committed and c still runs: only c is in doubt (answered interrupted); b is
    neither answered interrupted nor run again."""
    point, _ = _parallel_points(baseline["passed"])
    interrupted: dict[int, set[str]] = {}
    problem = _one_kill(ctx, tmp_path, point, False, baseline, interrupted_at=interrupted)
    assert problem is None, problem
    assert interrupted[point] == {_ids(baseline)["c"]}


def test_reconcile_at_every_point_with_calls_in_flight(
    ctx: Any, baseline: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a reconcile check that asks the tool's log, every kill with calls in flight ends in exactly the
    uninterrupted run's history, every call run exactly once: "happened" where the effect was logged before
    the kill, "not happened" (the call runs now) where it was not. The check gets the call's own key."""
    points = in_flight(baseline["passed"])
    said: dict[int, list[list[str]]] = {}
    with ThreadPoolExecutor(2) as pool:
        found = pool.map(
            lambda n: _one_kill(ctx, tmp_path, n, False, baseline, reconcile="log", reconciled=said), points
        )
        problems = [p for p in found if p is not None]
    outcomes = sorted({outcome for pairs in said.values() for _, outcome in pairs})
    with capsys.disabled():
        print(f"\nkill suite (reconcile): {len(points) - len(problems)} of {len(points)} points survived; {outcomes}")
    assert not problems, "\n".join(problems)
    assert outcomes == ["happened", "not_happened"]
    ids = _ids(baseline)
    b_committed, c_effect = _parallel_points(baseline["passed"])
    assert said[b_committed] == [[ids["c"], "not_happened"]] and said[c_effect] == [[ids["c"], "happened"]]


@pytest.mark.parametrize("check", ["raises", "hangs"])
def test_a_reconcile_that_raises_or_times_out_is_the_unknown_answer(
    ctx: Any, baseline: dict[str, Any], tmp_path: Path, check: str
) -> None:
    """A check that raises, or runs past the tool timeout: the call in doubt is answered interrupted."""
    point, _ = _parallel_points(baseline["passed"])
    said: dict[int, list[list[str]]] = {}
    problem = _one_kill(ctx, tmp_path, point, False, baseline, reconcile=check, reconciled=said)
    assert problem is None, problem
    assert said[point] == [[_ids(baseline)["c"], "unknown"]]


def test_reconcile_on_postgres(ctx: Any, baseline: dict[str, Any], tmp_path: Path, postgres_dsn: str) -> None:
    """The same ledger on PostgreSQL: killed with c running (not happened: it runs once) and after c's effect
    (happened: not run again); b, committed before either kill, never runs again."""
    import uuid

    import pgserver

    ids, said = _ids(baseline), {}
    for point in _parallel_points(baseline["passed"]):
        where = pgserver.fresh_database(postgres_dsn, f"agentfsm_kill_{uuid.uuid4().hex[:10]}")
        problem = _one_kill(ctx, tmp_path, point, False, baseline, reconcile="log", where=where, reconciled=said)
        assert problem is None, problem
    assert list(said.values()) == [[[ids["c"], "not_happened"]], [[ids["c"], "happened"]]]
