"""A tool-using agent: one client tool, one server tool.

    python examples/weather_agent.py            # on the simulator (no key needed)
    ANTHROPIC_API_KEY=... python examples/weather_agent.py --real

On the simulator the model is scripted: it calls get_weather twice in one
reply (run concurrently), then answers.
"""

from __future__ import annotations

import sys
from typing import Literal

import anthropic

from agentfsm import Agent, Policy, RunResult, tool
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r


@tool
def get_weather(location: str, unit: Literal["c", "f"] = "c") -> str:
    """Get the current weather for a city."""
    table = {"hanoi": 31, "hue": 29, "da nang": 30}
    celsius = table.get(location.lower(), 25)
    return f"{location}: {celsius if unit == 'c' else round(celsius * 9 / 5 + 32)}°{unit.upper()}"


class WeatherAgent(Agent):
    model = "claude-sonnet-5-5"
    system = "You are a concise weather assistant."
    tools = [get_weather, {"type": "web_search_20250305", "name": "web_search"}]
    policy = Policy(max_tokens=1024, max_turns=10)


def simulated_client() -> anthropic.Anthropic:
    sim = Simulator(
        [
            r.tool_uses([("get_weather", {"location": "Hanoi"}), ("get_weather", {"location": "Hue"})]),
            r.text("Hanoi is 31°C and Hue 29°C."),
        ]
    )
    return sim.client()


def main(real: bool = False) -> RunResult:
    client = anthropic.Anthropic() if real else simulated_client()
    return WeatherAgent(client=client, logger=None).run("What's the weather in Hanoi and Hue?")


if __name__ == "__main__":
    result = main(real="--real" in sys.argv)
    print(" -> ".join(result.path))
    print(result.text)
    print(f"{result.final_state} ({result.reason})" + (f": {result.error.message}" if result.error else ""))
    sys.exit(0 if result.final_state == "done" else 1)  # a run that did not end as it should fails the script
