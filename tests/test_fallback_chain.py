"""The fallback chain (``Policy.fallback_models``): a request that ends in a refusal, or fails overloaded or rate
limited after the SDK's own retries, goes on to the next model; the one that answered is kept (sticky, stored).

Every run here goes through the real ``anthropic`` client, with its default retries, on the simulator; the
simulator answers by the request's model, so each hop's request is answered by its own model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentfsm import Agent, Policy, SQLiteStore, tool
from agentfsm.errors import ConfigurationError
from agentfsm.machine.serverside import FALLBACK_CREDIT_BETA
from agentfsm.machine.state import RunState
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.model import ScriptItem
from agentfsm.testing import DRIVERS, client_for, drive, shown_text
from agentfsm.wire.caching import unmarked
from agentfsm.wire.pricing import price_for
from agentfsm.wire.usage import Usage

OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-4-5"
CHAIN = (SONNET, HAIKU)
SDK_ATTEMPTS = 3  # the SDK's default max_retries=2: a 429/529 reaches the machine after three attempts


def per_model(**queues: Sequence[ScriptItem]) -> Callable[[SimRequest], Any]:
    """A model per name: each request is answered by the next item of its model's queue (``OPUS=[...]``)."""
    left: dict[str, list[ScriptItem]] = {_name(k): list(v) for k, v in queues.items()}

    def answer(request: SimRequest) -> Any:
        queue = left[request.model]
        assert queue, f"no reply left for {request.model}"
        item = queue.pop(0)
        return item(request) if callable(item) else item

    return answer


def _name(key: str) -> str:
    return {"OPUS": OPUS, "SONNET": SONNET, "HAIKU": HAIKU}[key]


def agent_on(sim: Simulator, driver: str = "run", **policy: Any) -> Agent:
    return Agent(client=client_for(sim, driver), model=OPUS, policy=Policy(**{"fallback_models": CHAIN, **policy}))


def models(sim: Simulator) -> list[str]:
    return [q.model for q in sim.requests]


def events(result: Any, name: str) -> list[dict[str, Any]]:
    return [e.data for e in result.events if e.event == name]


@tool
def lookup(city: str) -> str:
    """Look up a city."""
    return f"{city}: 31°C"


# --- down the chain -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_overloaded_model_hands_the_same_request_to_the_next(driver: str) -> None:
    sim = Simulator(per_model(OPUS=[r.overloaded()] * SDK_ATTEMPTS, SONNET=[r.text("Hello from Sonnet.")]))
    streamed: list[Any] = []
    result = drive(agent_on(sim, driver), "Hi", driver, stream_events=streamed)
    assert (result.final_state, result.text, result.error) == ("done", "Hello from Sonnet.", None)
    assert models(sim) == [OPUS] * SDK_ATTEMPTS + [SONNET]
    assert unmarked(sim.requests[-1].messages) == sim.requests[0].messages  # the same request (a cache mark aside)
    assert result.path == ["requesting", "requesting", "end_turn", "done"]
    assert result.trace[0].trigger == "retry_fallback"
    [hop] = events(result, "fallback.hop")
    assert hop == {"from_model": OPUS, "to_model": SONNET, "trigger": "overloaded", "position": 1,
                   "credit_token": False}  # fmt: skip
    assert result.turn_models == [(2, SONNET)] and result.model == SONNET
    if driver.endswith("stream"):
        assert shown_text(streamed) == "Hello from Sonnet."


@pytest.mark.beyond_schema  # fallback_credit_token is newer than the vendored schema
@pytest.mark.parametrize("driver", ["run", "astream"])
def test_rate_limit_then_refusal_walks_the_whole_chain_with_the_refusals_credit_token(driver: str) -> None:
    sim = Simulator(
        per_model(
            OPUS=[r.rate_limited()] * SDK_ATTEMPTS,
            SONNET=[r.refusal(credit_token=True)],
            HAIKU=[r.text("Haiku answers.")],
        )
    )
    result = drive(agent_on(sim, driver), "Hi", driver)
    assert (result.final_state, result.text) == ("done", "Haiku answers.")
    assert models(sim) == [OPUS] * SDK_ATTEMPTS + [SONNET, HAIKU]
    sonnet, haiku = sim.requests[-2:]
    assert FALLBACK_CREDIT_BETA in sonnet.betas and "fallback_credit_token" not in sonnet.body
    assert haiku.body["fallback_credit_token"]["mode"] == "best_effort"
    assert haiku.body["fallback_credit_token"]["token"].startswith("fct_")
    assert unmarked(haiku.messages) == unmarked(sonnet.messages) == sim.requests[0].messages  # no refusal sent back
    assert [(h["trigger"], h["to_model"]) for h in events(result, "fallback.hop")] == [
        ("rate_limited", SONNET),
        ("refusal", HAIKU),
    ]
    assert result.turn_models == [(2, SONNET), (3, HAIKU)]


def test_a_chain_with_every_model_overloaded_fails_after_each_model_once() -> None:
    sim = Simulator(per_model(**{k: [r.overloaded()] * SDK_ATTEMPTS for k in ("OPUS", "SONNET", "HAIKU")}))
    result = agent_on(sim).run("Hi")
    assert result.final_state == "failed" and result.error is not None
    assert (result.error.kind, result.error.status_code) == ("overloaded", 529)
    assert models(sim) == [OPUS] * 3 + [SONNET] * 3 + [HAIKU] * 3  # each hop once
    assert result.messages == [{"role": "user", "content": "Hi"}]  # kept
    assert result.trace[-1].trigger == "api_error"


def test_fallback_on_names_what_falls_back() -> None:
    sim = Simulator(per_model(OPUS=[r.overloaded()] * SDK_ATTEMPTS))
    result = agent_on(sim, fallback_on=("refusal",)).run("Hi")
    assert result.final_state == "failed" and result.error is not None and result.error.kind == "overloaded"
    assert models(sim) == [OPUS] * SDK_ATTEMPTS  # no hop
    sim = Simulator(per_model(OPUS=[r.refusal()]))
    refused = agent_on(sim, fallback_on=("overloaded", "rate_limited")).run("Hi")
    assert refused.final_state == "refused" and models(sim) == [OPUS]


def test_an_error_that_is_not_a_capacity_error_never_falls_back() -> None:
    sim = Simulator(per_model(OPUS=[r.authentication_error()]))
    result = agent_on(sim).run("Hi")
    assert result.final_state == "failed" and result.error is not None and result.error.kind == "authentication"
    assert models(sim) == [OPUS]


# --- stickiness -------------------------------------------------------------------------------------------


def tool_then_answer(answer: str) -> list[ScriptItem]:
    return [r.tool_use("lookup", {"city": "Hanoi"}), r.text(answer)]


@pytest.mark.parametrize("driver", ["run", "arun"])
def test_the_model_that_answered_is_kept_for_the_rest_of_the_conversation(driver: str) -> None:
    sim = Simulator(per_model(OPUS=[r.overloaded()] * SDK_ATTEMPTS, SONNET=tool_then_answer("Warm.")))
    agent = Agent(client=client_for(sim, driver), model=OPUS, tools=[lookup], policy=Policy(fallback_models=CHAIN))
    result = drive(agent, "Weather?", driver)
    assert result.final_state == "done" and models(sim)[SDK_ATTEMPTS:] == [SONNET, SONNET]
    assert result.turn_models == [(2, SONNET)]


def test_not_sticky_every_new_request_starts_on_the_agents_model() -> None:
    sim = Simulator(
        per_model(
            OPUS=[r.overloaded()] * SDK_ATTEMPTS + [r.text("Opus again.")],
            SONNET=[r.tool_use("lookup", {"city": "Hanoi"})],
        )
    )
    agent = Agent(
        client=sim.client(), model=OPUS, tools=[lookup], policy=Policy(fallback_models=CHAIN, fallback_sticky=False)
    )
    result = agent.run("Weather?")
    assert (result.final_state, result.text) == ("done", "Opus again.")
    assert models(sim) == [OPUS] * SDK_ATTEMPTS + [SONNET, OPUS]
    assert result.turn_models == [(2, SONNET), (3, OPUS)]


def test_not_sticky_the_fallback_models_thinking_is_not_sent_back_to_the_agents_model() -> None:
    thought = r.message([r.thinking_block("Sonnet thinks."), r.tool_use_block("lookup", {"city": "Hanoi"})], "tool_use")
    sim = Simulator(per_model(OPUS=[r.overloaded()] * SDK_ATTEMPTS + [r.text("Warm.")], SONNET=[thought]))
    policy = Policy(fallback_models=CHAIN, fallback_sticky=False)
    result = Agent(client=sim.client(), model=OPUS, tools=[lookup], policy=policy).run("Weather?")
    assert result.final_state == "done" and models(sim)[-1] == OPUS
    assert [b["type"] for b in sim.requests[-1].messages[1]["content"]] == ["tool_use"]
    assert [b["type"] for b in result.messages[1]["content"]] == ["thinking", "tool_use"]


def test_the_pinned_model_survives_a_crash_and_a_resume_from_sqlite(tmp_path: Path) -> None:
    crash = {"on": True}

    @tool
    def slow_lookup(city: str) -> str:
        """Look up a city (the process dies here the first time)."""
        if crash["on"]:
            raise KeyboardInterrupt
        return f"{city}: 31°C"

    db = tmp_path / "runs.db"
    first = Simulator(
        per_model(OPUS=[r.overloaded()] * SDK_ATTEMPTS, SONNET=[r.tool_use("slow_lookup", {"city": "Hanoi"})])
    )
    policy = Policy(fallback_models=CHAIN)
    with pytest.raises(KeyboardInterrupt):
        Agent(client=first.client(), model=OPUS, tools=[slow_lookup], policy=policy).run(
            "Weather?", store=SQLiteStore(db), conversation_id="c1"
        )
    stored = SQLiteStore(db).load("c1")
    assert (stored.model, stored.chain_at, stored.turn_models) == (SONNET, 1, [(2, SONNET)])
    crash["on"] = False
    second = Simulator(per_model(SONNET=[r.text("Warm, said Sonnet.")]))  # another process: Opus is never asked
    result = Agent(client=second.client(), model=OPUS, tools=[slow_lookup], policy=policy).resume(
        "c1", store=SQLiteStore(db)
    )
    assert (result.final_state, result.text) == ("done", "Warm, said Sonnet.")
    assert models(second) == [SONNET] and result.turn_models == [(2, SONNET)]
    assert result.usage_by_model[SONNET].output_tokens > 0


def test_a_snapshot_written_before_the_chain_loads_with_the_agents_model_first() -> None:
    old = {"messages": [{"role": "user", "content": "Hi"}], "model": OPUS, "max_tokens": 1024}
    state = RunState.model_validate(old)
    assert (state.chain_at, state.thinking_before, state.turn_models, state.usage_by_model) == (0, 0, [], {})


# --- the chain's configuration ------------------------------------------------------------------------------


def test_fallback_model_is_a_chain_of_one() -> None:
    sim = Simulator(per_model(OPUS=[r.overloaded()] * SDK_ATTEMPTS, SONNET=[r.text("Hi.")]))
    result = Agent(client=sim.client(), model=OPUS, policy=Policy(fallback_model=SONNET)).run("Hi")
    assert result.final_state == "done" and models(sim)[-1] == SONNET
    assert Policy(fallback_model=SONNET).fallback_chain == (SONNET,)
    with pytest.raises(ValidationError, match="not both"):
        Policy(fallback_model=SONNET, fallback_models=[HAIKU])
    with pytest.raises(ValidationError, match="distinct"):
        Policy(fallback_models=[SONNET, SONNET])
    with pytest.raises(ValidationError):
        Policy(fallback_on=("timeout",))


def test_a_client_side_chain_and_server_side_fallbacks_are_refused_together() -> None:
    policy = Policy(fallback_models=CHAIN, fallbacks=[{"model": SONNET}])
    with pytest.raises(ConfigurationError, match=r"cannot be combined.*Use\s+fallback_models"):
        Agent(client=Simulator([]).client(), model=OPUS, policy=policy)


# --- what it costs, and which model answered ------------------------------------------------------------


def test_each_reply_is_priced_at_the_rate_of_the_model_that_answered() -> None:
    sim = Simulator(
        per_model(
            OPUS=[r.tool_use("lookup", {"city": "Hanoi"}), r.overloaded(), r.overloaded(), r.overloaded()],
            SONNET=[r.text("Warm.")],
        )
    )
    agent = Agent(
        client=sim.client(), model=OPUS, tools=[lookup], policy=Policy(fallback_models=CHAIN, prompt_caching=False)
    )
    result = agent.run("Weather?")
    assert result.final_state == "done" and result.turn_models == [(1, OPUS), (3, SONNET)]
    assert set(result.usage_by_model) == {OPUS, SONNET}
    total = Usage()
    for usage in result.usage_by_model.values():
        total.add(usage.model_dump())
    assert total.input_tokens == result.usage.input_tokens and total.output_tokens == result.usage.output_tokens
    for model, usage in result.usage_by_model.items():
        price = price_for(model, None)
        assert price is not None
        assert result.cost_by_model[model] == pytest.approx(price.reply_cost(usage.model_dump()))
    assert result.cost_usd == pytest.approx(sum(c for c in result.cost_by_model.values() if c is not None))


# --- thinking blocks are the model's that produced them ---------------------------------------------------


def test_after_a_hop_the_other_models_thinking_blocks_are_left_out_of_the_requests() -> None:
    thought = r.message(
        [r.thinking_block("Check the weather tool."), r.tool_use_block("lookup", {"city": "Hanoi"})], "tool_use"
    )
    sim = Simulator(per_model(OPUS=[thought, *[r.overloaded()] * SDK_ATTEMPTS], SONNET=[r.text("Warm.")]))
    result = Agent(client=sim.client(), model=OPUS, tools=[lookup], policy=Policy(fallback_models=CHAIN)).run("W?")
    assert result.final_state == "done"
    to_opus, to_sonnet = sim.requests[1], sim.requests[-1]
    assert [b["type"] for b in to_opus.messages[1]["content"]] == ["thinking", "tool_use"]  # Opus's own, to Opus
    assert [b["type"] for b in to_sonnet.messages[1]["content"]] == ["tool_use"]  # not to Sonnet
    assert [b["type"] for b in result.messages[1]["content"]] == ["thinking", "tool_use"]  # kept in the history
