"""The ``transitions`` adapter: the Machine that executes what the table decided.

``agentfsm.machine.table`` decides (which transition a conversation takes: the
first whose guards pass, or the one a hook chose); the ``transitions`` Machine
built here executes it: the condition (that it is the transition the table
chose), the action, the state change, and the record of the step
(``core.record_transition``: trace, save, events). Conversations are not added
to the machine as models: each carries its own ``state`` and an event is
fired as ``machine.events[trigger].trigger(conversation, transition)``, which
costs nothing per conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from transitions import Event, EventData, Machine, State
from transitions import Transition as TransitionsTransition

from agentfsm.errors import InvalidTransitionError

if TYPE_CHECKING:
    from agentfsm.machine.table import Table, Transition


def build_machine(table: Table) -> Any:
    """The Machine for ``table``'s states and transitions."""
    from agentfsm.machine import core
    from agentfsm.machine.table import BASE_TRANSITIONS, REQUESTING

    base = frozenset(BASE_TRANSITIONS)

    def record(event: Any) -> None:
        core.record_transition(event.model, event.transition.source, event.transition.dest, event.event.name)

    def callback(t: Transition, checked: bool) -> Callable[[Any], None]:
        fn: Any = t.action
        if checked:  # a subclass's action: run through core.perform, which checks the history it leaves

            def run(event: Any) -> None:
                core.perform(event.model, t)

        else:

            def run(event: Any) -> None:
                fn(event.model)

        run.__name__ = getattr(fn, "__name__", "action")
        return run

    machine = _Machine(
        name="agentfsm",  # its log lines say so; agentfsm.observe.events drops their chatter
        model=None,
        states=list(table.states),
        initial=REQUESTING,
        auto_transitions=False,
        send_event=True,
        after_state_change=[record],
    )
    for t in table.transitions:
        # The table chose the transition (``first_allowed``: guards in the order written); the machine
        # takes that one. Its guards are not run twice, and a hook's choice is never second-guessed.
        shared = len([u for u in table.outgoing(t.source) if u.trigger == t.trigger]) > 1
        machine.add_transition(
            t.trigger,
            t.source,
            t.dest,
            conditions=[_chosen(t)] if shared else [],
            before=[callback(t, t not in base)] if t.action else [],
        )
    return machine


def _chosen(t: Transition) -> Callable[[Any], bool]:
    """The machine's condition for ``t``: that it is the transition ``Conversation.fire`` was given."""

    def chosen(event: Any) -> bool:
        return bool(event.args[0] is t)

    return chosen


class _State(State):
    """A state with no enter/exit callbacks (agentfsm declares none) costs nothing to enter or leave."""

    def enter(self, event_data: Any) -> None:
        if self.on_enter:
            super().enter(event_data)

    def exit(self, event_data: Any) -> None:
        if self.on_exit:
            super().exit(event_data)


class _Transition(TransitionsTransition):
    """``transitions.Transition.execute`` without its per-step debug lines and the prepare/after lists
    agentfsm never fills: condition (the table's choice), action, state change, record. The machine is
    fired twice a turn, and each of those lines costs a logger call whether anything listens or not."""

    def execute(self, event_data: Any) -> bool:
        machine = event_data.machine
        for condition in self.conditions:
            if not condition.check(event_data):
                return False
        machine.callbacks(self.before, event_data)
        self._change_state(event_data)
        machine.callbacks(machine.after_state_change, event_data)
        return True


class _Event(Event):
    """``transitions.Event.trigger`` for a machine that never queues and has no prepare or finalize
    callbacks: straight to the transitions leaving the model's state, the first that executes wins.
    An exception propagates as it would from the stock class (agentfsm sets no ``on_exception``); a
    trigger that does not leave the state is agentfsm's ``InvalidTransitionError``, not ``MachineError``."""

    def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:
        machine = self.machine
        event_data = EventData(None, self, machine, model, args=args, kwargs=kwargs)
        event_data.state = state = machine.get_model_state(model)
        if state.name not in self.transitions:
            raise InvalidTransitionError(f"no transition {self.name!r} leaves {state.name!r}")
        for transition in self.transitions[state.name]:
            event_data.transition = transition
            if transition.execute(event_data):
                event_data.result = True
                return True
        return False


class _Machine(Machine):
    """The ``transitions`` Machine agentfsm fires, through the library's own extension points
    (``state_cls``, ``transition_cls``, ``event_cls``): the same states, events and transitions, minus
    what agentfsm never uses (queueing, prepare/finalize callbacks, a log line per step and callback).
    Measured inside a run (benchmarks/bench.py), a transition costs about 10 µs of the machine's own
    time with these classes against 18 µs with the stock ones: 1.5% of a simulated turn."""

    state_cls = _State
    transition_cls = _Transition
    event_cls = _Event

    def callbacks(self, funcs: Iterable[Any], event_data: Any) -> None:
        for func in funcs:
            func(event_data)
