"""Golden traces: assert the path a run took, with a readable diff when it differs.

    from agentfsm.testing import assert_trace

    assert_trace(result, ["requesting", "tool_use", "requesting", "end_turn", "done"])

Works on anything with a trace: a ``RunResult``, a ``Conversation`` (so far),
a replayed run, or a list of ``TraceStep``. The expected path is a list of
state names, the first state included, exactly as ``result.path`` lists them.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from agentfsm.result import TraceStep

__all__ = ["assert_trace", "trace_of"]


def trace_of(run: Any) -> list[TraceStep]:
    """The trace of a result, conversation, replayed run, or the trace itself."""
    trace = getattr(run, "trace", run)
    if not isinstance(trace, Sequence) or not all(isinstance(s, TraceStep) for s in trace):
        raise TypeError(
            f"assert_trace needs a RunResult, Conversation, ReplayedRun or list of TraceStep, got {type(run).__name__}"
        )
    return list(trace)


def assert_trace(run: Any, expected: Sequence[str]) -> None:
    """Fail, with a step-by-step diff, unless ``run`` visited exactly the states ``expected`` lists."""
    __tracebackhide__ = True  # pytest: report the caller's line, not this one
    if isinstance(expected, str):
        raise TypeError("expected must be a list of state names, not one string")
    trace = trace_of(run)
    actual = [trace[0].source, *(s.dest for s in trace)] if trace else []
    want = list(expected)
    if actual == want:
        return
    raise AssertionError(_explain(want, actual, trace))


def _explain(expected: list[str], actual: list[str], trace: list[TraceStep]) -> str:
    first = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b), None)
    if first is None:
        first = min(len(expected), len(actual))
    # How each actual state was reached, so the diff says which transition went another way.
    how = [""] + [f"via {s.trigger} (turn {s.turn})" for s in trace]
    lines = [
        f"the run's path differs from the expected one from step {first} on "
        f"(expected {len(expected)} states, got {len(actual)}):",
        f"  expected: {' → '.join(expected) or '(empty)'}",
        f"  actual:   {' → '.join(actual) or '(empty)'}",
        "",
        "  (- expected only, + actual only, ~ differs)",
        f"    {'step':>4}  {'expected':<{_W}}  {'actual':<{_W}}  how",
    ]
    # The common start first, so the diff lines up where a person reads the paths as diverging.
    matcher = difflib.SequenceMatcher(None, expected[first:], actual[first:], autojunk=False)
    opcodes = [("equal", 0, first, 0, first)] if first else []
    opcodes += [(op, i1 + first, i2 + first, j1 + first, j2 + first) for op, i1, i2, j1, j2 in matcher.get_opcodes()]
    for op, i1, i2, j1, j2 in opcodes:
        for k in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + k, j1 + k
            want = expected[i] if i < i2 else ""
            got = actual[j] if j < j2 else ""
            if op == "equal":
                mark = " "
            elif want and got:
                mark = "~"
            else:
                mark = "-" if want else "+"
            step = j if got else i
            lines.append(f"  {mark} {step:>4}  {want:<{_W}}  {got:<{_W}}  {how[j] if got else ''}".rstrip())
    return "\n".join(lines)


_W = 28
