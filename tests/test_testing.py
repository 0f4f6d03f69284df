"""``assert_trace``: golden traces with a readable diff."""

from __future__ import annotations

import pytest

from agentfsm import Agent
from agentfsm.observe.replay import replay_one
from agentfsm.result import TraceStep
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import assert_trace

PATH = ["requesting", "max_tokens", "requesting", "end_turn", "done"]


def run() -> object:
    sim = Simulator([r.max_tokens("Part one,"), r.text(" part two.")])
    return Agent(client=sim.client(), model="claude-haiku-4-5", logger=None).run("Write")


def test_a_matching_trace_passes_for_results_conversations_replays_and_lists() -> None:
    result = run()
    assert_trace(result, PATH)
    assert_trace(result.trace, PATH)  # type: ignore[attr-defined]
    assert_trace(replay_one(result.events), PATH)  # type: ignore[attr-defined]
    sim = Simulator([r.text("hi")])
    conv = Agent(client=sim.client(), logger=None).start("hello")
    assert_trace(conv, [])  # nothing happened yet
    conv.step()
    assert_trace(conv, ["requesting", "end_turn"])


def test_a_different_trace_fails_with_a_step_by_step_diff() -> None:
    with pytest.raises(AssertionError) as err:
        assert_trace(run(), ["requesting", "end_turn", "done"])
    message = str(err.value)
    assert message.startswith("the run's path differs from the expected one from step 1 on (expected 3 states, got 5)")
    assert "  expected: requesting → end_turn → done" in message
    assert "  actual:   requesting → max_tokens → requesting → end_turn → done" in message
    lines = message.splitlines()
    # the aligned diff: the two extra states are marked "+", with the transition that reached each
    plus = [line for line in lines if line.startswith("  + ")]
    assert len(plus) == 2 and "max_tokens" in plus[0] and "via max_tokens (turn 1)" in plus[0]
    assert "via continue_text (turn 1)" in plus[1]
    assert any(line.startswith("       4  done") and "via finish (turn 2)" in line for line in lines)


def test_a_changed_state_is_marked_as_differing() -> None:
    with pytest.raises(AssertionError) as err:
        assert_trace(run(), [*PATH[:-1], "truncated"])
    changed = [line for line in str(err.value).splitlines() if line.startswith("  ~ ")]
    assert len(changed) == 1 and "truncated" in changed[0] and "done" in changed[0]


def test_missing_states_are_marked() -> None:
    with pytest.raises(AssertionError) as err:
        assert_trace(run(), [*PATH, "requesting"])
    assert any(line.startswith("  -    5  requesting") for line in str(err.value).splitlines())


def test_wrong_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="list of state names"):
        assert_trace(run(), "requesting")
    with pytest.raises(TypeError, match="RunResult, Conversation, ReplayedRun or list of TraceStep"):
        assert_trace(42, PATH)
    assert_trace([TraceStep(source="a", dest="b", trigger="t", turn=0)], ["a", "b"])
