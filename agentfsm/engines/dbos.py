"""Conversations as DBOS workflows: ``DBOSEngine`` (client) and ``DBOSWorker`` (``agentfsm worker dbos``).

DBOS Transact is a library over a system database: SQLite for one machine,
PostgreSQL for many. There is no server: workers and clients share the
database. ``pip install 'agentfsm[dbos]'``.

* One conversation is one workflow; its id is the conversation id (starting
  an id twice attaches to the first). Workflows wait on one queue per agent
  class (``agentfsm:MODULE:CLASS``), so a worker only takes the agents it serves.
* The durable steps are ``agentfsm.engines.core``'s: one per request attempt,
  one per tool call, a reply's calls run concurrently (after a marker step
  recording that they started). DBOS stores each step's output once, and nothing of its input, so
  the engine's store grows linearly with the conversation. Everything is stored
  as JSON (DBOS's portable format), in the order the API sent it.
* **Failover.** DBOS recovers a dead worker's workflows only when a worker
  with the same executor id starts again. So each ``DBOSWorker`` has its own
  executor id and holds a liveness lock for it while it lives (a PostgreSQL
  advisory lock on a connection of its own; on SQLite, an ``flock`` on a file
  beside the database), which the operating system frees when the process
  dies. Every worker sweeps now and then: a pending workflow whose executor's
  lock is free belongs to a dead worker, and goes back on its queue for a live one.
* **Rate limit.** With ``RateLimit(requests, period, max_in_flight)`` every
  request first takes a permit: a tiny workflow on a DBOS queue with that
  limiter and global concurrency, shared by all workers on the database
  (PostgreSQL; on SQLite DBOS counts them without a lock, exact with one worker).
* **Seen by ``agentfsm runs`` and ``agentfsm ui``.** DBOS's tables are not an agentfsm store: a
  worker given ``store=`` (``--store URL``; it may be the same SQLite file) also copies each
  conversation's snapshot there after every transition (``agentfsm.engines.mirror``).
* **Streaming.** Started with ``stream=True``, a conversation writes its text,
  transitions and tool calls to a DBOS stream that ``handle.stream()`` reads
  from any process; a request sent again after a crash takes back (``rewind``)
  what the dead worker showed only if the new reply differs.

DBOS is one instance per process: run one ``DBOSWorker`` per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agentfsm.engines.core import (
    AgentRegistry,
    DurableConversation,
    RateLimit,
    RequestRecord,
    StartInput,
    ToolsRecord,
    build_agents,
    executor_identity,
    mirror_for,
    perform_request,
    perform_tools,
    result_from_json,
    result_to_json,
    run_conversation,
    start_input,
)
from agentfsm.engines.liveness import FileLiveness, Liveness, PostgresLiveness
from agentfsm.engines.mirror import StoreMirror
from agentfsm.errors import (
    ConfigurationError,
    ConversationTimeoutError,
    DurableRunError,
    EngineError,
    UnknownDurableConversationError,
    require_conversation_id,
)
from agentfsm.machine import core
from agentfsm.machine.plan import SendRequest
from agentfsm.machine.streaming import ResultEvent, StreamEvent, TextView
from agentfsm.result import RunResult
from agentfsm.stores.location import sqlite_path
from agentfsm.tools.calls import ToolCall
from agentfsm.wire import api

try:
    from dbos import DBOS, DBOSClient, SetWorkflowID, WorkflowSerializationFormat
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigurationError("agentfsm.engines.dbos needs DBOS Transact: pip install 'agentfsm[dbos]'") from exc

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from agentfsm.agent import Agent
    from agentfsm.stores.base import Store

log = logging.getLogger("agentfsm.worker")

APP_NAME = "agentfsm"
#: Pinned, so a worker whose code changed still recovers and dequeues earlier workflows (DBOS would
#: otherwise version each deployment by a hash of its code, and leave the old one's workflows waiting).
APP_VERSION = "agentfsm-1"
WORKFLOW = "agentfsm.conversation"
PERMIT_WORKFLOW = "agentfsm.permit"
PERMIT_QUEUE = "agentfsm.requests"
STREAM = "agentfsm.events"
_FINISHED = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})


def queue_for(spec: str) -> str:
    """The queue a conversation of agent ``spec`` (``MODULE:CLASS``) waits on."""
    return f"agentfsm:{spec}"


# --- the workflow: agentfsm.engines.core's body, its I/O as DBOS steps ------------------------------------

_REGISTRY = AgentRegistry()
_SETTINGS: dict[str, Any] = {"rate_limit": None, "permit_timeout": 3600.0, "mirror": None}


class _DBOSSteps:
    """``core.Steps`` on DBOS.

    The first step, ``agentfsm.begin``, returns the execution that first ran it: this one, or one
    that died (then this execution is a recovery, replaying until a step's body runs in it). It also
    records the settings that change which steps the workflow takes, so a replay takes the same.
    """

    def __init__(self, start: StartInput) -> None:
        self.token = uuid.uuid4().hex  # this execution of the workflow
        self.live = False
        self.recovered = False
        self.rate_limited = False
        self.view: TextView | None = TextView() if start.stream else None
        self.resynced = False
        self.requests = 0

    @property
    def replaying(self) -> bool:
        return not self.live

    async def _mark(self) -> str:
        self.live = True
        return self.token

    async def begin(self) -> None:
        async def body() -> dict[str, Any]:
            self.live = True
            return {"token": self.token, "rate_limited": _SETTINGS["rate_limit"] is not None}

        first = await DBOS.run_step_async({"name": "agentfsm.begin"}, body)
        self.recovered = first["token"] != self.token
        self.rate_limited = bool(first["rate_limited"])

    async def _write(self, events: Sequence[StreamEvent | dict[str, Any]]) -> None:
        if events:
            values = [e if isinstance(e, dict) else e.model_dump(mode="json") for e in events]
            await DBOS.write_stream_async(STREAM, values)

    async def request(self, conv: DurableConversation, plan: SendRequest, attempt: int, delay: float) -> RequestRecord:
        self.requests += 1
        permit = await self._permit() if self.rate_limited else None

        async def body() -> dict[str, Any]:
            self.live = True
            view = self.view
            if view is None:
                record = await perform_request(conv.agent, plan.params, plan.timeout, delay, betas=plan.betas)
                return record.to_json()
            await self._write(core.drain(conv))
            retry = attempt > 0
            if self.recovered and not self.resynced:  # the dead execution may have streamed part of this reply
                self.resynced = True
                shown = await _shown_for(conv.id, conv.turns - attempt)
                if shown:
                    view.already_shown(shown)
                    retry = True
            view.begin(conv, retry=retry)
            # Marks where this request's text begins (a resend counts a turn: the request is its first attempt's).
            await self._write([{"type": "_request", "request": conv.turns - attempt, "attempt": attempt}])

            async def on_delta(delta: str) -> None:
                await self._write(view.feed(delta))

            record = await perform_request(
                conv.agent, plan.params, plan.timeout, delay, betas=plan.betas, on_delta=on_delta
            )
            await self._write(view.end(ok=isinstance(record.outcome, api.Reply)))
            return record.to_json()

        try:
            data = await DBOS.run_step_async({"name": "agentfsm.request"}, body)
        finally:
            if permit is not None:
                await DBOS.send_async(permit, "done", "agentfsm.done")
        return RequestRecord.from_json(data)

    async def _permit(self) -> str:
        """Wait for a permit to send a request: a workflow on the rate-limited queue; returns its id."""
        workflow_id = DBOS.workflow_id
        assert workflow_id is not None
        permit_id = f"{workflow_id}:permit:{self.requests}"
        with SetWorkflowID(permit_id):
            await DBOS.enqueue_workflow_async(PERMIT_QUEUE, _permit_workflow, _SETTINGS["permit_timeout"])
        while not await DBOS.get_event_async(permit_id, "agentfsm.granted", timeout_seconds=60):
            pass
        return permit_id

    async def tools(self, conv: DurableConversation, calls: list[ToolCall]) -> ToolsRecord:
        started_by = await DBOS.run_step_async({"name": "agentfsm.tools.started"}, self._mark)
        earlier = started_by != self.token  # recorded by an execution that died: its calls may have run

        def step(call: ToolCall) -> Callable[[], Coroutine[Any, Any, dict[str, Any]]]:
            async def body() -> dict[str, Any]:
                self.live = True
                if self.view is not None:
                    await self._write(core.drain(conv))
                return (await perform_tools(conv.agent, [call], earlier_attempt=earlier)).to_json()

            return body

        # A step per call, run concurrently: each result is in the journal as soon as its call finished, and a
        # replay gives back the finished ones. Their step ids are taken as each starts, in call order.
        done = await asyncio.gather(*(DBOS.run_step_async({"name": "agentfsm.tools"}, step(c)) for c in calls))
        return ToolsRecord.merged([ToolsRecord.from_json(d) for d in done])

    async def end(self, conv: DurableConversation) -> None:
        view = self.view
        if view is None:
            return

        async def body() -> None:
            await self._write([*core.drain(conv), *view.close(conv)])

        await DBOS.run_step_async({"name": "agentfsm.stream.end"}, body)
        await DBOS.close_stream_async(STREAM)


async def _shown_for(workflow_id: str, request: int) -> str:
    """What this conversation's stream already showed for ``request`` (the turn of its first attempt), written
    by an execution that died: every attempt's text, rewinds honoured."""
    shown: str | None = None
    reading = -1
    with contextlib.suppress(Exception):  # DBOSStreamTimeoutError: nothing more is written
        async for values in DBOS.read_stream_async(workflow_id, STREAM, polling_interval_sec=0.02, timeout_seconds=0.2):
            for value in values:
                kind = value.get("type")
                if kind == "_request":
                    reading = int(value["request"])
                    if reading == request and shown is None:
                        shown = ""
                elif reading == request and shown is not None:
                    if kind == "text":
                        shown += value["text"]
                    elif kind == "rewind":
                        shown = shown[: len(shown) - int(value["chars"])]
    return shown or ""


@DBOS.workflow(name=WORKFLOW, serialization_type=WorkflowSerializationFormat.PORTABLE)
async def _conversation_workflow(start: dict[str, Any]) -> dict[str, Any]:
    begin = StartInput.model_validate(start)
    agent = _REGISTRY.get(begin.agent)
    steps = _DBOSSteps(begin)
    await steps.begin()
    return result_to_json(await run_conversation(agent, begin, steps, _SETTINGS["mirror"]))


@DBOS.workflow(name=PERMIT_WORKFLOW, serialization_type=WorkflowSerializationFormat.PORTABLE)
async def _permit_workflow(timeout: float) -> None:
    """One request's place in the rate-limited queue, held until its conversation says the request is done."""
    await DBOS.set_event_async("agentfsm.granted", True)
    await DBOS.recv_async("agentfsm.done", timeout_seconds=timeout)


def _liveness(url: str) -> Liveness:
    return FileLiveness(_sqlite_path(url)) if url.startswith("sqlite") else PostgresLiveness(_libpq_url(url))


def _sqlite_path(url: str) -> Path:
    """The file of ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (SQLAlchemy's reading)."""
    return Path(sqlite_path(url) or url).resolve()


def _libpq_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def _check_url(url: str) -> str:
    scheme = urlsplit(url).scheme
    if not (scheme.startswith("sqlite") or scheme.startswith("postgres")):
        raise ConfigurationError(
            f"DBOS system database {url!r}: give sqlite:///PATH (one machine) or postgresql://USER@HOST/DB"
        )
    return url


# --- the worker -------------------------------------------------------------------------------------------------


class DBOSWorker:
    """Runs conversations of the given agents from a DBOS system database until stopped.

    ``agents``: ``MODULE:CLASS`` names, Agent classes (built with no arguments, so their client comes from
    ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``) or Agent instances. ``concurrency``: conversations this
    worker runs at once (None: no limit). ``recovery_interval``: seconds between sweeps for dead workers'
    conversations. ``poll_interval``: seconds between looks at the queues. ``store``: an agentfsm store (or its
    URL, as ``agentfsm runs --store`` takes) that every conversation's snapshots are copied to, so that
    ``agentfsm runs`` and ``agentfsm ui`` show them (``agentfsm.engines.mirror``).
    """

    def __init__(
        self,
        database: str,
        agents: Iterable[str | type[Agent] | Agent],
        *,
        concurrency: int | None = None,
        rate_limit: RateLimit | None = None,
        recovery_interval: float = 2.0,
        poll_interval: float = 0.25,
        shutdown_grace: float = 10.0,
        executor_id: str | None = None,
        store: Store | str | None = None,
    ) -> None:
        self.database = _check_url(database)
        self.store = store
        self.agents = build_agents(agents)
        if not self.agents:
            raise ConfigurationError("a worker needs at least one agent to serve")
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self.recovery_interval = recovery_interval
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self.executor_id = executor_id or executor_identity()
        self.queues: list[str] = []
        self.recovered = 0  # workflows of dead workers this worker put back on their queues
        self._liveness: Liveness | None = None
        self.mirror: StoreMirror | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        """Launch DBOS in this process and start taking conversations (returns at once)."""
        for agent, aliases in self.agents:
            for name in _REGISTRY.add(agent, *aliases):
                self.queues.append(queue_for(name))
        _SETTINGS["rate_limit"] = self.rate_limit
        _SETTINGS["mirror"] = self.mirror = mirror_for(self.store)
        self._liveness = _liveness(self.database)
        self._liveness.hold(self.executor_id)  # before DBOS may give this executor any workflow
        DBOS(
            config={
                "name": APP_NAME,
                "system_database_url": self.database,
                "executor_id": self.executor_id,
                "application_version": APP_VERSION,
                "log_level": "WARNING",
                # How often a wait (a permit, a stream) polls where the database cannot notify (SQLite).
                "notification_listener_polling_interval_sec": self.poll_interval,
            }
        )
        DBOS.listen_queues([*self.queues, PERMIT_QUEUE])
        DBOS.launch()
        for name in self.queues:
            DBOS.register_queue(
                name,
                worker_concurrency=self.concurrency,
                polling_interval_sec=self.poll_interval,
                on_conflict="always_update",
            )
        limit = self.rate_limit
        DBOS.register_queue(
            PERMIT_QUEUE,
            limiter=None
            if limit is None or limit.requests is None
            else {"limit": limit.requests, "period": limit.period},
            global_concurrency=None if limit is None else limit.max_in_flight,
            polling_interval_sec=min(self.poll_interval, 0.1),
            on_conflict="never_update" if limit is None else "always_update",
        )
        self._stop.clear()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="agentfsm-dbos-sweeper", daemon=True)
        self._sweeper.start()
        log.info("DBOS worker %s serving %s on %s", self.executor_id, ", ".join(_REGISTRY.names), self.database)

    def stop(self) -> None:
        """Stop taking conversations; running ones get ``shutdown_grace`` seconds, then live workers recover them."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join()
            self._sweeper = None
        DBOS.destroy(workflow_completion_timeout_sec=int(self.shutdown_grace))
        if self._liveness is not None:
            self._liveness.close()
            self._liveness = None
        if self.mirror is not None:
            self.mirror.close()
            _SETTINGS["mirror"] = self.mirror = None

    @contextlib.contextmanager
    def running(self) -> Iterator[DBOSWorker]:
        """The worker taking conversations in this process for the ``with`` block (tests, notebooks, demos;
        in production run ``agentfsm worker dbos``)."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def run(self, stop: threading.Event) -> None:
        """``start``, wait for ``stop``, ``stop``. Raises ``EngineError`` if the worker loses its liveness lock
        (its database connection dropped): other workers may then take its conversations, so it must not go on."""
        self.start()
        try:
            while not stop.wait(0.5):
                if self._lost.is_set():
                    raise EngineError(
                        f"worker {self.executor_id} lost its connection to {self.database}, and with it the lock "
                        "that tells other workers it is alive; stopping so that its conversations run in one place"
                    )
        finally:
            self.stop()

    def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            if self._liveness is not None and not self._liveness.held():
                self._lost.set()
                return
            try:
                self.sweep()
            except Exception:  # a database hiccup: the next sweep tries again
                log.exception("sweeping for dead workers' conversations failed")
            self._stop.wait(self.recovery_interval)

    def sweep(self) -> list[str]:
        """Put the pending workflows of dead workers back on their queues; returns the dead executor ids."""
        assert self._liveness is not None
        pending = DBOS.list_workflows(status="PENDING", app_version=APP_VERSION, load_input=False, load_output=False)
        owners = {w.executor_id for w in pending if w.executor_id and w.executor_id != self.executor_id}
        dead = sorted(e for e in owners if e.startswith("agentfsm-") and not self._liveness.alive(e))
        if dead:
            handles = DBOS._recover_pending_workflows(dead)
            self.recovered += len(handles)
            log.info("recovered %d conversation(s) of dead worker(s) %s", len(handles), ", ".join(dead))
        return dead


# --- the client ----------------------------------------------------------------------------------------------


class DBOSHandle:
    """A started conversation: wait for its result, or read its stream."""

    def __init__(self, engine: DBOSEngine, conversation_id: str) -> None:
        self.engine = engine
        self.conversation_id = conversation_id

    def status(self) -> str:
        """DBOS's status of the workflow: ENQUEUED, PENDING, SUCCESS, ERROR, ..."""
        return self.engine._status(self.conversation_id)

    def result(self, timeout: float | None = None) -> RunResult:
        """The ``RunResult`` (as ``Agent.run`` gives it), waiting up to ``timeout`` seconds (None: forever)."""
        return self.engine.result(self.conversation_id, timeout=timeout)

    def stream(self, timeout: float | None = None) -> Iterator[StreamEvent]:
        """Text, rewinds, transitions and tool calls as the worker produces them, then a ``ResultEvent``.

        Needs ``start(..., stream=True)``. Readable from any process, from the start, while the run goes on.
        """
        adapter = _stream_adapter()
        client = self.engine._client
        for values in client.read_stream(self.conversation_id, STREAM, polling_interval_sec=self.engine.poll_interval):
            for value in values:
                if not str(value.get("type", "_")).startswith("_"):
                    yield adapter.validate_python(value)
        yield ResultEvent(result=self.result(timeout))


def _stream_adapter() -> TypeAdapter[StreamEvent]:
    from pydantic import TypeAdapter

    return TypeAdapter(StreamEvent)


class DBOSEngine:
    """Start durable conversations on a DBOS system database and wait for their results.

    ``url``: ``sqlite:///PATH`` (one machine) or ``postgresql://USER@HOST/DB``, the database the
    workers (``agentfsm worker dbos --database URL``) use. Needs no worker in this process.
    """

    def __init__(self, url: str, *, poll_interval: float = 0.1) -> None:
        self.url = _check_url(url)
        self.poll_interval = poll_interval
        # The system database may not exist yet (no worker started). A client without the right to create it
        # can still use one that exists; if there is none, DBOSClient says so.
        with contextlib.suppress(Exception):
            DBOS.migrate(self.url)
        self._client = DBOSClient(system_database_url=self.url, application_name=APP_NAME)
        self._sql: Any = None
        self._closed = False

    def start(
        self,
        agent: str | type[Agent],
        prompt: str | Sequence[dict[str, Any]],
        *,
        conversation_id: str | None = None,
        stream: bool = False,
    ) -> DBOSHandle:
        """Enqueue a conversation of ``agent`` (``MODULE:CLASS`` or the class) for a worker; returns at once.

        Starting a ``conversation_id`` that was started before attaches to it: it never runs twice.
        """
        begin = start_input(agent, prompt, conversation_id)
        begin.stream = stream
        self._client.enqueue(
            {
                "queue_name": queue_for(begin.agent),
                "workflow_name": WORKFLOW,
                "workflow_id": begin.conversation_id,
                "app_version": APP_VERSION,
                "serialization_type": WorkflowSerializationFormat.PORTABLE,
            },
            begin.model_dump(mode="json"),
        )
        return DBOSHandle(self, begin.conversation_id)

    def handle(self, conversation_id: str) -> DBOSHandle:
        """A handle on a conversation started before (by any process)."""
        self._status(conversation_id)
        return DBOSHandle(self, conversation_id)

    def result(self, conversation_id: str, timeout: float | None = None) -> RunResult:
        """Wait up to ``timeout`` seconds (None: forever) for a conversation's result."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self._status(conversation_id)
            if status in _FINISHED:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise ConversationTimeoutError(conversation_id, timeout or 0.0)
            time.sleep(self.poll_interval)
        handle: Any = self._client.retrieve_workflow(conversation_id)
        if status != "SUCCESS":
            problem = status
            try:
                handle.get_result()
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            raise DurableRunError(conversation_id, problem)
        return result_from_json(handle.get_result())

    def stored_bytes(self, conversation_id: str) -> int:
        """Bytes DBOS keeps for a conversation: its input, each step's output, its stream and its result."""
        import sqlalchemy as sa

        if self._sql is None:
            self._sql = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
        schema = "" if self.url.startswith("sqlite") else "dbos."
        total = 0
        with self._sql.connect() as conn:
            for table, columns in (
                ("workflow_input", "inputs"),
                ("workflow_output", "output, error"),
                ("operation_outputs", "output, error"),
                ("streams", "value"),
            ):
                rows = conn.execute(
                    sa.text(f"SELECT {columns} FROM {schema}{table} WHERE workflow_uuid = :id"),
                    {"id": conversation_id},
                )
                total += sum(len(str(v).encode()) for row in rows for v in row if v is not None)
        return total

    def _status(self, conversation_id: str) -> str:
        require_conversation_id(conversation_id, "DBOSEngine")
        try:
            status: str = self._client.retrieve_workflow(conversation_id).get_status().status
        except Exception as exc:
            if type(exc).__name__ == "DBOSNonExistentWorkflowError":
                raise UnknownDurableConversationError(conversation_id, "this DBOS database") from None
            raise EngineError(f"DBOS system database {self.url}: {type(exc).__name__}: {exc}") from exc
        return status

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.destroy()
        if self._sql is not None:
            self._sql.dispose()

    def __enter__(self) -> DBOSEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
