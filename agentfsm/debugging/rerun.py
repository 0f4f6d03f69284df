"""Rerun a stored conversation against its recording: the same prompt (or a fork point), new settings, no side effects.

``rerun`` forks the stored run at ``at`` (0: its first prompt) under the overrides, with a ``RecordedExecutor``
as the agent's executor, runs the fork, and compares it with the original (``Comparison``). A rerun is a stored
conversation of its own (``forked_from`` names the original), so the inspector and ``agentfsm runs`` show it.

A rerun that reaches a wait stops there, as any run does (a wait is a person's decision; the rerun does not
make it for them): ``Rerun.resume(approve=True)`` (or any ``agent.resume`` decision) carries it on with the same
recorded tools and compares again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentfsm.debugging.compare import Comparison, compare
from agentfsm.debugging.fork import history_after, load_parent, new_fork_id, start_fork, with_overrides
from agentfsm.debugging.recording import TOOLS_MODES, RecordedExecutor, Recording, Unmatched
from agentfsm.errors import ConfigurationError
from agentfsm.machine.conversation import Conversation
from agentfsm.machine.state import RunState
from agentfsm.result import RunResult
from agentfsm.wire.messages import tool_use_ids

if TYPE_CHECKING:
    from agentfsm.agent import Agent
    from agentfsm.policy import Policy
    from agentfsm.stores.base import Snapshot, Store


@dataclass
class Rerun:
    """What ``agent.rerun`` returns: the rerun's result and its comparison with the original."""

    result: RunResult
    comparison: Comparison
    #: The agent the rerun ran with (the overrides, and the recording as its executor): what carries it on.
    agent: Agent
    store: Store
    original: RunResult
    at: int = 0

    def resume(self, **decision: Any) -> Rerun:
        """Carry a rerun that stopped at a wait on (``approve=``, ``trigger=``, ... as ``agent.resume`` takes), its
        tools still answered from the recording; returns the new result and comparison."""
        result = self.agent.resume(self.result.conversation_id, store=self.store, **decision)
        return _finish(self.agent, self.store, self.original, result, self.at)


def original_result(agent: Agent, parent: Snapshot) -> RunResult:
    """The stored run as a ``RunResult`` (read only: nothing is saved, no event is logged)."""
    state = RunState.model_construct(**{name: getattr(parent, name) for name in RunState.model_fields})
    conv = Conversation(agent, conversation_id=parent.conversation_id, state=state, announce=False)
    return conv.result()


def _finish(agent: Agent, store: Store, original: RunResult, result: RunResult, at: int) -> Rerun:
    comparison = compare(original, result, at=at)
    executor = agent.executor
    if isinstance(executor, RecordedExecutor):
        comparison.replayed_calls = len(executor.replayed)
        comparison.live_calls = len(executor.ran_live)
        comparison.refused_calls = len(executor.refused)
    return Rerun(result=result, comparison=comparison, agent=agent, store=store, original=original, at=at)


def rerun(
    agent: Agent,
    conversation_id: str,
    *,
    store: Store,
    tools: Unmatched = "recorded",
    at: int | None = None,
    new_id: str | None = None,
    model: str | None = None,
    policy: Policy | None = None,
    system: str | list[dict[str, Any]] | None = None,
) -> Rerun:
    """Run the stored conversation ``conversation_id`` again from its first prompt (or from step ``at``) under
    this agent with ``model``/``policy``/``system`` in place of its own, answering each client tool call whose
    name and input match a call of the stored run with that call's recorded result, without running the tool
    (identical calls are answered in recorded order, each once). A call the recording has no result for:
    ``tools="recorded"`` (the default) and ``"refuse"`` answer it with an ``is_error`` result the model reads,
    running nothing; ``"live"`` runs it with the agent's executor; ``"fail"`` stops the rerun with
    ``RecordingMismatchError``.

    The rerun is a new conversation of ``store`` (``new_id``, else ``{id}-rerun-{hex}``) with ``forked_from``
    set. Returns a ``Rerun``: ``.result`` (its ``RunResult``) and ``.comparison`` (a ``Comparison``: the first
    step where the paths diverge, both paths, costs and final texts/outputs). A rerun that stops at a wait is
    carried on with ``Rerun.resume(...)``, its tools still from the recording. Sync: a client of the sync kind.
    """
    if tools not in TOOLS_MODES:
        raise ConfigurationError(f"tools={tools!r}: give one of {', '.join(map(repr, TOOLS_MODES))}")
    parent = load_parent(store, conversation_id)
    start = 0 if at is None else at
    replaced, history = history_after(parent, start)
    # The calls the fork's history answered already are not answered again; calls it leaves pending are.
    pending = set(tool_use_ids(history[-1])) if history and history[-1].get("role") == "assistant" else set()
    answered = [i for m in [*replaced, *history] for i in tool_use_ids(m) if i not in pending]
    fid = new_fork_id(store, conversation_id, new_id, "rerun")
    executor = RecordedExecutor(
        Recording([*parent.replaced_messages, *parent.messages], skip=answered),
        agent.executor,
        tools,
        original_id=conversation_id,
        conversation_id=fid,
    )
    ran_by = with_overrides(agent, model=model, policy=policy, system=system, executor=executor)
    original = original_result(agent, parent)
    conv = start_fork(ran_by, parent, start, store=store, new_id=fid, edit=None, asynchronous=False)
    base = aligned(parent, start, conv.state)
    return _finish(ran_by, store, original, conv.run(), base)


def aligned(parent: Snapshot, at: int, state: str) -> int:
    """The original's step a fork at ``at`` goes on from: ``at``, or, when the fork asks again for a reply the
    original had received by then (it starts in ``requesting``, the original was past it), the step before that
    request went out — the last step up to ``at`` that ended in the fork's state with the same history."""
    trace = parent.trace
    step = at
    while step > 0 and trace[step - 1].dest != state and trace[step - 1].history_size == trace[at - 1].history_size:
        step -= 1
    return step if step == 0 or trace[step - 1].dest == state else at
