"""The simulator's Message Batches API, driven through the real ``anthropic`` client (plain and beta paths)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
import realtraffic

from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.batches import MAX_REQUESTS
from agentfsm.wire.pricing import price_for

MODEL = "claude-haiku-4-5"


def request(i: int, text: str | None = None, **params: Any) -> dict[str, Any]:
    return {
        "custom_id": f"req-{i}",
        "params": {
            "model": MODEL,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text or f"question {i}"}],
            **params,
        },
    }


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, dict[str, Any]]:
    """The results file's lines by custom_id, read raw (as the runner reads them)."""
    with client.messages.batches.with_streaming_response.results(batch_id) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    return {line["custom_id"]: line["result"] for line in lines}


def test_a_batch_ends_on_its_configured_poll_and_answers_every_request_through_the_script() -> None:
    sim = Simulator([r.text("one"), r.overloaded(), r.batch_expired(), r.batch_canceled()], batch_polls=3)
    client = sim.client(max_retries=0)
    batch = client.messages.batches.create(requests=[request(i) for i in range(4)])
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 4
    assert batch.id.startswith("msgbatch_01") and batch.results_url is None
    assert sim.requests_received == 1  # nothing answered yet: requests are processed when the batch ends
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.results_url == f"https://api.anthropic.com/v1/messages/batches/{batch.id}/results"
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.expired, counts.canceled, counts.processing) == (1, 1, 1, 1, 0)
    found = results(client, batch.id)
    assert found["req-0"]["type"] == "succeeded"
    message = found["req-0"]["message"]
    assert message["content"] == [{"type": "text", "text": "one"}] and message["usage"]["service_tier"] == "batch"
    assert found["req-1"] == {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": found["req-1"]["error"]["request_id"],
        },
    }
    assert found["req-2"] == {"type": "expired"} and found["req-3"] == {"type": "canceled"}
    # The SDK's own typed reader parses the same file.
    typed = {line.custom_id: line.result.type for line in client.messages.batches.results(batch.id)}
    assert typed == {"req-0": "succeeded", "req-1": "errored", "req-2": "expired", "req-3": "canceled"}
    # The batched requests were answered as plain requests, marked with their batch.
    inner = [q for q in sim.requests if q.batch_id == batch.id]
    assert [q.messages[0]["content"] for q in inner] == [f"question {i}" for i in range(4)]
    assert all(q.path == "/v1/messages" for q in inner)


def test_results_come_in_a_shuffled_order_with_every_custom_id_once() -> None:
    sim = Simulator(lambda req: r.text(req.messages[0]["content"]))
    client = sim.client(max_retries=0)
    batch = client.messages.batches.create(requests=[request(i) for i in range(30)])
    client.messages.batches.retrieve(batch.id)
    with client.messages.batches.with_streaming_response.results(batch.id) as response:
        order = [json.loads(line)["custom_id"] for line in response.iter_lines() if line.strip()]
    assert sorted(order) == sorted(f"req-{i}" for i in range(30)) and order != [f"req-{i}" for i in range(30)]
    found = results(client, batch.id)
    assert all(found[f"req-{i}"]["message"]["content"][0]["text"] == f"question {i}" for i in range(30))


def test_usage_is_billed_at_half_the_list_price() -> None:
    sim = Simulator(lambda req: r.text("x" * 400))
    client = sim.client(max_retries=0)
    batch = client.messages.batches.create(requests=[request(i, "y" * 800, max_tokens=200) for i in range(3)])
    client.messages.batches.retrieve(batch.id)
    usage = results(client, batch.id)["req-0"]["message"]["usage"]
    assert usage["input_tokens"] == 200 and usage["output_tokens"] == 100
    assert sim.batches.billed["input_tokens"] == 600 and sim.batches.billed["requests"] == 3
    price = price_for(MODEL)
    assert price is not None
    listed = price.cost({**usage, "service_tier": "standard"})
    assert price.cost(usage) == pytest.approx(listed / 2)
    assert sim.batches.billed_usd() == pytest.approx(3 * listed / 2)


def test_cancel_ends_the_batch_at_the_next_poll_with_every_request_canceled() -> None:
    sim = Simulator([r.text("never")], batch_polls=5)
    client = sim.client(max_retries=0)
    batch = client.messages.batches.create(requests=[request(0), request(1)])
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 2
    assert {v["type"] for v in results(client, batch.id).values()} == {"canceled"}
    assert sim.replies_served == 0


def test_a_whole_batch_can_expire() -> None:
    sim = Simulator([r.text("never")], batch_polls=5)
    client = sim.client(max_retries=0)
    batch = client.messages.batches.create(requests=[request(0)])
    sim.batches.expire(batch.id)
    assert client.messages.batches.retrieve(batch.id).request_counts.expired == 1


def test_list_is_newest_first_and_pages_and_delete_needs_an_ended_batch() -> None:
    sim = Simulator(lambda req: r.text("ok"))
    client = sim.client(max_retries=0)
    ids = [client.messages.batches.create(requests=[request(i)]).id for i in range(5)]
    assert [b.id for b in client.messages.batches.list(limit=2)] == list(reversed(ids))  # auto-paged
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == [ids[4], ids[3]] and page.has_more
    with pytest.raises(anthropic.BadRequestError, match="cancel it first"):
        client.messages.batches.delete(ids[0])
    client.messages.batches.retrieve(ids[0])
    assert client.messages.batches.delete(ids[0]).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(ids[0])


def test_the_beta_path_works_the_same_and_its_requests_carry_the_beta_header() -> None:
    sim = Simulator(lambda req: r.text("beta"))
    client = sim.client(max_retries=0)
    batch = client.beta.messages.batches.create(requests=[request(0)], betas=["context-1m-2025-08-07"])
    ended = client.beta.messages.batches.retrieve(batch.id, betas=["context-1m-2025-08-07"])
    assert ended.processing_status == "ended"
    (line,) = list(client.beta.messages.batches.results(batch.id, betas=["context-1m-2025-08-07"]))
    assert line.result.type == "succeeded"
    (inner,) = [q for q in sim.requests if q.batch_id]
    assert inner.headers["anthropic-beta"] == "context-1m-2025-08-07"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"requests": []}, "at least 1 item"),
        ({"requests": [{"custom_id": "has space", "params": {}}]}, "should match pattern"),
        ({"requests": [{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}]}, "Duplicate custom_id"),
        ({"requests": [{"custom_id": "a"}]}, "params: Field required"),
        ({"requests": [{"custom_id": "a", "params": {}, "extra": 1}]}, "Extra inputs"),
        ({"requests": [{"custom_id": "a", "params": {}}] * (MAX_REQUESTS + 1)}, "at most 100000"),
    ],
)
def test_create_refuses_what_the_api_refuses(body: dict[str, Any], needle: str) -> None:
    client = Simulator([]).client(max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match=needle):
        client.post("/v1/messages/batches", body=body, cast_to=object)


def test_an_invalid_request_inside_a_batch_is_an_errored_result_not_a_refused_batch(
    request_schema_on_every_request: list[str], wire_rules_on_every_request: list[str]
) -> None:
    sim = Simulator([r.text("fine")])
    client = sim.client(max_retries=0)
    bad = request(1, max_tokens=0)
    streamed = request(2, stream=True)
    batch = client.messages.batches.create(requests=[request(0), bad, streamed])
    client.messages.batches.retrieve(batch.id)
    found = results(client, batch.id)
    assert found["req-0"]["type"] == "succeeded"
    assert found["req-1"]["error"]["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in found["req-1"]["error"]["error"]["message"]
    assert "streaming" in found["req-2"]["error"]["error"]["message"]
    request_schema_on_every_request.clear()  # max_tokens=0 breaks the schema on purpose


def test_unknown_batches_and_not_yet_ended_results_are_clear_errors() -> None:
    sim = Simulator([r.text("x")], batch_polls=2)
    client = sim.client(max_retries=0)
    with pytest.raises(anthropic.NotFoundError, match="No batch found"):
        client.messages.batches.retrieve("msgbatch_nope")
    batch = client.messages.batches.create(requests=[request(0)])
    with pytest.raises(anthropic.BadRequestError, match="still in_progress"):
        client.get(f"/v1/messages/batches/{batch.id}/results", cast_to=object)


def test_a_batch_outcome_on_a_plain_request_is_a_400_naming_the_mistake() -> None:
    client = Simulator([r.batch_expired()]).client(max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="only a request inside a Message Batch"):
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])


def test_observers_see_the_batch_calls_and_every_batched_request() -> None:
    seen: list[SimRequest] = []
    Simulator.observers.append(seen.append)
    try:
        sim = Simulator(lambda req: r.text("ok"))
        client = sim.client(max_retries=0)
        batch = client.messages.batches.create(requests=[request(0), request(1)])
        client.messages.batches.retrieve(batch.id)
    finally:
        Simulator.observers.remove(seen.append)
    assert [(q.method, q.path, q.batch_id) for q in seen] == [
        ("POST", "/v1/messages/batches", None),
        ("GET", f"/v1/messages/batches/{batch.id}", None),
        ("POST", "/v1/messages", batch.id),
        ("POST", "/v1/messages", batch.id),
    ]


def test_batches_work_over_the_loopback_server_with_results_url_on_it() -> None:
    sim = Simulator(lambda req: r.text("served"))
    with sim.serve() as url:
        client = anthropic.Anthropic(base_url=url, api_key="sk-ant-test-0000", max_retries=0)
        batch = client.messages.batches.create(requests=[request(0)])
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.results_url == f"{url}/v1/messages/batches/{batch.id}/results"
        (line,) = list(client.messages.batches.results(batch.id))
        assert line.result.type == "succeeded"
        client.close()


def test_the_batch_create_body_the_runner_sends_validates_against_the_api_schema() -> None:
    """The create body, as the SDK sends it, against the spec's ``CreateMessageBatchParams``."""
    if not realtraffic.available():
        pytest.skip(realtraffic.SKIP_REASON)
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    sim = Simulator(lambda req: r.text("ok"))
    sim.client(max_retries=0).messages.batches.create(requests=[request(0), request(1, system="Be brief.")])
    spec = realtraffic._spec()
    registry: Registry[Any] = Registry().with_resource("urn:spec", Resource(contents=spec, specification=DRAFT202012))
    schema = {"$ref": "urn:spec#/components/schemas/CreateMessageBatchParams"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    assert not list(validator.iter_errors(sim.requests[0].body))
