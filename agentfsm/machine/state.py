"""The run's state, declared once: everything about a conversation that changes as it runs.

A ``Conversation`` holds one ``RunState`` (``conv.run``); the guards read it, the
actions change it, and a stored ``Snapshot`` is this same model with an
envelope (schema version, conversation id, agent class). So a new counter or
field is one line here: the conversation carries it, the store keeps it, and
``restore`` gives it back.

Five fields are derived from the live conversation when a snapshot is taken
rather than kept up to date on every step: ``elapsed_s`` (in memory: wall time
spent in earlier processes; in a snapshot: the total so far), ``finished``,
``pending_decision``, ``request`` (the agent's request parameters) and
``graph`` (the Agent class's states and transitions, as data).
"""

from __future__ import annotations

import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, overload

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_serializer,
    field_validator,
)
from pydantic_core import core_schema

from agentfsm.machine import guards
from agentfsm.machine.table import REQUESTING, Table
from agentfsm.result import RunError, TraceStep
from agentfsm.tools.calls import ToolCall, ToolResult
from agentfsm.wire.api import Reply, RequestFailure, reply_from
from agentfsm.wire.threads import ThreadPosition
from agentfsm.wire.usage import Usage

#: What the pending request is, which decides how its reply joins the history ("compaction": a compaction
#: request; "compacted": the first request after one, continuing from the compaction block).
PendingKind = Literal["prefill", "prompt", "pause", "caller_prefill", "compaction", "compacted"]


def _set_field(model: BaseModel, name: str, value: Any) -> None:
    """Assignment for the models a running conversation changes at every step (``RunState``, ``Counters``).

    Pydantic's own adds each assigned name to the instance's ``model_fields_set``, a set that outgrows its
    inline table after five names (512 bytes more per model, a thousand conversations in flight); nothing
    reads these models' ``model_fields_set`` (they are stored and dumped whole, never ``exclude_unset``),
    so a field is set in ``__dict__`` alone. Neither validates on assignment, as before.
    """
    if name in type(model).__pydantic_fields__:
        model.__dict__[name] = value
    else:
        BaseModel.__setattr__(model, name, value)


class Counters(BaseModel):
    """The numbers the guards read: each bounds one loop of the machine."""

    turns: int = 0
    continuations: int = 0
    pause_resumes: int = 0
    empty_retries: int = 0
    rung: int = 0
    fallback_used: bool = False
    discards: int = 0
    compactions: int = 0
    #: Replies sent back because their output did not validate against the agent's output_type.
    output_retries: int = 0

    if not TYPE_CHECKING:  # mypy checks an assignment against the field's type, as for any model
        __setattr__ = _set_field


class TraceLog(Sequence[TraceStep]):
    """The transitions a run took: a sequence of ``TraceStep``, kept as numbers.

    A run adds a step at every transition and a thousand runs may be in flight: as models, the
    steps of a ten-turn tool loop held ~20 KB (a pydantic model with its fields set and ``__dict__``
    each); as rows of seven 32-bit numbers (the source, destination and trigger by their index in
    the run's few names, the turn and the history's size), under 1 KB. Reading a step builds its
    ``TraceStep``; stored, it is the list of steps it always was (the same JSON).
    """

    __slots__ = ("_names", "_rows")

    _WIDTH = 7  # source, dest, trigger, turn, history_size (messages, blocks, chars; -1s for None)

    def __init__(self, steps: Iterable[TraceStep] = ()) -> None:
        self._names: list[str] = []
        self._rows = array("i")
        if isinstance(steps, TraceLog):  # a copy
            self._names += steps._names
            self._rows += steps._rows
            return
        for step in steps:
            self.append(step)

    def record(self, source: str, dest: str, trigger: str, turn: int, size: tuple[int, int, int] | None) -> None:
        """Add a step (what ``append`` does, minus building the ``TraceStep``)."""
        names = self._names
        row = []
        for name in (source, dest, trigger):
            try:
                row.append(names.index(name))
            except ValueError:
                names.append(name)
                row.append(len(names) - 1)
        try:
            self._rows.extend((*row, turn, *(size if size is not None else (-1, -1, -1))))
        except OverflowError:
            raise ValueError(f"a trace step's turn and history size must be below 2**31: {turn}, {size}") from None

    def append(self, step: TraceStep) -> None:
        self.record(step.source, step.dest, step.trigger, step.turn, step.history_size)

    def _step(self, at: int) -> TraceStep:
        source, dest, trigger, turn, messages, blocks, chars = self._rows[at : at + self._WIDTH]
        names = self._names
        size = None if messages < 0 else (messages, blocks, chars)
        return TraceStep(source=names[source], dest=names[dest], trigger=names[trigger], turn=turn, history_size=size)

    def __len__(self) -> int:
        return len(self._rows) // self._WIDTH

    @overload
    def __getitem__(self, index: int) -> TraceStep: ...

    @overload
    def __getitem__(self, index: slice) -> list[TraceStep]: ...

    def __getitem__(self, index: int | slice) -> TraceStep | list[TraceStep]:
        if isinstance(index, slice):
            return [self._step(i * self._WIDTH) for i in range(*index.indices(len(self)))]
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("trace index out of range")
        return self._step(index * self._WIDTH)

    def __iter__(self) -> Iterator[TraceStep]:
        for at in range(0, len(self._rows), self._WIDTH):
            yield self._step(at)

    def __reversed__(self) -> Iterator[TraceStep]:
        for at in range(len(self._rows) - self._WIDTH, -1, -self._WIDTH):
            yield self._step(at)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TraceLog):
            return list(self) == list(other)
        if isinstance(other, list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __copy__(self) -> TraceLog:
        return TraceLog(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> TraceLog:
        return TraceLog(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (TraceLog, (list(self),))

    def __repr__(self) -> str:
        return f"TraceLog({list(self)!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        """Validated and serialised as the ``list[TraceStep]`` it stands for (a ``TraceLog`` is taken as it is)."""
        steps = handler.generate_schema(list[TraceStep])

        def validate(value: Any, validate_steps: Callable[[Any], list[TraceStep]]) -> TraceLog:
            return value if isinstance(value, TraceLog) else TraceLog(validate_steps(value))

        return core_schema.no_info_wrap_validator_function(
            validate,
            steps,
            serialization=core_schema.plain_serializer_function_ser_schema(list, return_schema=steps),
        )


class PendingDecision(BaseModel):
    """What a waiting conversation waits for, written when it stops to wait.

    Stored with the snapshot so that whoever looks at a waiting run (``agentfsm runs show``,
    the inspector) can say what it waits for without importing the agent's code: the
    triggers are the Agent class's, and loading a class named by a stored row runs code.
    """

    #: The state it waits in.
    state: str
    #: The triggers that can decide it: those leaving the state whose guards passed when it stopped.
    triggers: list[str]
    #: The client tool calls awaiting the decision, in call order (empty when the wait is about no call).
    tool_calls: list[ToolCall] = []
    #: Why it waits: the guards of the transition that led into the wait (None when it has none).
    why: str | None = None


class ForkedFrom(BaseModel):
    """Where a forked run came from (``agent.fork``, ``agentfsm.debugging``): the run, and the step of its trace."""

    model_config = ConfigDict(frozen=True)

    conversation_id: str
    #: The parent's step the fork's history was cut at (as ``result.trace`` counts: 1 is after the first; 0 its prompt).
    step: int


#: A stored graph bigger than this is not one an Agent class makes: a row holding one is read without it.
MAX_GRAPH_STATES = 1000
MAX_GRAPH_TRANSITIONS = 5000
_Name = Annotated[str, StringConstraints(min_length=1, max_length=500)]
_Label = Annotated[str, StringConstraints(max_length=2000)]


class GraphEdge(BaseModel):
    """One transition of an Agent class's table, as data: what a graph draws for it."""

    model_config = ConfigDict(frozen=True)

    source: _Name
    trigger: _Name
    dest: _Name
    #: The guards' labels, in the order they are checked (all must pass).
    guards: list[_Label] = Field(default=[], max_length=50)
    #: The action's name (its ``__qualname__``), None when the transition has none.
    action: _Label | None = None
    #: Whether the reply's client tool calls are run before the action.
    runs_tools: bool = False

    @property
    def condition(self) -> str:
        """The guards as a graph shows them (as ``Transition.condition``)."""
        return " and ".join(self.guards)


class StoredGraph(BaseModel):
    """An Agent class's states and transitions as data (``RunState.graph``): what ``agentfsm ui``, ``agentfsm
    runs graph`` and ``agentfsm.observe.graph.build`` draw a stored run on, so that viewing a run never imports
    the class its row names (a stored row is data, and importing a module runs its code)."""

    model_config = ConfigDict(frozen=True)

    #: Every state, in the table's order.
    states: list[_Name] = Field(min_length=1, max_length=MAX_GRAPH_STATES)
    #: Every transition, in the order they are tried.
    transitions: list[GraphEdge] = Field(max_length=MAX_GRAPH_TRANSITIONS)
    #: The waiting states (``Wait``) and the final ones (no way out).
    waits: list[_Name] = Field(default=[], max_length=MAX_GRAPH_STATES)
    terminal: list[_Name] = Field(default=[], max_length=MAX_GRAPH_STATES)

    @classmethod
    def of(cls, table: Table) -> StoredGraph:
        """``table`` as data; worked out once per table (once per Agent class), not at every save."""
        found = _GRAPHS.get(table)
        if found is None:
            found = cls(
                states=list(table.states),
                transitions=[
                    GraphEdge(
                        source=t.source,
                        trigger=t.trigger,
                        dest=t.dest,
                        guards=[guards.label_of(fn) for fn in t.guards],
                        action=None if t.action is None else getattr(t.action, "__qualname__", repr(t.action)),
                        runs_tools=t.runs_tools,
                    )
                    for t in table.transitions
                ],
                waits=[s for s in table.states if s in table.waits],
                terminal=[s for s in table.states if s in table.terminal],
            )
            _GRAPHS[table] = found
        return found


#: ``StoredGraph.of``'s answers, by table (a table lives as long as its Agent class).
_GRAPHS: weakref.WeakKeyDictionary[Table, StoredGraph] = weakref.WeakKeyDictionary()


class RunState(BaseModel):
    """One conversation's state at a transition: the body of every ``Snapshot``."""

    state: str = REQUESTING
    messages: list[dict[str, Any]]
    model: str
    max_tokens: int
    #: What every request of the run is sent with besides its messages, model and max_tokens (the system
    #: prompt, the tools with their schemas, temperature, ...), credentials replaced: for inspectors, which
    #: show a run without importing its Agent class. None in rows an earlier agentfsm wrote.
    request: dict[str, Any] | None = None
    counters: Counters = Field(default_factory=Counters)
    #: Continuation strategy in force: "auto" starts as prefill unless the model is known to refuse it.
    continuation_mode: Literal["prefill", "prompt"] = "prefill"
    pending_kind: PendingKind | None = None
    prefill_was_rejected: bool = False
    #: The code-execution container the replies ran in: later requests must name it.
    container: str | None = None
    #: Compaction: turns of the last compaction request and of the last one applied; whether it is off.
    compaction_requested_at: int | None = None
    compaction_applied_at: int | None = None
    compaction_off: bool = False
    #: The messages compactions took out of ``messages``, oldest first.
    replaced_messages: list[dict[str, Any]] = []
    #: A refusal's fallback credit token, for the retry not yet answered (a hop after a failure carries it on).
    credit_token: str | None = None
    #: The fallback chain (``agentfsm.machine.fallback``): the position of ``model`` in [agent's model,
    #: *Policy.fallback_models]; messages before ``thinking_before`` hold another model's thinking blocks.
    chain_at: int = 0
    thinking_before: int = 0
    #: The model that answered each turn, from the turn it first did: [(turn, model), ...].
    turn_models: list[tuple[int, str]] = []
    #: Usage and dollars per model that answered.
    usage_by_model: dict[str, Usage] = {}
    cost_by_model: dict[str, float | None] = {}
    #: The latest reply (stored as the API sent it).
    reply: Reply | None = None
    #: Whether ``reply`` is in ``messages`` already (an action kept it).
    reply_kept: bool = False
    answer: str = ""
    reason: str | None = None
    error: RunError | None = None
    usage: Usage = Field(default_factory=Usage)
    #: None once a reply's model had no known price.
    cost_usd: float | None = 0.0
    #: The transitions taken so far (a ``TraceLog``: stored as the list of ``TraceStep`` it reads as).
    trace: TraceLog = Field(default_factory=TraceLog)
    #: Results committed for the tool calls of the reply being answered, by tool_use_id.
    tool_results: dict[str, ToolResult] = {}
    #: Tool calls handed to the executor and not committed yet: if the process died, they were running.
    tools_started: list[str] = []
    #: How long each client tool call answered in the history took: tool_use_id → duration_ms (None: not measured).
    tool_ms: dict[str, float | None] = {}
    elapsed_s: float = 0.0
    finished: bool = False
    #: Saves so far (1 for the first): a worker that takes the lease checks nobody saved since it loaded.
    revision: int = 0
    #: The state the run stopped in to wait for a decision from outside (None while it runs or once finished).
    waiting: str | None = None
    #: Names the latest wait: a new one each time the run stops to wait, kept until the next. A decision spends
    #: it, so a waiting result is decided once (``agentfsm.machine.decisions``). None in rows written before it.
    wait_token: str | None = None
    #: While waiting, what it waits for (None otherwise, and in rows an earlier agentfsm wrote).
    pending_decision: PendingDecision | None = None
    #: The trigger a resume decided on, until its transition has fired (a crash in between carries it out).
    decision: str | None = None
    #: What the latest resume gave (``resume(..., input=...)``): JSON, read by the hook and the action.
    input: Any = None
    #: Run through the Message Batches API (``agentfsm.batch``).
    batched: bool = False
    #: Where the run stands on its server-held message thread (``Policy.transport="thread"``; None before its
    #: first threaded request, and in rows an earlier agentfsm wrote): a resume in another process continues it.
    thread: ThreadPosition | None = None
    #: The Agent class's states and transitions, as data: what an inspector draws the run on, importing nothing.
    #: None in memory (derived when a snapshot is taken) and in rows an earlier agentfsm wrote.
    graph: StoredGraph | None = None
    #: The run this one was forked from, and at which step (``agent.fork``); None for any other run, and in rows
    #: an earlier agentfsm wrote.
    forked_from: ForkedFrom | None = None

    if not TYPE_CHECKING:
        __setattr__ = _set_field

    @field_validator("graph", mode="wrap")
    @classmethod
    def _read_graph(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """A stored graph that is not one an Agent class makes is read as none: the row stays readable (and
        resumable: carrying a run on needs the class, not this copy), and its pages draw the base graph."""
        try:
            return handler(value)
        except ValidationError:
            return None

    @field_validator("reply", mode="before")
    @classmethod
    def _read_reply(cls, value: Any) -> Any:
        """A stored reply passes the checks a received one passes (``wire.api.reply_from``)."""
        if value is None or isinstance(value, Reply):
            return value
        reply = reply_from(value)
        if isinstance(reply, RequestFailure):
            raise ValueError(f"the stored reply is not valid: {reply.message}")
        return reply

    @field_serializer("reply")
    def _write_reply(self, reply: Reply | None) -> dict[str, Any] | None:
        """As the API sent it: the fields it sent, none of the model's defaults."""
        return None if reply is None else reply.model_dump(mode="json", exclude_unset=True)
