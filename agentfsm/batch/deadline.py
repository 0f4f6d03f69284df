"""When a batch run stops polling: its deadline, the agents' wall budget, and what it leaves for a later run.

A batch may take up to 24 hours, and one that never ends must not be polled forever.
``BatchRunner(deadline=s)`` (seconds from the start of ``run``) and the agents' wall
budget (``Policy.max_wall_seconds``: once every conversation waiting on a batch has
spent its own) stop the polling, the earlier of the two; the wait before a poll is
cut short so that the last poll is at the deadline. A batch still in progress then
is left as it is: its waiting entries are marked ``unfinished`` in the ledger (the
record stays open) and ``run`` returns. Requests due after the deadline are not
sent. Those conversations are still ``requesting``: their result says
``reason == "batch_unfinished"`` (and, in ``error``, which batch and which limit),
and so do the progress (``BatchProgress.unfinished``) and the ``batch.unfinished``
events. A runner started later on the same store polls the batch again and
applies its results (a batch is polled again, never resent) and sends what was
not sent. The time a conversation spent waiting on a batch is its own once it is
next saved, as for a request in flight, so a run restarted under a wall budget
polls for up to that budget again.

Time is read, and waited, on the clock the run starts on (``agentfsm.clock``:
``use_clock(FakeClock())`` in tests, where nothing then really sleeps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentfsm.batch.ledger import UNFINISHED
from agentfsm.result import RunError

if TYPE_CHECKING:
    from agentfsm.batch.ledger import BatchRecord
    from agentfsm.batch.state import BatchRun, Pending
    from agentfsm.machine.conversation import Conversation


def time_left(state: BatchRun, deadline: float | None) -> tuple[float, str] | None:
    """Seconds until the run stops polling, and the limit that says so (``deadline`` or ``max_wall_seconds``);
    None when nothing limits it. The wall budget limits it once every conversation waiting on a batch has spent
    its own (a conversation without one may wait as long as its batch takes)."""
    found: list[tuple[float, str]] = []
    if deadline is not None:
        found.append((deadline - (state.clock.now() - state.started), "deadline"))
    waiting = [state.convs[cid] for cid in state.waiting]
    if waiting and all(conv.policy.max_wall_seconds is not None for conv in waiting):
        left = max((conv.policy.max_wall_seconds or 0.0) - conv.elapsed_s for conv in waiting)
        found.append((left, "max_wall_seconds"))
    return min(found) if found else None


def passed(state: BatchRun, deadline: float | None) -> bool:
    """Whether the run is past its deadline (then ``state.stopped_by`` names the limit)."""
    left = time_left(state, deadline)
    if left is None or left[0] > 0:
        return False
    state.stopped_by = left[1]
    return True


def leave_waiting(state: BatchRun, key: str, record: BatchRecord) -> dict[str, str]:
    """Leave the conversations waiting on ``record``'s batch, which has not ended, saying so; the ledger outcomes
    to settle (``unfinished``: not settled, so the record stays open)."""
    waiting = {cid: custom for cid, (k, custom) in state.waiting.items() if k == key}
    status = state.status.get(key)
    state.event(
        "batch.unfinished",
        level="warning",
        batch_id=record.batch_id,
        processing_status=status.processing_status if status else None,
        request_counts=status.request_counts if status else {},
        waiting=len(waiting),
        stopped_by=state.stopped_by,
        elapsed_s=round(state.clock.now() - state.started, 3),
    )
    for cid, custom in waiting.items():
        state.unfinished[cid] = record.batch_id
        state.convs[cid].emit(
            "batch.unfinished", level="warning", batch_id=record.batch_id, custom_id=custom, stopped_by=state.stopped_by
        )
    return dict.fromkeys(waiting.values(), UNFINISHED)


def leave_unsent(state: BatchRun, pending: list[Pending]) -> None:
    """The deadline passed before these requests went into a batch: none is sent; a later run sends them."""
    for item in pending:
        state.unfinished[item.conv.id] = None
        item.conv.emit("batch.unfinished", level="warning", batch_id=None, custom_id=None, stopped_by=state.stopped_by)


def unfinished_error(state: BatchRun, conv: Conversation, deadline: float | None) -> RunError:
    """What the result of a conversation left at the deadline says: its ``error`` (its reason: ``batch_unfinished``)."""
    batch_id = state.unfinished[conv.id]
    if state.stopped_by == "deadline":
        limit = f"deadline={deadline:g} s"
    else:
        limit = f"Policy.max_wall_seconds={conv.policy.max_wall_seconds:g} s"
    if batch_id is None:
        what = f"its next request was not sent: the runner's {limit} had passed"
    else:
        what = f"Message Batch {batch_id} had not ended when the runner stopped polling at its {limit}"
    return RunError(
        type="batch_unfinished",
        message=f"{what}; run again with the same store to carry it on (a batch is polled again, never resent)",
    )
