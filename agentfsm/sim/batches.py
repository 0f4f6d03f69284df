"""The Message Batches API on the simulator, on the wire as the real ``anthropic`` client calls it.

Routes (``?beta=true`` and the ``anthropic-beta`` header accepted on each, as
``client.beta.messages.batches`` sends them):

* ``POST /v1/messages/batches`` — create (``client.messages.batches.create``):
  checks the batch the way the API does (1–100,000 requests, at most 256 MB,
  each ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$`` and unique) and answers
  a ``message_batch`` that is ``in_progress``.
* ``GET /v1/messages/batches/{id}`` — retrieve, i.e. poll. A batch ends on its
  ``polls_to_end``-th poll (``Simulator(batch_polls=N)``; 1 by default): then
  every request is answered, in order, by the simulator's own script exactly
  as a ``POST /v1/messages`` would be (recorded in ``Simulator.requests`` with
  ``batch_id`` set, shown to the observers, validated, priced by the prompt
  cache) and the batch is ``ended`` with its ``request_counts`` and ``results_url``.
* ``GET /v1/messages/batches/{id}/results`` — the results as JSON Lines, in a
  seeded shuffled order (the API does not promise request order): per request
  ``succeeded`` (the Message, its ``usage.service_tier`` ``"batch"``),
  ``errored`` (the error body an ``ErrorReply`` or a validation failure would
  have sent), ``expired`` or ``canceled``.
* ``POST /v1/messages/batches/{id}/cancel`` — the batch is ``canceling``; the
  next poll ends it with every request ``canceled``.
* ``GET /v1/messages/batches`` (newest first, ``limit``/``after_id``/``before_id``)
  and ``DELETE /v1/messages/batches/{id}`` (ended batches only).

Scripting per request: a script item may answer a batched request with
``replies.batch_expired()`` / ``replies.batch_canceled()`` (a ``BatchOutcome``),
or with ``replies.batch_result_line(line)``: its line of the results file is
``line``, as given (a damaged results file). ``SimBatches.expire(id)`` makes a
whole batch expire at its next poll; ``Simulator(batch_polls=N)`` (or
``polls_to_end`` here, per batch) keeps one in progress as long as asked.

Billing: succeeded requests are billed at the batch price, half the list price
(``usage.service_tier == "batch"``, see ``agentfsm.wire.pricing``); ``billed``
holds the token totals and ``billed_usd()`` the dollars.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

from agentfsm.sim.wire import WireResponse, error_response

if TYPE_CHECKING:
    from agentfsm.sim.simulator import Simulator
    from agentfsm.wire.pricing import Price

BATCHES_PATH = "/v1/messages/batches"
#: The API's limits on one batch.
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: How long results stay downloadable, and how long a batch may run (the API's figures; informative here).
EXPIRES_AFTER_S = 24 * 3600

Status = Literal["in_progress", "canceling", "ended"]
ResultType = Literal["succeeded", "errored", "expired", "canceled"]
_LOOPBACK = ("127.", "localhost", "[::1]", "0.0.0.0")


def _rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json(status: int, body: object, request_id: str) -> WireResponse:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return WireResponse(
        status=status, headers={"content-type": "application/json", "request-id": request_id}, chunks=(data,)
    )


@dataclass
class SimBatch:
    """One batch the simulator holds: its requests, how far it is, and (once ended) its results."""

    id: str
    requests: list[tuple[str, dict[str, Any]]]
    query: str
    headers: dict[str, str]
    base_url: str
    created_at: float
    polls_to_end: int
    polls: int = 0
    status: Status = "in_progress"
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    expire: bool = False
    #: One JSON object per request once the batch ended, in request order.
    results: list[dict[str, Any]] = field(default_factory=list)
    #: custom_id → the line the results file holds instead of its JSON (``replies.batch_result_line``).
    raw_lines: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.status != "ended":
            counts["processing"] = len(self.requests)
            return counts
        for line in self.results:
            counts[line["result"]["type"]] += 1
        return counts

    def body(self) -> dict[str, Any]:
        """The ``message_batch`` object, keys as the API orders them."""
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": self.counts(),
            "ended_at": _rfc3339(self.ended_at),
            "created_at": _rfc3339(self.created_at),
            "expires_at": _rfc3339(self.created_at + EXPIRES_AFTER_S),
            "archived_at": None,
            "cancel_initiated_at": _rfc3339(self.cancel_initiated_at),
            "results_url": f"{self.base_url}{BATCHES_PATH}/{self.id}/results" if self.status == "ended" else None,
        }

    def result_types(self) -> dict[str, ResultType]:
        """custom_id → result type, once ended."""
        return {line["custom_id"]: line["result"]["type"] for line in self.results}


class SimBatches:
    """The batches of one ``Simulator`` (``sim.batches``)."""

    def __init__(self, sim: Simulator, *, polls_to_end: int = 1) -> None:
        if polls_to_end < 1:
            raise ValueError(f"polls_to_end must be at least 1, got {polls_to_end}")
        self.sim = sim
        #: The poll (retrieve) on which a new batch ends; change it at any time for batches created later.
        self.polls_to_end = polls_to_end
        #: Every batch created, by id, in creation order.
        self.batches: dict[str, SimBatch] = {}
        #: Token totals of the succeeded requests (billed at the batch price).
        self.billed: dict[str, int] = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "requests": 0,
        }
        self._usages: list[dict[str, Any]] = []
        self._lock = threading.RLock()

    # --- scripting ------------------------------------------------------------------------------------

    def expire(self, batch_id: str) -> None:
        """Make ``batch_id`` end at its next poll with every request ``expired`` (as after 24 hours)."""
        with self._lock:
            self.batches[batch_id].expire = True

    def billed_usd(self, prices: Any = None) -> float | None:
        """What the succeeded requests cost at the batch price (``prices`` as ``Policy.prices``); None if unknown."""
        from agentfsm.wire.pricing import price_for

        total = 0.0
        with self._lock:
            usages = list(self._usages)
        for usage in usages:
            price: Price | None = price_for(str(usage.get("_model", "")), prices)
            if price is None:
                return None
            total += price.cost(usage)
        return round(total, 10)

    # --- the routes ------------------------------------------------------------------------------------

    def respond(self, method: str, path: str, query: str, headers: dict[str, str], body: dict[str, Any],
                raw_body: bytes, parse_error: str | None, request_id: str) -> WireResponse:  # fmt: skip
        """Answer one HTTP request under ``/v1/messages/batches``."""
        rest = path[len(BATCHES_PATH) :].strip("/")
        parts = rest.split("/") if rest else []
        if not parts:
            if method == "POST":
                if parse_error is not None:
                    return error_response(400, "invalid_request_error", parse_error, request_id=request_id)
                return self._create(query, headers, body, raw_body, request_id)
            if method == "GET":
                return self._list(query, request_id)
        elif len(parts) == 1:
            if method == "GET":
                return self._retrieve(parts[0], request_id)
            if method == "DELETE":
                return self._delete(parts[0], request_id)
        elif len(parts) == 2 and parts[1] == "results" and method == "GET":
            return self._results(parts[0], request_id)
        elif len(parts) == 2 and parts[1] == "cancel" and method == "POST":
            return self._cancel(parts[0], request_id)
        return error_response(404, "not_found_error", "Not Found", request_id=request_id)

    def _create(
        self, query: str, headers: dict[str, str], body: dict[str, Any], raw_body: bytes, request_id: str
    ) -> WireResponse:
        problem = _check_create(body, raw_body)
        if problem is not None:
            return error_response(400, "invalid_request_error", problem, request_id=request_id)
        requests = [(str(r["custom_id"]), dict(r["params"])) for r in body["requests"]]
        host = headers.get("host", "api.anthropic.com")
        scheme = "http" if host.startswith(_LOOPBACK) else "https"
        with self._lock:
            batch = SimBatch(
                id=self.sim._ids.new("msgbatch"),
                requests=requests,
                query=query,
                headers={k: v for k, v in headers.items() if k in ("anthropic-beta", "anthropic-version")},
                base_url=f"{scheme}://{host}",
                created_at=time.time(),
                polls_to_end=self.polls_to_end,
            )
            self.batches[batch.id] = batch
        return _json(200, batch.body(), request_id)

    def _find(self, batch_id: str, request_id: str) -> SimBatch | WireResponse:
        with self._lock:
            batch = self.batches.get(batch_id)
        if batch is None:
            return error_response(404, "not_found_error", f"No batch found with id: {batch_id}", request_id=request_id)
        return batch

    def _retrieve(self, batch_id: str, request_id: str) -> WireResponse:
        batch = self._find(batch_id, request_id)
        if isinstance(batch, WireResponse):
            return batch
        with self._lock:
            if batch.status != "ended":
                batch.polls += 1
                if batch.status == "canceling" or batch.expire or batch.polls >= batch.polls_to_end:
                    self._end(batch)
            body = batch.body()
        return _json(200, body, request_id)

    def _cancel(self, batch_id: str, request_id: str) -> WireResponse:
        batch = self._find(batch_id, request_id)
        if isinstance(batch, WireResponse):
            return batch
        with self._lock:
            if batch.status == "in_progress":
                batch.status = "canceling"
                batch.cancel_initiated_at = time.time()
            body = batch.body()
        return _json(200, body, request_id)

    def _results(self, batch_id: str, request_id: str) -> WireResponse:
        batch = self._find(batch_id, request_id)
        if isinstance(batch, WireResponse):
            return batch
        with self._lock:
            if batch.status != "ended":
                return error_response(
                    400,
                    "invalid_request_error",
                    f"Batch {batch_id} is still {batch.status}: results are available once processing has ended",
                    request_id=request_id,
                )
            lines = list(batch.results)
            raw = dict(batch.raw_lines)
        random.Random(batch.id).shuffle(lines)  # the API does not promise request order; neither do we
        chunks = tuple(
            (
                raw[line["custom_id"]]
                if line["custom_id"] in raw
                else json.dumps(line, separators=(",", ":"), ensure_ascii=False)
            ).encode()
            + b"\n"
            for line in lines
        )
        headers = {"content-type": "application/x-jsonl", "request-id": request_id}
        return WireResponse(status=200, headers=headers, chunks=chunks)

    def _list(self, query: str, request_id: str) -> WireResponse:
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return error_response(
                400, "invalid_request_error", "limit: must be between 1 and 1000", request_id=request_id
            )
        with self._lock:
            newest_first = list(reversed(self.batches.values()))
        ids = [b.id for b in newest_first]
        if "after_id" in params and params["after_id"] in ids:
            newest_first = newest_first[ids.index(params["after_id"]) + 1 :]
            page = newest_first[:limit]
            more = len(newest_first) > limit
        elif "before_id" in params and params["before_id"] in ids:
            newest_first = newest_first[: ids.index(params["before_id"])]
            page = newest_first[-limit:]
            more = len(newest_first) > limit
        else:
            page = newest_first[:limit]
            more = len(newest_first) > limit
        data = [b.body() for b in page]
        body = {
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return _json(200, body, request_id)

    def _delete(self, batch_id: str, request_id: str) -> WireResponse:
        batch = self._find(batch_id, request_id)
        if isinstance(batch, WireResponse):
            return batch
        with self._lock:
            if batch.status != "ended":
                return error_response(
                    400,
                    "invalid_request_error",
                    f"Batch {batch_id} cannot be deleted while it is {batch.status}: cancel it first",
                    request_id=request_id,
                )
            del self.batches[batch_id]
        return _json(200, {"id": batch_id, "type": "message_batch_deleted"}, request_id)

    # --- processing -------------------------------------------------------------------------------------

    def _end(self, batch: SimBatch) -> None:
        """Answer every request of ``batch`` (or mark them canceled / expired) and end it. Caller holds the lock."""
        skip: ResultType | None = "canceled" if batch.status == "canceling" else "expired" if batch.expire else None
        results: list[dict[str, Any]] = []
        for custom_id, params in batch.requests:
            result = {"type": skip} if skip is not None else self._process(batch, params)
            raw = result.pop(_RAW_LINE, None)
            if raw is not None:
                batch.raw_lines[custom_id] = str(raw).replace("{custom_id}", custom_id)
            results.append({"custom_id": custom_id, "result": result})
        batch.results = results
        batch.status = "ended"
        batch.ended_at = time.time()

    def _process(self, batch: SimBatch, params: dict[str, Any]) -> dict[str, Any]:
        """One request of a batch, answered by the simulator's script as a plain request would be."""
        if params.get("stream") is True:
            params = {k: v for k, v in params.items() if k != "stream"}
            problem = "stream: Message Batches do not support streaming; remove `stream` from the request"
            return _errored("invalid_request_error", problem, self.sim._ids.new("req"))
        raw = json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()
        wire = self.sim.serve_batched(batch.id, batch.query, batch.headers, params, raw)
        kind = wire.headers.get(BATCH_OUTCOME_HEADER)
        if kind == "line":
            return {"type": "succeeded", _RAW_LINE: b"".join(wire.chunks).decode()}
        if kind is not None:
            return {"type": kind}
        request_id = wire.headers.get("request-id") or self.sim._ids.new("req")
        try:
            body = json.loads(b"".join(wire.chunks)) if wire.chunks else None
        except ValueError:
            body = None
        if wire.status == 200 and isinstance(body, dict) and body.get("type") == "message" and not wire.drop:
            usage = body.get("usage")
            if isinstance(usage, dict):
                usage["service_tier"] = "batch"
                self._bill(usage, str(body.get("model") or params.get("model") or ""))
            return {"type": "succeeded", "message": body}
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            return _errored(str(err.get("type", "api_error")), str(err.get("message", "")), request_id)
        # A streamed fault or a dropped connection inside the batch: the API reports an internal error.
        return _errored("api_error", "Internal server error", request_id)

    def _bill(self, usage: dict[str, Any], model: str) -> None:
        for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            self.billed[key] += int(usage.get(key) or 0)
        self.billed["requests"] += 1
        self._usages.append({**usage, "_model": model})


#: The header a ``BatchOutcome`` answer carries inside the simulator (never sent on the wire).
BATCH_OUTCOME_HEADER = "x-agentfsm-sim-batch-outcome"
#: Where ``_process`` hands a scripted results line to ``_end`` (never in a result).
_RAW_LINE = "_raw_line"


def outcome_response(kind: str, line: str | None = None) -> WireResponse:
    """How ``Simulator`` hands a ``BatchOutcome`` back to the batch that asked (a ``line`` as the body)."""
    return WireResponse(
        status=0, headers={BATCH_OUTCOME_HEADER: kind}, chunks=(line.encode(),) if line is not None else ()
    )


def _errored(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id},
    }


def _check_create(body: dict[str, Any], raw_body: bytes) -> str | None:
    """The API's checks of a new batch, as its 400 messages; None when it is accepted."""
    if len(raw_body) > MAX_BYTES:
        return f"Batch size of {len(raw_body)} bytes exceeds the maximum of {MAX_BYTES} bytes"
    if "requests" not in body:
        return "requests: Field required"
    requests = body["requests"]
    if not isinstance(requests, list):
        return "requests: Input should be a valid list"
    if not requests:
        return "requests: List should have at least 1 item after validation, not 0"
    if len(requests) > MAX_REQUESTS:
        return f"requests: List should have at most {MAX_REQUESTS} items after validation, not {len(requests)}"
    seen: set[str] = set()
    for i, request in enumerate(requests):
        if not isinstance(request, dict):
            return f"requests.{i}: Input should be a valid dictionary"
        extra = set(request) - {"custom_id", "params"}
        if extra:
            return f"requests.{i}.{sorted(extra)[0]}: Extra inputs are not permitted"
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str):
            return (
                f"requests.{i}.custom_id: Field required"
                if custom_id is None
                else (f"requests.{i}.custom_id: Input should be a valid string")
            )
        if not CUSTOM_ID.match(custom_id):
            return f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if custom_id in seen:
            return f"requests.{i}.custom_id: Duplicate custom_id '{custom_id}'; each must be unique within the batch"
        seen.add(custom_id)
        if not isinstance(request.get("params"), dict):
            return f"requests.{i}.params: Field required"
    return None


__all__ = ["BATCHES_PATH", "MAX_BYTES", "MAX_REQUESTS", "SimBatch", "SimBatches", "outcome_response"]
