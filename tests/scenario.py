"""The conversation the persistence tests crash and resume: a paused server tool, client tools, a continuation.

Everything here is a pure function of the request (same request, same reply, same
ids), so a resumed process — with a fresh simulator — is answered exactly as the
original would have been:

1. the prompt is answered with a ``pause_turn`` (a web search left mid-turn);
2. the resumed turn finishes the search and calls ``count(label="a")``;
3. the tool result is answered with two parallel calls, ``count("b")`` and ``count("c")``;
4. then ``writer(DOCUMENT)`` writes the answer across ``max_tokens``-cut replies (continuations).

``count`` appends its label to a log file per real execution, so "ran exactly once"
is checkable across processes. ``kill_point`` is where a test may SIGKILL the
process (``KILL_AT``): after a tool's effect, before a reply, around each save.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from agentfsm import Agent, Policy, Tool, ToolContext
from agentfsm.sim import ScriptedReply, SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import Snapshot, Store

DOCUMENT = (
    "Report. The search found three sources and the counter was called three times, once per label. "
    "Every call ran exactly once, even though the process running this conversation may have been "
    "killed at any point along the way; the conversation was resumed from its last committed state, "
    "and the text you are reading was written across several replies cut at max_tokens and stitched."
)
POLICY = Policy(max_tokens=24, max_continuations=20, max_pause_resumes=2, lease_seconds=30)
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}
LABELS = ("a", "b", "c")
INTERRUPTED = "was running when the agent process stopped"

# --- where the process may be killed -------------------------------------------------------------------

KILL_AT: int | None = None
POINTS = 0
PASSED: list[str] = []  # what each point passed so far was: "request", "tool", "save" or "saved:<tools started>"
_POINTS_LOCK = threading.Lock()


def kill_point(what: str) -> None:
    """Count a point where the process may die; SIGKILL it here if this is point ``KILL_AT``."""
    global POINTS
    with _POINTS_LOCK:
        POINTS += 1
        PASSED.append(what)
        if POINTS == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # never reached


# --- the tool --------------------------------------------------------------------------------------------

LOG: Path | None = None  # where count() records its executions (a file, so other processes can count)
CALLS: list[str] = []  # and, in process, a list
RAISE_ON: set[str] = set()  # labels whose execution raises KeyboardInterrupt (an in-process "crash")
DELAY = 0.0


#: In the kill workers: ``count("c")`` starts its effect only once ``count("b")``'s result is committed (a commit
#: per call), so the kill points come in the same order every run, one of them with b committed and c running.
ORDERED = False
B_ID: list[str] = []  # the id of the call that counted "b", once it ran
B_COMMITTED = threading.Event()


def count(label: str, ctx: ToolContext) -> str:
    """Count one call of the given label."""
    if label == "b":
        B_ID.append(ctx.tool_use_id)
    elif label == "c" and ORDERED and ctx.attempt == 1:
        assert B_COMMITTED.wait(10), "b's result was never committed on its own"
    CALLS.append(label)
    if LOG is not None:
        with LOG.open("a") as f:  # one line per real execution: the label, and the key of the call it ran for
            f.write(f"{label} {ctx.idempotency_key}\n")
            f.flush()
            os.fsync(f.fileno())
    if DELAY:
        time.sleep(DELAY)
    kill_point("tool")
    if label in RAISE_ON:
        raise KeyboardInterrupt
    return f"counted {label}"


def logged(log: Path | None = None) -> list[tuple[str, str]]:
    """The real executions, in order: (label, idempotency key) per line of the log file."""
    log = log or LOG
    if log is None or not log.exists():
        return []
    return [(line.split()[0], line.split()[1]) for line in log.read_text().splitlines() if len(line.split()) == 2]


def counted(ctx: ToolContext) -> str | None:
    """``count``'s reconcile check: the log says whether the call's effect happened (and so what it returned),
    found by the call's key: a resume in another process finds it only if the key is the one the call ran with."""
    for label, key in logged():
        if key == ctx.idempotency_key:
            return f"counted {label}"
    return None


def _check_raises(ctx: ToolContext) -> str | None:
    raise ConnectionError("the counter's log cannot be read")


def _check_hangs(ctx: ToolContext) -> str | None:
    threading.Event().wait(30)  # longer than the tool timeout: given up on
    return None


RECONCILED = "tool.reconciled"
#: The reconcile checks a kill worker may give ``count``.
CHECKS = {"log": counted, "raises": _check_raises, "hangs": _check_hangs}


def counter(idempotent: bool = False, reconcile: str | None = None) -> Tool:
    return Tool(count, idempotent=idempotent, reconcile=CHECKS[reconcile] if reconcile else None)


def executions() -> dict[str, int]:
    """How many times each label really ran (from the log file)."""
    found = {label: 0 for label in LABELS}
    for label, _ in logged():
        found[label] = found.get(label, 0) + 1
    return found


# --- the model ---------------------------------------------------------------------------------------------


def _id(kind: str, request: SimRequest, i: int) -> str:
    digest = hashlib.sha256(f"{kind}:{len(request.messages)}:{i}".encode()).hexdigest()
    return f"{kind}_01{digest[:22]}"


def _paused(request: SimRequest) -> ScriptedReply:
    reply = r.pause_turn(query="agentfsm persistence")
    content = [dict(b) for b in reply.content]
    last_call = None
    for i, block in enumerate(content):
        if block.get("type") == "server_tool_use":
            block["id"] = last_call = _id("srvtoolu", request, i)
        elif block.get("type") == "web_search_tool_result":
            block["tool_use_id"] = last_call
    return r.message(content, "pause_turn")


def _resumed(request: SimRequest) -> ScriptedReply:
    pending = request.messages[-1]["content"][-1]["id"]
    results = r.server_search("agentfsm persistence (2)", "unused").content[1]
    return r.message(
        [
            {**results, "tool_use_id": pending},
            r.text_block("Found it; now counting."),
            r.tool_use_block("count", {"label": "a"}, id=_id("toolu", request, 0)),
        ],
        "tool_use",
    )


def _parallel(request: SimRequest) -> ScriptedReply:
    calls = [r.tool_use_block("count", {"label": label}, id=_id("toolu", request, i)) for i, label in enumerate("bc")]
    return r.message(calls, "tool_use")


_WRITE = r.writer(DOCUMENT)


def model(request: SimRequest) -> ScriptedReply:
    """The scenario's model: the reply depends on the request alone."""
    kill_point("request")
    n = len(request.messages)
    if n == 1:
        return _paused(request)
    if n == 2:
        return _resumed(request)
    if n == 3:
        return _parallel(request)
    return _WRITE(request)


def agent(
    *,
    idempotent: bool = False,
    simulator: Simulator | None = None,
    reconcile: str | None = None,
    policy: Policy = POLICY,
    **kwargs: Any,
) -> Agent:
    sim = simulator or Simulator(model)
    return Agent(
        client=sim.client(max_retries=0),
        tools=[counter(idempotent, reconcile), WEB_SEARCH],
        policy=policy,
        logger=None,
        **kwargs,
    )


class KillingStore:
    """A store whose saves are kill points (just before the write, and just after it committed)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def save(self, snapshot: Snapshot) -> None:
        kill_point("save")
        self.inner.save(snapshot)
        if B_ID and B_ID[0] in snapshot.tool_results:
            B_COMMITTED.set()
        kill_point(f"saved:{len([t for t in snapshot.tools_started if t not in snapshot.tool_results])}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# --- a worker process ---------------------------------------------------------------------------------------

PROMPT = "Search for agentfsm persistence, count a, b and c, then write the report."
CONVERSATION = "conv_scenario"


def forkserver() -> Any:
    """A multiprocessing context whose children fork from a server that has agentfsm and the SDK imported.

    Importing ``anthropic`` takes ~1.5 s; forked from a warm server a worker starts in milliseconds.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["anthropic", "agentfsm", "agentfsm.sim", "agentfsm.stores.sqlite", "psycopg", "pytest", "scenario"]
    )
    return ctx


def exit_code(process: Any, report: Path | None = None) -> int | None:
    """A finished worker's exit code, once its process is really gone.

    The forkserver now and then loses a child's status under load and reports 255
    (CPython gh-140867); then the report file the worker writes last decides: 0 if
    it is there, else the worker died (for these workers, only SIGKILL does that).
    """
    from agentfsm.stores.sqlite import process_state

    deadline = time.monotonic() + 10
    while process.pid is not None and process_state(process.pid)[0] and time.monotonic() < deadline:
        time.sleep(0.002)
    code: int | None = process.exitcode
    if code == 255 and report is not None:
        code = 0 if report.exists() else -signal.SIGKILL
    return code


def open_store(kind: str, where: str) -> Store:
    if kind == "sqlite":
        from agentfsm.stores.sqlite import SQLiteStore

        return SQLiteStore(where)
    from agentfsm.stores.postgres import PostgresStore

    return PostgresStore(where)


def worker(
    kind: str,
    where: str,
    log: str,
    out: str,
    *,
    kill_at: int | None = None,
    idempotent: bool = False,
    delay: float = 0.0,
    barrier: Any = None,
    reconcile: str | None = None,
) -> None:
    """Run (or resume, if stored) the scenario's conversation; write what happened to ``out`` as JSON.

    Exits 0 whatever the outcome (written as ``outcome``), unless killed at ``kill_at``. Every request
    the model gets is checked against the wire rules as it arrives, one line per request in
    ``out + ".requests"`` (so a killed worker's requests are checked too).
    """
    import json

    from agentfsm.errors import ConversationLockedError
    from agentfsm.wire.messages import wire_problems

    global KILL_AT, LOG, DELAY, ORDERED
    KILL_AT, LOG, DELAY, ORDERED = kill_at, Path(log), delay, True
    problems: list[str] = []
    checked = Path(out + ".requests")

    def check(request: SimRequest) -> None:
        found = wire_problems(request.messages)
        problems.extend(found)
        with checked.open("a") as f:
            f.write(json.dumps(found) + "\n")

    Simulator.observers.append(check)
    store = open_store(kind, where)
    saving = KillingStore(store)
    report: dict[str, Any] = {"problems": problems}
    try:
        if barrier is not None:
            barrier.wait(10)
        # a check that hangs is given up on at the tool timeout
        policy = POLICY.model_copy(update={"tool_timeout": 2.0}) if reconcile == "hangs" else POLICY
        made = agent(idempotent=idempotent, reconcile=reconcile, policy=policy)
        try:
            loaded = len(store.load(CONVERSATION).trace)
        except KeyError:
            loaded = 0
            result = made.run(PROMPT, store=saving, conversation_id=CONVERSATION)  # type: ignore[arg-type]
        else:
            result = made.resume(CONVERSATION, store=saving)  # type: ignore[arg-type]
        report.update(
            reconciled=[[e.data["tool_use_id"], e.data["outcome"]] for e in result.events if e.event == RECONCILED],
            outcome=result.final_state,
            messages=result.messages,
            text=result.text,
            advanced=len(result.trace) > loaded,  # False if it found the conversation already finished
        )
    except ConversationLockedError as exc:
        report.update(outcome="locked", error=f"{type(exc).__name__}: {exc}")
    report["points"] = POINTS
    report["passed"] = PASSED
    # Atomically: a SIGKILL landing while the report is written must not leave half a report behind.
    Path(out + ".tmp").write_text(json.dumps(report))
    os.replace(out + ".tmp", out)


def hold_lease(kind: str, where: str, conversation_id: str, ready: str) -> None:
    """Take a long lease, say so, and wait to be killed."""
    store = open_store(kind, where)
    assert store.acquire(conversation_id, "doomed-worker", 600)
    Path(ready).write_text("holding")
    time.sleep(120)
