"""What one ``BatchRunner.run`` holds while it goes: its conversations, their loops and the effect each waits
on, the requests going into the next batch, the open batches, and what each conversation already tried."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agentfsm.batch.ledger import BatchRecord, Entry
from agentfsm.batch.progress import BatchStatus
from agentfsm.machine import loop
from agentfsm.machine.conversation import Conversation
from agentfsm.machine.plan import Effect
from agentfsm.observe.events import EventLog
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
    started: float = field(default_factory=time.monotonic)
    last_renewal: float = field(default_factory=time.monotonic)


def forget_attempt(state: BatchRun, entry: Entry) -> None:
    """An entry whose batch was never created is no attempt."""
    tried = state.tried.get((entry.conversation_id, entry.revision))
    if tried is not None and None in tried:
        tried.remove(None)
