"""What a run returns: the final state, the answer, the history, usage and the path taken."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, computed_field

from agentfsm.observe.events import Event, RawEvent, materialise

if TYPE_CHECKING:
    from agentfsm.agent import Agent

FinalState = Literal["done", "truncated", "refused", "failed"]


class Usage(BaseModel):
    """Tokens summed over every request of a run (failed requests add nothing)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    requests: int = 0

    def add(self, usage: dict[str, Any] | None) -> None:
        """Add one reply's ``usage`` object (as the API sent it; missing or null fields count 0)."""
        self.requests += 1
        if not usage:
            return
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        self.cache_creation_input_tokens += int(usage.get("cache_creation_input_tokens") or 0)
        self.cache_read_input_tokens += int(usage.get("cache_read_input_tokens") or 0)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


class TraceStep(BaseModel):
    """One transition of the machine."""

    model_config = ConfigDict(frozen=True)

    source: str
    dest: str
    trigger: str
    turn: int


class RunError(BaseModel):
    """Why a run ended in ``failed``: a request that could not be completed, or a limit of the machine."""

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    status_code: int | None = None


class RunResult(BaseModel):
    """The outcome of ``Agent.run``. Everything here is plain data (JSON-serialisable)."""

    conversation_id: str
    final_state: FinalState | str
    reason: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None
    text: str = ""
    error: RunError | None = None
    messages: list[dict[str, Any]]
    usage: Usage
    trace: list[TraceStep]
    model: str
    turns: int
    #: The Agent class that ran, as ``module:QualName``.
    agent: str | None = None
    #: Dollars spent, from the price table (``agentfsm.wire.pricing``); None when a model's price is unknown.
    cost_usd: float | None = None
    #: The requests went through the Message Batches API (``agentfsm.batch.BatchRunner``), at batch prices.
    batched: bool = False

    _raw_events: Sequence[RawEvent] = PrivateAttr(default=())

    def attach_events(self, raw: Sequence[RawEvent]) -> None:
        """Attach the run's events (kept raw; built into models on first read)."""
        self._raw_events = raw

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def events(self) -> list[Event]:
        """Every event of the run, in order."""
        return materialise(self.conversation_id, self._raw_events)

    @property
    def truncated(self) -> bool:
        return self.final_state == "truncated"

    @property
    def refused(self) -> bool:
        return self.final_state == "refused"

    @property
    def ok(self) -> bool:
        return self.final_state == "done"

    @property
    def path(self) -> list[str]:
        """The states visited, in order, starting with the first."""
        if not self.trace:
            return []
        return [self.trace[0].source, *(step.dest for step in self.trace)]

    def graph(self, format: str = "mermaid", *, agent: type[Agent] | None = None) -> str:
        """The path this run took, drawn on its Agent class's graph (or ``agent``'s), final state marked."""
        from agentfsm.observe.graph import path_graph

        return path_graph(self.trace, self.final_state, format, agent=agent or self.agent)
