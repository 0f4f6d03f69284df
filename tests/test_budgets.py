"""Budgets (tokens, dollars, wall time) and cost accounting, against the simulator's reported usage.

A budget is checked before every request: the first request that would start over budget is not sent,
and the run ends ``truncated`` with the budget's name as its reason and the history kept.
"""

from __future__ import annotations

import time
import typing
from typing import Any

import anthropic
import pytest

from agentfsm import Agent, Policy, RunResult, tool
from agentfsm.agent import DEFAULT_MODEL
from agentfsm.engines.core import build_agents
from agentfsm.errors import ConfigurationError
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.caching import without_cache_control
from agentfsm.sim.tokens import count_input_tokens
from agentfsm.testing import FakeClock, client_for, drive, use_clock
from agentfsm.wire.messages import validate_history, wire_problems
from agentfsm.wire.pricing import DEFAULT_PRICES, UNPRICED, Price, price_for

MODEL = "claude-sonnet-4-6"  # $3 / $15 per million tokens
LONG_SYSTEM = "Answer from the handbook below, citing its sections. " * 150  # about 2,000 tokens
DOCUMENT = "".join(f"Paragraph {i} carries the story a little further on. " for i in range(120))
DRIVERS = ["run", "arun"]


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def lookups(n: int, name: str = "lookup") -> Any:
    def reply(request: SimRequest) -> Any:
        done = sum(1 for m in request.messages if m["role"] == "assistant")
        return r.tool_use(name, {"key": f"k{done}"}) if done < n else r.text("All looked up.")

    return reply


def run(sim: Simulator, driver: str, prompt: Any = "Go.", **kw: Any) -> RunResult:
    kw.setdefault("model", MODEL)
    kw.setdefault("tools", [lookup])
    return drive(Agent(client=client_for(sim, driver, max_retries=0), logger=None, **kw), prompt, driver)


def data(result: RunResult, name: str) -> list[dict[str, Any]]:
    return [e.data for e in result.events if e.event == name]


def served_usage(result: RunResult) -> list[dict[str, Any]]:
    """The usage of every reply, as the simulator reported it."""
    return [d["usage"] for d in data(result, "response.received")]


def list_price(usage: dict[str, Any], input: float = 3.0, output: float = 15.0) -> float:
    """A reply's cost by hand: writes at 1.25x the input price, reads at 0.1x."""
    return (
        usage["input_tokens"] * input
        + usage["output_tokens"] * output
        + usage["cache_creation_input_tokens"] * input * 1.25
        + usage["cache_read_input_tokens"] * input * 0.1
    ) / 1e6


def assert_stopped_cleanly(result: RunResult, sim: Simulator, reason: str) -> None:
    """Truncated for ``reason``, the history kept and sendable, and no request sent once over budget."""
    assert (result.final_state, result.reason, result.error) == ("truncated", reason, None)
    assert result.path[-2:] == ["requesting", "truncated"] and result.trace[-1].trigger == "over_budget"
    validate_history(result.messages)
    assert wire_problems(result.messages) == []
    assert result.turns == len(sim.requests) == len(served_usage(result))
    finished = data(result, "run.finished")[-1]
    assert finished["reason"] == reason and finished["cost_usd"] == result.cost_usd


def spent_before_each_request(result: RunResult) -> list[dict[str, float]]:
    """The budgets' totals at the moment each request went out (from the events, in order)."""
    totals = {"input": 0.0, "output": 0.0, "cost": 0.0}
    seen = []
    for event in result.events:
        if event.event == "request.sent":
            seen.append(dict(totals))
        elif event.event == "response.received":
            u = event.data["usage"]
            totals["input"] += u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"]
            totals["output"] += u["output_tokens"]
            totals["cost"] += list_price(u)
    seen.append(totals)
    return seen


# --- each budget ends the run truncated, at the first request that would start over it -------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_output_token_budget(driver: str) -> None:
    sim = Simulator(r.writer(DOCUMENT))
    policy = Policy(max_tokens=100, max_continuations=20, max_output_tokens=250, continuation="prompt")
    result = run(sim, driver, "Write it.", policy=policy)
    assert_stopped_cleanly(result, sim, "max_output_tokens")
    *before, after = spent_before_each_request(result)
    assert all(s["output"] < 250 for s in before) and after["output"] >= 250
    assert len(sim.requests) == 3 and result.usage.output_tokens == 300
    assert DOCUMENT.startswith(result.text) and len(result.text) > 0  # what was written is kept


@pytest.mark.parametrize("driver", DRIVERS)
def test_input_token_budget_counts_cache_reads_and_writes(driver: str) -> None:
    sim = Simulator(lookups(10))
    result = run(sim, driver, system=LONG_SYSTEM, policy=Policy(max_input_tokens=7000))
    assert_stopped_cleanly(result, sim, "max_input_tokens")
    *before, after = spent_before_each_request(result)
    assert all(s["input"] < 7000 for s in before) and after["input"] >= 7000
    u = result.usage
    assert (
        u.cache_read_input_tokens > 0
        and u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens >= 7000
    )
    assert result.messages[-1]["content"][0]["type"] == "tool_result"  # stopped before asking again


@pytest.mark.parametrize("driver", DRIVERS)
def test_dollar_budget(driver: str) -> None:
    sim = Simulator(lookups(10))
    result = run(sim, driver, system=LONG_SYSTEM, policy=Policy(max_cost_usd=0.015))
    assert_stopped_cleanly(result, sim, "max_cost_usd")
    *before, after = spent_before_each_request(result)
    assert all(s["cost"] < 0.015 for s in before) and after["cost"] >= 0.015
    assert result.cost_usd == pytest.approx(after["cost"])


@pytest.mark.parametrize("driver", DRIVERS)
def test_wall_time_budget(driver: str) -> None:
    clock = FakeClock()  # each tool call takes ten seconds on it

    @tool
    def slow(key: str) -> str:
        """Take a while."""
        clock.advance(10)
        return key

    sim = Simulator(lookups(5, name="slow"))
    with use_clock(clock):
        result = run(sim, driver, tools=[slow], policy=Policy(max_wall_seconds=25))
    assert_stopped_cleanly(result, sim, "max_wall_seconds")
    assert len(sim.requests) == 3  # sent at 0 s, 10 s and 20 s; at 30 s the budget is spent
    assert result.messages[-1]["content"][0]["type"] == "tool_result"  # the last tool result is kept


def test_wall_time_budget_on_the_real_clock() -> None:
    @tool
    def sleepy(key: str) -> str:
        """Take a while."""
        time.sleep(0.2)
        return key

    sim = Simulator(lookups(5, name="sleepy"))
    result = run(sim, "run", tools=[sleepy], policy=Policy(max_wall_seconds=0.1))
    assert_stopped_cleanly(result, sim, "max_wall_seconds")
    assert len(sim.requests) == 1


def test_a_run_within_every_budget_is_not_stopped() -> None:
    sim = Simulator(lookups(2))
    budgets = Policy(max_input_tokens=10**6, max_output_tokens=10**6, max_cost_usd=10.0, max_wall_seconds=60)
    result = run(sim, "run", policy=budgets)
    assert result.final_state == "done" and result.reason == "end_turn"


# --- usage and cost -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_usage_and_cost_are_the_simulators_usage_times_the_price_table(driver: str) -> None:
    sim = Simulator(lookups(4))
    result = run(sim, driver, system=LONG_SYSTEM)
    assert result.final_state == "done"
    usages = served_usage(result)
    assert len(usages) == len(sim.requests) == result.usage.requests == 5
    for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        assert getattr(result.usage, key) == sum(u[key] for u in usages)
    assert result.usage.cache_read_input_tokens > 0 and result.usage.cache_creation_input_tokens > 0
    for request, usage in zip(sim.requests, usages, strict=True):  # every prompt token billed exactly once
        billed = usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
        assert billed == count_input_tokens(without_cache_control(request.body))
    assert result.cost_usd == pytest.approx(sum(list_price(u) for u in usages))
    finished = data(result, "run.finished")[-1]
    assert finished["cost_usd"] == result.cost_usd and finished["usage"] == result.usage.model_dump()


def test_prices_override_the_table() -> None:
    exact = Policy(prices={MODEL: Price(input=1.0, output=2.0, cache_write=1.0, cache_read=0.5)})
    result = run(Simulator(lookups(2)), "run", system=LONG_SYSTEM, policy=exact)
    expected = sum(
        (
            u["input_tokens"]
            + 2 * u["output_tokens"]
            + u["cache_creation_input_tokens"]
            + 0.5 * u["cache_read_input_tokens"]
        )
        / 1e6
        for u in served_usage(result)
    )
    assert result.cost_usd == pytest.approx(expected)
    by_prefix = Policy(prices={"claude-sonnet": Price(input=10.0, output=10.0)})
    assert price_for(MODEL, by_prefix.prices) == Price(input=10.0, output=10.0)
    assert price_for("claude-sonnet-4-5-20250929") == DEFAULT_PRICES["claude-sonnet-4-5"]
    # overrides that do not name the model leave it at its list price; a model nobody prices has none
    assert price_for("claude-haiku-4-5", by_prefix.prices) == DEFAULT_PRICES["claude-haiku-4-5"]
    assert price_for("claude-future-9", by_prefix.prices) is None and price_for("claude-future-9") is None


def test_an_unknown_price_gives_no_cost_and_no_warning_without_a_dollar_budget() -> None:
    quiet = run(Simulator(lookups(1), models=[MODEL, "claude-future-9"]), "run", model="claude-future-9")
    assert quiet.final_state == "done" and quiet.cost_usd is None  # not guessed
    assert data(quiet, "run.finished")[-1]["cost_usd"] is None and not data(quiet, "budget.unknown_cost")


@pytest.mark.parametrize(
    ("model", "policy", "named", "why"),
    [
        ("claude-future-9", Policy(max_cost_usd=1.0), "claude-future-9", "is not in the price table"),
        ("claude-mythos-preview", Policy(max_cost_usd=1.0), "claude-mythos-preview", "has no published list price"),
        (
            MODEL,
            Policy(max_cost_usd=1.0, fallback_model="claude-future-9"),
            "claude-future-9",
            "is not in the price table",
        ),
        (
            "claude-fable-5",
            Policy(max_cost_usd=1.0, fallbacks=[{"model": "claude-opus-4-8"}, {"model": "claude-future-9"}]),
            "claude-future-9",
            "is not in the price table",
        ),
    ],
)
def test_a_dollar_budget_that_cannot_be_enforced_is_refused_before_any_request(
    model: str, policy: Policy, named: str, why: str
) -> None:
    sim = Simulator(lookups(1), models=lambda _: True)
    with pytest.raises(ConfigurationError) as caught:
        Agent(client=sim.client(max_retries=0), model=model, policy=policy, logger=None)
    message = str(caught.value)
    assert f"{named!r} {why}" in message and "max_cost_usd=1 cannot be enforced" in message
    assert f"Policy(prices={{{named!r}: Price(input=..., output=...)}})" in message
    assert sim.requests_received == 0
    # the same configuration with the price given is accepted
    priced = policy.model_copy(update={"prices": {named: Price(input=3.0, output=15.0)}})
    Agent(client=sim.client(max_retries=0), model=model, policy=priced, logger=None)


def test_a_subclass_configured_with_an_unpriced_model_is_refused_when_made() -> None:
    """Class attributes count too: a durable engine's worker and the batch runner make their agents this way
    (``agent_class()``), so every run they would start is refused before it is enqueued or sent."""

    class Expensive(Agent):
        model = "claude-future-9"
        policy = Policy(max_cost_usd=0.5)

    sim = Simulator(lookups(1), models=lambda _: True)
    with pytest.raises(ConfigurationError, match="'claude-future-9' is not in the price table"):
        Expensive(client=sim.client(max_retries=0), logger=None)
    with pytest.raises(ConfigurationError, match="cannot be enforced"):
        build_agents([Expensive])
    assert sim.requests_received == 0
    # a budget-less subclass of it is fine: nothing to enforce
    assert Expensive(client=sim.client(), policy=Policy(), logger=None).model == "claude-future-9"


@pytest.mark.beyond_schema  # the fallbacks parameter; the fallback block
def test_a_fallback_model_that_turns_up_only_at_run_time_gives_a_warning() -> None:
    """With ``fallbacks="default"`` the API picks the model: it cannot be checked up front, so a reply served by
    one with no price ends the cost count (None) with a ``budget.unknown_cost`` warning, once."""
    served = r.served_by_fallback(r.tool_use("lookup", {"key": "a"}), to="claude-future-9")
    sim = Simulator([served, r.text("Done.")])
    policy = Policy(max_cost_usd=0.5, fallbacks="default")
    result = run(sim, "run", model="claude-fable-5", policy=policy)
    assert result.final_state == "done" and result.cost_usd is None and len(sim.requests) == 2
    warnings = [e for e in result.events if e.event == "budget.unknown_cost"]
    assert [(w.level, w.data["model"]) for w in warnings] == [("warning", "claude-future-9")]
    assert data(result, "run.finished")[-1]["cost_usd"] is None


# --- the built-in price table ------------------------------------------------------------------------------------


def test_every_model_of_the_sdk_is_priced_or_known_to_have_no_published_price() -> None:
    """Fails when the installed SDK adds a model nobody has looked up: price it, or list it in UNPRICED."""
    lineup = [m for arg in typing.get_args(anthropic.types.Model) for m in typing.get_args(arg)]
    assert "claude-sonnet-5-5" in lineup and len(lineup) >= 20
    unchecked = [m for m in lineup if (price_for(m) is None) == (m not in UNPRICED)]
    assert unchecked == [], f"price these models in agentfsm.wire.pricing, or list them in UNPRICED: {unchecked}"
    assert price_for(DEFAULT_MODEL) is not None  # the default model's runs have a cost


def test_a_later_version_is_not_priced_as_an_earlier_one() -> None:
    # a dated snapshot is its model; a version that merely starts the same way is not
    assert price_for("claude-sonnet-5-5-20261001") == DEFAULT_PRICES["claude-sonnet-5-5"]
    assert price_for("claude-opus-4-20250514") == DEFAULT_PRICES["claude-opus-4"]
    assert price_for("claude-sonnet-5-7") is None and price_for("claude-fable-5-3") is None
    assert price_for("claude-haiku-4-5-20251001") == DEFAULT_PRICES["claude-haiku-4-5"]


USAGE = {
    "input_tokens": 10_000,
    "output_tokens": 2_000,
    "cache_creation_input_tokens": 3_000,
    "cache_read_input_tokens": 50_000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
}


@pytest.mark.parametrize(
    ("model", "rates"),
    [
        # input, output, 5-minute write, 1-hour write, read: the rates of the pricing and model pages
        ("claude-sonnet-5-5", (2.0, 10.0, 2.5, 4.0, 0.10)),  # reads cut to 0.05x on 2026-10-07
        ("claude-sonnet-5", (2.0, 10.0, 2.5, 4.0, 0.20)),
        ("claude-opus-5-5", (4.0, 20.0, 5.0, 8.0, 0.20)),
        ("claude-opus-5", (5.0, 25.0, 6.25, 10.0, 0.50)),
        ("claude-opus-4-8", (5.0, 25.0, 6.25, 10.0, 0.50)),
        ("claude-opus-4-5-20251101", (5.0, 25.0, 6.25, 10.0, 0.50)),
        ("claude-opus-4-1", (15.0, 75.0, 18.75, 30.0, 1.50)),
        ("claude-fable-5", (10.0, 50.0, 12.5, 20.0, 1.0)),
        ("claude-mythos-5", (10.0, 50.0, 12.5, 20.0, 1.0)),
        ("claude-fable-5-1", (10.0, 50.0, 12.5, 20.0, 0.25)),
        ("claude-mythos-5-1", (10.0, 50.0, 12.5, 20.0, 0.25)),
        ("claude-fable-5-2", (8.0, 40.0, 10.0, 16.0, 0.20)),
        ("claude-mythos-5-2", (8.0, 40.0, 10.0, 16.0, 0.20)),
        ("claude-haiku-4-5", (1.0, 5.0, 1.25, 2.0, 0.10)),
        ("claude-sonnet-4-6", (3.0, 15.0, 3.75, 6.0, 0.30)),
    ],
)
def test_the_cost_of_a_usage_object_at_each_models_rates(model: str, rates: tuple[float, ...]) -> None:
    inp, out, write, write_1h, read = rates
    expected = (10_000 * inp + 2_000 * out + 1_000 * write + 2_000 * write_1h + 50_000 * read) / 1e6
    price = price_for(model)
    assert price is not None and price.cost(USAGE) == pytest.approx(expected)
    assert price.cost({**USAGE, "service_tier": "batch"}) == pytest.approx(expected / 2)


def test_haiku_5_5_bills_a_prompt_over_100k_tokens_wholly_at_the_long_prompt_rates() -> None:
    price = price_for("claude-haiku-5-5")
    assert price is not None and price.long_prompt_tokens == 100_000

    def at(inp: float, out: float, write: float, write_1h: float, read: float, u: dict[str, Any]) -> float:
        c = u.get("cache_creation", {})
        return (
            u["input_tokens"] * inp
            + u["output_tokens"] * out
            + c.get("ephemeral_5m_input_tokens", 0) * write
            + c.get("ephemeral_1h_input_tokens", 0) * write_1h
            + u["cache_read_input_tokens"] * read
        ) / 1e6

    short = {**USAGE, "cache_read_input_tokens": 87_000}  # 10,000 + 3,000 + 87,000 = 100,000: not over
    long = {**USAGE, "cache_read_input_tokens": 87_001}  # one token more: every token at the higher rates
    assert price.cost(short) == pytest.approx(at(0.10, 0.50, 0.125, 0.20, 0.01, short))
    assert price.cost(long) == pytest.approx(at(0.50, 2.50, 0.625, 1.00, 0.05, long))
    assert price.cost(long) > 4.9 * price.cost(short)
    # a compaction pass is a request of its own: banded on its own prompt, not on the reply's sum
    compacted = {
        "input_tokens": 2_000,
        "output_tokens": 300,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "iterations": [
            {"type": "compaction", "input_tokens": 150_000, "output_tokens": 1_000},
            {"type": "message", "input_tokens": 2_000, "output_tokens": 300},
        ],
    }
    summary = {"input_tokens": 150_000, "output_tokens": 1_000, "cache_read_input_tokens": 0}
    assert price.reply_cost(compacted) == pytest.approx(
        at(0.10, 0.50, 0, 0, 0, {**compacted, "cache_creation": {}}) + at(0.50, 2.50, 0, 0, 0, summary)
    )


def test_a_price_band_needs_its_threshold_and_its_rates() -> None:
    with pytest.raises(ValueError, match="go together"):
        Price(input=1.0, output=2.0, long_prompt_tokens=10)
    with pytest.raises(ValueError, match="one band"):
        band = Price(input=2.0, output=4.0, long_prompt_tokens=5, long_prompt=Price(input=3.0, output=6.0))
        Price(input=1.0, output=2.0, long_prompt_tokens=10, long_prompt=band)


def test_a_one_hour_cache_write_is_priced_at_twice_the_input() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 0,
        "cache_creation_input_tokens": 3000,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    }
    assert Price(input=3.0, output=15.0).cost(usage) == pytest.approx((10 * 3 + 1000 * 3.75 + 2000 * 6) / 1e6)
