"""The state table: SPEC.md §1 as data.

Read it top to bottom like the spec's table. A conversation sits in
``requesting`` while a request is out; the reply moves it to the state named
for its ``stop_reason``; from there the first transition whose guards pass
(in the order written) decides what to do about it. A subclass of ``Agent``
declares extra states and transitions, which are tried before the ones
inherited for the same source state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transitions import Machine

from agentfsm.errors import ConfigurationError
from agentfsm.machine import actions
from agentfsm.machine import guards as g

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

Action = Callable[["Conversation"], None]
GuardFn = Callable[["Conversation"], bool]

REQUESTING = "requesting"

#: The stop reasons this version knows; each is also the state a reply with it moves to.
STOP_REASONS = (
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
)
#: Where a reply with any other stop_reason (or null) goes.
UNKNOWN_STOP_REASON = "unknown_stop_reason"
#: Limits checked in ``requesting`` before each request, in this order.
LIMIT_TRIGGERS = ("out_of_turns", "over_budget")
#: Triggers the driver fires from ``requesting`` when a request fails.
API_ERROR = "api_error"
PREFILL_REJECTED = "prefill_rejected"

TERMINAL_STATES = ("done", "truncated", "refused", "failed")


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

    @property
    def condition(self) -> str:
        """The guards as a graph shows them, e.g. ``continuations < max_continuations``."""
        return " and ".join(g.label_of(fn) for fn in self.guards)

    def allowed(self, conv: Conversation) -> bool:
        return all(fn(conv) for fn in self.guards)


T = Transition

BASE_STATES: tuple[str, ...] = (REQUESTING, *STOP_REASONS, UNKNOWN_STOP_REASON, *TERMINAL_STATES)

BASE_TRANSITIONS: tuple[Transition, ...] = (
    # source                       trigger             dest             guards                                              action
    T(REQUESTING,                  "out_of_turns",     "truncated",     (g.no_turns_left,),                                 actions.stop_at_turn_limit),
    T(REQUESTING,                  "over_budget",      "truncated",     (g.over_budget,),                                   actions.stop_over_budget),
    # A reply arrives: the driver fires the trigger named for its stop_reason.
    T(REQUESTING,                  "end_turn",         "end_turn"),
    T(REQUESTING,                  "max_tokens",       "max_tokens"),
    T(REQUESTING,                  "stop_sequence",    "stop_sequence"),
    T(REQUESTING,                  "tool_use",         "tool_use"),
    T(REQUESTING,                  "pause_turn",       "pause_turn"),
    T(REQUESTING,                  "refusal",          "refusal"),
    T(REQUESTING,                  "model_context_window_exceeded", "model_context_window_exceeded"),
    T(REQUESTING,                  UNKNOWN_STOP_REASON, UNKNOWN_STOP_REASON),
    # The request failed (after the SDK's own retries).
    T(REQUESTING,                  PREFILL_REJECTED,   REQUESTING,      (g.prefill_rejected_in_auto,),                      actions.switch_to_prompt),
    T(REQUESTING,                  API_ERROR,          "failed",        (),                                                 actions.fail_on_error),
    # end_turn: finish; an empty reply right after tool results gets a nudge instead.
    T("end_turn",                  "nudge",            REQUESTING,      (g.empty_after_tool_results, g.empty_retries_left), actions.nudge),
    T("end_turn",                  "accept_empty",     "done",          (g.empty_after_tool_results,),                      actions.finish_empty),
    T("end_turn",                  "finish",           "done",          (),                                                 actions.keep_reply),
    # max_tokens: cut inside a tool call -> retry larger; complete tool calls, then cut text -> run them; cut in text -> continue.
    T("max_tokens",                "retry_larger",     REQUESTING,      (g.cut_mid_block, g.rungs_left),                    actions.climb_ladder),
    T("max_tokens",                "ladder_exhausted", "failed",        (g.cut_mid_block,),                                 actions.fail_ladder_exhausted),
    T("max_tokens",                "run_tools",        REQUESTING,      (g.has_tool_calls,),                                actions.answer_tool_calls, runs_tools=True),
    T("max_tokens",                "continue_text",    REQUESTING,      (g.continuations_left,),                            actions.continue_text),
    T("max_tokens",                "give_up",          "truncated",     (),                                                 actions.stop_at_continuation_limit),
    # stop_sequence: finish, recording which sequence.
    T("stop_sequence",             "finish",           "done",          (),                                                 actions.keep_reply),
    # tool_use: run every call, answer with one message of tool_result blocks.
    T("tool_use",                  "run_tools",        REQUESTING,      (g.has_tool_calls,),                                actions.answer_tool_calls, runs_tools=True),
    T("tool_use",                  "no_tool_calls",    "failed",        (),                                                 actions.fail_no_tool_calls),
    # pause_turn: send the reply back unchanged so the server resumes; client tool calls in it are run and answered first.
    T("pause_turn",                "run_tools",        REQUESTING,      (g.has_tool_calls,),                                actions.answer_tool_calls, runs_tools=True),
    T("pause_turn",                "resume",           REQUESTING,      (g.pause_resumes_left,),                            actions.resume_pause),
    T("pause_turn",                "give_up",          "truncated",     (),                                                 actions.stop_at_pause_limit),
    # refusal: stop, or retry once on the fallback model.
    T("refusal",                   "retry_fallback",   REQUESTING,      (g.fallback_unused,),                               actions.switch_to_fallback),
    T("refusal",                   "finish",           "refused",       (),                                                 actions.finish_refused),
    # model_context_window_exceeded: a valid but limited reply.
    T("model_context_window_exceeded", "give_up",      "truncated",     (),                                                 actions.stop_at_context_window),
    # anything else: finish safely, with a warning event.
    T(UNKNOWN_STOP_REASON,         "finish",           "done",          (),                                                 actions.finish_unknown),
)  # fmt: skip


class Table:
    """The states and transitions of one Agent class, and the ``transitions`` Machine that runs them.

    Built once per class. Conversations are not added to the machine as
    models: each carries its own ``state`` and events are fired as
    ``machine.events[trigger].trigger(conversation)``, which costs nothing
    per conversation (see NOTES-transitions.md).
    """

    def __init__(self, states: Iterable[str], transitions: Sequence[Transition]) -> None:
        self.transitions: tuple[Transition, ...] = tuple(transitions)
        names: dict[str, None] = dict.fromkeys(states)
        for t in self.transitions:
            names.setdefault(t.source)
            names.setdefault(t.dest)
        self.states: tuple[str, ...] = tuple(names)
        self._outgoing: dict[str, list[Transition]] = {s: [] for s in self.states}
        for t in self.transitions:
            self._outgoing[t.source].append(t)
        self.terminal: frozenset[str] = frozenset(s for s in self.states if not self._outgoing[s])
        self.machine = self._build_machine()

    def outgoing(self, state: str) -> list[Transition]:
        """Transitions leaving ``state``, in the order they are tried."""
        return self._outgoing[state]

    def first_allowed(self, conv: Conversation, trigger: str | None = None) -> Transition | None:
        """The transition the conversation takes next: the first whose guards pass."""
        for t in self._outgoing[conv.state]:
            if (trigger is None or t.trigger == trigger) and t.allowed(conv):
                return t
        return None

    def triggers(self, state: str) -> list[str]:
        return list(dict.fromkeys(t.trigger for t in self._outgoing[state]))

    def _build_machine(self) -> Any:
        machine = Machine(
            model=None,
            states=list(self.states),
            initial=REQUESTING,
            auto_transitions=False,
            send_event=True,
            after_state_change=[_record],
        )
        for t in self.transitions:
            machine.add_transition(
                t.trigger,
                t.source,
                t.dest,
                conditions=[_condition(fn) for fn in t.guards],
                before=[_callback(t.action)] if t.action else [],
            )
        return machine


def merge(parent: Table | None, states: Sequence[str], transitions: Sequence[Transition]) -> Table:
    """A subclass's table: its own declarations first, then everything inherited."""
    for t in transitions:
        if not isinstance(t, Transition):
            raise ConfigurationError(f"Agent.transitions must hold agentfsm.Transition objects, got {t!r}")
    if parent is None:
        return Table(states, transitions)
    return Table((*parent.states, *states), (*transitions, *parent.transitions))


def _condition(fn: GuardFn) -> Callable[[Any], bool]:
    def check(event: Any) -> bool:
        return fn(event.model)

    check.__name__ = getattr(fn, "__name__", "guard")
    return check


def _callback(fn: Action) -> Callable[[Any], None]:
    def run(event: Any) -> None:
        fn(event.model)

    run.__name__ = getattr(fn, "__name__", "action")
    return run


def _record(event: Any) -> None:
    event.model.record_transition(event.transition.source, event.transition.dest, event.event.name)
