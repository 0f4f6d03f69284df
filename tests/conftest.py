"""Suite-wide checks.

Every request any agent sends to the simulator, in every test, is checked
against the wire rules of SPEC.md §3 (``agentfsm.history.wire_problems``).
Only the simulator's own tests, which send hand-made bad requests on
purpose, are exempt.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentfsm.history import wire_problems
from agentfsm.sim import SimRequest, Simulator


@pytest.fixture(autouse=True)
def wire_rules_on_every_request(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    problems: list[str] = []
    exempt = request.node.module.__name__.split(".")[-1].startswith("test_sim")

    def check(sim_request: SimRequest) -> None:
        for problem in wire_problems(sim_request.messages):
            problems.append(f"request #{sim_request.n}: {problem}")

    Simulator.observers.append(check)
    try:
        yield problems
    finally:
        Simulator.observers.remove(check)
    if not exempt:
        assert not problems, "requests broke the wire rules of SPEC.md §3:\n" + "\n".join(problems)
