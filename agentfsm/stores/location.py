"""Where a store is: a URL or a path, opened as the store it names.

The command line (``agentfsm runs``, ``ui``, ``batch``) and the run inspector take a store this way:
``sqlite:///relative.db``, ``sqlite:////absolute.db``, a plain SQLite file path, or
``postgresql://user@host/db``. ``store_label`` is a URL fit to show (no password).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from agentfsm.errors import ConfigurationError, StoreError
from agentfsm.stores.base import Store


def sqlite_path(url: str) -> str | None:
    """The file a ``sqlite:`` URL names (``sqlite:///rel.db``, ``sqlite:////abs.db``); None for other URLs."""
    if not url.startswith("sqlite:"):
        return None
    rest = url[len("sqlite:") :]
    if not rest.startswith("//"):
        raise ConfigurationError(f"malformed SQLite URL {url!r}: write sqlite:///relative.db or sqlite:////abs.db")
    path = unquote(rest[2:].split("?", 1)[0])
    if path.startswith("/"):
        path = path[1:]  # sqlite:///x.db is x.db, relative; sqlite:////x.db is /x.db
    if not path:
        raise ConfigurationError(f"the SQLite URL {url!r} names no file")
    return path


def open_store(url: str, *, create: bool = False) -> Store:
    """The store a URL or path names: ``sqlite:///PATH``, a plain SQLite file path, or ``postgresql://``.

    A SQLite file that does not exist is an error (a mistyped path must not look like an empty store),
    unless ``create``: a command that writes runs (``agentfsm batch``) makes it.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from agentfsm.stores.postgres import PostgresStore

        return PostgresStore(url)
    path = sqlite_path(url)
    if path is None:
        scheme = urlsplit(url).scheme
        if len(scheme) > 1:  # a one-letter scheme is a Windows drive
            raise ConfigurationError(
                f"unsupported store URL {store_label(url)!r}: use sqlite:///PATH, a SQLite file path, "
                "or postgresql://USER@HOST/DB"
            )
        path = url
    if not create and not Path(path).is_file():
        raise StoreError(
            f"no agentfsm store at {path}: no such file (runs are stored by "
            "agent.run(..., store=agentfsm.SQLiteStore(PATH)))"
        )
    from agentfsm.stores.sqlite import SQLiteStore

    return SQLiteStore(path)


def store_label(url: str) -> str:
    """``url`` fit to show: a PostgreSQL URL loses its password."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))
