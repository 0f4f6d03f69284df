"""``MemoryStore``: a ``Store`` in a dict, for tests and for resume within one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agentfsm.errors import CorruptSnapshotError, StaleConversationError, require_conversation_id
from agentfsm.stores.base import RunSummary, Snapshot, read_snapshot, snapshot_json
from agentfsm.stores.listing import RunFilter, RunPage, page_of


class MemoryStore:
    """A ``Store`` in a dict: for tests and for runs that only need resume within one process."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        """``clock`` is what lease expiry is read on (seconds); a test passes its own to expire a lease exactly."""
        self._clock = clock
        self._rows: dict[str, str] = {}
        self._revisions: dict[str, int] = {}
        self._updated: dict[str, float] = {}
        self._created: dict[str, float] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def save(self, snapshot: Snapshot) -> None:
        cid = snapshot.conversation_id
        require_conversation_id(cid, "MemoryStore.save")
        with self._lock:
            stored = self._revisions.get(cid)
            if stored is not None and snapshot.revision <= stored:
                raise StaleConversationError(cid, snapshot.revision - 1, stored)
            self._rows[cid] = snapshot_json(snapshot)
            self._revisions[cid] = snapshot.revision
            self._updated[cid] = time.time()
            self._created.setdefault(cid, self._updated[cid])

    def load(self, conversation_id: str) -> Snapshot:
        require_conversation_id(conversation_id, "MemoryStore.load")
        with self._lock:
            row = self._rows.get(conversation_id)
        if row is None:
            raise KeyError(conversation_id)
        return read_snapshot(conversation_id, row)

    def list(self) -> list[RunSummary]:
        with self._lock:
            rows = [(cid, row, self._updated[cid]) for cid, row in self._rows.items()]
        out = []
        for cid, row, updated in rows:
            try:
                snap = read_snapshot(cid, row)
            except CorruptSnapshotError as exc:  # listed, marked, and the others still listed
                out.append(
                    RunSummary(
                        conversation_id=cid,
                        agent="?",
                        state="?",
                        turns=0,
                        finished=False,
                        updated_at=updated,
                        problem=exc.problem,
                    )
                )
                continue
            out.append(
                RunSummary(
                    conversation_id=cid,
                    agent=snap.agent,
                    state=snap.state,
                    turns=snap.counters.turns,
                    finished=snap.finished,
                    updated_at=updated,
                    waiting=snap.waiting,
                    reason=snap.reason,
                    tokens=snap.usage.total_tokens,
                    cost_usd=snap.cost_usd,
                    elapsed_s=snap.elapsed_s,
                    usage=snap.usage,
                    forked_from=snap.forked_from,
                    created_at=self._created.get(cid, updated),
                )
            )
        return out

    def page(self, run_filter: RunFilter | None = None, *, offset: int = 0, limit: int = 100) -> RunPage:
        """A page of runs, newest first, with the filtered set's totals (in Python: it is all in memory anyway)."""
        return page_of(self.list(), run_filter, offset=offset, limit=limit)

    def summary(self, conversation_id: str) -> RunSummary | None:
        """One run's line of the list (None if there is no such run)."""
        return next((s for s in self.list() if s.conversation_id == conversation_id), None)

    def fingerprint(self, conversation_id: str | None = None) -> str:
        """Changes whenever a run (or the run ``conversation_id``) is saved, added or removed."""
        with self._lock:
            if conversation_id is None:
                return (
                    f"{len(self._revisions)}-{sum(self._revisions.values())}-{max(self._updated.values(), default=0)}"
                )
            return f"{self._revisions.get(conversation_id)}-{self._updated.get(conversation_id)}"

    def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool:
        now = self._clock()
        with self._lock:
            holder = self._leases.get(conversation_id)
            if holder is not None and holder[0] != owner and holder[1] > now:
                return False
            self._leases[conversation_id] = (owner, now + lease_s)
            return True

    def release(self, conversation_id: str, owner: str) -> None:
        with self._lock:
            if self._leases.get(conversation_id, ("", 0.0))[0] == owner:
                del self._leases[conversation_id]
