"""``explore``: every path of an agent on the simulator, checked; a seeded bug found and reproduced by its script.

The fast lane explores at depth 1 (a clean agent, a broken one, a waiting one, without faults or
crashes); the whole search at depth 2, faults and crashes on, is in the slow tier (about 15 s).
"""

from __future__ import annotations

from typing import Any

import pytest

from agentfsm import Agent, Conversation, Transition, Wait, actions, tool
from agentfsm.cli import main
from agentfsm.errors import InvalidActionError
from agentfsm.exploring import Crash, CrashingStore, alphabet, explore
from agentfsm.testing import explore as explore_reexported


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


class Clean(Agent):
    tools = [lookup]


def forget_the_calls(conv: Conversation) -> None:
    """The seeded bug: the reply is kept, its tool calls left unanswered, and the run asks again."""
    actions.keep_reply(conv)


class Broken(Agent):
    tools = [lookup]
    transitions = [Transition("tool_use", "skip", "requesting", action=forget_the_calls)]


class Approval(Agent):
    tools = [lookup]
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask", "awaiting_approval"),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
    ]


def test_the_alphabet_has_every_stop_reason_each_tool_and_the_faults() -> None:
    names = [letter.name for letter in alphabet(Clean())]
    for name in ("end_turn", "tool_use:lookup", "max_tokens", "max_tokens_tool_use", "pause_turn", "refusal"):
        assert name in names
    for name in ("stop_sequence", "empty_end_turn", "http_429", "http_500", "http_529", "stream_drop"):
        assert name in names
    assert "http_429" not in [letter.name for letter in alphabet(Clean(), faults=False)]
    assert explore_reexported is explore


def test_a_seeded_bug_is_found_and_its_script_reproduces_it() -> None:
    found = explore(Broken, depth=1, faults=False, crashes=False)
    assert not found.ok
    bug = found.counterexamples[0]
    assert bug.path == "tool_use:lookup"
    assert any("InvalidActionError" in p for p in bug.problems), bug.problems
    assert """Simulator([r.tool_use('lookup', {'key': 'x'}), r.text("Done."), """ in bug.script  # closing replies
    with pytest.raises(InvalidActionError, match="forget_the_calls"):
        exec(compile(bug.script, "counterexample.py", "exec"), {})


def test_a_clean_agent_has_no_counterexample_at_depth_1() -> None:
    found = explore(Clean, depth=1, crashes=False)
    assert found.ok, found.summary()
    assert found.paths >= len(found.letters) and found.ended > 0


def test_a_custom_wait_is_explored_every_way_out() -> None:
    found = explore(Approval, depth=1, faults=False, crashes=False)
    assert found.ok, found.summary()
    assert found.decisions >= 2  # approve and refuse, at least once each


def test_a_crashing_store_dies_once_before_the_save_it_names() -> None:
    from agentfsm import MemoryStore
    from agentfsm.exploring import carry_on
    from agentfsm.sim import Simulator
    from agentfsm.sim import replies as r

    sim = Simulator([r.tool_use("lookup", {"key": "a"}), r.text("Done.")])
    store = CrashingStore(MemoryStore(), crash_before_save=2)
    with pytest.raises(Crash):
        carry_on(Clean(client=sim.client(max_retries=0), logger=None), "run", store, prompt="Look a up.")
    result = carry_on(Clean(client=sim.client(max_retries=0), logger=None), "run", store)
    assert result.final_state == "done" and store.saves > 2


@pytest.mark.slow  # about 15 s: the whole search at depth 2, faults and crashes on
def test_a_clean_agent_has_no_counterexample_at_depth_2_with_faults_and_crashes() -> None:
    found = explore(Clean(), depth=2)
    assert found.ok, found.summary()
    assert found.crashes > 0 and found.merged > 0


@pytest.mark.parametrize("driver", ["stream", "arun"])
def test_other_drivers_explore_too(driver: Any) -> None:
    found = explore(Broken, depth=1, faults=False, crashes=False, driver=driver)
    assert [c.path for c in found.counterexamples] == ["tool_use:lookup"]


def test_the_command_line_prints_the_counterexample_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "test_explore:Broken", "--depth", "1", "--no-faults", "--no-crashes"]) == 1
    out = capsys.readouterr().out
    assert "counterexample 1: tool_use:lookup" in out and "from test_explore import Broken" in out
    assert main(["explore", "test_explore:Clean", "--depth", "1", "--no-faults", "--no-crashes"]) == 0
    assert "0 counterexample(s)" in capsys.readouterr().out
