"""Durable conversations, seen where every other run is: their snapshots copied into an agentfsm ``Store``.

A conversation run by a DBOS or Temporal worker lives in the engine's own records (DBOS's tables,
Temporal's workflow history), which ``agentfsm runs`` and ``agentfsm ui`` do not read — not even on
the same SQLite file. A worker given a store (``DBOSWorker(..., store=...)``, ``agentfsm worker dbos
--store URL``) also saves each of its conversations' snapshots there, after every transition, as a
conversation run with ``store=`` does; so the same ``runs list``/``runs show``/``ui`` show it, live.

The copy is a view, never the record: the engine alone decides what runs. So:

* snapshots are written by a thread of the worker's (latest first: a backlog of one conversation
  collapses into its newest snapshot), so a slow or failing store never slows or fails a workflow; a
  failure is logged and the next snapshot tries again. A conversation's last snapshot (finished, or
  waiting) is waited for, briefly, so that its result and its stored row agree when the result is read;
* a replay (the engine running a workflow again after a crash, deciding exactly as before) makes the
  same snapshots with the same revisions: the store's fence refuses the ones it has, quietly;
* while the workflow runs, the copy holds the store's lease on the conversation (one owner name per
  conversation, whichever worker runs it), so ``agent.resume(id, store=...)`` elsewhere is refused
  rather than running it twice; a waiting conversation's lease is given back, so it can be decided
  from its stored snapshot (``agentfsm runs decide``, the inspector), in the decider's process — the
  way ``agent.resume(result, trigger=...)`` carries on a waiting engine result.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from agentfsm.errors import StaleConversationError
from agentfsm.stores.base import Snapshot, Store

log = logging.getLogger("agentfsm.worker")

#: How long a conversation's last snapshot is waited for before its workflow returns anyway (seconds). Temporal
#: takes a workflow task of over 2 s for a deadlock, so its workers wait less (``final_wait``).
FINAL_WAIT = 10.0


def owner_for(conversation_id: str) -> str:
    """The lease owner a mirrored conversation is held under: the same for every worker that runs it."""
    return f"agentfsm-engine:{conversation_id}"


@dataclass
class _Pending:
    snapshot: Snapshot
    written: list[threading.Event] = field(default_factory=list)


class StoreMirror:
    """Copies durable conversations' snapshots into ``store`` from a thread of its own (see the module)."""

    def __init__(
        self, store: Store, *, lease_s: float = 600.0, owns_store: bool = False, final_wait: float = FINAL_WAIT
    ) -> None:
        self.store = store
        self.lease_s = lease_s
        self.final_wait = final_wait
        self.owns_store = owns_store  # opened from a URL for this mirror: closed with it
        self._cond = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.failures = 0  # saves that failed (other than a replay's stale ones), for tests and operators

    def put(self, snapshot: Snapshot, *, wait: float | None = None) -> bool:
        """Queue ``snapshot`` (copied now: the conversation goes on changing); with ``wait``, block up to that
        many seconds until it (or a later one of the conversation) is written. True once written or queued."""
        copy = snapshot.model_copy(deep=True)
        done = threading.Event()
        with self._cond:
            if self._closed:
                return False
            queued = self._pending.get(copy.conversation_id)
            if queued is None or queued.snapshot.revision <= copy.revision:
                self._pending[copy.conversation_id] = _Pending(copy, [*(queued.written if queued else []), done])
            else:  # a newer one is queued already (cannot happen in order; kept safe)
                queued.written.append(done)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentfsm-store-mirror", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        if wait is None:
            return True
        if not done.wait(wait):
            log.warning("the store did not take conversation %s's snapshot within %.0f s", copy.conversation_id, wait)
            return False
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float = FINAL_WAIT) -> None:
        """Write what is queued (up to ``timeout`` seconds), then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        close = getattr(self.store, "close", None)
        if self.owns_store and callable(close):
            close()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed, and nothing left
                cid = next(iter(self._pending))
                item = self._pending.pop(cid)
                self._busy = True
            try:
                self._write(item.snapshot)
            finally:
                for event in item.written:
                    event.set()
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, snap: Snapshot) -> None:
        cid, owner = snap.conversation_id, owner_for(snap.conversation_id)
        stopped = snap.finished or snap.waiting is not None
        try:
            if not stopped and not self.store.acquire(cid, owner, self.lease_s):
                log.warning("conversation %s is held by another process in the store it is copied to", cid)
            self.store.save(snap)
        except StaleConversationError:
            pass  # a replay's snapshot the store has already (or a newer one): nothing to copy
        except Exception as exc:  # a view must not stop the work: say so, and the next snapshot tries again
            self.failures += 1
            log.warning("could not copy conversation %s to the store: %s: %s", cid, type(exc).__name__, exc)
            return
        if stopped:
            try:
                self.store.release(cid, owner)
            except Exception as exc:
                log.warning("could not release conversation %s in the store: %s", cid, exc)
