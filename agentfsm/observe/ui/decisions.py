"""Deciding waiting runs from the inspector: a per-server CSRF token, and decisions carried out off the request thread.

Only an inspector started with ``--allow-decisions`` (``UIServer(..., decider=...)``) has one. A decision
runs the waiting run on (a tool call, API requests), which may take minutes, so the request that asks
for it only starts it in a thread and answers at once; the run page shows it running, then how it
ended — the run's new state, or the error (a trigger that does not leave the state, a run no longer
waiting) — from the record kept here, one per run (the latest).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from agentfsm.errors import AgentfsmError

log = logging.getLogger("agentfsm.ui")

#: What carries a decision out: ``(conversation_id, trigger, input) -> result`` (a ``RunResult``, for the
#: message shown). ``agentfsm ui --allow-decisions`` builds it from ``agentfsm.cli.runs.decide_run``.
Decider = Callable[[str, str, Any], object]


@dataclass
class Decision:
    """One decision asked for from the inspector, and how it went."""

    run_id: str
    trigger: str
    input: Any
    status: Literal["running", "done", "failed"] = "running"
    #: How it ended: the run's new state, or why it was not carried out.
    message: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "status": self.status,
            "message": self.message,
            "started": self.started,
            "ended": self.ended,
        }


class Decisions:
    """The decisions of one inspector: its CSRF token, and the latest decision of each run."""

    def __init__(self, decider: Decider) -> None:
        self.decider = decider
        #: Random per server start, embedded in each page's form and required with every decision.
        self.token = secrets.token_urlsafe(32)
        self._lock = threading.Lock()
        self._latest: dict[str, Decision] = {}

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is this server's token (compared in constant time)."""
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def latest(self, run_id: str) -> Decision | None:
        with self._lock:
            return self._latest.get(run_id)

    def refuse(self, run_id: str, trigger: str, message: str) -> Decision:
        """Record a decision that is not carried out (bad input, a run not waiting), for the page to show."""
        decision = Decision(run_id, trigger, None, status="failed", message=message, ended=time.time())
        decision.finished.set()
        with self._lock:
            running = self._latest.get(run_id)
            if running is None or running.status != "running":
                self._latest[run_id] = decision
        return decision

    def start(self, run_id: str, trigger: str, input: Any) -> Decision:
        """Carry the decision out in a thread of its own (one at a time per run); returns its record."""
        with self._lock:
            running = self._latest.get(run_id)
            if running is not None and running.status == "running":
                return running  # the page shows the one under way; a second click decides nothing
            decision = Decision(run_id, trigger, input)
            self._latest[run_id] = decision
        thread = threading.Thread(target=self._run, args=(decision,), name=f"agentfsm-ui-decide-{run_id}", daemon=True)
        thread.start()
        return decision

    def _run(self, decision: Decision) -> None:
        try:
            outcome = self.decider(decision.run_id, decision.trigger, decision.input)
        except AgentfsmError as exc:  # a trigger that does not leave the state, a run not waiting, a locked run
            decision.status, decision.message = "failed", str(exc)
        except Exception as exc:
            log.exception("agentfsm ui: deciding %s along %s failed", decision.run_id, decision.trigger)
            decision.status, decision.message = "failed", f"{type(exc).__name__}: {exc}"
        else:
            decision.status, decision.message = "done", describe(decision.trigger, outcome)
        decision.ended = time.time()
        decision.finished.set()

    def wait(self, run_id: str, timeout: float | None = None) -> Decision | None:
        """The latest decision of ``run_id`` once it has ended (None if there is none, or on timeout)."""
        decision = self.latest(run_id)
        if decision is None or not decision.finished.wait(timeout):
            return None
        return decision


def describe(trigger: str, outcome: object) -> str:
    """A decision's outcome in words: where the run went."""
    state = getattr(outcome, "final_state", None)
    if state is None:
        return f"decided {trigger}"
    text = f"decided {trigger}: the run went on to {state}"
    reason = getattr(outcome, "reason", None)
    if state == "waiting":
        text += f" (waiting again, at {getattr(outcome, 'waiting', None) or '?'})"
    elif reason and reason != state:
        text += f" ({reason})"
    return text
