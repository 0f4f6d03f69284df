"""The state table, as data (docs/02-state-machine.md explains each row).

Read it top to bottom. A conversation sits in ``requesting`` while a request
is out; the reply moves it to the state named for its ``stop_reason``; from
there the first transition whose guards pass (in the order written) decides
what to do about it. A subclass of ``Agent``
declares extra states and transitions, which are tried before the ones
inherited for the same source state. A state declared as ``Wait("name")`` is
where a run stops and is saved until something outside decides
(``agent.resume(..., trigger=...)``). ``unsafe_states`` is the fail-safe rule
for the states a subclass adds, checked when the class is defined.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentfsm.errors import ConfigurationError
from agentfsm.machine import actions, fallback
from agentfsm.machine import guards as g
from agentfsm.machine import output as o
from agentfsm.machine._fsm import build_machine

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

#: What a transition does as it fires; under ``arun``/``astream`` it may be ``async def``.
Action = Callable[["Conversation"], None] | Callable[["Conversation"], Awaitable[None]]
GuardFn = Callable[["Conversation"], bool]

REQUESTING = "requesting"

#: The stop reasons this version knows; each is also the state a reply with it moves to.
STOP_REASONS = (
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "compaction",
    "refusal",
    "model_context_window_exceeded",
)
#: Where a reply with any other stop_reason (or null) goes.
UNKNOWN_STOP_REASON = "unknown_stop_reason"
#: Limits checked in ``requesting`` before each request, in this order.
LIMIT_TRIGGERS = ("out_of_turns", "over_budget")
#: Checked in ``requesting`` before each request, in this order: the limits, then compaction.
PRE_REQUEST_TRIGGERS = (*LIMIT_TRIGGERS, "stop_compacting", "compact")
#: Triggers the driver fires from ``requesting`` when a request fails: the first allowed of these, else API_ERROR.
API_ERROR = "api_error"
PREFILL_REJECTED = "prefill_rejected"
COMPACTION_FAILED = "compaction_failed"
#: A request that failed overloaded or rate limited goes on to the next model of the chain (``machine.fallback``).
RETRY_FALLBACK = "retry_fallback"
RECOVERABLE_FAILURES = (PREFILL_REJECTED, COMPACTION_FAILED, RETRY_FALLBACK)

TERMINAL_STATES = ("done", "truncated", "refused", "failed")

#: Where a run waits for a person to approve or deny the calls of tools with ``needs_approval``
#: (``agentfsm.tools.approval``): a ``Wait`` of the base table, decided by ``run_tools``.
AWAITING_APPROVAL = "awaiting_tool_approval"


class Wait(str):
    """A waiting state: the run stops there, saved, until something outside decides.

    In an Agent's ``states`` it declares the state (``states = [Wait("awaiting_approval")]``):
    a run that reaches it returns normally with ``final_state == "waiting"`` and
    ``result.waiting == "awaiting_approval"``, and ``agent.resume(..., trigger="approve")``
    carries it on along the transition of that trigger. Its hook, if it has one, may
    still decide on the spot (return a trigger); returning None or ``Wait`` waits.

    A hook of any state may return ``Wait`` (or ``Wait()``) to stop on the spot, in the
    state the conversation is in; ``resume`` then takes any trigger that leaves it.
    ``Wait`` is a ``str``: the name of the state (empty when a hook returns it).
    """

    __slots__ = ()

    def __new__(cls, name: str = "") -> Wait:
        if not isinstance(name, str):
            raise ConfigurationError(f"Wait takes the name of a state, got {type(name).__name__}")
        return super().__new__(cls, name)

    def __repr__(self) -> str:
        return f"Wait({str.__repr__(self)})"


@dataclass(frozen=True)
class Transition:
    """One edge of the machine.

    ``guards`` must all pass for the edge to be taken; ``action`` runs as it
    fires. ``runs_tools`` asks the driver to execute the reply's client tool
    calls first and hand their results to the action (``conv.tool_results``).
    """

    source: str
    trigger: str
    dest: str
    guards: tuple[GuardFn, ...] = ()
    action: Action | None = None
    runs_tools: bool = False

    @functools.cached_property
    def awaits(self) -> bool:
        """Whether the action is ``async def`` (only ``arun``/``astream`` can take this transition).
        Asked as every transition fires, so worked out once (``inspect`` is slow)."""
        return self.action is not None and is_async(self.action)

    @property
    def condition(self) -> str:
        """The guards as a graph shows them, e.g. ``continuations < max_continuations``."""
        return " and ".join(g.label_of(fn) for fn in self.guards)

    def allowed(self, conv: Conversation) -> bool:
        for fn in self.guards:  # noqa: SIM110 -- a loop, not all(...): asked several times a turn
            if not fn(conv):
                return False
        return True


T = Transition

BASE_STATES: tuple[str, ...] = (
    REQUESTING,
    *STOP_REASONS,
    UNKNOWN_STOP_REASON,
    *TERMINAL_STATES,
    Wait(AWAITING_APPROVAL),
)

BASE_TRANSITIONS: tuple[Transition, ...] = (
    # source                       trigger             dest             guards                                              action
    T(REQUESTING,                  "out_of_turns",     "truncated",     (g.no_turns_left,),                                 actions.stop_at_turn_limit),
    T(REQUESTING,                  "over_budget",      "truncated",     (g.over_budget,),                                   actions.stop_over_budget),
    # Compaction between turns (Policy.compact_at_input_tokens): the next request is a compaction request.
    T(REQUESTING,                  "stop_compacting",  REQUESTING,      (g.compaction_ineffective,),                        actions.stop_compacting),
    T(REQUESTING,                  "compact",          REQUESTING,      (g.compaction_due,),                                actions.request_compaction),
    # A reply arrives: the driver fires the trigger named for its stop_reason.
    T(REQUESTING,                  "end_turn",         "end_turn"),
    T(REQUESTING,                  "max_tokens",       "max_tokens"),
    T(REQUESTING,                  "stop_sequence",    "stop_sequence"),
    T(REQUESTING,                  "tool_use",         "tool_use"),
    T(REQUESTING,                  "pause_turn",       "pause_turn"),
    T(REQUESTING,                  "compaction",       "compaction"),
    T(REQUESTING,                  "refusal",          "refusal"),
    T(REQUESTING,                  "model_context_window_exceeded", "model_context_window_exceeded"),
    T(REQUESTING,                  UNKNOWN_STOP_REASON, UNKNOWN_STOP_REASON),
    # The request failed (after the SDK's own retries); compaction_failed also takes a reply to our compaction request
    # under another stop reason than compaction (core.complete_request).
    T(REQUESTING,                  PREFILL_REJECTED,   REQUESTING,      (g.prefill_rejected_in_auto,),                      actions.switch_to_prompt),
    T(REQUESTING,                  COMPACTION_FAILED,  REQUESTING,      (g.compaction_request_pending,),                    actions.skip_failed_compaction),
    T(REQUESTING,                  RETRY_FALLBACK,     REQUESTING,      (fallback.failure_falls_back,),                     fallback.switch_after_failure),
    T(REQUESTING,                  API_ERROR,          "failed",        (),                                                 actions.fail_on_error),
    # end_turn: finish; an empty reply right after tool results gets a nudge instead ...
    T("end_turn",                  "nudge",            REQUESTING,      (g.empty_after_tool_results, g.empty_retries_left), actions.nudge),
    # ... an agent with an output_type: an answer that does not validate is sent back with the errors, then fails.
    T("end_turn",                  "retry_output",     REQUESTING,      (o.output_invalid, o.output_retries_left),          o.retry_output),
    T("end_turn",                  "invalid_output",   "failed",        (o.output_invalid,),                                o.fail_invalid_output),
    T("end_turn",                  "accept_empty",     "done",          (g.empty_after_tool_results,),                      actions.finish_empty),
    T("end_turn",                  "finish",           "done",          (),                                                 actions.keep_reply),
    # max_tokens: cut inside a tool call -> retry larger; complete tool calls, then cut text -> run them; cut in text -> continue.
    T("max_tokens",                "retry_larger",     REQUESTING,      (g.cut_mid_block, g.rungs_left),                    actions.climb_ladder),
    T("max_tokens",                "ladder_exhausted", "failed",        (g.cut_mid_block,),                                 actions.fail_ladder_exhausted),
    T("max_tokens",                "await_approval",   AWAITING_APPROVAL, (g.calls_need_approval,),                         actions.hold_tool_results, runs_tools=True),
    T("max_tokens",                "run_tools",        REQUESTING,      (g.has_tool_calls,),                                actions.answer_tool_calls, runs_tools=True),
    T("max_tokens",                "continue_text",    REQUESTING,      (g.continuations_left,),                            actions.continue_text),
    T("max_tokens",                "give_up",          "truncated",     (),                                                 actions.stop_at_continuation_limit),
    # stop_sequence: finish, recording which sequence.
    T("stop_sequence",             "finish",           "done",          (),                                                 actions.keep_reply),
    # tool_use: run every call, answer with one message of tool_result blocks. A call of a tool that needs approval
    # first stops the run in awaiting_tool_approval (the other calls run before it waits; their results wait in the
    # ledger); a hook that names run_tools then is refused (core.plan): nothing runs a call unapproved.
    # An output_type asked for by a final_answer tool: a valid call ends the run (the reply's other calls are not
    # run); an invalid one is answered with the errors (and the reply's other calls run, once approved), then fails.
    T("tool_use",                  "finish",           "done",          (o.output_given,),                                  o.finish_with_output),
    T("tool_use",                  "await_approval",   AWAITING_APPROVAL, (g.calls_need_approval,),                         actions.hold_tool_results, runs_tools=True),
    T("tool_use",                  "retry_output",     REQUESTING,      (o.output_invalid, o.output_retries_left),          o.retry_output, runs_tools=True),
    T("tool_use",                  "invalid_output",   "failed",        (o.output_invalid,),                                o.fail_invalid_output),
    T("tool_use",                  "run_tools",        REQUESTING,      (g.has_tool_calls,),                                actions.answer_tool_calls, runs_tools=True),
    T("tool_use",                  "no_tool_calls",    "failed",        (),                                                 actions.fail_no_tool_calls),
    # pause_turn: send the reply back unchanged so the server resumes; client tool calls in it are run and answered first.
    T("pause_turn",                "await_approval",   AWAITING_APPROVAL, (g.calls_need_approval,),                         actions.hold_tool_results, runs_tools=True),
    T("pause_turn",                "run_tools",        REQUESTING,      (g.has_tool_calls,),                                actions.answer_tool_calls, runs_tools=True),
    T("pause_turn",                "resume",           REQUESTING,      (g.pause_resumes_left,),                            actions.resume_pause),
    T("pause_turn",                "give_up",          "truncated",     (),                                                 actions.stop_at_pause_limit),
    # compaction: our compaction request answered with one block holding a summary -> it replaces the history it
    # summarises; any other answer (a null summary, text or a tool call beside the block) is a failed compaction,
    # a no-op; a server-side compaction paused (pause_after_compaction) -> send it back unchanged (client tool
    # calls in it are run and answered first, as for pause_turn).
    T("compaction",                "compacted",        REQUESTING,      (g.compaction_request_pending, g.lone_summary),     actions.apply_compaction),
    T("compaction",                COMPACTION_FAILED,  REQUESTING,      (g.compaction_request_pending,),                    actions.skip_failed_compaction),
    T("compaction",                "await_approval",   AWAITING_APPROVAL, (g.calls_need_approval,),                         actions.hold_tool_results, runs_tools=True),
    T("compaction",                "run_tools",        REQUESTING,      (g.has_tool_calls,),                                actions.answer_tool_calls, runs_tools=True),
    T("compaction",                "resume",           REQUESTING,      (g.compactions_left,),                              actions.resume_compaction),
    T("compaction",                "give_up",          "truncated",     (),                                                 actions.stop_at_compaction_limit),
    # refusal: stop, or send the same request on to the next model of the fallback chain.
    T("refusal",                   RETRY_FALLBACK,     REQUESTING,      (fallback.refusal_falls_back,),                               actions.switch_to_fallback),
    T("refusal",                   "finish",           "refused",       (),                                                 actions.finish_refused),
    # model_context_window_exceeded: compact and ask again when compaction is on; else a valid but limited reply.
    T("model_context_window_exceeded", "compact",      REQUESTING,      (g.can_compact_at_window,),                         actions.compact_at_context_window),
    T("model_context_window_exceeded", "give_up",      "truncated",     (),                                                 actions.stop_at_context_window),
    # anything else: finish safely, with a warning event.
    T(UNKNOWN_STOP_REASON,         "finish",           "done",          (),                                                 actions.finish_unknown),
    # awaiting_tool_approval: a person's decision (agent.resume(id, approve=..., deny=...)) runs the approved calls,
    # answers the denied ones with is_error results carrying the reason, and answers every call of the reply at once.
    T(AWAITING_APPROVAL,           "run_tools",        REQUESTING,      (),                                                 actions.answer_tool_calls, runs_tools=True),
)  # fmt: skip


class Table:
    """The states and transitions of one Agent class, and the ``transitions`` Machine that runs them.

    Built once per class. Conversations are not added to the machine as
    models: each carries its own ``state`` and events are fired as
    ``machine.events[trigger].trigger(conversation)``, which costs nothing
    per conversation (docs/04-streaming-and-async.md, "Many conversations").

    The actions of transitions a subclass declares run through
    ``Conversation.perform``, which checks the history they leave; the base
    table's own actions run as they are.
    """

    def __init__(self, states: Iterable[str], transitions: Sequence[Transition], waits: Iterable[str] = ()) -> None:
        self.transitions: tuple[Transition, ...] = tuple(transitions)
        states = list(states)
        for s in states:
            if isinstance(s, Wait) and not s:
                raise ConfigurationError("a Wait state needs a name: Wait('awaiting_approval')")
        #: The waiting states: a run that reaches one stops there until it is resumed.
        self.waits: frozenset[str] = frozenset(waits) | {str(s) for s in states if isinstance(s, Wait)}
        names: dict[str, None] = dict.fromkeys(str(s) for s in states)
        for t in self.transitions:
            names.setdefault(t.source)
            names.setdefault(t.dest)
        self.states: tuple[str, ...] = tuple(names)
        self._outgoing: dict[str, list[Transition]] = {s: [] for s in self.states}
        #: The same, by (state, trigger): the driver asks for one trigger at a time, before every request.
        self._by_trigger: dict[tuple[str, str], list[Transition]] = {}
        for t in self.transitions:
            self._outgoing[t.source].append(t)
            self._by_trigger.setdefault((t.source, t.trigger), []).append(t)
        self.terminal: frozenset[str] = frozenset(s for s in self.states if not self._outgoing[s])
        #: The transitions checked in ``requesting`` before each request, in the order they are tried.
        self.pre_request: tuple[Transition, ...] = tuple(
            t for trigger in PRE_REQUEST_TRIGGERS for t in self._by_trigger.get((REQUESTING, trigger), ())
        )
        #: States not in the base table, and those of them where a hook must choose (fail-safe: see ``unsafe_states``).
        self.added: frozenset[str] = frozenset(self.states) - frozenset(BASE_STATES)
        self.must_choose: frozenset[str] = frozenset(
            s for s in self.added if s not in self.waits and len(self._outgoing[s]) > 1
        )
        self.machine = build_machine(self)

    def outgoing(self, state: str) -> list[Transition]:
        """Transitions leaving ``state``, in the order they are tried."""
        return self._outgoing[state]

    def first_allowed(self, conv: Conversation, trigger: str | None = None) -> Transition | None:
        """The transition the conversation takes next: the first whose guards pass."""
        candidates = self._outgoing[conv.state] if trigger is None else self._by_trigger.get((conv.state, trigger), ())
        for t in candidates:
            if t.allowed(conv):
                return t
        return None

    def triggers(self, state: str) -> list[str]:
        return list(dict.fromkeys(t.trigger for t in self._outgoing[state]))


def merge(parent: Table | None, states: Sequence[str], transitions: Sequence[Transition]) -> Table:
    """A subclass's table: its own declarations first, then everything inherited."""
    for t in transitions:
        if not isinstance(t, Transition):
            raise ConfigurationError(f"Agent.transitions must hold agentfsm.Transition objects, got {t!r}")
        for fn in t.guards:
            if is_async(fn):
                raise ConfigurationError(
                    f"guard {g.label_of(fn)!r} of {t.source} --{t.trigger}--> {t.dest} is async: guards must be "
                    "plain functions (they are checked while choosing a transition); await in a hook instead"
                )
    if parent is None:
        return Table(states, transitions)
    return Table((*parent.states, *states), (*transitions, *parent.transitions), parent.waits)


def unsafe_states(table: Table, *, declared: Iterable[str], has_hook: Callable[[str], bool]) -> list[str]:
    """Why the states a subclass adds are unsafe, one sentence each ([] when every one is safe).

    An added state must be a ``Wait``, or have a hook (``on_<state>``), or have exactly one
    way out: otherwise the first transition whose guards pass would be taken silently, and an
    approval state with a forgotten hook would approve itself. An added state with no way out
    is a final state, and must be declared in ``states`` (else it is most likely a typo in a
    transition's ``dest``); a ``Wait`` must have a way out.
    """
    problems: list[str] = []
    declared = set(declared)
    for state in table.states:
        if state not in table.added:
            continue
        exits = table.outgoing(state)
        triggers = ", ".join(dict.fromkeys(t.trigger for t in exits))
        if state in table.waits:
            if not exits:
                problems.append(f"Wait state {state!r} has no way out: add the transitions that leave it")
        elif not exits:
            if state not in declared:
                problems.append(
                    f"state {state!r} is the dest of a transition but is not declared in states and has no way "
                    "out (a typo?): declare it in states to make it a final state"
                )
        elif len(exits) > 1 and not has_hook(state):
            problems.append(
                f"state {state!r} has {len(exits)} ways out ({triggers}) and nothing chooses between them: "
                f"declare it Wait({state!r}) to stop there until agent.resume(..., trigger=...), or define "
                f"a hook on_{state}(self, conv) that returns the trigger, or leave it one way out"
            )
    return problems


def is_async(fn: Any) -> bool:
    """Whether calling ``fn`` makes a coroutine (``async def``, or a partial / callable object of one)."""
    if inspect.iscoroutinefunction(fn):
        return True
    return callable(fn) and not isinstance(fn, type) and inspect.iscoroutinefunction(type(fn).__call__)
