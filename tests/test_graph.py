"""State graphs: a class's machine (a subclass's states included), the path a run took, step by step."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agentfsm import Agent, Conversation, Policy, RunResult, Transition, actions, guard, tool
from agentfsm.errors import GraphvizNotFoundError
from agentfsm.machine.plan import RunTools, SendRequest
from agentfsm.observe import graph as g
from agentfsm.result import TraceStep
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import assert_trace

needs_dot = pytest.mark.skipif(
    g.shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz): SVG/PNG skipped"
)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


@guard("a dangerous tool was called")
def wants_approval(conv: Conversation) -> bool:
    return any(b.get("name") == "delete_file" for b in conv.require_reply().content if b.get("type") == "tool_use")


class Calculator(Agent):
    model = "claude-haiku-4-5"
    tools = [add, delete_file]
    policy = Policy(max_turns=20)


class ApprovalAgent(Calculator):
    states = ["awaiting_approval"]
    transitions = [
        Transition("tool_use", "ask_approval", "awaiting_approval", (wants_approval,)),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
    ]


def edges(mermaid: str) -> list[str]:
    return [line.strip() for line in mermaid.splitlines() if "-->" in line]


def classes(mermaid: str) -> dict[str, set[str]]:
    """``class a,b visited`` lines → {"visited": {"a", "b"}}."""
    found: dict[str, set[str]] = {}
    for m in re.finditer(r"^    class (\S+) (\w+)$", mermaid, re.M):
        found.setdefault(m.group(2), set()).update(m.group(1).split(","))
    return found


# --- a class's graph -----------------------------------------------------------------------------------


def test_the_base_graph_has_every_state_and_transition_with_its_guard() -> None:
    text = Agent.graph(format="mermaid")
    assert text.startswith('---\ntitle: "Agent"\n---\nstateDiagram-v2\n')
    lines = edges(text)
    assert "[*] --> requesting" in lines
    for t in Agent.table().transitions:
        label = t.trigger + (f" [{t.condition}]" if t.guards else "")
        assert f"{t.source} --> {t.dest}: {label}" in lines
    for state in ("done", "truncated", "refused", "failed"):
        assert f"{state} --> [*]" in lines
    assert "max_tokens --> requesting: continue_text [continuations < max_continuations]" in lines
    # Nothing highlighted on a class's graph: only its waiting state (approval on a tool) is drawn apart.
    assert classes(text) == {"waiting": {"awaiting_tool_approval"}}
    assert "tool_use --> awaiting_tool_approval: await_approval [a call needs approval]" in lines
    assert "awaiting_tool_approval --> requesting: run_tools" in lines


def test_a_subclass_graph_includes_its_added_state_and_transitions() -> None:
    text = ApprovalAgent.graph()
    lines = edges(text)
    assert "tool_use --> awaiting_approval: ask_approval [a dangerous tool was called]" in lines
    assert "awaiting_approval --> requesting: approve" in lines
    assert 'title: "ApprovalAgent"' in text
    assert all(f"{t.source} --> {t.dest}" in text for t in Agent.table().transitions)  # inherited ones too
    assert "awaiting_approval" not in Calculator.graph()  # the parent's graph is untouched
    dot = ApprovalAgent.graph(format="dot")
    assert '"awaiting_approval";' in dot
    assert '"tool_use" -> "awaiting_approval" [label="ask_approval\\n[a dangerous tool was called]"];' in dot


def test_dot_lists_every_state_and_edge_and_wraps_long_guards() -> None:
    dot = Agent.graph(format="dot")
    assert dot.startswith('digraph "Agent" {') and dot.rstrip().endswith("}")
    for state in Agent.table().states:
        assert re.search(rf'^    "{state}"( \[.*\])?;$', dot, re.M), state
    assert dot.count(" -> ") == len(Agent.table().transitions) + 1  # plus the start arrow
    assert '"done" [peripheries="2"];' in dot  # terminal states are double-bordered
    label = re.search(r'"max_tokens" -> "requesting" \[label="retry_larger\\n([^"]*)"', dot)
    assert label is not None and "\\n" in label.group(1)  # a long condition spans lines


def test_dot_quotes_any_name() -> None:
    class Odd(Agent):
        states = ['say "hi"\\now']
        transitions = [Transition("tool_use", "odd", 'say "hi"\\now')]

    dot = Odd.graph(format="dot")
    assert '"say \\"hi\\"\\\\now"' in dot


def test_an_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'mermaid', 'dot' or 'svg'"):
        Agent.graph(format="jpeg")


def test_svg_without_graphviz_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(g.shutil, "which", lambda name: None)
    with pytest.raises(GraphvizNotFoundError, match=r"install the system package `graphviz` \(apt-get install"):
        Agent.graph(format="svg")
    assert Agent.graph(format="mermaid") and Agent.graph(format="dot")  # text formats need nothing


@pytest.mark.slow  # Graphviz's dot
@needs_dot
def test_svg_and_png_render_with_graphviz() -> None:
    svg = ApprovalAgent.graph(format="svg")
    assert "<svg" in svg and ">awaiting_approval</text>" in svg
    assert g.svg_source_digest(svg) == g.source_digest(ApprovalAgent.graph(format="dot"))
    png = g.render(g.build(Agent.table()), "png")
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG")


# --- the path a run took -------------------------------------------------------------------------------


def test_a_result_graph_highlights_the_path_and_counts_each_edge() -> None:
    sim = Simulator([*(r.tool_use("add", {"a": i, "b": 1}) for i in range(7)), r.text("done")])
    result = Calculator(client=sim.client(), logger=None).run("count")
    text = result.graph()
    lines = edges(text)
    assert "requesting --> tool_use: tool_use ×7" in lines
    assert "tool_use --> requesting: run_tools [reply has client tool_use blocks] ×7" in lines
    assert "requesting --> end_turn: end_turn ×1" in lines and "end_turn --> done: finish ×1" in lines
    assert "max_tokens --> requesting: continue_text [continuations < max_continuations]" in lines  # not taken
    assert classes(text) == {
        "visited": {"requesting", "tool_use", "end_turn"},
        "current": {"done"},
        "waiting": {"awaiting_tool_approval"},  # every graph draws the waiting states apart
    }
    assert "%% path: requesting -> tool_use -> requesting" in text
    dot = result.graph(format="dot")
    assert re.search(r'"done" \[peripheries="2", style="rounded,filled", fillcolor="#ffd166"', dot)
    run_tools = r'"tool_use" -> "requesting" \[label="run_tools ×7\\n\[reply has client tool_use blocks\]", color='
    assert re.search(run_tools, dot)
    assert re.search(r'"refusal" \[color="#a0a0a0"', dot)  # states not visited are greyed


def test_the_demo_run_graph_counts_every_visited_edge() -> None:
    from agentfsm.demo import run_demo

    result, _ = run_demo()
    built = g.build(Agent.table(), trace=result.trace, current=result.final_state)
    counted = {(e.source, e.trigger, e.dest): e.count for e in built.edges if e.count}
    taken: dict[tuple[str, str, str], int] = {}
    for s in result.trace:
        taken[(s.source, s.trigger, s.dest)] = taken.get((s.source, s.trigger, s.dest), 0) + 1
    assert counted == taken
    assert set(built.path) == set(result.path) and built.current == "done"


def test_a_result_drawn_on_its_subclass_graph() -> None:
    sim = Simulator([r.tool_use("delete_file", {"path": "/tmp/x"}), r.text("Deleted.")])
    result = ApprovalAgent(client=sim.client(), logger=None).run("Delete /tmp/x")
    on_class = result.graph(agent=ApprovalAgent)
    assert "tool_use --> awaiting_approval: ask_approval [a dangerous tool was called] ×1" in on_class
    assert "awaiting_approval" in classes(on_class)["visited"]
    # By default it is drawn on the class that ran (recorded as module:QualName on the result).
    assert result.agent == f"{ApprovalAgent.__module__}:ApprovalAgent"
    assert result.graph() == on_class
    # Drawn on the base graph, the steps it does not declare are still drawn (dashed in DOT).
    on_base = result.graph(agent=Agent)
    assert "tool_use --> awaiting_approval: ask_approval ×1" in edges(on_base)
    dot = result.graph(format="dot", agent=Agent)
    assert '"tool_use" -> "awaiting_approval" [label="ask_approval ×1", color="#c99a06"' in dot
    assert 'style="dashed"' in dot


def test_a_failed_run_marks_failed_as_current() -> None:
    sim = Simulator([r.server_error()] * 5)
    result = Calculator(client=sim.client(max_retries=0), logger=None).run("x")
    assert result.final_state == "failed"
    text = result.graph()
    assert classes(text)["current"] == {"failed"} and "requesting --> failed: api_error ×1" in edges(text)


# --- step by step ----------------------------------------------------------------------------------------


def test_step_by_step_with_a_breakpoint_on_a_state_and_the_graph_between_steps() -> None:
    script = [r.tool_use("add", {"a": 1, "b": 2}), r.max_tokens("The sum is"), r.text(" 3.")]
    sim = Simulator(script)
    conv = Calculator(client=sim.client(), logger=None, policy=Policy(continuation="prompt")).start("1+2?")
    assert conv.state == "requesting"
    assert classes(conv.graph()) == {"current": {"requesting"}, "waiting": {"awaiting_tool_approval"}}
    assert 'title: "Calculator (at requesting)"' in conv.graph()
    pending = conv.pending
    assert isinstance(pending, SendRequest) and pending.params["messages"] == [{"role": "user", "content": "1+2?"}]
    assert sim.requests == []  # looking sends nothing

    step = conv.step()  # exactly one transition
    assert step == TraceStep(source="requesting", dest="tool_use", trigger="tool_use", turn=1, history_size=(1, 1, 4))
    assert conv.state == "tool_use" and len(conv.trace) == 1
    pending = conv.pending
    assert isinstance(pending, RunTools) and [c.name for c in pending.calls] == ["add"]  # the calls about to run
    text = conv.graph()
    assert classes(text) == {"visited": {"requesting"}, "current": {"tool_use"}, "waiting": {"awaiting_tool_approval"}}
    assert "requesting --> tool_use: tool_use ×1" in edges(text)

    while conv.state != "max_tokens":  # a breakpoint on a state
        conv.step()
    assert conv.messages[-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": conv.messages[1]["content"][0]["id"], "content": "3"}],
    }
    assert conv.reply is not None and conv.reply.stop_reason == "max_tokens"
    assert classes(conv.graph())["current"] == {"max_tokens"}

    result = conv.run()  # and finish
    assert result.final_state == "done" and result.text == "The sum is 3."
    assert conv.step() is None
    assert_trace(result, ["requesting", "tool_use", "requesting", "max_tokens", "requesting", "end_turn", "done"])
    assert 'title: "Calculator (done)"' in conv.graph()

    # The same script run in one call takes the same path.
    again = Calculator(client=Simulator(script).client(), logger=None, policy=Policy(continuation="prompt")).run("1+2?")
    assert again.trace == result.trace


def test_every_step_returns_the_transition_it_took() -> None:
    sim = Simulator([r.pause_turn(), r.tool_use("add", {"a": 1, "b": 1}), r.text("2")])
    conv = Calculator(client=sim.client(), logger=None).start("1+1")
    steps: list[Any] = []
    while (step := conv.step()) is not None:
        steps.append(step)
    assert steps == conv.trace and conv.finished
    result: RunResult = conv.result()
    assert result.path == ["requesting", "pause_turn", "requesting", "tool_use", "requesting", "end_turn", "done"]
