"""Which workers are alive: a lock each DBOS worker holds for its executor id while it lives.

DBOS recovers a dead worker's workflows only when a worker with the same
executor id starts again, so every ``DBOSWorker`` has an executor id of its own
and holds this lock for it; a sweep finds the pending workflows whose
executor's lock is free and puts them back on their queue
(``agentfsm.engines.dbos``). On PostgreSQL the lock is an advisory lock on a
connection of its own (freed when the connection drops); on SQLite, one
machine, an ``flock`` on a file beside the database (freed when the process dies).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import zlib
from pathlib import Path
from typing import Any


class Liveness:
    """Whether the worker with an executor id is alive: each worker holds a lock while it lives, which the
    operating system frees when the process (or its connection) dies."""

    def hold(self, executor_id: str) -> None:
        raise NotImplementedError

    def held(self) -> bool:
        """Still holding this worker's lock (a lost database connection lost it)."""
        return True

    def alive(self, executor_id: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class FileLiveness(Liveness):
    """SQLite (one machine): an ``flock`` on ``<database>.executors/<executor id>``, freed when the process dies."""

    def __init__(self, database: Path) -> None:
        self.folder = database.with_name(database.name + ".executors")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._held: int | None = None
        self._path: Path | None = None

    def hold(self, executor_id: str) -> None:
        self._path = self.folder / executor_id
        self._held = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._held, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def alive(self, executor_id: str) -> bool:
        path = self.folder / executor_id
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return False

    def close(self) -> None:
        if self._held is not None:
            if self._path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._path.unlink()
            os.close(self._held)
            self._held = None


def _lock_key(executor_id: str) -> int:
    return zlib.crc32(executor_id.encode()) - 2**31


class PostgresLiveness(Liveness):
    """PostgreSQL: an advisory lock per executor id on a connection of its own, freed when the connection drops
    (TCP keepalives bound how long a vanished machine keeps it)."""

    NAMESPACE = 0x61666D  # 'afm': the first key of agentfsm's advisory locks

    def __init__(self, url: str) -> None:
        import psycopg

        self._url = url
        self._psycopg = psycopg
        self._holder: Any = None
        self._checker: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        return self._psycopg.connect(
            self._url,
            autocommit=True,
            application_name="agentfsm-liveness",
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )

    def hold(self, executor_id: str) -> None:
        self._holder = self._connect()
        self._holder.execute("SELECT pg_advisory_lock(%s, %s)", (self.NAMESPACE, _lock_key(executor_id)))

    def held(self) -> bool:
        try:
            self._holder.execute("SELECT 1")
        except Exception:
            return False
        return True

    def alive(self, executor_id: str) -> bool:
        with self._lock:
            if self._checker is None or self._checker.closed:
                self._checker = self._connect()
            key = (self.NAMESPACE, _lock_key(executor_id))
            got = self._checker.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]
            if got:
                self._checker.execute("SELECT pg_advisory_unlock(%s, %s)", key)
            return not got

    def close(self) -> None:
        for conn in (self._holder, self._checker):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._holder = self._checker = None
