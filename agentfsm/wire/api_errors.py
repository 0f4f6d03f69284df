"""The API's errors, typed: every error a request can end in, as one ``kind`` and what the machine does about it.

One table, as data. A request that fails after the SDK's own retries (``wire.api.RequestFailure``) is
classified by the first of these that knows it: the body's ``error.details.error_code`` (``ERROR_CODES``),
the HTTP status (``STATUSES``), the body's ``error.type`` (``ERROR_TYPES``; a stream's ``error`` event has
no status), the name of the exception or fault (``NAMES``); anything else is ``other``. The kind goes onto
``result.error.kind``; its ``action`` is what the machine does (``ACTIONS``):

* ``fallback`` — send the same request to the next model of ``Policy.fallback_models`` when the kind is
  in ``Policy.fallback_on`` (the chain is the "somewhere else"); without one left, fail.
* ``retry_later`` — wait (the ``retry-after`` header's time, else ``Policy.retry_later_seconds``) and send
  the same request again, at most ``Policy.max_retries_later`` times per request; then fail.
* ``fail`` — end the run ``failed`` with the error, every message so far kept.

Every error class of the installed ``anthropic`` (``anthropic._error_classes.ERROR_CLASSES``: a status and an
``error_code`` each) and every ``ErrorType`` string maps to a kind here (tests/test_api_errors.py walks them),
and docs/12-troubleshooting.md's table is checked against ``KINDS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["fallback", "retry_later", "fail"]


@dataclass(frozen=True)
class ErrorKind:
    """One kind of failed request: its name (``result.error.kind``), the machine's action, and what it means."""

    name: str
    action: Action
    meaning: str


#: Every kind, in the order docs/12 lists them.
KINDS: tuple[ErrorKind, ...] = (
    ErrorKind("overloaded", "fallback", "the model is overloaded (529 `overloaded_error`)"),
    ErrorKind("rate_limited", "fallback", "a rate limit of the organization or model (429 `rate_limit_error`)"),
    ErrorKind(
        "ramp_limited", "retry_later", "usage is growing faster than the ramp limit allows (429 `ramp_limit_exceeded`)"
    ),
    ErrorKind(
        "not_ready",
        "retry_later",
        "the workspace's storage or encryption key is not ready yet "
        "(503 `storage_not_ready`, `cmek_key_unreachable`, ...)",
    ),
    ErrorKind(
        "spend_limit",
        "fail",
        "a spend limit is reached (429 `contract_spend_limit_reached`, `enforced_spend_limit_reached`, 402 ...)",
    ),
    ErrorKind(
        "billing", "fail", "billing or the organization's standing (402, `billing_error`, `organization_on_hold`)"
    ),
    ErrorKind("authentication", "fail", "the API key is missing, wrong or revoked (401)"),
    ErrorKind("permission", "fail", "the key may not do this (403 `permission_error`)"),
    ErrorKind(
        "feature_disabled",
        "fail",
        "a feature the request uses is off for the organization (`organization_url_fetch_disabled`: URL "
        "sources, `web_fetch`, `mcp_servers`; `sandbox_egress_restricted`, ...)",
    ),
    ErrorKind("not_found", "fail", "the model (or a file the request names) does not exist (404)"),
    ErrorKind("invalid_request", "fail", "the request breaks a rule of the API (400, 422 `invalid_request_error`)"),
    ErrorKind("request_too_large", "fail", "the request body or its headers are too large (413, 431)"),
    ErrorKind(
        "thread_rejected",
        "fail",
        "a message-thread request was rejected (`thread_not_found`, `thread_already_continued`, ...)",
    ),
    ErrorKind(
        "compaction_rejected",
        "fail",
        "a compaction block or request was rejected (`compaction_*`, 529 `compaction_unavailable`)",
    ),
    ErrorKind("conflict", "fail", "a conflicting change (409, 412)"),
    ErrorKind("timeout", "fail", "the request timed out (408, 504, `timeout_error`, the client's timeout)"),
    ErrorKind("server_error", "fail", "the API failed (500, 501, 503, `api_error`)"),
    ErrorKind("cancelled", "fail", "the request was closed before it finished (499)"),
    ErrorKind(
        "connection", "fail", "no connection, or the stream dropped more often than `Policy.stream_retries` allows"
    ),
    ErrorKind("invalid_response", "fail", "the reply is not a valid message (bad JSON, a stream cut before its end)"),
    ErrorKind("other", "fail", "an error this version does not know"),
)

ACTIONS: dict[str, Action] = {k.name: k.action for k in KINDS}

#: ``error.details.error_code`` → kind: the codes whose kind is not their status's.
ERROR_CODES: dict[str, str] = {
    "ramp_limit_exceeded": "ramp_limited",
    "contract_spend_limit_reached": "spend_limit",
    "enforced_spend_limit_reached": "spend_limit",
    "linked_organization_spend_limit_reached": "spend_limit",
    "storage_not_ready": "not_ready",
    "cmek_key_unreachable": "not_ready",
    "cmek_context_unavailable": "not_ready",
    "registration_pending": "not_ready",
    "authorization_check_unavailable": "not_ready",
    "workspace_created_incomplete": "not_ready",
    "organization_on_hold": "billing",
    "organization_url_fetch_disabled": "feature_disabled",
    "sandbox_egress_restricted": "feature_disabled",
    "workspace_human_review_disabled": "feature_disabled",
    "organization_type_not_supported": "feature_disabled",
    "organization_not_enrolled_in_beta": "feature_disabled",
    "thread_not_found": "thread_rejected",
    "thread_already_continued": "thread_rejected",
    "thread_continue_in_flight": "thread_rejected",
    "thread_fingerprint_mismatch": "thread_rejected",
    "thread_unsupported_request": "thread_rejected",
    "compaction_unavailable": "compaction_rejected",
    "compaction_block_ambiguous": "compaction_rejected",
    "compaction_block_misplaced": "compaction_rejected",
    "compaction_content_mismatch": "compaction_rejected",
    "compaction_incomplete_turn": "compaction_rejected",
    "compaction_nothing_to_summarize": "compaction_rejected",
    "compaction_signature_invalid": "compaction_rejected",
    "compaction_too_many_tool_references": "compaction_rejected",
    "compaction_tool_changes_mismatch": "compaction_rejected",
}

#: HTTP status → kind.
STATUSES: dict[int, str] = {
    400: "invalid_request",
    401: "authentication",
    402: "billing",
    403: "permission",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    412: "conflict",
    413: "request_too_large",
    422: "invalid_request",
    429: "rate_limited",
    431: "request_too_large",
    499: "cancelled",
    500: "server_error",
    501: "server_error",
    502: "server_error",
    503: "server_error",
    504: "timeout",
    529: "overloaded",
}

#: ``error.type`` → kind (every ``anthropic.types.shared.ErrorType``, and the older ``request_too_large``).
ERROR_TYPES: dict[str, str] = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "billing_error": "billing",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limited",
    "timeout_error": "timeout",
    "api_error": "server_error",
    "overloaded_error": "overloaded",
    "memory_precondition_failed_error": "conflict",
    "memory_path_conflict_error": "conflict",
    "conflict_error": "conflict",
}

#: The exception's class name, or the machine's own name for a bad reply or a broken stream → kind.
NAMES: dict[str, str] = {
    "APIConnectionError": "connection",
    "RemoteProtocolError": "connection",
    "ConnectError": "connection",
    "ReadError": "connection",
    "APITimeoutError": "timeout",
    "TimeoutException": "timeout",
    "ReadTimeout": "timeout",
    "APIResponseValidationError": "invalid_response",
    "invalid_response": "invalid_response",
    "protocol_error": "invalid_response",
    "incomplete_stream": "invalid_response",
}


def classify(error_type: str, status_code: int | None = None, error_code: str | None = None) -> str:
    """The kind of a failed request: by its ``error_code``, else its status, else its ``error.type``, else
    the exception's name; ``other`` when none of those is known."""
    if error_code is not None and error_code in ERROR_CODES:
        return ERROR_CODES[error_code]
    if status_code is not None and status_code in STATUSES:
        return STATUSES[status_code]
    if error_type in ERROR_TYPES:
        return ERROR_TYPES[error_type]
    if status_code is not None and 500 <= status_code < 600:
        return "server_error"
    return NAMES.get(error_type, "other")


def action_of(kind: str | None) -> Action:
    """What the machine does about a failed request of ``kind`` (``fail`` for one it does not know)."""
    return ACTIONS.get(kind or "other", "fail")
