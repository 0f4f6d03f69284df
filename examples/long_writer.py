"""A long-answer writer: a text far longer than max_tokens, continued and stitched seamlessly.

    python examples/long_writer.py              # on the simulator
    ANTHROPIC_API_KEY=... python examples/long_writer.py --real

The simulator's writer model produces a fixed document in max_tokens-sized
chunks; the stitched result equals it character for character.
"""

from __future__ import annotations

import sys

import anthropic

from agentfsm import Agent, Policy, RunResult
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r

DOCUMENT = "\n\n".join(
    f"## Chapter {i}\n\nProgramming languages of the {1940 + 10 * i}s grew out of the needs of their "
    f"machines and their users; each generation kept what worked and discarded the rest. "
    for i in range(1, 9)
)


class LongWriter(Agent):
    model = "claude-haiku-4-5"  # accepts prefill: continuations are seamless prefills
    system = "You write long, complete documents."
    policy = Policy(max_tokens=64, max_continuations=30, max_turns=40)


def main(real: bool = False) -> RunResult:
    if real:
        return LongWriter(client=anthropic.Anthropic(), logger=None).run("Write a history of programming languages.")
    sim = Simulator([r.writer(DOCUMENT)] * 40)
    result = LongWriter(client=sim.client(), logger=None).run("Write a history of programming languages.")
    assert result.text == DOCUMENT, "the stitched text differs from the document"
    return result


if __name__ == "__main__":
    result = main(real="--real" in sys.argv)
    print(result.text)
    print(f"{len(result.text)} characters in {result.turns} requests")
    print(f"{result.final_state} ({result.reason})" + (f": {result.error.message}" if result.error else ""))
    sys.exit(0 if result.final_state == "done" else 1)  # a run that did not end as it should fails the script
