"""API errors, typed: every error the installed ``anthropic`` knows has a documented ``result.error.kind``
(``agentfsm.wire.api_errors``), and each kind's action is what the machine does: fall back down the chain,
wait and send again, or fail with the history kept.

The runs go through the real ``anthropic`` client (its default retries) on the simulator, which answers with
the API's error bodies, ``error.details.error_code`` included.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import anthropic
import pytest

from agentfsm import Agent, Policy
from agentfsm.sim import ErrorReply, Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import FakeClock, client_for, drive, shown_text, use_clock
from agentfsm.wire import api_errors
from agentfsm.wire.api import failure_from

ROOT = Path(__file__).resolve().parent.parent
KIND_NAMES = [k.name for k in api_errors.KINDS]


def sdk_error_classes() -> dict[tuple[int, str | None], type[anthropic.APIStatusError]]:
    """The installed SDK's error classes by (status, error_code): its own table since 2.17, else (2.12 to 2.16) the
    status classes it exports."""
    try:
        from anthropic._error_classes import ERROR_CLASSES
    except ImportError:
        return {
            (cls.status_code, None): cls
            for cls in vars(anthropic).values()
            if isinstance(cls, type)
            and issubclass(cls, anthropic.APIStatusError)
            and isinstance(getattr(cls, "status_code", None), int)
        }
    return dict(ERROR_CLASSES)


def sdk_error_types() -> tuple[str, ...]:
    """The ``error.type`` strings the installed SDK declares (``ErrorType``; the ``*ErrorObject`` models before)."""
    try:
        from anthropic.types.shared.error_type import ErrorType
    except ImportError:
        import anthropic.types.shared as shared

        return tuple(
            typing.get_args(cls.model_fields["type"].annotation)[0]
            for name, cls in vars(shared).items()
            if name.endswith("Error") and isinstance(cls, type) and "type" in getattr(cls, "model_fields", {})
        )
    return typing.get_args(ErrorType)


# --- the table covers the SDK -------------------------------------------------------------------------------


def test_every_error_class_of_the_installed_sdk_has_a_known_kind() -> None:
    classes = sdk_error_classes()
    assert len(classes) >= 17  # every status class; 156 with the error codes as of 2.17
    unknown = {
        cls.__name__: kind
        for (status, code), cls in classes.items()
        if (kind := api_errors.classify(cls.__name__, status, code)) not in KIND_NAMES or kind == "other"
    }
    assert not unknown


@pytest.mark.parametrize("error_type", sdk_error_types())
def test_every_error_type_string_has_a_kind(error_type: str) -> None:
    assert api_errors.ERROR_TYPES[error_type] in KIND_NAMES
    assert api_errors.classify(error_type) == api_errors.ERROR_TYPES[error_type]  # a stream's error event: no status


def test_the_exceptions_without_a_status_have_a_kind() -> None:
    for cls in (anthropic.APIConnectionError, anthropic.APITimeoutError, anthropic.APIResponseValidationError):
        assert api_errors.classify(cls.__name__) in KIND_NAMES
        assert api_errors.classify(cls.__name__) != "other"
    for machine_name in ("invalid_response", "protocol_error", "incomplete_stream"):
        assert api_errors.classify(machine_name) == "invalid_response"
    assert api_errors.classify("SomethingNew", None) == "other"
    assert api_errors.action_of("other") == "fail" and api_errors.action_of(None) == "fail"


def test_the_codes_added_since_2_14_have_their_own_kind() -> None:
    assert api_errors.classify("api_error", 503, "storage_not_ready") == "not_ready"
    assert api_errors.classify("invalid_request_error", 400, "organization_url_fetch_disabled") == "feature_disabled"
    assert api_errors.classify("rate_limit_error", 429, "ramp_limit_exceeded") == "ramp_limited"
    assert api_errors.classify("rate_limit_error", 429, "enforced_spend_limit_reached") == "spend_limit"
    assert api_errors.classify("rate_limit_error", 429, "a_code_from_the_future") == "rate_limited"  # its status


def test_every_table_names_only_documented_kinds() -> None:
    for table in (api_errors.ERROR_CODES, api_errors.STATUSES, api_errors.ERROR_TYPES, api_errors.NAMES):
        assert set(table.values()) <= set(KIND_NAMES)
    assert len(KIND_NAMES) == len(set(KIND_NAMES))


def test_the_troubleshooting_guide_lists_every_kind_with_its_action_in_order() -> None:
    page = (ROOT / "docs" / "12-troubleshooting.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| (fallback|retry_later|fail) \|", page, re.M)
    assert rows == [(k.name, k.action) for k in api_errors.KINDS], (
        "docs/12-troubleshooting.md's table of error kinds must list agentfsm.wire.api_errors.KINDS, in order, "
        "with each kind's action"
    )


# --- what the machine does, through the client ------------------------------------------------------------

SDK_ATTEMPTS = 3

#: A scripted error for each kind a request can end in, and how many of it the SDK's retries take.
ERRORS: list[tuple[str, ErrorReply, int]] = [
    ("overloaded", r.overloaded(), SDK_ATTEMPTS),
    ("rate_limited", r.rate_limited(), SDK_ATTEMPTS),
    ("ramp_limited", r.ramp_limited(), SDK_ATTEMPTS),
    ("not_ready", r.storage_not_ready(), SDK_ATTEMPTS),
    ("spend_limit", r.http_error(429, "rate_limit_error", "Spend limit.", error_code="enforced_spend_limit_reached"),
     SDK_ATTEMPTS),
    ("billing", r.http_error(402, "billing_error", "Your credit balance is too low."), 1),
    ("authentication", r.authentication_error(), 1),
    ("permission", r.http_error(403, "permission_error", "Not allowed."), 1),
    ("feature_disabled", r.url_fetch_disabled(), 1),
    ("not_found", r.http_error(404, "not_found_error", "model: claude-nope"), 1),
    ("invalid_request", r.prompt_too_long(), 1),
    ("request_too_large", r.http_error(413, "request_too_large", "Request exceeds the maximum size."), 1),
    ("thread_rejected", r.http_error(404, "not_found_error", "No thread.", error_code="thread_not_found"), 1),
    ("compaction_rejected",
     r.http_error(400, "invalid_request_error", "Misplaced.", error_code="compaction_block_misplaced"), 1),
    ("conflict", r.http_error(409, "conflict_error", "Conflict."), SDK_ATTEMPTS),
    ("timeout", r.http_error(504, "timeout_error", "Gateway timeout."), SDK_ATTEMPTS),
    ("server_error", r.server_error(), SDK_ATTEMPTS),
    ("cancelled", r.http_error(499, "api_error", "Client closed request."), 1),
]  # fmt: skip


def test_every_kind_a_request_can_end_in_is_scripted_here() -> None:
    not_http = {"connection", "invalid_response", "other"}  # transport faults and bad replies: tests/test_faults*
    assert {kind for kind, _, _ in ERRORS} == set(KIND_NAMES) - not_http


@pytest.mark.parametrize(("kind", "error", "attempts"), ERRORS, ids=[k for k, _, _ in ERRORS])
def test_each_kind_reaches_result_error_kind_and_its_action_is_taken(
    kind: str, error: ErrorReply, attempts: int
) -> None:
    clock = FakeClock()
    sim = Simulator([error] * attempts * 2)  # enough for one resend of a retry_later kind
    with use_clock(clock):
        result = Agent(client=sim.client(), model="claude-opus-5-5", logger=None).run("Hi")
    assert result.final_state == "failed" and result.error is not None
    assert (result.error.kind, result.error.status_code) == (kind, error.status)
    assert result.error.error_code == error.error_code
    assert result.messages == [{"role": "user", "content": "Hi"}]  # kept
    action = api_errors.action_of(kind)
    if action == "retry_later":  # waited (the retry-after the API sent), then sent once more
        assert len(sim.requests) == 2 * attempts and clock.slept == [0.001]
        assert [e.data["attempt"] for e in result.events if e.event == "request.retried"] == [1]
    else:  # failed at once: "fallback" kinds too, with no chain to go down
        assert len(sim.requests) == attempts and clock.slept == []


def test_a_kind_to_retry_later_is_sent_again_after_the_wait_and_can_succeed() -> None:
    clock = FakeClock()
    sim = Simulator([*[r.storage_not_ready()] * SDK_ATTEMPTS, r.text("Ready now.")])
    policy = Policy(retry_later_seconds=42.0)
    with use_clock(clock):
        result = Agent(client=sim.client(max_retries=2), model="claude-opus-5-5", policy=policy).run("Hi")
    assert (result.final_state, result.text) == ("done", "Ready now.")
    assert clock.slept[-1:] == [0.001]  # the simulator's retry-after-ms wins over retry_later_seconds
    retried = [e.data for e in result.events if e.event == "request.retried"]
    assert len(retried) == 1 and retried[0]["error_type"] == "api_error"


def test_without_a_retry_after_the_policy_says_how_long_to_wait() -> None:
    clock = FakeClock()
    not_ready = ErrorReply(status=503, error_type="api_error", message="Not ready.", error_code="storage_not_ready",
                           headers={"retry-after-ms": "", "x-should-retry": "false"})  # fmt: skip
    sim = Simulator([not_ready, r.text("Ready now.")])
    with use_clock(clock):
        result = Agent(client=sim.client(), model="claude-opus-5-5", policy=Policy(retry_later_seconds=42.0)).run("Hi")
    assert result.final_state == "done" and clock.slept == [42.0]


def test_max_retries_later_zero_fails_at_once() -> None:
    sim = Simulator([r.storage_not_ready()] * SDK_ATTEMPTS)
    result = Agent(client=sim.client(), model="claude-opus-5-5", policy=Policy(max_retries_later=0)).run("Hi")
    assert result.final_state == "failed" and result.error is not None and result.error.kind == "not_ready"
    assert len(sim.requests) == SDK_ATTEMPTS


@pytest.mark.parametrize("driver", ["stream", "astream"])
def test_an_overloaded_error_event_mid_stream_goes_down_the_chain_once_the_resends_are_spent(driver: str) -> None:
    """A stream's SSE ``error`` event (``overloaded_error``, HTTP 200) is resent per ``stream_retries``; still
    overloaded, it is the ``overloaded`` kind, and the request goes on to the next model."""
    sim = Simulator([r.with_fault(r.text("Hel"), "error_event"), r.text("Hello from Sonnet.")])
    policy = Policy(fallback_models=("claude-sonnet-5-5",), stream_retries=0)
    agent = Agent(client=client_for(sim, driver), model="claude-opus-5-5", policy=policy)
    streamed: list[Any] = []
    result = drive(agent, "Hi", driver, stream_events=streamed)
    assert (result.final_state, result.text) == ("done", "Hello from Sonnet.")
    assert [q.model for q in sim.requests] == ["claude-opus-5-5", "claude-sonnet-5-5"]
    [hop] = [e.data for e in result.events if e.event == "fallback.hop"]
    assert hop["trigger"] == "overloaded"
    assert shown_text(streamed) == "Hello from Sonnet."  # the broken stream's "Hel" taken back


def test_the_sdk_exception_carries_its_error_code_and_retry_after() -> None:
    sim = Simulator([r.storage_not_ready()])
    client = sim.client(max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-opus-5-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert isinstance(caught.value, getattr(anthropic, "StorageNotReadyError", anthropic.InternalServerError))
    failure = failure_from(caught.value)
    assert (failure.kind, failure.error_code, failure.retry_after) == ("not_ready", "storage_not_ready", 0.001)
