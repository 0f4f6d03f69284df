"""A wait is decided once: the waits this process decided, for conversations without a store.

A run that stops to wait names that wait with a token (``RunState.wait_token``, a new one at every
stop). Its snapshot carries it, and so does the waiting ``RunResult`` and every copy of it, a JSON
one included (``agentfsm.engines.core.result_from_json``).

Deciding a conversation that has no store *holds* the token, as a worker holds a store's lease. The
decision's first save spends it: the approved tools about to start, a transition fired, or the run
stopping to wait again. That is the moment a store would keep the decision. After that, whatever
happens (the API down, the process interrupted), the decision stands. A decision that ends before
that gives the token back, and nothing of it happened: a trigger that cannot leave, input that is
not JSON, an action that raised and had the history put back. A held or spent token refuses
another decision (``AlreadyDecidedError``) before anything runs.

This is one process's memory: one short entry per decision taken, kept for the life of the
process. With a store, the store decides, across processes (this memory only records the decision, so
a copy of the result decided later without the store is refused too). Its lease lets one decider
through at a time, and its revision fence refuses a worker that loaded the conversation before
another moved it on. ``Agent.load`` refuses a waiting result whose wait the stored conversation has
moved past.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentfsm.errors import AlreadyDecidedError, ConfigurationError

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation
    from agentfsm.result import RunResult

_lock = threading.Lock()
#: Tokens being decided now, by the conversation deciding (a conversation dropped unrun lets go of its hold).
_held: dict[str, tuple[weakref.ref[Conversation], str | None]] = {}
#: Tokens decided, with the trigger that decided each (None: the waiting state's hook was asked again).
_spent: dict[str, str | None] = {}


@dataclass(frozen=True)
class Held:
    """One decision under way: its first save spends it, a release before that gives it back.

    ``holding``: this process holds the wait while it decides (no store); with a store, the store's lease
    does, and this only remembers the wait once it is decided (so a copy of the result without the store
    is refused here too).
    """

    token: str
    trigger: str | None
    holding: bool = True

    def spend(self) -> None:
        with _lock:
            if self.holding:
                _held.pop(self.token, None)
            _spent[self.token] = self.trigger

    def give_back(self) -> None:
        if self.holding:
            with _lock:
                _held.pop(self.token, None)


def _refusal(conversation_id: str, state: str, token: str, asker: object) -> AlreadyDecidedError | None:
    """Why ``asker`` may not decide the wait ``token`` names (call with the lock held), or None."""
    if token in _spent:
        return AlreadyDecidedError(conversation_id, state, _spent[token], how="spent")
    entry = _held.get(token)
    if entry is not None:
        holder = entry[0]()
        if holder is not None and holder is not asker:
            return AlreadyDecidedError(conversation_id, state, entry[1], how="held")
    return None


def check(conversation_id: str, state: str, token: str, asker: object = None) -> None:
    """Raise ``AlreadyDecidedError`` if the wait ``token`` names was decided in this process, or is being decided
    by a conversation other than ``asker``."""
    with _lock:
        refusal = _refusal(conversation_id, state, token, asker)
    if refusal is not None:
        raise refusal


def hold(conv: Conversation, token: str, trigger: str | None) -> Held:
    """Take the decision of the wait ``token`` names for ``conv``: ``AlreadyDecidedError`` if it was taken."""
    with _lock:
        refusal = _refusal(conv.id, conv.runstate.state, token, conv)
        if refusal is None:
            _held[token] = (weakref.ref(conv), trigger)
    if refusal is not None:
        raise refusal
    return Held(token, trigger)


def decided(token: str) -> bool:
    """Whether this process decided the wait ``token`` names."""
    with _lock:
        return token in _spent


def approval_decision(
    trigger: str | None,
    input: Any,
    approve: Sequence[str] | bool | None,
    deny: Mapping[str, str] | Sequence[str] | None,
) -> tuple[str, Any]:
    """``approve=``/``deny=`` as the decision they are: the trigger ``run_tools`` with them as its input. Checked
    against the calls the run waits on by ``Conversation.decide`` (every one approved or denied)."""
    if trigger not in (None, "run_tools") or input is not None:
        raise ConfigurationError(
            "approve=/deny= decide a run waiting for approval (trigger run_tools, with them as its input): "
            "give them without trigger= and input="
        )
    if isinstance(approve, str) or not isinstance(approve, bool | Sequence | None):
        raise ConfigurationError(
            f"approve= takes a list of tool_use ids or True (every call not denied), got {type(approve).__name__}"
        )
    given: dict[str, Any] = {}
    if approve is not None:
        given["approve"] = approve if isinstance(approve, bool) else list(approve)
    if deny is not None:
        given["deny"] = dict(deny) if isinstance(deny, Mapping) else list(deny)
    return "run_tools", given


def check_same_wait(result: RunResult, stored: Any) -> None:
    """Refuse a waiting ``result`` whose wait the ``stored`` conversation has moved past (it was decided)."""
    if result.final_state != "waiting":
        return  # a finished or failed result given with a store: carry the stored conversation on, as by id
    token = result.snapshot.wait_token if result.snapshot is not None else None
    if token is not None and stored.wait_token is not None:
        same = stored.waiting is not None and stored.wait_token == token
    else:  # a result or a row from before waits were named: the same wait is the same state at the same step
        same = stored.waiting == result.waiting and len(stored.trace) == len(result.trace)
    if not same:
        now = (
            f"waiting at {stored.waiting!r} again"
            if stored.waiting is not None
            else "finished, " + stored.state
            if stored.finished
            else f"at {stored.state!r}" + (f", carrying out {stored.decision!r}" if stored.decision else "")
        )
        raise AlreadyDecidedError(
            result.conversation_id, result.waiting or stored.state, stored.decision, how="stored", now=now
        )
