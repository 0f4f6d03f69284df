"""SQLiteStore: the embedded store — one SQLite file, WAL mode, no server.

A conversation is one row of ``agentfsm_conversations``: its ``Snapshot`` as
plain JSON text (what pydantic writes, readable by any later agentfsm), plus
a few columns copied out of it so ``list()`` needs no JSON (agent, state,
turns, finished, schema_version) and the ``revision`` that fences ``save``.
Leases are rows of ``agentfsm_leases``. Every method is one transaction, so
a process killed at any instant leaves either the previous snapshot or the
new one, never half of one. ``PRAGMA user_version`` numbers the layout.

Several processes may share the file (WAL: readers never block the writer;
writers wait up to ``timeout`` seconds for each other), and one store object
may be shared by threads (one connection per process, behind a lock; a
forked child opens its own).

Leases and dead processes. A lease records the host, pid and start time of
the process that took it. It is free when it is released, when it expires,
or — so that a crashed worker never blocks a resume for the rest of its
lease — when its holder is on this host and is no longer running (no such
pid, a zombie, or a different process that reused the pid). A holder on
another host (a file on a network share) is trusted until its lease expires.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from agentfsm.errors import SnapshotVersionError, StaleConversationError, StoreError, require_conversation_id
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

#: The table layout this version writes (``PRAGMA user_version``).
LAYOUT_VERSION = 1

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS agentfsm_conversations (
    id             TEXT PRIMARY KEY NOT NULL,
    snapshot       TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    revision       INTEGER NOT NULL,
    agent          TEXT NOT NULL,
    state          TEXT NOT NULL,
    turns          INTEGER NOT NULL,
    finished       INTEGER NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS agentfsm_leases (
    conversation_id TEXT PRIMARY KEY NOT NULL,
    owner           TEXT NOT NULL,
    expires_at      REAL NOT NULL,
    host            TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    pid_started     INTEGER
)""",
)

#: The columns a run list reads (``agentfsm.stores.listing``), added in place to a layout-1 table: an
#: older agentfsm sharing the file never names them, so it keeps working (its rows are filled in later).
LISTING_COLUMNS = (
    ("waiting", "TEXT"),
    ("reason", "TEXT"),
    ("tokens", "INTEGER"),
    ("cost_usd", "REAL"),
    ("elapsed_s", "REAL"),
    ("usage", "TEXT"),
    ("listed_revision", "INTEGER"),
)
#: Everything a filtered, ordered page and its totals read, so that they never touch the snapshots; and the
#: agents, for the filter's choices.
_LISTING_INDEXES = {
    # the newest first, and the whole table's sums
    "agentfsm_conversations_listing": "(created_at, id, agent, state, finished, waiting, tokens, cost_usd, revision, "
    "listed_revision, updated_at)",
    # one agent's runs, newest first (and the agents, for the filter's choices)
    "agentfsm_conversations_by_agent": "(agent, created_at, id, state, finished, waiting, tokens, cost_usd)",
    # the counts and sums by status, in index order (no sort)
    "agentfsm_conversations_by_status": "(finished, state, waiting, agent, tokens, cost_usd, id)",
}
_SUMMARY_COLUMNS = (
    "id, agent, state, turns, finished, updated_at, schema_version, created_at, revision, listed_revision, "
    "waiting, reason, tokens, cost_usd, elapsed_s, usage"
)

_P = ParamSpec("_P")
_R = TypeVar("_R")

HOST = socket.gethostname()
_HAS_PROC = os.path.isdir("/proc/self")


def process_state(pid: int) -> tuple[bool, int | None]:
    """Whether ``pid`` is a running (not zombie) process on this host, and its start time when known.

    The start time (clock ticks after boot, from ``/proc``) tells a reused pid from the process that had it.
    """
    if _HAS_PROC:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            return False, None
        except OSError:
            pass
        else:
            fields = stat[stat.rindex(b")") + 2 :].split()
            return fields[0] not in (b"Z", b"X", b"x"), int(fields[19])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, None
    except PermissionError:  # it exists, under another user
        return True, None
    return True, None


def holder_alive(host: str, pid: int, started: int | None) -> bool:
    """Whether the process that took a lease may still be running (True unless known dead)."""
    if host != HOST or pid == os.getpid():
        return True
    alive, now_started = process_state(pid)
    if not alive:
        return False
    return started is None or now_started is None or started == now_started


def _errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """SQLite's own failures (not a database, locked too long, disk full) as one clear ``StoreError``."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            store = args[0]
            raise StoreError(f"SQLite store {getattr(store, 'path', '?')}: {_explain(exc)}") from exc

    return wrapper


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{text}: this file is not an agentfsm store (or it is damaged)"
    if "locked" in text or "busy" in text:
        return f"{text}: another process kept the file locked longer than the store's timeout"
    return f"{type(exc).__name__}: {text}"


class SQLiteStore:
    """A ``Store`` in one SQLite file: ``SQLiteStore("agentfsm.db")``.

    ``timeout`` is how long a call waits for another process's write (seconds);
    ``synchronous="NORMAL"`` trades durability across a power cut (not across
    a process crash) for speed. ``clock`` is what lease expiry is read on
    (seconds since the epoch: every process sharing the file compares them); a
    test passes its own to expire a lease exactly.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self.timeout = timeout
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._json_valid = True  # SQLite builds before 3.38 may lack json_valid
        with self._lock:
            self._connection()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # --- the connection ----------------------------------------------------------------------------

    @_errors
    def _connection(self) -> sqlite3.Connection:
        """This process's connection (a forked child must not use its parent's); caller holds the lock."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn, self._pid = None, os.getpid()  # a parent's connection is dropped, not closed under it
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > LAYOUT_VERSION:
                raise StoreError(
                    f"SQLite store {self.path} has table layout {version}, newer than this agentfsm knows "
                    f"({LAYOUT_VERSION}); upgrade agentfsm to use it"
                )
            if version < LAYOUT_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={LAYOUT_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.rollback()
                    raise
            _add_listing_columns(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (taken at once, so a read-then-write cannot deadlock with another writer)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close this process's connection (the store reopens it if used again)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the Store protocol --------------------------------------------------------------------------

    @_errors
    def save(self, snapshot: Snapshot) -> None:
        cid = snapshot.conversation_id
        require_conversation_id(cid, "SQLiteStore.save")
        now = time.time()
        with self._write() as conn:
            cursor = conn.execute(
                """
                INSERT INTO agentfsm_conversations
                    (id, snapshot, schema_version, revision, agent, state, turns, finished, created_at, updated_at,
                     waiting, reason, tokens, cost_usd, elapsed_s, usage, listed_revision)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                    int(snapshot.finished),
                    now,
                    now,
                    *listing_values(snapshot),
                    snapshot.revision,
                ),
            )
            if cursor.rowcount == 0:
                (stored,) = conn.execute("SELECT revision FROM agentfsm_conversations WHERE id = ?", (cid,)).fetchone()
                raise StaleConversationError(cid, snapshot.revision - 1, stored)

    @_errors
    def load(self, conversation_id: str) -> Snapshot:
        require_conversation_id(conversation_id, "SQLiteStore.load")
        rows = self._read("SELECT snapshot FROM agentfsm_conversations WHERE id = ?", (conversation_id,))
        if not rows:
            raise KeyError(conversation_id)
        return read_snapshot(conversation_id, rows[0][0])

    @_errors
    def list(self) -> list[RunSummary]:
        columns = "id, agent, state, turns, finished, updated_at, schema_version"
        order = "ORDER BY created_at, id"
        if self._json_valid:
            try:
                # a fork's parent, read from the row's JSON where it is valid JSON (a corrupt row is listed too)
                forked = "CASE WHEN json_valid(snapshot) THEN json_extract(snapshot, '$.forked_from') END"
                rows = self._read(
                    f"SELECT {columns}, json_valid(snapshot), {forked} FROM agentfsm_conversations {order}"
                )
            except sqlite3.OperationalError as exc:
                if "json_valid" not in str(exc):
                    raise
                self._json_valid = False
        if not self._json_valid:
            rows = self._read(f"SELECT {columns}, 1, NULL FROM agentfsm_conversations {order}")
        return [
            RunSummary(
                conversation_id=cid,
                agent=agent,
                state=state,
                turns=turns,
                finished=bool(finished),
                updated_at=updated,
                problem=_problem(cid, version, bool(valid)),
                forked_from=forked_from_json(forked),
            )
            for cid, agent, state, turns, finished, updated, version, valid, forked in rows
        ]

    @_errors
    def page(self, run_filter: RunFilter | None = None, *, offset: int = 0, limit: int = 100) -> RunPage:
        """A page of runs, newest first, with the filtered set's totals: a few indexed queries, never every row
        (``agentfsm.stores.listing``)."""
        check_page(offset, limit)
        run_filter = run_filter or RunFilter()
        self._fill_listing()
        clause, params = where(run_filter, "?")
        ids = [
            row[0]
            for row in self._read(
                f"SELECT id FROM agentfsm_conversations{clause} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
        ]
        rows: dict[str, Any] = {}
        if ids:
            marks = ", ".join("?" * len(ids))
            valid = "json_valid(snapshot)" if self._json_valid else "1"
            for row in self._read(
                f"SELECT {_SUMMARY_COLUMNS}, {valid} FROM agentfsm_conversations WHERE id IN ({marks})", tuple(ids)
            ):
                rows[row[0]] = row
        # One pass over the index for the totals and the counts by status (the filter's state aside).
        others, other_params = where(run_filter, "?", state=False)
        groups = grouped(
            self._read(
                "SELECT finished, state, waiting, COUNT(*), TOTAL(tokens), TOTAL(cost_usd), TOTAL(cost_usd IS NULL) "
                f"FROM agentfsm_conversations{others} GROUP BY finished, state, waiting",
                tuple(other_params),
            )
        )
        agents = self._read("SELECT DISTINCT agent FROM agentfsm_conversations ORDER BY agent")
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
        valid = "json_valid(snapshot)" if self._json_valid else "1"
        rows = self._read(
            f"SELECT {_SUMMARY_COLUMNS}, {valid} FROM agentfsm_conversations WHERE id = ?", (conversation_id,)
        )
        return _summary(rows[0]) if rows else None

    def _fill_listing(self) -> None:
        """Write the listing columns of rows an older agentfsm saved (their ``listed_revision`` lags)."""
        while True:
            # The ids from the index first: the snapshots are read only for the rows that need them.
            ids = self._read(
                "SELECT id FROM agentfsm_conversations WHERE listed_revision IS NULL OR listed_revision <> revision "
                "LIMIT 500"
            )
            if not ids:
                return
            marks = ", ".join("?" * len(ids))
            stale = self._read(
                f"SELECT id, revision, snapshot FROM agentfsm_conversations WHERE id IN ({marks})",
                tuple(cid for (cid,) in ids),
            )
            with self._write() as conn:
                for cid, revision, text in stale:
                    # A row that is not readable is listed with its problem, its numbers unknown.
                    values: tuple[Any, ...] = listing_from_json(text) or (None,) * 6
                    conn.execute(
                        "UPDATE agentfsm_conversations SET waiting = ?, reason = ?, tokens = ?, cost_usd = ?, "
                        "elapsed_s = ?, usage = ?, listed_revision = revision WHERE id = ? AND revision = ?",
                        (*values, cid, revision),
                    )

    @_errors
    def fingerprint(self, conversation_id: str | None = None) -> str:
        """Changes whenever a run (or the run ``conversation_id``) is saved, added or removed: one indexed query."""
        if conversation_id is None:
            row = self._read("SELECT COUNT(*), TOTAL(revision), MAX(updated_at) FROM agentfsm_conversations")[0]
        else:
            found = self._read(
                "SELECT revision, updated_at, state FROM agentfsm_conversations WHERE id = ?", (conversation_id,)
            )
            row = found[0] if found else ("none",)
        return "-".join(str(v) for v in row)

    @_errors
    def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool:
        me = os.getpid()
        now = self._clock()
        mine = self._read(
            "SELECT expires_at FROM agentfsm_leases WHERE conversation_id = ? AND owner = ? AND pid = ?",
            (conversation_id, owner, me),
        )
        if mine and mine[0][0] - now > lease_s / 2:
            return True  # held, with more than half of it left: renewing now would only cost a write
        started = process_state(me)[1]
        with self._write() as conn:
            row = conn.execute(
                "SELECT owner, expires_at, host, pid, pid_started FROM agentfsm_leases WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            if row is not None:
                holder, expires_at, host, pid, pid_started = row
                if holder != owner and expires_at > now and holder_alive(host, pid, pid_started):
                    return False
            conn.execute(
                """
                INSERT INTO agentfsm_leases (conversation_id, owner, expires_at, host, pid, pid_started)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (conversation_id) DO UPDATE SET
                    owner = excluded.owner, expires_at = excluded.expires_at, host = excluded.host,
                    pid = excluded.pid, pid_started = excluded.pid_started
                """,
                (conversation_id, owner, now + lease_s, HOST, me, started),
            )
        return True

    @_errors
    def release(self, conversation_id: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM agentfsm_leases WHERE conversation_id = ? AND owner = ?", (conversation_id, owner)
            )


def _add_listing_columns(conn: sqlite3.Connection) -> None:
    """Add the listing columns and their index to a table that lacks them (filled in when first listed)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(agentfsm_conversations)")}
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(agentfsm_conversations)")}
    if all(name in have for name, _ in LISTING_COLUMNS) and set(_LISTING_INDEXES) <= indexes:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in conn.execute("PRAGMA table_info(agentfsm_conversations)")}
        for name, kind in LISTING_COLUMNS:
            if name not in have:
                conn.execute(f"ALTER TABLE agentfsm_conversations ADD COLUMN {name} {kind}")
        for index, columns in _LISTING_INDEXES.items():
            conn.execute(f"CREATE INDEX IF NOT EXISTS {index} ON agentfsm_conversations {columns}")
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def _summary(row: Any) -> RunSummary:
    (cid, agent, state, turns, finished, updated, version, created, revision, listed) = row[:10]
    (waiting, reason, tokens, cost, elapsed, usage, valid) = row[10:]
    fresh = listed == revision
    return RunSummary(
        conversation_id=cid,
        agent=agent,
        state=state,
        turns=turns,
        finished=bool(finished),
        updated_at=updated,
        problem=_problem(cid, version, bool(valid)),
        waiting=waiting if fresh else None,
        reason=reason if fresh else None,
        tokens=tokens if fresh else None,
        cost_usd=cost if fresh else None,
        elapsed_s=elapsed if fresh else None,
        usage=Usage.model_validate_json(usage) if fresh and usage else None,
        created_at=created,
    )


def _problem(conversation_id: str, version: int, valid_json: bool) -> str | None:
    if version > SCHEMA_VERSION:
        return SnapshotVersionError(conversation_id, version, SCHEMA_VERSION).problem
    if not valid_json:
        return "the stored row is not valid JSON"
    return None
