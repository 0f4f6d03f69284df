"""What a run returns: the final state, the answer, the history, usage and the path taken."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_origin

from pydantic import BaseModel, ConfigDict, PrivateAttr, TypeAdapter, ValidationError, computed_field

from agentfsm.observe.events import Event, RawEvent, materialise
from agentfsm.tools.calls import ToolCall
from agentfsm.wire.usage import Usage

if TYPE_CHECKING:
    from agentfsm.agent import Agent

_T = TypeVar("_T")


def _adapter(output_type: Any) -> TypeAdapter[Any]:
    try:
        return _cached_adapter(output_type)
    except TypeError:  # unhashable
        return TypeAdapter(output_type)


@functools.lru_cache(maxsize=256)
def _cached_adapter(output_type: Any) -> TypeAdapter[Any]:
    return TypeAdapter(output_type)


def _is_generic(output_type: Any) -> bool:
    """``list[int]`` and the like: ``isinstance`` cannot check their items, so they are validated."""
    return get_origin(output_type) is not None


#: Where a run stops: a terminal state, or ``waiting`` (stopped for a decision from outside; see ``waiting``).
FinalState = Literal["done", "truncated", "refused", "failed", "waiting"]


class TraceStep(BaseModel):
    """One transition of the machine."""

    model_config = ConfigDict(frozen=True)

    source: str
    dest: str
    trigger: str
    turn: int
    #: The history's size after this step: (messages, content blocks of the last message, characters of
    #: that block when it is text, else 0). A step only appends messages or extends the last one (a
    #: continuation, a resumed pause, a second nudge), so with the final history this gives the history as it
    #: stood after the step (``agentfsm ui`` shows it). None in traces recorded before it was kept.
    history_size: tuple[int, int, int] | None = None


class RunError(BaseModel):
    """Why a run ended in ``failed``: a request that could not be completed, or a limit of the machine."""

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    status_code: int | None = None
    #: A failed request's kind (``agentfsm.wire.api_errors``; docs/12-troubleshooting.md lists each and what the
    #: machine does about it): ``overloaded``, ``rate_limited``, ``not_ready``, ... None for a limit of the machine.
    kind: str | None = None
    #: The API's ``error.details.error_code``, when the error body had one.
    error_code: str | None = None


class RunResult(BaseModel):
    """The outcome of ``Agent.run``. Everything here is plain data (JSON-serialisable)."""

    conversation_id: str
    final_state: FinalState | str
    reason: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None
    text: str = ""
    #: The answer as the agent's ``output_type`` (``Agent(output_type=Invoice)``): an ``Invoice``, validated;
    #: None unless the run finished ``done`` with one. Typed for a type checker by ``output_as(Invoice)``.
    output: Any = None
    error: RunError | None = None
    #: The history as the API needs it next: after a compaction, the compaction block first, in place of
    #: the messages it summarises.
    messages: list[dict[str, Any]]
    #: The messages compactions took out of ``messages``, oldest first (``transcript`` puts them back).
    replaced_messages: list[dict[str, Any]] = []
    usage: Usage
    trace: list[TraceStep]
    model: str
    turns: int
    #: The Agent class that ran, as ``module:QualName``.
    agent: str | None = None
    #: Dollars spent, from the price table (``agentfsm.wire.pricing``); None when a model's price is unknown.
    cost_usd: float | None = None
    #: The state the run stopped in to wait for a decision (``final_state == "waiting"``); None otherwise.
    waiting: str | None = None
    #: While waiting: the reply's client tool calls awaiting a decision (id, name, input).
    pending_tool_calls: list[ToolCall] = []
    #: The model that produced the last reply: ``model``, or the server-side fallback model that served it.
    answered_by: str | None = None
    #: The model that answered each turn, from the turn it first did (a fallback chain, ``Policy.fallback_models``):
    #: ``[(1, "claude-sonnet-5-5"), (3, "claude-haiku-4-5")]`` — turns 1 and 2 on the first, 3 on.
    turn_models: list[tuple[int, str]] = []
    #: Usage per model that answered (the same numbers as ``usage``, split).
    usage_by_model: dict[str, Usage] = {}
    #: Dollars per model that answered, each at its own price; None for a model with no known price.
    cost_by_model: dict[str, float | None] = {}
    #: The requests went through the Message Batches API (``agentfsm.batch.BatchRunner``), at batch prices.
    batched: bool = False

    _raw_events: Sequence[RawEvent] = PrivateAttr(default=())
    _snapshot: Any = PrivateAttr(default=None)

    def attach_snapshot(self, snapshot: Any) -> None:
        """Keep the waiting conversation's snapshot, so ``agent.resume(result, ...)`` works without a store."""
        self._snapshot = snapshot

    @property
    def snapshot(self) -> Any:
        """A waiting run's conversation as a ``Snapshot`` (what ``agent.resume(result)`` carries on); else None."""
        return self._snapshot

    def attach_events(self, raw: Sequence[RawEvent]) -> None:
        """Attach the run's events (kept raw; built into models on first read)."""
        self._raw_events = raw

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def events(self) -> list[Event]:
        """Every event of the run, in order."""
        return materialise(self.conversation_id, self._raw_events)

    @property
    def transcript(self) -> list[dict[str, Any]]:
        """Everything the conversation held, in order: the messages compactions replaced, then ``messages``.

        Without a compaction it is ``messages``. Each compaction starts with the assistant message whose
        first block is the ``compaction`` block that summarised what comes before it.
        """
        return [*self.replaced_messages, *self.messages] if self.replaced_messages else self.messages

    def output_as(self, output_type: type[_T]) -> _T:
        """``output``, typed: ``result.output_as(Invoice)`` is an ``Invoice`` for a type checker and at run time.

        The output as the run made it when it is an instance of ``output_type`` already; else validated as
        one (a result read back from JSON, such as a durable engine's, holds the output as JSON). Raises
        ``NoOutputError`` saying why when there is none: the run did not finish ``done`` (``error`` says
        why: an ``invalid_output`` run's validation errors), or the output is not an ``output_type``.
        """
        from agentfsm.errors import NoOutputError

        if self.output is None:
            why = (
                f"it ended {self.final_state} (reason {self.reason}"
                + (f"; {self.error.type}: {self.error.message}" if self.error is not None else "")
                + ")"
                if self.final_state != "done"
                else "it finished done without one (did its agent set output_type?)"
            )
            raise NoOutputError(self.conversation_id, why)
        if isinstance(output_type, type) and isinstance(self.output, output_type) and not _is_generic(output_type):
            return self.output
        try:
            value: _T = _adapter(output_type).validate_python(self.output)
        except ValidationError as exc:
            name = getattr(output_type, "__name__", output_type)
            raise NoOutputError(self.conversation_id, f"its output is not a valid {name}: {exc}") from None
        return value

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
        """The path this run took, drawn on its Agent class's graph (or ``agent``'s), final state marked. The
        class is found among those this process has imported (as the one that ran it has been); a result read
        back from elsewhere whose class is not is drawn on the base Agent's graph: its name is never imported."""
        from agentfsm.observe.graph import path_graph

        return path_graph(self.trace, self.waiting or self.final_state, format, agent=agent or self.agent)
