"""PostgresStore: conversations in PostgreSQL, for many workers on many machines.

``PostgresStore("postgresql://user@host/db")`` needs psycopg 3:
``pip install 'agentfsm[postgres]'``. The tables are those of ``SQLiteStore``
(``agentfsm_conversations``: the ``Snapshot`` as JSON text, summary columns,
the fencing ``revision``; ``agentfsm_leases``), made on first use under an
advisory lock so workers starting together do not race; the table comment
numbers the layout. Every method is one transaction. Times (``updated_at``,
lease expiry) are the server's, so the machines' clocks need not agree.

Two workers never advance the same conversation at once. The design:

* **A row lease.** ``acquire`` locks the conversation's lease row
  (``SELECT … FOR UPDATE``), so two workers deciding at the same moment are
  put in order by PostgreSQL; the first takes the lease (owner, expiry), the
  second sees it held and gets ``False`` (the conversation raises
  ``ConversationLockedError``: it does not wait). The holder renews it at
  every step; a holder that is alive but stuck loses it at expiry.
* **A session advisory lock for dead workers.** Each store keeps one
  connection per process, and with the lease that connection takes
  ``pg_try_advisory_lock(key)`` for the conversation and holds it until
  ``release``. If the worker dies, its connection closes (at once for a killed
  process; for a machine that vanished, when the server's TCP keepalives give
  up — the store asks for ~1 minute) and the advisory lock vanishes with it.
  So a lease whose holder's lock can be taken is free at once: a crashed
  worker's claim never blocks a resume until its lease expires.
* **A fence on writes.** ``save`` refuses a snapshot whose ``revision`` is not
  newer than the stored one, so a worker that lost its lease (paused past its
  expiry) cannot overwrite what the new holder has written.

A lease held by another owner in the same process (same session) is decided
by the row alone. A holder whose connection could not take the advisory lock
(another session still held it) is trusted until its lease expires.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from agentfsm.errors import (
    ConfigurationError,
    SnapshotVersionError,
    StaleConversationError,
    StoreError,
    require_conversation_id,
)
from agentfsm.stores.base import (
    SCHEMA_VERSION,
    RunSummary,
    Snapshot,
    forked_from_json,
    read_snapshot,
    snapshot_json,
)
from agentfsm.stores.listing import (
    RunFilter,
    RunPage,
    check_page,
    grouped,
    listing_from_json,
    listing_values,
    totals,
    where,
)
from agentfsm.wire.usage import Usage

if TYPE_CHECKING:
    import psycopg

#: The table layout this version writes (in the comment on ``agentfsm_conversations``).
LAYOUT_VERSION = 1
_LAYOUT_COMMENT = "agentfsm layout "
_LAYOUT_LOCK = 0x61_67_65_6E_74_66_73_6D  # "agentfsm": serialises creating the tables

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS agentfsm_conversations (
        id             text PRIMARY KEY,
        snapshot       text NOT NULL,
        schema_version integer NOT NULL,
        revision       bigint NOT NULL,
        agent          text NOT NULL,
        state          text NOT NULL,
        turns          integer NOT NULL,
        finished       boolean NOT NULL,
        created_at     double precision NOT NULL,
        updated_at     double precision NOT NULL
    )""",
    """
    CREATE TABLE IF NOT EXISTS agentfsm_leases (
        conversation_id text PRIMARY KEY,
        owner           text NOT NULL,
        expires_at      timestamptz NOT NULL,
        backend_pid     integer NOT NULL,
        locked          boolean NOT NULL
    )""",
)

#: The columns a run list reads (``agentfsm.stores.listing``), added in place: an older agentfsm on the same
#: database never names them and keeps working (its rows are filled in when listed), so the layout stays 1.
_LISTING = (
    """
    ALTER TABLE agentfsm_conversations
        ADD COLUMN IF NOT EXISTS waiting text, ADD COLUMN IF NOT EXISTS reason text,
        ADD COLUMN IF NOT EXISTS tokens bigint, ADD COLUMN IF NOT EXISTS cost_usd double precision,
        ADD COLUMN IF NOT EXISTS elapsed_s double precision, ADD COLUMN IF NOT EXISTS usage text,
        ADD COLUMN IF NOT EXISTS listed_revision bigint""",
    """
    CREATE INDEX IF NOT EXISTS agentfsm_conversations_listing ON agentfsm_conversations
        (created_at, id, agent, state, finished, waiting, tokens, cost_usd, revision, listed_revision, updated_at)""",
    """
    CREATE INDEX IF NOT EXISTS agentfsm_conversations_by_agent ON agentfsm_conversations
        (agent, created_at, id, state, finished, waiting, tokens, cost_usd)""",
    """
    CREATE INDEX IF NOT EXISTS agentfsm_conversations_by_status ON agentfsm_conversations
        (finished, state, waiting, agent, tokens, cost_usd, id)""",
)
_SUMMARY_COLUMNS = (
    "id, agent, state, turns, finished, updated_at, schema_version, created_at, revision, listed_revision, "
    "waiting, reason, tokens, cost_usd, elapsed_s, usage"
)
_STALE = (
    "SELECT id, revision, snapshot FROM agentfsm_conversations WHERE id = ANY(ARRAY(SELECT id FROM "
    "agentfsm_conversations WHERE listed_revision IS NULL OR listed_revision <> revision LIMIT 500))"
)

#: Session settings: the server drops a vanished client's connection (and its advisory locks) in ~1 minute.
_SESSION = ("SET tcp_keepalives_idle = 30", "SET tcp_keepalives_interval = 10", "SET tcp_keepalives_count = 3")

_NOW = "extract(epoch FROM clock_timestamp())"
#: A snapshot's ``forked_from`` object in its JSON text (a regular expression; the first group is the object).
_FORKED_FROM = r'"forked_from":(\{"conversation_id":"(?:[^"\\]|\\.)*","step":-?[0-9]+\})'

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigurationError(
            "PostgresStore needs psycopg 3, which is not installed: pip install 'agentfsm[postgres]'"
        ) from exc
    return psycopg


def advisory_key(conversation_id: str) -> int:
    """The bigint advisory-lock key of a conversation (a collision only makes a dead holder wait for expiry)."""
    return int.from_bytes(hashlib.blake2b(conversation_id.encode(), digest_size=8).digest(), "big", signed=True)


def _errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """psycopg's failures (server unreachable, connection lost, permissions) as one clear ``StoreError``."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except _psycopg().Error as exc:
            summary = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreError(f"PostgreSQL store: {summary}") from exc

    return wrapper


class PostgresStore:
    """A ``Store`` in PostgreSQL, shared by workers on many machines: ``PostgresStore(dsn)``.

    ``dsn`` is a libpq connection string or URI; ``connect_kwargs`` go to
    ``psycopg.connect``. One connection per process, opened on first use and
    again after a fork or a lost connection (leases it held are then re-taken
    on the next renewal, or found taken over).
    """

    def __init__(self, dsn: str, **connect_kwargs: Any) -> None:
        _psycopg()  # fail now, clearly, when the extra is not installed
        self.dsn = dsn
        self.connect_kwargs = connect_kwargs
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        self._backend = 0
        self._locked: set[str] = set()  # conversations whose advisory lock this session holds
        self._layout_checked = False

    def __repr__(self) -> str:
        return "PostgresStore(...)"  # never the DSN: it may hold a password

    # --- the connection ----------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        """This process's open connection; the caller holds the lock."""
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not conn.closed and not conn.broken:
            return conn
        if conn is not None and self._pid == os.getpid():
            conn.close()
        # a parent's connection after a fork is dropped, not closed: closing it would end the parent's session
        self._conn, self._pid, self._locked = None, os.getpid(), set()
        conn = self._open()
        try:
            for setting in _SESSION:
                conn.execute(setting)
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            self._backend = int(row[0]) if row else 0
            if not self._layout_checked:
                self._make_tables(conn)
                self._layout_checked = True
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _open(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = _psycopg().connect(self.dsn, autocommit=True, **self.connect_kwargs)
        return conn

    def _make_tables(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LAYOUT_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
            for statement in _LISTING:
                conn.execute(statement)
            row = conn.execute("SELECT obj_description('agentfsm_conversations'::regclass, 'pg_class')").fetchone()
            comment = row[0] if row else None
            if comment is None or not str(comment).startswith(_LAYOUT_COMMENT):
                conn.execute(f"COMMENT ON TABLE agentfsm_conversations IS '{_LAYOUT_COMMENT}{LAYOUT_VERSION}'")
                return
            version = str(comment)[len(_LAYOUT_COMMENT) :]
            if not version.isdigit() or int(version) > LAYOUT_VERSION:
                raise StoreError(
                    f"PostgreSQL store has table layout {version!r}, newer than this agentfsm knows "
                    f"({LAYOUT_VERSION}); upgrade agentfsm to use it"
                )

    def close(self) -> None:
        """Close this process's connection: its advisory locks go with it (the store reconnects if used again)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn, self._locked = None, set()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _try_lock(self, conn: psycopg.Connection[Any], conversation_id: str) -> bool:
        """Hold the conversation's advisory lock in this session (once, however many renewals)."""
        if conversation_id in self._locked:
            return True
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (advisory_key(conversation_id),)).fetchone()
        if row and row[0]:
            self._locked.add(conversation_id)
            return True
        return False

    def _unlock(self, conn: psycopg.Connection[Any], conversation_id: str) -> None:
        if conversation_id in self._locked:
            self._locked.discard(conversation_id)
            conn.execute("SELECT pg_advisory_unlock(%s)", (advisory_key(conversation_id),))

    # --- the Store protocol --------------------------------------------------------------------------

    @_errors
    def save(self, snapshot: Snapshot) -> None:
        cid = snapshot.conversation_id
        require_conversation_id(cid, "PostgresStore.save")
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                cursor = conn.execute(
                    f"""
                    INSERT INTO agentfsm_conversations
                        (id, snapshot, schema_version, revision, agent, state, turns, finished, created_at, updated_at,
                         waiting, reason, tokens, cost_usd, elapsed_s, usage, listed_revision)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, {_NOW}, {_NOW}, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (id) DO UPDATE SET
                        snapshot = excluded.snapshot, schema_version = excluded.schema_version,
                        revision = excluded.revision, agent = excluded.agent, state = excluded.state,
                        turns = excluded.turns, finished = excluded.finished, updated_at = excluded.updated_at,
                        waiting = excluded.waiting, reason = excluded.reason, tokens = excluded.tokens,
                        cost_usd = excluded.cost_usd, elapsed_s = excluded.elapsed_s, usage = excluded.usage,
                        listed_revision = excluded.listed_revision
                    WHERE agentfsm_conversations.revision < excluded.revision
                    """,
                    (
                        cid,
                        snapshot_json(snapshot),
                        snapshot.schema_version,
                        snapshot.revision,
                        snapshot.agent,
                        snapshot.state,
                        snapshot.counters.turns,
                        snapshot.finished,
                        *listing_values(snapshot),
                        snapshot.revision,
                    ),
                )
                if cursor.rowcount == 0:
                    row = conn.execute("SELECT revision FROM agentfsm_conversations WHERE id = %s", (cid,)).fetchone()
                    raise StaleConversationError(cid, snapshot.revision - 1, int(row[0]) if row else 0)

    @_errors
    def load(self, conversation_id: str) -> Snapshot:
        require_conversation_id(conversation_id, "PostgresStore.load")
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT snapshot FROM agentfsm_conversations WHERE id = %s", (conversation_id,))
                .fetchone()
            )
        if row is None:
            raise KeyError(conversation_id)
        return read_snapshot(conversation_id, row[0])

    @_errors
    def list(self) -> list[RunSummary]:
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    "SELECT id, agent, state, turns, finished, updated_at, schema_version, "
                    # a fork's parent: the row's forked_from object, as the snapshot's JSON writes it
                    f"substring(snapshot from '{_FORKED_FROM}') "
                    "FROM agentfsm_conversations ORDER BY created_at, id"
                )
                .fetchall()
            )
        return [
            RunSummary(
                conversation_id=cid,
                agent=agent,
                state=state,
                turns=turns,
                finished=finished,
                updated_at=updated,
                problem=(
                    SnapshotVersionError(cid, version, SCHEMA_VERSION).problem if version > SCHEMA_VERSION else None
                ),
                forked_from=forked_from_json(forked),
            )
            for cid, agent, state, turns, finished, updated, version, forked in rows
        ]

    @_errors
    def page(self, run_filter: RunFilter | None = None, *, offset: int = 0, limit: int = 100) -> RunPage:
        """A page of runs, newest first, with the filtered set's totals: a few indexed queries, never every row
        (``agentfsm.stores.listing``)."""
        check_page(offset, limit)
        run_filter = run_filter or RunFilter()
        self._fill_listing()
        clause, params = where(run_filter, "%s")
        others, other_params = where(run_filter, "%s", state=False)
        with self._lock:
            conn = self._connection()
            with conn.transaction():  # one snapshot of the table for the page and its totals
                ids = [
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM agentfsm_conversations{clause} ORDER BY created_at DESC, id DESC "
                        "LIMIT %s OFFSET %s",
                        (*params, limit, offset),
                    ).fetchall()
                ]
                rows = {
                    row[0]: row
                    for row in conn.execute(
                        f"SELECT {_SUMMARY_COLUMNS} FROM agentfsm_conversations WHERE id = ANY(%s)", (ids,)
                    ).fetchall()
                }
                # One pass for the totals and the counts by status (the filter's state aside).
                groups = grouped(
                    conn.execute(
                        "SELECT finished, state, waiting, COUNT(*), COALESCE(SUM(tokens), 0), "
                        "COALESCE(SUM(cost_usd), 0), COUNT(*) FILTER (WHERE cost_usd IS NULL) "
                        f"FROM agentfsm_conversations{others} GROUP BY finished, state, waiting",
                        tuple(other_params),
                    ).fetchall()
                )
                agents = conn.execute("SELECT DISTINCT agent FROM agentfsm_conversations ORDER BY agent").fetchall()
        return RunPage(
            runs=[_summary(rows[i]) for i in ids if i in rows],
            offset=offset,
            limit=limit,
            total=totals(groups, run_filter.state),
            by_state={status: n for status, n, *_ in groups},
            agents=[a for (a,) in agents],
        )

    @_errors
    def summary(self, conversation_id: str) -> RunSummary | None:
        """One run's line of the list (its listing columns as stored; None if there is no such run)."""
        with self._lock:
            row = (
                self._connection()
                .execute(f"SELECT {_SUMMARY_COLUMNS} FROM agentfsm_conversations WHERE id = %s", (conversation_id,))
                .fetchone()
            )
        return _summary(row) if row else None

    def _fill_listing(self) -> None:
        """Write the listing columns of rows an older agentfsm saved (their ``listed_revision`` lags)."""
        while True:
            with self._lock:
                conn = self._connection()
                stale = conn.execute(_STALE).fetchall()
                with conn.transaction():
                    for cid, revision, text in stale:
                        # A row that is not readable is listed with its problem, its numbers unknown.
                        values: tuple[Any, ...] = listing_from_json(text) or (None,) * 6
                        conn.execute(
                            "UPDATE agentfsm_conversations SET waiting = %s, reason = %s, tokens = %s, cost_usd = %s, "
                            "elapsed_s = %s, usage = %s, listed_revision = revision WHERE id = %s AND revision = %s",
                            (*values, cid, revision),
                        )
            if len(stale) < 500:
                return

    @_errors
    def fingerprint(self, conversation_id: str | None = None) -> str:
        """Changes whenever a run (or the run ``conversation_id``) is saved, added or removed: one indexed query."""
        with self._lock:
            conn = self._connection()
            if conversation_id is None:
                row = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(revision), 0), MAX(updated_at) FROM agentfsm_conversations"
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT revision, updated_at, state FROM agentfsm_conversations WHERE id = %s", (conversation_id,)
                ).fetchone()
        return "-".join(str(v) for v in (row or ("none",)))

    @_errors
    def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool:
        cid = conversation_id
        with self._lock:
            conn = self._connection()
            mine = conn.execute(
                "SELECT 1 FROM agentfsm_leases WHERE conversation_id = %s AND owner = %s AND backend_pid = %s "
                "AND expires_at > clock_timestamp() + make_interval(secs => %s)",
                (cid, owner, self._backend, float(lease_s) / 2),
            ).fetchone()
            if mine is not None and cid in self._locked:
                return True  # held, with more than half of it left: renewing now would only cost a commit
            had_lock = cid in self._locked
            try:
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO agentfsm_leases (conversation_id, owner, expires_at, backend_pid, locked) "
                        "VALUES (%s, '', '-infinity', 0, false) ON CONFLICT (conversation_id) DO NOTHING",
                        (cid,),
                    )
                    row = conn.execute(
                        "SELECT owner, expires_at > clock_timestamp(), backend_pid, locked FROM agentfsm_leases "
                        "WHERE conversation_id = %s FOR UPDATE",
                        (cid,),
                    ).fetchone()
                    assert row is not None  # inserted above if it was missing
                    holder, live, backend, locked = row
                    held = holder not in ("", owner) and live
                    # A holder is known dead only if it held the advisory lock and we can take that lock now.
                    if held and (backend == self._backend or not locked or not self._try_lock(conn, cid)):
                        return False
                    conn.execute(
                        "UPDATE agentfsm_leases SET owner = %s, backend_pid = %s, locked = %s, "
                        "expires_at = clock_timestamp() + make_interval(secs => %s) WHERE conversation_id = %s",
                        (owner, self._backend, self._try_lock(conn, cid), float(lease_s), cid),
                    )
                    return True
            except BaseException:
                if not had_lock and not conn.closed and not conn.broken:
                    with contextlib.suppress(Exception):
                        self._unlock(conn, cid)
                raise

    @_errors
    def release(self, conversation_id: str, owner: str) -> None:
        cid = conversation_id
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute("DELETE FROM agentfsm_leases WHERE conversation_id = %s AND owner = %s", (cid, owner))
                row = conn.execute(
                    "SELECT backend_pid FROM agentfsm_leases WHERE conversation_id = %s AND owner <> ''", (cid,)
                ).fetchone()
                if row is None or row[0] != self._backend:  # no lease of this session's left on it
                    self._unlock(conn, cid)


def _summary(row: Any) -> RunSummary:
    (cid, agent, state, turns, finished, updated, version, created, revision, listed) = row[:10]
    (waiting, reason, tokens, cost, elapsed, usage) = row[10:]
    fresh = listed == revision
    return RunSummary(
        conversation_id=cid,
        agent=agent,
        state=state,
        turns=turns,
        finished=finished,
        updated_at=updated,
        problem=SnapshotVersionError(cid, version, SCHEMA_VERSION).problem if version > SCHEMA_VERSION else None,
        waiting=waiting if fresh else None,
        reason=reason if fresh else None,
        tokens=tokens if fresh else None,
        cost_usd=cost if fresh else None,
        elapsed_s=elapsed if fresh else None,
        usage=Usage.model_validate_json(usage) if fresh and usage else None,
        created_at=created,
    )
