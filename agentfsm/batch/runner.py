"""``BatchRunner``: many conversations, each turn of all of them in one Message Batch, at half the price.

Every conversation runs the same loop as ``Agent.run`` (``agentfsm.machine.loop``):
the runner holds one loop per conversation and is its interpreter, as the
drivers are — only the I/O of a request differs: the loop's ``SendRequest`` is
answered from a batch. A round:

1. **Advance** every conversation that is not waiting on a batch until it needs
   a request or is finished: transitions without I/O fire at once, tool calls
   run locally with the agent's executor (the tool steps of different
   conversations run concurrently, ``tool_workers`` at a time).
2. **Submit** every conversation that needs a request: one batch request each
   (the params ``plan()`` gave; ``custom_id`` names the conversation, turn,
   stored revision and attempt), split at the API's limits (100,000 requests,
   256 MB) and by the betas each request goes with (the plan's: the agent's,
   and those a compaction, fallbacks or a credit token need; a batch's betas
   are its create call's). Each batch is written to the ledger (``agentfsm.batch.ledger``)
   *before* it is created and gets its id right after.
3. **Poll** the open batches every ``poll_interval`` seconds until one ends.
4. **Apply** its results, each to its own conversation: a ``succeeded``
   message is read exactly as the plain path reads a reply
   (``agentfsm.wire.api``) and completes the request; an ``errored`` result
   with a retryable error (overloaded, rate limit, API error) goes into the next
   batch, up to ``Policy.stream_retries`` resends (each resend is a request, so
   ``max_turns`` and the budgets are checked before it), any other error ends
   the conversation ``failed`` with it (through ``complete_request``, so a
   rejected prefill falls back to a prompt continuation as it would in
   ``run``); ``expired`` and ``canceled`` requests are resent once, then
   fail the conversation. One conversation's failure never stops the others.
   A line of the results file that cannot be used (not JSON, not an object,
   no ``custom_id``, no result of a known type) costs only its own request:
   every other line is applied, and a request left without a usable line
   (whether or not its bad line named it) counts as ``missing``: resent
   once, like an expired one, then failed (``batch.result_unreadable`` says
   which line and why).

**A deadline** (``deadline=``, or the agents' wall budget) stops the polling; a batch
still in progress is left for a later run on the same store (``agentfsm.batch.deadline``).

The runner is sync, as ``run()`` is: an agent with ``async def`` hooks or actions is refused
(``ConfigurationError``) before anything is stored or sent. A conversation that reaches a ``Wait``
ends its run ``waiting``: the runner takes prompts, not decisions, so it is decided and carried on
from the store with ``agent.resume(id, store=..., trigger=...)``.

Nothing is paid twice after a crash: a new runner on the same store finds the
open batches in the ledger and polls them; a conversation whose stored
revision is still the one its entry names waits on that batch instead of being
sent again, and a result is applied only at that revision (so one applied
before the crash is skipped as stale). A batch created by a process that died
before it stored the id is found by listing the recent batches (same number of
requests, created after the record, not known to the ledger) and adopted.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import anthropic

from agentfsm import clock as clocks
from agentfsm.batch import deadline as deadlines
from agentfsm.batch.ledger import BatchRecord, Entry, Ledger, ledger_for
from agentfsm.batch.progress import BatchProgress, BatchStatus
from agentfsm.batch.requests import (
    LAPSE_RESENDS,
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    RETRYABLE_ERRORS,
    chunks,
    custom_id,
    failure_of,
    find_orphan,
    parse_reply,
    result_lines,
)
from agentfsm.batch.state import BatchRun, Pending, forget_attempt, settle
from agentfsm.errors import BatchError, ConfigurationError, ConversationLockedError, StoreError, require_conversation_id
from agentfsm.machine import core, loop
from agentfsm.machine.conversation import Conversation
from agentfsm.machine.plan import AwaitAction, AwaitHook, Effect, Reconcile, RunTools, SendRequest, ToolsDue
from agentfsm.machine.table import REQUESTING
from agentfsm.observe.events import EventLog, Level
from agentfsm.redaction import redact
from agentfsm.result import RunError, RunResult
from agentfsm.stores.memory import MemoryStore
from agentfsm.tools.reconcile import check_all
from agentfsm.wire import api

if TYPE_CHECKING:
    from agentfsm.agent import Agent
    from agentfsm.stores.base import Store
    from agentfsm.wire.messages import Message


class BatchRunner:
    """Runs many conversations of one agent through the Message Batches API.

    ::

        runner = BatchRunner(ResearchAgent(client=anthropic.Anthropic()), store=SQLiteStore("runs.db"))
        results = runner.run({"ticket-1": "prompt", "ticket-2": [...messages...]})  # {id: RunResult}
        results = runner.run(["p1", "p2"], run_id="nightly")                           # [RunResult, ...]

    ``store`` keeps the conversations (and, beside them, the batch ledger): run
    again with the same store and the same ids after a crash to carry on — a
    conversation already stored is carried on (or, finished, just reported),
    never started again. Without a store, a ``MemoryStore`` (no resume across
    processes). ``ledger`` overrides where batch records are kept (needed for a
    store ``ledger_for`` does not know). ``progress`` is called with a
    ``BatchProgress`` after every submit, poll and applied batch.

    ``deadline`` (seconds from the start of ``run``) bounds how long a run polls; so does the agents'
    ``Policy.max_wall_seconds`` (the earlier of the two). A batch still in progress then is left for a later
    run on the same store (see the module docstring). ``sleep`` waits between polls (default: the run's clock).
    """

    def __init__(
        self,
        agent: Agent,
        *,
        store: Store | None = None,
        ledger: Ledger | None = None,
        poll_interval: float = 60.0,
        max_batch_requests: int = MAX_BATCH_REQUESTS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        tool_workers: int = 8,
        submit_retries: int = 3,
        progress: Callable[[BatchProgress], None] | None = None,
        sleep: Callable[[float], None] | None = None,
        deadline: float | None = None,
    ) -> None:
        if poll_interval < 0:
            raise ConfigurationError(f"poll_interval must be >= 0 seconds, got {poll_interval}")
        if deadline is not None and not deadline > 0:  # NaN too
            raise ConfigurationError(f"deadline must be a number of seconds > 0 (or None), got {deadline!r}")
        if not 1 <= max_batch_requests <= MAX_BATCH_REQUESTS:
            raise ConfigurationError(f"max_batch_requests must be 1..{MAX_BATCH_REQUESTS}, got {max_batch_requests}")
        if not 1 <= max_batch_bytes <= MAX_BATCH_BYTES:
            raise ConfigurationError(f"max_batch_bytes must be 1..{MAX_BATCH_BYTES}, got {max_batch_bytes}")
        if tool_workers < 1:
            raise ConfigurationError(f"tool_workers must be at least 1, got {tool_workers}")
        self.agent = agent
        self.store: Store = store if store is not None else MemoryStore()
        self.ledger: Ledger = ledger if ledger is not None else ledger_for(self.store)
        self.poll_interval = poll_interval
        self.max_batch_requests = max_batch_requests
        self.max_batch_bytes = max_batch_bytes
        self.tool_workers = tool_workers
        self.submit_retries = submit_retries
        self.progress = progress
        self.deadline = deadline
        self._sleep = sleep
        #: The last progress reported (also when no ``progress`` callback is set).
        self.last_progress: BatchProgress | None = None
        self._run: BatchRun | None = None
        self._once: tuple[anthropic.Anthropic, anthropic.Anthropic] | None = None  # the client, without SDK retries

    # --- the public entry point -----------------------------------------------------------------------

    def run(
        self,
        prompts: Mapping[str, str | Sequence[Message]] | Sequence[str | Sequence[Message]],
        *,
        run_id: str | None = None,
    ) -> Any:
        """Run every conversation to a final state; ``{id: RunResult}`` for a mapping, a list in order for a sequence.

        A list's conversations are named ``<run_id>-<index>``; pass the same ``run_id`` again to
        carry a crashed list run on (without one a fresh id is made, so nothing is resumed).
        """
        if isinstance(prompts, str | bytes):
            raise ConfigurationError("BatchRunner.run takes many prompts: a dict {id: prompt} or a list of prompts")
        if run_id is not None:
            require_conversation_id(run_id, "BatchRunner.run's run_id")
        rid = run_id if run_id is not None else f"batchrun_{uuid.uuid4().hex[:12]}"
        if isinstance(prompts, Mapping):
            items = [(str(k), v) for k, v in prompts.items()]
        else:
            items = [(f"{rid}-{i}", p) for i, p in enumerate(prompts)]
        if len({cid for cid, _ in items}) != len(items):
            raise ConfigurationError("two prompts have the same conversation id")
        results = self.run_conversations(items, run_id=rid)
        if isinstance(prompts, Mapping):
            return results
        return [results[cid] for cid, _ in items]

    def run_conversations(
        self, items: Sequence[tuple[str, str | Sequence[Message]]], *, run_id: str
    ) -> dict[str, RunResult]:
        """``run`` for ``(conversation_id, prompt)`` pairs; results by id."""
        for cid, _ in items:  # every id, before anything is stored or sent
            require_conversation_id(cid, "BatchRunner.run's prompts")
        agent = self.agent
        _ = agent.client  # a missing key or an async client is reported now, before anything is stored
        parts = agent.async_parts()
        if parts:  # the runner is sync (as run() is): refused now, before anything is stored or sent
            raise ConfigurationError(
                f"{type(agent).__name__} has async hooks or actions ({', '.join(parts)}): BatchRunner runs "
                "conversations with the sync client and no event loop to await them; run it with arun(), astream() "
                "or aresume() and an anthropic.AsyncAnthropic client"
            )
        clock = clocks.current()  # the conversations opened below read their wall time on it too
        log = EventLog(run_id, agent.logger, agent.secrets())
        state = BatchRun(run_id=run_id, log=log, convs={}, clock=clock, started=clock.now())
        self._run = state
        for cid, prompt in items:
            state.convs[cid] = self._open(cid, prompt)
        pool = state.pool = ThreadPoolExecutor(self.tool_workers, thread_name_prefix="agentfsm-batch-tools")
        try:
            self._claim_all(state)
            self._recover(state)
            first = True
            while True:
                pending = self._advance(state)
                if pending:
                    if deadlines.passed(state, self.deadline):
                        deadlines.leave_unsent(state, pending)  # no new batch after the deadline
                    else:
                        self._submit(state, pending)
                if not state.open:
                    break
                ended = self._poll(state, wait_first=not first or bool(pending))
                if not ended:  # the deadline passed first
                    self._leave_unfinished(state)
                    break
                for record in ended:
                    self._apply(state, record)
                first = False
            self._report(state, finished=True)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # nothing runs after a normal end; after a crash, don't wait
            for conv in state.convs.values():
                conv._persistence.release(conv)
        return {cid: self._result(state, conv) for cid, conv in state.convs.items()}

    # --- opening and recovering ------------------------------------------------------------------------

    def _open(self, cid: str, prompt: str | Sequence[Message]) -> Conversation:
        try:
            self.store.load(cid)
        except KeyError:
            conv = self.agent.start(prompt, conversation_id=cid, store=self.store)
        else:
            conv = self.agent.load(cid, store=self.store)
        conv.runstate.batched = True
        return conv

    def _claim_all(self, state: BatchRun) -> None:
        """Take every unfinished conversation's lease: one held by a live worker is left to it."""
        lease = self.agent.policy.lease_seconds
        for cid, conv in state.convs.items():
            if not conv.stopped and not self.store.acquire(cid, conv._persistence.owner, lease):
                self._drop(state, conv, ConversationLockedError(cid))

    def _recover(self, state: BatchRun) -> None:
        """Pick up what an earlier process left: its batches, and what each conversation already tried."""
        mine = [cid for cid in state.convs if cid not in state.errors]
        for entry in self.ledger.entries_for(mine):
            state.tried.setdefault((entry.conversation_id, entry.revision), []).append(entry.outcome)
        resumed: list[str] = []
        for record in self.ledger.open_batches():
            ours = [e for e in record.unsettled if e.conversation_id in state.convs]
            if not ours:
                continue
            waiting = [e for e in ours if self._still_waits(state, e)]
            if not waiting:  # every conversation of ours moved on before the crash: nothing to wait for
                self._settle(state, record, {e.custom_id: "stale" for e in ours})
                continue
            if record.batch_id is None:
                found = self._find_orphan(record)
                if found is None:  # the create never reached the API: the requests are made again
                    self.ledger.abandon(record.key)
                    for e in ours:
                        forget_attempt(state, e)
                    continue
                self.ledger.submitted(record.key, found)
                record.batch_id = found
                self._event(state, "batch.adopted", batch_id=found, requests=len(record.entries))
            held = []
            for e in waiting:
                conv = state.convs[e.conversation_id]
                # The loop plans the request again and counts its turn (the stored snapshot has it in flight).
                self._try(state, conv, None)
                if isinstance(state.effects.get(conv.id), SendRequest):
                    state.waiting[e.conversation_id] = (record.key, e.custom_id)
                    held.append(e)
            if not held:  # planned again, each stopped at a limit first (a spent wall budget): nothing to poll for
                self._settle(state, record, {e.custom_id: "stale" for e in ours})
                continue
            state.open[record.key] = record
            state.status[record.key] = BatchStatus(record.batch_id or "?", "in_progress", {})
            resumed.append(record.batch_id or "?")
        if resumed:
            self._event(state, "batch.resumed", batch_ids=resumed, waiting=len(state.waiting))

    @staticmethod
    def _still_waits(state: BatchRun, entry: Entry) -> bool:
        conv = state.convs[entry.conversation_id]
        return (
            entry.conversation_id not in state.errors
            and not conv.stopped
            and conv.state == REQUESTING
            and conv.runstate.revision == entry.revision
        )

    def _find_orphan(self, record: BatchRecord) -> str | None:
        """The batch created for ``record`` by a process that died before storing its id, if the API has one."""
        return find_orphan(self._batches(record.beta), record, self.ledger.batch_ids(), self._betas(record.beta))

    # --- advancing -------------------------------------------------------------------------------------------

    def _step(self, state: BatchRun, conv: Conversation, outcome: Any) -> Effect | None:
        """Send ``outcome`` into the conversation's loop (starting one if it has none): the next effect it waits
        on, or None once finished or waiting. Tool calls start at once, in the pool (the loop has just recorded
        them as started; their batch is committed when it returns). Sync: an async hook or action is refused."""
        steps = state.loops.get(conv.id)
        if steps is None:
            steps = state.loops[conv.id] = loop.steps(conv)
            outcome = None
        try:
            effect = steps.send(outcome)
            while isinstance(effect, Reconcile):  # calls in doubt after a crash: their checks, run here
                effect = steps.send(check_all(effect.calls, self.agent.tool_map, effect.timeout))
        except StopIteration:
            state.loops.pop(conv.id, None)
            state.effects.pop(conv.id, None)
            return None
        if isinstance(effect, AwaitHook | AwaitAction):
            core.require_sync(conv)  # raises, saying why
        state.effects[conv.id] = effect
        if isinstance(effect, RunTools):
            assert state.pool is not None
            job = state.pool.submit(
                self.agent.executor.execute, effect.calls, self.agent.tool_map, core.tool_timeout(conv)
            )
            state.running[job] = conv
        return effect

    def _again(self, state: BatchRun, conv: Conversation) -> None:
        """Let the request the conversation waits on go: its loop starts over and plans it again (as after a
        crash), so a resend is a request like any other — counted, and checked against the limits first."""
        steps = state.loops.pop(conv.id, None)
        state.effects.pop(conv.id, None)
        if steps is not None:
            steps.close()

    def _advance(self, state: BatchRun) -> list[Pending]:
        """Run every free conversation's loop until it needs a request or is finished; the requests to send.
        Tool calls start here (``ToolsDue`` is answered here only): once a whole batch's results were applied,
        so a crash while applying them leaves no call in doubt."""
        for cid, conv in state.convs.items():
            if cid in state.errors or cid in state.waiting:
                continue
            effect = state.effects.get(cid)
            if (effect is None and not conv.stopped) or isinstance(effect, ToolsDue):
                self._run_on(state, conv, None)
        while state.running:
            done, _ = wait(state.running, return_when=FIRST_COMPLETED)
            for job in done:
                conv = state.running.pop(job)
                try:
                    results = job.result()
                except Exception as exc:
                    self._drop(state, conv, exc)
                    continue
                self._run_on(state, conv, results)
        sends = [
            (state.convs[cid], effect)
            for cid, effect in state.effects.items()
            if isinstance(effect, SendRequest) and cid not in state.waiting and cid not in state.errors
        ]
        return self._prepare(state, sends)

    def _run_on(self, state: BatchRun, conv: Conversation, outcome: Any) -> None:
        """``_try``, then start the tool calls the loop announces (``ToolsDue``) until it needs something else."""
        self._try(state, conv, outcome)
        while isinstance(state.effects.get(conv.id), ToolsDue) and conv.id not in state.errors:
            self._try(state, conv, None)

    def _try(self, state: BatchRun, conv: Conversation, outcome: Any) -> None:
        """``_step``, and a conversation that raises stops there (the others carry on); a store error stops all."""
        try:
            self._step(state, conv, outcome)
        except StoreError:
            raise
        except Exception as exc:
            self._drop(state, conv, exc)

    def _prepare(self, state: BatchRun, sends: list[tuple[Conversation, SendRequest]]) -> list[Pending]:
        """Make each request's batch request and ledger entry (the loop counted the request when it planned it)."""
        pending: list[Pending] = []
        for conv, plan in sends:
            tried = state.tried.setdefault((conv.id, conv.runstate.revision), [])
            attempt = len(tried) + 1
            entry = Entry(
                custom_id=custom_id(conv.id, conv.turns, conv.runstate.revision, attempt),
                conversation_id=conv.id,
                revision=conv.runstate.revision,
                turn=conv.turns,
                attempt=attempt,
            )
            request = {"custom_id": entry.custom_id, "params": plan.params}
            try:
                size = len(json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()) + 1
            except (TypeError, ValueError) as exc:  # not JSON: the request cannot be sent, as on the plain path
                self._complete(state, conv, api.failure_from(exc), 0.0)
                continue
            pending.append(Pending(conv, entry, request, size, plan.betas))
        return pending

    # --- submitting ------------------------------------------------------------------------------------------

    def _submit(self, state: BatchRun, pending: list[Pending]) -> None:
        by_betas: dict[tuple[str, ...], list[Pending]] = {}
        for item in pending:
            by_betas.setdefault(item.betas, []).append(item)
        for betas, group in by_betas.items():
            for chunk in chunks(group, max_requests=self.max_batch_requests, max_bytes=self.max_batch_bytes):
                self._submit_chunk(state, chunk, betas)
        self._report(state)

    def _submit_chunk(self, state: BatchRun, chunk: list[Pending], betas: tuple[str, ...]) -> None:
        """Record, create and start waiting on one batch of ``chunk``'s requests, all going with ``betas``."""
        beta = bool(betas)
        entries: dict[str, Entry] = {}
        for item in chunk:
            while item.entry.custom_id in entries:  # two ids hashed alike: keep custom_ids unique
                item.entry = Entry(**{**item.entry.__dict__, "custom_id": item.entry.custom_id[:60] + "-x"})
                item.request = {**item.request, "custom_id": item.entry.custom_id}
            entries[item.entry.custom_id] = item.entry
        record = BatchRecord(key=uuid.uuid4().hex, batch_id=None, created_at=time.time(), beta=beta, entries=entries)
        self.ledger.begin(record)  # before the batch exists: a crash from here on cannot lose it
        for item in chunk:
            state.tried.setdefault((item.conv.id, item.entry.revision), []).append(None)
        batch_id = self._create(state, record, chunk, betas)
        if batch_id is None:
            return
        self.ledger.submitted(record.key, batch_id)
        record.batch_id = batch_id
        state.open[record.key] = record
        state.status[record.key] = BatchStatus(batch_id, "in_progress", {"processing": len(chunk)})
        state.batches_submitted += 1
        self._event(state, "batch.submitted", batch_id=batch_id, requests=len(chunk), bytes=sum(i.size for i in chunk))
        for item in chunk:
            state.waiting[item.conv.id] = (record.key, item.entry.custom_id)
            item.conv.emit(
                "batch.request_added", batch_id=batch_id, custom_id=item.entry.custom_id, attempt=item.entry.attempt
            )

    def _create(self, state: BatchRun, record: BatchRecord, chunk: list[Pending], betas: tuple[str, ...]) -> str | None:
        """Create the batch: its id; None when the API refused it (its conversations then fail with the error)."""
        requests = [item.request for item in chunk]
        attempts = 0
        while True:
            try:
                given = {"betas": list(betas)} if betas else {}
                batch = self._batches(record.beta, retries=False).create(requests=requests, **given)
                return str(batch.id)
            except anthropic.APIStatusError as exc:
                if 400 <= exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                    self.ledger.abandon(record.key)  # refused: no batch was created
                    failure = api.failure_from(exc)
                    for item in chunk:
                        forget_attempt(state, item.entry)
                        self._complete(state, item.conv, failure, 0.0)
                    return None
                error: Exception = exc
            except anthropic.APIConnectionError as exc:  # the batch may or may not exist now
                error = exc
            attempts += 1
            if attempts > self.submit_retries:
                raise BatchError(f"creating a Message Batch of {len(chunk)} requests", error) from error
            self._wait(state, min(self.poll_interval, 2.0**attempts))
            try:
                found = self._find_orphan(record)
            except BatchError:
                continue  # the API is still unreachable: try again (bounded by submit_retries)
            if found is not None:
                self._event(state, "batch.adopted", batch_id=found, requests=len(chunk))
                return found

    # --- polling and applying ---------------------------------------------------------------------------------

    def _wait(self, state: BatchRun, seconds: float) -> None:
        (self._sleep or state.clock.sleep)(seconds)

    def _poll(self, state: BatchRun, *, wait_first: bool) -> list[BatchRecord]:
        """Poll the open batches until at least one has ended: those that did; [] once the deadline passed first
        (the wait before a poll is cut short so that the last poll is at the deadline)."""
        while True:
            if wait_first:
                if deadlines.passed(state, self.deadline):
                    return []
                left = deadlines.time_left(state, self.deadline)
                self._wait(state, self.poll_interval if left is None else min(self.poll_interval, left[0]))
            wait_first = True
            self._renew_leases(state)
            ended: list[BatchRecord] = []
            for key, record in list(state.open.items()):
                assert record.batch_id is not None
                try:
                    batch = self._batches(record.beta).retrieve(record.batch_id, **self._betas(record.beta))
                except anthropic.AnthropicError as exc:
                    raise BatchError(f"polling Message Batch {record.batch_id}", exc) from exc
                counts = batch.request_counts.model_dump()
                state.status[key] = BatchStatus(record.batch_id, batch.processing_status, counts)
                self._event(
                    state,
                    "batch.polled",
                    level="debug",
                    batch_id=record.batch_id,
                    processing_status=batch.processing_status,
                    request_counts=counts,
                )
                if batch.processing_status == "ended":
                    ended.append(record)
                    self._event(
                        state,
                        "batch.ended",
                        batch_id=record.batch_id,
                        request_counts=counts,
                        elapsed_s=round(time.time() - record.created_at, 3),
                    )
            self._report(state)
            if ended:
                return ended
            if deadlines.passed(state, self.deadline):
                return []

    def _renew_leases(self, state: BatchRun) -> None:
        """Keep the leases of conversations waiting in a batch (a batch may take hours; leases last minutes)."""
        lease = self.agent.policy.lease_seconds
        if time.monotonic() - state.last_renewal < lease / 3:
            return
        state.last_renewal = time.monotonic()
        for cid in list(state.waiting):
            conv = state.convs[cid]
            if not self.store.acquire(cid, conv._persistence.owner, lease):
                self._drop(state, conv, ConversationLockedError(cid))

    def _apply(self, state: BatchRun, record: BatchRecord) -> None:
        """Apply an ended batch's results to their conversations; settle them in the ledger."""
        assert record.batch_id is not None
        outcomes: dict[str, str] = {}
        latency_ms = max(0.0, (time.time() - record.created_at) * 1000)
        try:
            results = self._batches(record.beta).with_streaming_response.results(
                record.batch_id, **self._betas(record.beta)
            )
            with results as response:
                for number, read in result_lines(response.iter_lines()):
                    entry = record.entries.get(read.custom_id) if read.custom_id is not None else None
                    if read.custom_id is not None and entry is None:
                        continue  # not ours (another run's conversation)
                    if read.result is None:  # its request, when it can be told, counts as missing (below)
                        self._event(
                            state,
                            "batch.result_unreadable",
                            level="warning",
                            batch_id=record.batch_id,
                            line=number,
                            custom_id=read.custom_id,
                            problem=read.problem,
                        )
                        continue
                    assert entry is not None
                    if entry.settled or entry.conversation_id not in state.convs:
                        continue  # settled before a crash, or another run's conversation
                    outcomes[entry.custom_id] = self._apply_one(state, record, entry, read.result, latency_ms)
        except anthropic.AnthropicError as exc:
            raise BatchError(f"reading the results of Message Batch {record.batch_id}", exc) from exc
        for entry in record.unsettled:
            if entry.custom_id not in outcomes and entry.conversation_id in state.convs:
                # No usable line for it (none, or one that could not be read): treated like an expired request.
                outcomes[entry.custom_id] = self._apply_one(state, record, entry, {"type": "missing"}, latency_ms)
        self._settle(state, record, outcomes)
        del state.open[record.key]
        self._report(state)

    def _leave_unfinished(self, state: BatchRun) -> None:
        """The deadline passed with batches in progress: their entries are left ``unfinished``, the records open."""
        for key, record in state.open.items():
            self._settle(state, record, deadlines.leave_waiting(state, key, record))

    def _settle(self, state: BatchRun, record: BatchRecord, outcomes: Mapping[str, str]) -> None:
        settle(state, self.ledger, record, outcomes)

    def _apply_one(
        self, state: BatchRun, record: BatchRecord, entry: Entry, result: dict[str, Any], latency_ms: float
    ) -> str:
        """Drive one conversation with its result; the outcome to settle."""
        cid = entry.conversation_id
        conv = state.convs[cid]
        fields: dict[str, Any] = {"batch_id": record.batch_id, "custom_id": entry.custom_id}
        if state.waiting.get(cid) != (record.key, entry.custom_id) or not self._still_waits(state, entry):
            conv.emit("batch.result_stale", level="warning", **fields)
            return "stale"
        del state.waiting[cid]
        kind = str(result.get("type"))
        state.results[kind] += 1
        try:
            if kind == "succeeded":
                outcome = parse_reply(result.get("message"))
                if isinstance(outcome, api.Reply) and isinstance(outcome.usage, dict):
                    outcome.usage.setdefault("service_tier", "batch")  # billed at the batch price
                conv.emit("batch.result_applied", result=kind, error_type=None, **fields)
                self._complete(state, conv, outcome, latency_ms)
                return kind
            tried = state.tried.get((cid, entry.revision), [])
            if kind == "errored":
                failure = failure_of(result)
                retried = sum(1 for o in tried if o is not None and o.split(":", 1)[-1] in RETRYABLE_ERRORS)
                if failure.type in RETRYABLE_ERRORS and retried < self.agent.policy.stream_retries:
                    conv.emit("batch.request_resent", level="warning", reason=failure.type, attempt=entry.attempt + 1)
                    self._again(state, conv)
                    return f"errored:{failure.type}"
                conv.emit("batch.result_applied", level="warning", result=kind, error_type=failure.type, **fields)
                self._complete(state, conv, failure, latency_ms)
                return f"errored:{failure.type}"
            lapsed = sum(1 for o in tried if o in ("expired", "canceled", "missing"))
            if lapsed < LAPSE_RESENDS:
                conv.emit("batch.request_resent", level="warning", reason=kind, attempt=entry.attempt + 1)
                self._again(state, conv)
                return kind
            conv.emit("batch.result_applied", level="warning", result=kind, error_type=f"batch_{kind}", **fields)
            message = (
                f"the request was {kind} in Message Batch {record.batch_id} after being sent {entry.attempt} times"
                if kind in ("expired", "canceled")
                else f"Message Batch {record.batch_id} gave no usable result for the request ({kind!r})"
            )
            self._complete(state, conv, api.RequestFailure(type=f"batch_{kind}", message=message), latency_ms)
            return kind
        except StoreError:
            raise
        except Exception as exc:
            self._drop(state, conv, exc)
            return f"error:{type(exc).__name__}"

    def _complete(
        self, state: BatchRun, conv: Conversation, outcome: api.Reply | api.RequestFailure, latency_ms: float
    ) -> None:
        """Answer the conversation's request: its loop completes it and runs on to its next effect."""
        self._try(state, conv, (outcome, latency_ms))

    # --- the SDK -----------------------------------------------------------------------------------------------

    def _batches(self, beta: bool, *, retries: bool = True) -> Any:
        """The SDK's batches resource. Creating goes without the SDK's own retries: a create retried after a
        timeout could make a second batch (paid twice); ``_create`` retries itself, looking for the batch first."""
        client = self.agent.client
        if not retries:
            if self._once is None or self._once[0] is not client:
                self._once = (client, client.with_options(max_retries=0))
            client = self._once[1]
        return client.beta.messages.batches if beta else client.messages.batches

    def _betas(self, beta: bool) -> dict[str, Any]:
        return {"betas": list(self.agent.betas)} if beta and self.agent.betas else {}

    # --- reporting --------------------------------------------------------------------------------------------

    def _drop(self, state: BatchRun, conv: Conversation, exc: BaseException) -> None:
        """A conversation raised: it stops here (its lease given back); the others carry on."""
        state.errors[conv.id] = exc
        state.waiting.pop(conv.id, None)
        message = redact(str(exc), self.agent.secrets())
        conv.emit("batch.conversation_error", level="error", error_type=type(exc).__name__, message=message)
        if not isinstance(exc, ConversationLockedError):
            conv._persistence.release(conv)

    def _result(self, state: BatchRun, conv: Conversation) -> RunResult:
        result = conv.result()
        exc = state.errors.get(conv.id)
        if exc is not None:
            error = RunError(type=type(exc).__name__, message=redact(str(exc), self.agent.secrets()))
            result = result.model_copy(update={"error": error})
            result.attach_events(conv.log.raw)
        elif conv.id in state.unfinished:
            error = deadlines.unfinished_error(state, conv, self.deadline)
            result = result.model_copy(update={"reason": "batch_unfinished", "error": error})
            result.attach_events(conv.log.raw)
        return result

    def _event(self, state: BatchRun, name: str, *, level: Level = "info", **data: Any) -> None:
        state.event(name, level=level, **data)

    def _report(self, state: BatchRun, *, finished: bool = False) -> None:
        progress = self.last_progress = state.progress(finished=finished)
        if self.progress is not None:
            self.progress(progress)

    @property
    def events(self) -> list[Any]:
        """The runner's own events (``batch.submitted``, ``batch.polled`` ...) of the last run, as ``Event`` models."""
        return self._run.log.events if self._run is not None else []
