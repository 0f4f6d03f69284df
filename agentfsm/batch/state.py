"""What one ``BatchRunner.run`` holds while it goes: its conversations, their loops and the effect each waits
on, the requests going into the next batch, the open batches, and what each conversation already tried."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agentfsm.batch.ledger import BatchRecord, Entry, Ledger
from agentfsm.batch.progress import BatchProgress, BatchStatus, totals
from agentfsm.clock import SYSTEM, Clock
from agentfsm.machine import loop
from agentfsm.machine.conversation import Conversation
from agentfsm.machine.plan import Effect
from agentfsm.observe.events import EventLog, Level
from agentfsm.tools.calls import ToolResult


@dataclass
class Pending:
    """A conversation whose request is about to go into a batch."""

    conv: Conversation
    entry: Entry
    request: dict[str, Any]
    size: int
    #: The betas the request goes with (the plan's: the agent's, and those its parameters need). A batch's betas
    #: are its create call's header, so requests with other betas go into another batch.
    betas: tuple[str, ...] = ()


@dataclass
class BatchRun:
    """The state of one ``BatchRunner.run``."""

    run_id: str
    log: EventLog
    convs: dict[str, Conversation]
    #: Each conversation's loop (``agentfsm.machine.loop.steps``), and the effect it yielded and waits on.
    loops: dict[str, loop.Steps] = field(default_factory=dict)
    effects: dict[str, Effect] = field(default_factory=dict)
    #: Where tool calls run (``tool_workers`` threads), and the calls running there, by conversation.
    pool: ThreadPoolExecutor | None = None
    running: dict[Future[list[ToolResult]], Conversation] = field(default_factory=dict)
    #: Conversation id → (record key, custom_id) of the batch request it waits for.
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The batches this run polls, by record key.
    open: dict[str, BatchRecord] = field(default_factory=dict)
    #: Conversations that raised and stopped advancing.
    errors: dict[str, BaseException] = field(default_factory=dict)
    #: (conversation id, revision) → outcomes of the requests already made at that revision.
    tried: dict[tuple[str, int], list[str | None]] = field(default_factory=dict)
    #: Batch status by record key (for the progress display).
    status: dict[str, BatchStatus] = field(default_factory=dict)
    results: Counter[str] = field(default_factory=Counter)
    batches_submitted: int = 0
    #: The clock the run reads and waits on (``agentfsm.clock``: the one current when it started), and its start.
    clock: Clock = SYSTEM
    started: float = 0.0
    last_renewal: float = field(default_factory=time.monotonic)
    #: What stopped the polling, once the deadline passed: ``deadline`` or ``max_wall_seconds``.
    stopped_by: str | None = None
    #: Conversations left at the deadline → the batch each waits on (None: its request was not sent).
    unfinished: dict[str, str | None] = field(default_factory=dict)

    def progress(self, *, finished: bool = False) -> BatchProgress:
        """The run as it stands, as the runner reports it."""
        states, usage, cost = totals(self.convs.values())
        return BatchProgress(
            run_id=self.run_id,
            conversations=len(self.convs),
            states=states,
            waiting=len(self.waiting),
            errors=len(self.errors),
            batches=[self.status[k] for k in self.open if k in self.status],
            batches_submitted=self.batches_submitted,
            results=dict(self.results),
            usage=usage,
            cost_usd=None if cost is None else round(cost, 6),
            elapsed_s=round(self.clock.now() - self.started, 3),
            finished=finished,
            unfinished=len(self.unfinished),
        )

    def event(self, name: str, *, level: Level = "info", **data: Any) -> None:
        """One of the runner's own events (on the run's id, where a conversation's events carry its id)."""
        self.log.emit(name, turn=0, state="batch", level=level, **data)


def settle(state: BatchRun, ledger: Ledger, record: BatchRecord, outcomes: Mapping[str, str]) -> None:
    """Record the outcomes of ``record``'s entries (by custom_id) in the ledger, the record and what each tried;
    a record left with no unsettled entry is finished."""
    ledger.settle(record.key, outcomes)
    for cid, outcome in outcomes.items():
        entry = record.entries[cid]
        record.entries[cid] = Entry(**{**entry.__dict__, "outcome": outcome})
        tried = state.tried.get((entry.conversation_id, entry.revision))
        if tried is not None and None in tried:
            tried[tried.index(None)] = outcome
    if not record.unsettled:
        ledger.finish(record.key)


def forget_attempt(state: BatchRun, entry: Entry) -> None:
    """An entry whose batch was never created is no attempt."""
    tried = state.tried.get((entry.conversation_id, entry.revision))
    if tried is not None and None in tried:
        tried.remove(None)
