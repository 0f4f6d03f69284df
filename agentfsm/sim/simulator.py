"""``Simulator``: a scripted stand-in for the Messages API that the real ``anthropic`` client talks to.

Every request is recorded, shown to the class-wide ``observers``, validated
like the real API (a rejected request answers 400 and consumes nothing), then
answered by the next script item, its prompt billed against this simulator's
prompt cache (``agentfsm.sim.caching``). The answer goes out through
``httpx2.MockTransport`` (``client()``, ``async_client()``) or a loopback
socket (``serve()``), in exactly the same bytes.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import anthropic
import httpx2

from agentfsm.sim import serverside
from agentfsm.sim.batches import BATCHES_PATH, SimBatches, outcome_response
from agentfsm.sim.caching import DEFAULT_MIN_TOKENS, PromptCache
from agentfsm.sim.ids import IdSource
from agentfsm.sim.lineup import ModelPolicy, model_predicate, not_found_message
from agentfsm.sim.model import (
    BatchOutcome,
    ErrorReply,
    RecordedReply,
    Reply,
    ReplyFn,
    Script,
    ScriptedReply,
    ScriptError,
    ScriptItem,
    SimRequest,
)
from agentfsm.sim.recorded import Recording, load, recorded_response
from agentfsm.sim.server import SimHTTPServer
from agentfsm.sim.threads import SimThreads, ThreadProblem
from agentfsm.sim.transport import to_httpx
from agentfsm.sim.validation import PrefillPolicy, prefill_predicate, validate
from agentfsm.sim.wire import MESSAGES_PATH, RETRY_NOW, WireResponse, error_response, is_retryable, reply_response

log = logging.getLogger(__name__)

SIM_API_KEY = "sk-ant-sim-0000000000000000"
_ID_KINDS = {"tool_use": "toolu", "server_tool_use": "srvtoolu", "mcp_tool_use": "mcptoolu"}


class Simulator:
    """A scripted Messages API.

    ``script`` is a list of ``ScriptedReply`` / ``ErrorReply`` / callables
    ``(SimRequest) -> reply`` used one per accepted request, or a single
    callable that answers every request.

    ``min_cacheable_tokens`` is the shortest prefix a cache breakpoint writes
    (the model's minimum cacheable prompt length); ``clock`` (seconds,
    monotonic) times cache entries' lifetimes, so a test can move time on.
    ``prompt_cache=False`` still validates cache marks but caches nothing: for
    load tests, where hashing every prompt is the server's work, not the client's.

    ``auto_compact=True`` answers every compaction request (the ``compaction``
    parameter) itself, with one block summarising the conversation, without
    using a script item; otherwise the script answers it (``replies.compaction``).
    ``fallbacks_unsupported`` names the models that reject a ``fallbacks`` list
    (prefixes or a predicate; default: all but ``claude-<family>-5…``).
    A request carrying what its model refuses by its request rules
    (``agentfsm.wire.models``: a prefill, a forced ``tool_choice``, sampling
    parameters, a thinking budget, ``thinking`` disabled) is the API's 400;
    ``prefill_unsupported`` (prefixes or a predicate) overrides the prefill rule.
    Refusals scripted with ``credit_token=True`` mint fallback credit tokens,
    which ``credits`` redeems (see ``agentfsm.sim.serverside``).
    It also speaks the Message Batches API (``sim.batches``, see
    ``agentfsm.sim.batches``): a batch ends on its ``batch_polls``-th poll, its
    requests answered by this same script.

    ``models`` is what the simulator serves: a request for any other model is
    answered with the API's 404 (``not_found_error``, ``"model: <name>"``) and
    uses no script item, as a misspelt model name fails on the real API. By
    default (None) it serves ``agentfsm.sim.lineup.KNOWN_MODELS``, the installed
    SDK's lineup and the older ids the API served; pass exact names to replace
    that set (``[*KNOWN_MODELS, "my-fine-tune"]`` widens it), or a predicate on
    the name (``lambda name: True`` serves every name).

    It serves message threads (``thread``, beta ``message-threads-2026-08-12``; see
    ``agentfsm.sim.threads``): a thread idle for ``thread_idle_limit`` seconds of
    ``clock`` expires, and ``sim.threads.forget()`` loses them all.
    """

    observers: ClassVar[list[Callable[[SimRequest], None]]] = []
    """Called with every request of every Simulator, before it is answered (wire-rule checkers).

    An observer's exception propagates out of the transport (the SDK wraps it in
    ``APIConnectionError``); on the loopback server it becomes a 400.
    """

    def __init__(
        self,
        script: Script,
        *,
        prefill_unsupported: PrefillPolicy = None,
        model_max_tokens: int = 64000,
        keep_requests: bool = True,
        min_cacheable_tokens: int = DEFAULT_MIN_TOKENS,
        clock: Callable[[], float] = time.monotonic,
        prompt_cache: bool = True,
        auto_compact: bool = False,
        fallbacks_unsupported: serverside.FallbackPolicy = None,
        batch_polls: int = 1,
        models: ModelPolicy = None,
        thread_idle_limit: float | None = None,
    ) -> None:
        if isinstance(script, ScriptedReply | ErrorReply | RecordedReply | BatchOutcome):
            raise TypeError("Simulator(script): pass a list of replies, e.g. Simulator([r.text('hi')])")
        self._responder: ReplyFn | None = script if callable(script) else None
        self.script: list[ScriptItem] = [] if callable(script) else list(script)
        for i, item in enumerate(self.script):
            if not (isinstance(item, ScriptedReply | ErrorReply | RecordedReply | BatchOutcome) or callable(item)):
                raise TypeError(
                    f"script item {i} is a {type(item).__name__}: "
                    "expected a ScriptedReply, ErrorReply, RecordedReply, BatchOutcome or callable"
                )
        self.model_max_tokens = model_max_tokens
        self.prefill_unsupported = prefill_predicate(prefill_unsupported)
        #: Whether the simulator serves a model name (``models=``); any other is the API's 404.
        self.serves_model = model_predicate(models)
        #: Prompt-cache entries written by this simulator's requests (see ``agentfsm.sim.caching``).
        self.cache = PromptCache(min_cacheable_tokens, clock)
        self.prompt_cache = prompt_cache
        self.auto_compact = auto_compact
        self.fallbacks_unsupported = serverside.fallbacks_predicate(fallbacks_unsupported)
        #: Fallback credit tokens minted by this simulator's refusals.
        self.credits = serverside.CreditLedger(clock)
        self.requests: list[SimRequest] = []
        #: False for load tests: requests are still observed and answered, but not kept in ``requests``.
        self.keep_requests = keep_requests
        self.requests_received = 0
        self.replies_served = 0
        self._next = 0
        self._ids = IdSource()
        self._lock = threading.Lock()
        #: The Message Batches this simulator holds (``agentfsm.sim.batches``).
        self.batches = SimBatches(self, polls_to_end=batch_polls)
        #: The message threads this simulator holds (``agentfsm.sim.threads``); ``thread_idle_limit`` seconds
        #: of ``clock`` without a continuation expire one.
        self.threads = SimThreads(clock, thread_idle_limit)

    @classmethod
    def from_recording(
        cls,
        *recordings: str | Path | Mapping[str, Any] | Recording,
        then: Sequence[ScriptItem] = (),
        **kwargs: Any,
    ) -> Simulator:
        """A simulator that replays real recorded exchanges in order, then the ``then`` items.

        Each recording is a path to a recording file, its parsed JSON, or a
        ``Recording`` (see ``agentfsm.sim.recorded``); ``kwargs`` go to the constructor.
        """
        return cls([*(load(r).reply() for r in recordings), *then], **kwargs)

    # --- clients -------------------------------------------------------------------------------

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """``httpx2.MockTransport`` handler for a sync client."""
        return to_httpx(self._respond_to(request), request, asynchronous=False)

    async def ahandle(self, request: httpx2.Request) -> httpx2.Response:
        """``httpx2.MockTransport`` handler for an async client."""
        return to_httpx(self._respond_to(request), request, asynchronous=True)

    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        """A real ``anthropic.Anthropic`` whose HTTP goes to this simulator in-process; kwargs pass through."""
        kwargs.setdefault("api_key", SIM_API_KEY)
        kwargs.setdefault("http_client", httpx2.Client(transport=httpx2.MockTransport(self.handle)))
        return anthropic.Anthropic(**kwargs)

    def async_client(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        """A real ``anthropic.AsyncAnthropic`` on this simulator, in-process; kwargs pass through."""
        kwargs.setdefault("api_key", SIM_API_KEY)
        kwargs.setdefault("http_client", httpx2.AsyncClient(transport=httpx2.MockTransport(self.ahandle)))
        return anthropic.AsyncAnthropic(**kwargs)

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve on a loopback socket (ephemeral port by default) for the ``with`` block; yields the base URL."""
        server = SimHTTPServer((host, port), self.respond)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield server.base_url
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    def serve_forever(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        on_ready: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Serve until Ctrl-C (or until ``stop`` is set); ``on_ready`` gets the base URL once the socket listens."""
        server = SimHTTPServer((host, port), self.respond)
        if stop is not None:

            def stop_when_set() -> None:
                stop.wait()
                server.shutdown()

            threading.Thread(target=stop_when_set, daemon=True).start()
        if on_ready is not None:
            on_ready(server.base_url)
        try:
            server.serve_forever(poll_interval=0.05)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

    # --- answering -----------------------------------------------------------------------------

    def _respond_to(self, request: httpx2.Request) -> WireResponse:
        headers = {key.lower(): value for key, value in request.headers.items()}
        query = request.url.query
        return self.respond(
            request.method,
            request.url.path,
            query.decode() if isinstance(query, bytes) else str(query),
            headers,
            request.content,
        )

    def respond(self, method: str, path: str, query: str, headers: dict[str, str], raw_body: bytes) -> WireResponse:
        """Record, observe, validate and answer one HTTP request (the transport-neutral entry point)."""
        body, parse_error = _parse(raw_body)
        return self._serve(method, path, query, headers, raw_body, body, parse_error, None)

    def serve_batched(
        self, batch_id: str, query: str, headers: dict[str, str], params: dict[str, Any], raw: bytes
    ) -> WireResponse:
        """Answer one request of a Message Batch as if it came to ``POST /v1/messages`` on its own."""
        return self._serve("POST", MESSAGES_PATH, query, dict(headers), raw, params, None, batch_id)

    def _serve(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        raw_body: bytes,
        body: dict[str, Any],
        parse_error: str | None,
        batch_id: str | None,
    ) -> WireResponse:
        with self._lock:
            request = SimRequest(
                n=self.requests_received + 1,
                method=method.upper(),
                path=path,
                query=query,
                headers=headers,
                body=body,
                raw_body=raw_body,
                batch_id=batch_id,
            )
            self.requests_received += 1
            if self.keep_requests:
                self.requests.append(request)
        thread_problem: ThreadProblem | None = None
        if parse_error is None and method.upper() == "POST" and path == MESSAGES_PATH:
            request.body, request.thread_held, thread_problem = self.threads.resolve(
                request.n, body, headers, batched=batch_id is not None
            )
        try:
            for observer in list(Simulator.observers):
                observer(request)
            wire = self._answer(request, parse_error, thread_problem)
        finally:
            self.threads.done(request.n)
        request.status = wire.status if not (wire.drop and not wire.chunks) else None
        if wire.status >= 400:
            request.error = _error_message(wire)
        return wire

    def _answer(self, request: SimRequest, parse_error: str | None, thread: ThreadProblem | None) -> WireResponse:
        request_id = self._ids.new("req")
        if request.path == BATCHES_PATH or request.path.startswith(BATCHES_PATH + "/"):
            return self.batches.respond(
                request.method, request.path, request.query, request.headers, request.body, request.raw_body,
                parse_error, request_id,
            )  # fmt: skip
        if request.method != "POST" or request.path != MESSAGES_PATH:
            return error_response(404, "not_found_error", "Not Found", request_id=request_id)
        if thread is not None:
            return error_response(
                thread.status, thread.error_type, thread.message, request_id=request_id, error_code=thread.code
            )
        problem = (
            parse_error
            or self.cache.problem(request.body)
            or validate(
                request.body,
                model_max_tokens=self.model_max_tokens,
                # nothing is sampled on a compaction request: a final assistant turn is not a prefill there
                prefill_unsupported=_never if request.is_compaction else self.prefill_unsupported,
            )
            or serverside.validate(request.body, request.headers, fallbacks_unsupported=self.fallbacks_unsupported)
        )
        if problem is None and not self.serves_model(str(request.body["model"])):
            # after validation, before anything is sampled or redeemed: the API's answer to a name it does not know
            return error_response(
                404, "not_found_error", not_found_message(request.body["model"]), request_id=request_id
            )
        credit: dict[str, Any] | None = None
        if problem is None and "fallback_credit_token" in request.body:
            credit, problem = self.credits.redeem(request)
        if problem is not None:
            return error_response(400, "invalid_request_error", problem, request_id=request_id)
        if request.is_compaction and self.auto_compact:
            with self._lock:
                self.replies_served += 1
            return self._render(request, serverside.summarize(request), request_id)
        taken = self._take()
        if taken is None:
            n = len(self.script)
            message = f"simulator script exhausted: {n} replies were scripted and request #{n + 1} has none"
            return error_response(400, "invalid_request_error", message, request_id=request_id)
        index, item = taken
        try:
            reply = item(request) if callable(item) else item
        except Exception as exc:
            self._untake(index)  # the item could not answer: it stays next in line
            if isinstance(exc, ScriptError):
                message = str(exc)
            else:
                log.warning("simulator script item raised on request #%d", request.n, exc_info=True)
                message = f"simulator script item raised {type(exc).__name__}: {exc}"
            return error_response(400, "invalid_request_error", message, request_id=request_id)
        with self._lock:
            self.replies_served += 1
        if credit is not None and isinstance(reply, ScriptedReply):
            reply = reply.model_copy(update={"usage": {**(reply.usage or {}), "fallback_credit": credit}})
        return self._render(request, reply, request_id)

    def _take(self) -> tuple[int | None, ScriptItem] | None:
        """The next script item (and its index; ``None`` for a single-callable script), or None when exhausted."""
        if self._responder is not None:
            return None, self._responder
        with self._lock:
            if self._next >= len(self.script):
                return None
            self._next += 1
            return self._next - 1, self.script[self._next - 1]

    def _untake(self, index: int | None) -> None:
        with self._lock:
            if index is not None and self._next == index + 1:
                self._next = index

    def _render(self, request: SimRequest, reply: Reply, request_id: str) -> WireResponse:
        if isinstance(reply, BatchOutcome):
            if request.batch_id is not None:
                return outcome_response(reply.kind, reply.line)
            name = "batch_result_line" if reply.kind == "line" else f"batch_{reply.kind}"
            message = f"simulator script item {name}() answers only a request inside a Message Batch"
            return error_response(400, "invalid_request_error", message, request_id=request_id)
        if isinstance(reply, ErrorReply):
            headers = dict(reply.headers)
            if is_retryable(reply.status):
                headers = {**RETRY_NOW, **headers}
            return error_response(
                reply.status, reply.error_type, reply.message, request_id=request_id, headers=headers,
                error_code=reply.error_code,
            )  # fmt: skip
        if isinstance(reply, RecordedReply):
            return recorded_response(request, reply, request_id=request_id)
        if not isinstance(reply, ScriptedReply):
            kind = type(reply).__name__
            message = (
                f"simulator script item returned {kind}, not a ScriptedReply, ErrorReply, RecordedReply or BatchOutcome"
            )
            return error_response(400, "invalid_request_error", message, request_id=request_id)
        if reply.credit_token:
            reply = serverside.with_credit_token(reply, request, self.credits)
        if reply.fallback is not None:
            if "fallbacks" not in request.body:
                message = (
                    "simulator: this reply is served by a server-side fallback, but the request sends no `fallbacks`"
                )
                return error_response(400, "invalid_request_error", message, request_id=request_id)
            to = serverside.fallback_target(request, reply.fallback.to)
            hop = {
                "type": "fallback",
                "from": {"model": request.model},
                "to": {"model": to},
                "trigger": {"type": "refusal", "category": reply.fallback.category},
            }
            content = [*reply.fallback.declined, hop, *reply.content]
            reply = reply.model_copy(update={"content": content, "model": to})
        content = self._fill_ids(reply.content)
        cached = self.cache.account(request.body) if self.prompt_cache else None
        message_id = self._ids.new("msg")
        if reply.fault is None:  # a reply cut or dropped on its way is one the server holds none of
            self.threads.served(request.n, message_id, content)
        return reply_response(request, reply, content, message_id=message_id, request_id=request_id, cached=cached)

    def _fill_ids(self, content: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A copy of ``content`` with missing tool ids filled (server tool results point at their call)."""
        filled = copy.deepcopy(content)
        last_call: str | None = None
        for block in filled:
            kind = block.get("type")
            if kind in _ID_KINDS:
                if block.get("id") is None:
                    block["id"] = self._ids.new(_ID_KINDS[kind])
                if kind != "tool_use":
                    last_call = block["id"]
            elif "tool_use_id" in block and block["tool_use_id"] is None:
                block["tool_use_id"] = last_call
        return filled


def _never(model: str) -> bool:
    return False


def _parse(raw: bytes) -> tuple[dict[str, Any], str | None]:
    if not raw:
        return {}, "There was an issue with the request body: the body is empty"
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return {}, f"There was an issue with the request body: invalid JSON ({exc})"
    if not isinstance(body, dict):
        return {}, "There was an issue with the request body: expected a JSON object"
    return body, None


def _error_message(wire: WireResponse) -> str | None:
    try:
        body = json.loads(b"".join(wire.chunks))
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return None
