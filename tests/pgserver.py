"""A throwaway PostgreSQL server for the store tests.

``start()`` finds PostgreSQL's programs (installing Debian's ``postgresql`` package
with apt-get when they are missing and this is root), initdb's a cluster in a temp
dir, and starts it on a free loopback port — as the ``postgres`` user (or a system
user made for it) when running as root, since initdb refuses root. ``Server.stop()``
stops it and removes the dir. Any step that cannot be done raises ``Unavailable``
saying which and why, so the tests skip with that message.

``AGENTFSM_TEST_POSTGRES_DSN`` names an existing server to use instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


class Unavailable(Exception):
    """PostgreSQL cannot be run here; the message says why."""


@dataclass
class Server:
    dsn: str
    folder: Path | None = None
    bindir: Path | None = None
    user: str | None = None
    log: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.folder is None or self.bindir is None:
            return
        _run(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"], 30)
        shutil.rmtree(self.folder, ignore_errors=True)


def _run(user: str | None, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout or "").strip().splitlines()
    return text[-1] if text else f"exit status {proc.returncode}"


def find_bindir() -> Path | None:
    """The newest PostgreSQL server programs' folder (Debian keeps them off PATH), or None."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if found:
        return found[0]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


def install() -> None:
    """``apt-get install postgresql`` (after an ``apt-get update`` if the first try fails)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable("PostgreSQL is not installed, and apt-get cannot install it here (not root, or no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    for attempt in range(2):
        if attempt:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, env=env, check=False)
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
        if proc.returncode == 0 and find_bindir() is not None:
            return
    raise Unavailable(f"PostgreSQL is not installed and apt-get could not install it: {_tail(proc)}")


def _server_user() -> str | None:
    """Who runs the server: ourselves, or as root a non-root user (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        raise Unavailable("running as root and runuser is missing, so the server cannot run as another user")
    for name in ("postgres", "agentfsm-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    proc = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "agentfsm-pg"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise Unavailable(f"running as root and no non-root user to run the server could be made: {_tail(proc)}")
    return "agentfsm-pg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fresh_database(dsn: str, name: str) -> str:
    """Create database ``name`` on the server of a libpq key=value ``dsn``; its ``postgresql://`` URL.

    The suite starts one server (conftest's ``postgres_dsn``); a test that needs a store of its own
    gets a database of its own on it, instead of a second server.
    """
    import psycopg

    parts = dict(item.split("=", 1) for item in dsn.split())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://{parts.get('user', 'postgres')}@{parts['host']}:{parts['port']}/{name}"


def start() -> Server:
    dsn = os.environ.get("AGENTFSM_TEST_POSTGRES_DSN")
    if dsn:
        return Server(dsn=dsn)
    bindir = find_bindir()
    if bindir is None:
        install()
        bindir = find_bindir()
        assert bindir is not None
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="agentfsm-pg-"))
    try:
        if user is not None:
            info = pwd.getpwnam(user)
            os.chown(folder, info.pw_uid, info.pw_gid)
        data = folder / "data"
        proc = _run(
            user,
            [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
            60,
        )
        if proc.returncode != 0:
            raise Unavailable(f"initdb failed: {_tail(proc)}")
        for _ in range(3):  # the free port may be taken before the server binds it
            port = _free_port()
            options = (
                f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
            )
            proc = _run(
                user,
                [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "-t", "20",
                 "start"],
                40,
            )  # fmt: skip
            if proc.returncode == 0:
                return Server(
                    dsn=f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5",
                    folder=folder,
                    bindir=bindir,
                    user=user,
                )
            time.sleep(0.2)
        log = (folder / "log").read_text(errors="replace").strip().splitlines() if (folder / "log").exists() else []
        raise Unavailable(f"the server did not start: {log[-1] if log else _tail(proc)}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
