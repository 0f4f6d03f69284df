"""The demo: one scripted run on the simulator that visits the interesting rows of the state table.

No API key and no network: the real ``anthropic`` client talks to the
in-process simulator. The run visits tool_use, pause_turn, a tool call cut
off by max_tokens and retried on a higher rung, a text continuation (by
prompt from the start: the model's request rules refuse prefill, as on the
models from Claude 4.6 on), and end_turn.
"""

from __future__ import annotations

from typing import Any, Literal

from agentfsm.agent import Agent
from agentfsm.policy import Policy
from agentfsm.result import RunResult
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import Store
from agentfsm.tools.definition import tool

FORECASTS = {"hanoi": (31, "humid, afternoon thunderstorms"), "hue": (29, "light rain")}


@tool
def get_weather(location: str, unit: Literal["c", "f"] = "c") -> str:
    """Get the current weather for a city."""
    celsius, sky = FORECASTS.get(location.lower(), (25, "clear"))
    value = celsius if unit == "c" else round(celsius * 9 / 5 + 32)
    return f"{location}: {value}°{unit.upper()}, {sky}"


class WeatherAgent(Agent):
    """The weather agent of the guides: a client tool and a server tool."""

    model = "claude-sonnet-5-5"
    system = "You are a concise weather assistant."
    tools = [get_weather, {"type": "web_search_20250305", "name": "web_search"}]
    policy = Policy(
        max_tokens=1024,
        max_continuations=4,
        max_pause_resumes=5,
        max_tokens_ladder=[4096, 16384],
        max_empty_retries=1,
        max_turns=25,
    )


PROMPT = "Weather in Hanoi and Hue, and today's news in Hanoi?"

ANSWER_START = (
    "Hanoi is at 31°C, humid, with afternoon thunderstorms likely; Hue is cooler at 29°C with light rain. "
    "In today's news from Hanoi, the city opened two new metro stations on Line 3 and announced "
)
ANSWER_END = "an extended schedule for the Old Quarter's weekend walking streets through the end of the year."


def demo_script() -> list[Any]:
    """The replies the simulated model gives, in order."""
    return [
        r.tool_use("get_weather", {"location": "Hanoi"}, text="Let me check the weather first."),
        r.pause_turn(query="Hanoi news today", completed_searches=2),
        r.truncated_tool_use("get_weather", '{"location": "Hu', text="Now Hue."),
        r.tool_use("get_weather", {"location": "Hue"}, text="Now Hue."),
        r.max_tokens(ANSWER_START),
        r.text(ANSWER_END),
    ]


def run_demo(
    *, logger: Any = None, store: Store | None = None, conversation_id: str | None = None
) -> tuple[RunResult, Simulator]:
    """Run the demo conversation; events go to ``logger`` (a structlog logger) as they happen. With a
    ``store``, it is saved there as any run is (``agentfsm demo --store``), to be looked at afterwards."""
    sim = Simulator(demo_script())
    agent = WeatherAgent(client=sim.client(max_retries=0), logger=logger)
    return agent.run(PROMPT, store=store, conversation_id=conversation_id), sim
