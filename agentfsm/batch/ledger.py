"""The ledger: what is stored about batches, so that a crash never pays for a request twice.

A ``BatchRecord`` is written *before* its batch is created (``begin``: a local
``key`` and one ``Entry`` per request: which conversation, at which stored
revision, which turn, which attempt), gets the API's batch id as soon as the
API answers (``submitted``), and each entry gets its ``outcome`` once the
result has been applied to its conversation (``settle``); a record whose
entries are all settled is finished. A runner that starts on the same store
reads the open records back: a conversation whose stored revision is still the
one an entry names is *waiting* on that batch, and is polled, never sent again.
A runner that stops polling at its deadline (``BatchRunner(deadline=...)``, or the
agents' wall budget) while a batch is still in progress marks the entries still
waiting ``unfinished``: not settled, so the record stays open and the next runner
on the store polls the batch again.

Applying a result is idempotent without the ledger's help: a result is applied
only to a conversation still at the entry's revision (every transition saves
the conversation with a higher revision), so a result applied just before a
crash — saved, not yet settled here — is recognised as stale after it.

Where the ledger lives (``ledger_for(store)``): beside the conversations it
speaks of, added to the store and kept apart from it —

* ``MemoryStore`` → ``MemoryLedger``, one per store object;
* ``SQLiteStore`` → ``SQLiteLedger``: two tables of its own,
  ``agentfsm_batches`` and ``agentfsm_batch_requests``, in the same file,
  through a connection of its own (WAL lets both write);
* ``PostgresStore`` → ``PostgresLedger``: the same two tables in the same database.

Any other store needs ``BatchRunner(..., ledger=...)``. The store classes are
not changed: the ledger is additive, and a database without batches has no
ledger tables.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agentfsm.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    from agentfsm.stores.base import Store


#: The outcome of an entry whose batch had not ended when the runner stopped polling at its deadline: the entry
#: is still waiting (not settled), and a runner started later on the same store polls its batch again.
UNFINISHED = "unfinished"


@dataclass(frozen=True)
class Entry:
    """One request of a batch: the conversation it advances, and at which point of it."""

    custom_id: str
    conversation_id: str
    #: The conversation's stored revision when the request was made: its result applies only there.
    revision: int
    #: The turn the request is (``Conversation.turns`` once it was counted).
    turn: int
    #: 1 for the first request made at this revision, 2 for its resend, ...
    attempt: int = 1
    #: None until the result was applied: ``succeeded``, ``errored:<type>``, ``expired``, ``canceled``,
    #: ``stale`` (the conversation had moved on), ``missing`` (the results file had no usable line for it);
    #: or ``unfinished`` (``UNFINISHED``): its batch was still in progress at the runner's deadline.
    outcome: str | None = None

    @property
    def settled(self) -> bool:
        """Its result was applied (or will never be): an ``unfinished`` entry still waits on its batch."""
        return self.outcome is not None and self.outcome != UNFINISHED


@dataclass
class BatchRecord:
    """One batch: recorded before it is created, its id once the API gave one."""

    key: str
    batch_id: str | None
    created_at: float
    beta: bool = False
    entries: dict[str, Entry] = field(default_factory=dict)
    done: bool = False

    @property
    def unsettled(self) -> list[Entry]:
        """The entries whose result is still to be applied (``unfinished`` ones included)."""
        return [e for e in self.entries.values() if not e.settled]


@runtime_checkable
class Ledger(Protocol):
    """Where batch records are kept. Every method is atomic."""

    def begin(self, record: BatchRecord) -> None:
        """Store a new record and its entries (``batch_id`` still None)."""
        ...

    def submitted(self, key: str, batch_id: str) -> None:
        """The API created the batch: remember its id."""
        ...

    def abandon(self, key: str) -> None:
        """The batch was certainly never created: forget the record."""
        ...

    def settle(self, key: str, outcomes: Mapping[str, str]) -> None:
        """Record the outcome of entries (by custom_id) whose results were applied."""
        ...

    def finish(self, key: str) -> None:
        """Every entry of the record is settled: it is no longer open."""
        ...

    def open_batches(self) -> list[BatchRecord]:
        """Records not finished, oldest first, with all their entries."""
        ...

    def entries_for(self, conversation_ids: Collection[str]) -> list[Entry]:
        """Every entry (of open and finished records) for these conversations."""
        ...

    def batch_ids(self) -> set[str]:
        """The ids of every batch ever recorded (to tell a batch of ours from a stranger's)."""
        ...

    def records(self) -> list[BatchRecord]:
        """Every record, oldest first (for inspection and tests)."""
        ...


# --- in memory ---------------------------------------------------------------------------------------


class MemoryLedger:
    """A ``Ledger`` in dicts: for ``MemoryStore`` (resume within one process) and tests."""

    def __init__(self) -> None:
        self._records: dict[str, BatchRecord] = {}
        self._lock = threading.Lock()

    def _copy(self, record: BatchRecord) -> BatchRecord:
        return replace(record, entries=dict(record.entries))

    def begin(self, record: BatchRecord) -> None:
        with self._lock:
            self._records[record.key] = self._copy(record)

    def submitted(self, key: str, batch_id: str) -> None:
        with self._lock:
            self._records[key].batch_id = batch_id

    def abandon(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)

    def settle(self, key: str, outcomes: Mapping[str, str]) -> None:
        with self._lock:
            record = self._records[key]
            for custom_id, outcome in outcomes.items():
                if custom_id in record.entries:
                    record.entries[custom_id] = replace(record.entries[custom_id], outcome=outcome)

    def finish(self, key: str) -> None:
        with self._lock:
            self._records[key].done = True

    def open_batches(self) -> list[BatchRecord]:
        with self._lock:
            return [self._copy(r) for r in self._records.values() if not r.done]

    def entries_for(self, conversation_ids: Collection[str]) -> list[Entry]:
        wanted = set(conversation_ids)
        with self._lock:
            return [e for r in self._records.values() for e in r.entries.values() if e.conversation_id in wanted]

    def batch_ids(self) -> set[str]:
        with self._lock:
            return {r.batch_id for r in self._records.values() if r.batch_id is not None}

    def records(self) -> list[BatchRecord]:
        with self._lock:
            return [self._copy(r) for r in self._records.values()]


# --- SQL (SQLite and PostgreSQL) ------------------------------------------------------------------------

_TABLES = (
    """
    CREATE TABLE IF NOT EXISTS agentfsm_batches (
        key        TEXT PRIMARY KEY NOT NULL,
        batch_id   TEXT,
        created_at {real} NOT NULL,
        beta       INTEGER NOT NULL,
        done       INTEGER NOT NULL
    )""",
    """
    CREATE TABLE IF NOT EXISTS agentfsm_batch_requests (
        batch_key       TEXT NOT NULL,
        custom_id       TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        revision        INTEGER NOT NULL,
        turn            INTEGER NOT NULL,
        attempt         INTEGER NOT NULL,
        outcome         TEXT,
        PRIMARY KEY (batch_key, custom_id)
    )""",
    "CREATE INDEX IF NOT EXISTS agentfsm_batch_requests_conversation ON agentfsm_batch_requests (conversation_id)",
)
_ENTRY_COLUMNS = "batch_key, custom_id, conversation_id, revision, turn, attempt, outcome"
#: Conversation ids per ``IN (...)`` query (SQLite allows 32,766 parameters; stay far below).
_CHUNK = 500


class _SQLLedger:
    """What SQLite and PostgreSQL share: the statements, with ``?`` written as the driver's placeholder."""

    _mark = "?"

    def _tx(self) -> AbstractContextManager[Any]:
        """A cursor inside one transaction."""
        raise NotImplementedError

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._mark)

    def begin(self, record: BatchRecord) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO agentfsm_batches (key, batch_id, created_at, beta, done) VALUES (?, ?, ?, ?, ?)"
                ),
                (record.key, record.batch_id, record.created_at, int(record.beta), int(record.done)),
            )
            cur.executemany(
                self._sql(f"INSERT INTO agentfsm_batch_requests ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"),
                [
                    (record.key, e.custom_id, e.conversation_id, e.revision, e.turn, e.attempt, e.outcome)
                    for e in record.entries.values()
                ],
            )

    def submitted(self, key: str, batch_id: str) -> None:
        with self._tx() as cur:
            cur.execute(self._sql("UPDATE agentfsm_batches SET batch_id = ? WHERE key = ?"), (batch_id, key))

    def abandon(self, key: str) -> None:
        with self._tx() as cur:
            cur.execute(self._sql("DELETE FROM agentfsm_batch_requests WHERE batch_key = ?"), (key,))
            cur.execute(self._sql("DELETE FROM agentfsm_batches WHERE key = ?"), (key,))

    def settle(self, key: str, outcomes: Mapping[str, str]) -> None:
        if not outcomes:
            return
        with self._tx() as cur:
            cur.executemany(
                self._sql("UPDATE agentfsm_batch_requests SET outcome = ? WHERE batch_key = ? AND custom_id = ?"),
                [(outcome, key, custom_id) for custom_id, outcome in outcomes.items()],
            )

    def finish(self, key: str) -> None:
        with self._tx() as cur:
            cur.execute(self._sql("UPDATE agentfsm_batches SET done = 1 WHERE key = ?"), (key,))

    def _records(self, where: str) -> list[BatchRecord]:
        with self._tx() as cur:
            cur.execute(f"SELECT key, batch_id, created_at, beta, done FROM agentfsm_batches {where}")
            rows = cur.fetchall()
            records = {
                key: BatchRecord(key=key, batch_id=bid, created_at=float(at), beta=bool(beta), done=bool(done))
                for key, bid, at, beta, done in rows
            }
            if records:
                cur.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM agentfsm_batch_requests WHERE batch_key IN "
                    f"(SELECT key FROM agentfsm_batches {where})"
                )
                for row in cur.fetchall():
                    record = records.get(row[0])
                    if record is not None:
                        entry = _entry(row)
                        record.entries[entry.custom_id] = entry
        return sorted(records.values(), key=lambda r: (r.created_at, r.key))

    def open_batches(self) -> list[BatchRecord]:
        return self._records("WHERE done = 0")

    def records(self) -> list[BatchRecord]:
        return self._records("")

    def entries_for(self, conversation_ids: Collection[str]) -> list[Entry]:
        ids = list(conversation_ids)
        found: list[Entry] = []
        with self._tx() as cur:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join([self._mark] * len(chunk))
                cur.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM agentfsm_batch_requests WHERE conversation_id IN ({marks})", chunk
                )
                found.extend(_entry(row) for row in cur.fetchall())
        return found

    def batch_ids(self) -> set[str]:
        with self._tx() as cur:
            cur.execute("SELECT batch_id FROM agentfsm_batches WHERE batch_id IS NOT NULL")
            return {str(row[0]) for row in cur.fetchall()}


def _entry(row: Iterable[Any]) -> Entry:
    _, custom_id, conversation_id, revision, turn, attempt, outcome = row
    return Entry(
        custom_id=custom_id,
        conversation_id=conversation_id,
        revision=int(revision),
        turn=int(turn),
        attempt=int(attempt),
        outcome=outcome,
    )


class SQLiteLedger(_SQLLedger):
    """A ``Ledger`` in a SQLite file (the ``SQLiteStore``'s own file, by ``ledger_for``), on its own connection.

    ``synchronous`` as ``SQLiteStore``'s (``ledger_for`` copies the store's).
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.path = Path(path)
        self.timeout = timeout
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"SQLiteLedger({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        import os

        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _TABLES:
                conn.execute(statement.format(real="REAL"))
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite batch ledger {self.path}: {exc}") from exc
            cur = conn.cursor()
            try:
                yield cur
            except sqlite3.Error as exc:
                conn.rollback()
                raise StoreError(f"SQLite batch ledger {self.path}: {exc}") from exc
            except BaseException:
                conn.rollback()
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close this process's connection (reopened if the ledger is used again)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


class PostgresLedger(_SQLLedger):
    """A ``Ledger`` in PostgreSQL (the ``PostgresStore``'s database, by ``ledger_for``)."""

    _mark = "%s"

    def __init__(self, dsn: str, **connect_kwargs: Any) -> None:
        self.dsn = dsn
        self.connect_kwargs = connect_kwargs
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0

    def __repr__(self) -> str:
        return "PostgresLedger(...)"  # never the DSN: it may hold a password

    def _connection(self) -> Any:
        import os

        from agentfsm.stores.postgres import _LAYOUT_LOCK, _psycopg

        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not conn.closed and not conn.broken:
            return conn
        conn = _psycopg().connect(self.dsn, autocommit=True, **self.connect_kwargs)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LAYOUT_LOCK,))
            for statement in _TABLES:
                conn.execute(statement.format(real="double precision"))
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        from agentfsm.stores.postgres import _psycopg

        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except _psycopg().Error as exc:
                raise StoreError(f"PostgreSQL batch ledger: {' '.join(str(exc).split())}") from exc


# --- which ledger goes with a store -------------------------------------------------------------------------

_MEMORY: weakref.WeakKeyDictionary[Any, MemoryLedger] = weakref.WeakKeyDictionary()
_MEMORY_LOCK = threading.Lock()


def ledger_for(store: Store) -> Ledger:
    """The ledger kept beside ``store``'s conversations (see the module docstring)."""
    from agentfsm.stores.memory import MemoryStore
    from agentfsm.stores.postgres import PostgresStore
    from agentfsm.stores.sqlite import SQLiteStore

    if isinstance(store, MemoryStore):
        with _MEMORY_LOCK:
            ledger = _MEMORY.get(store)
            if ledger is None:
                ledger = _MEMORY[store] = MemoryLedger()
            return ledger
    if isinstance(store, SQLiteStore):
        return SQLiteLedger(store.path, timeout=store.timeout, synchronous=store.synchronous)
    if isinstance(store, PostgresStore):
        return PostgresLedger(store.dsn, **store.connect_kwargs)
    raise ConfigurationError(
        f"no batch ledger is known for a {type(store).__name__}: pass one, e.g. "
        "BatchRunner(agent, store=store, ledger=SQLiteLedger(path)) (see agentfsm.batch.ledger)"
    )
