"""Runs the docs' python blocks, each as a program of its own, for tests/test_docs.py.

A block is what a reader pastes into a file and runs with ``python example.py``, so that is how it
should be tested. A fresh interpreter per block costs too much, though: ``import anthropic`` alone
takes about 3 s of CPU, three minutes for the docs' 55 blocks on a 2-core machine. So this process
imports the SDK, agentfsm and its simulator once — and does nothing else: no logging or structlog
configured, no thread started — then forks one child per block (``gc.freeze()`` first, so that the
children's garbage collections leave the imported objects, and so their memory pages, alone).

The child is ``python example.py`` in every way the block can tell: its own process and process
group, the file's folder first on ``sys.path``, ``sys.argv == ["example.py"]``, the environment and
working directory the test gives it, stdin from /dev/null, stdout and stderr to files, the block run
as ``__main__`` by ``runpy``; an uncaught exception prints its traceback (from the program's own first
frame) and exits 1, ``sys.exit`` is honoured, and at the end the non-daemon threads are waited for,
the atexit handlers run and the streams are flushed, as the interpreter does on its way out. Only the
interpreter's final teardown (freeing every module) is skipped, which no program can observe. What it
shares with a cold start is the state of the modules imported here, as they are right after import.

One thing is added, to check rather than to change: an observer on ``Simulator.observers`` (the hook
the test suite checks every request through) that records each Messages request the block sends to
any simulator, written as JSON to the ``report`` file when the program ends; the test checks them
against the wire rules and the API's request schema.

The protocol, one JSON object a line: the test writes ``{"file", "cwd", "env", "stdout", "stderr",
"report"}`` on stdin; this process answers ``{"pid": ...}`` as soon as the child exists (so that the
test can kill its process group when it runs out of time) and ``{"returncode": ...}`` when it ended
(negative: killed by that signal, as ``subprocess`` says it).
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import runpy
import sys
import threading
from typing import Any

import anthropic  # noqa: F401  (imported for the children: the expensive import, done once)

import agentfsm
from agentfsm.sim import SimRequest, Simulator

# agentfsm's public names load their modules on first use: load them all here, once, as any block
# would (a module imported is the same whoever imported it first).
for _module in sorted({*agentfsm._MODULES.values(), *agentfsm._WHERE.values()}):
    importlib.import_module(_module)


def _send(message: dict[str, Any]) -> None:
    # Straight to the file descriptor: no Python buffer that a fork could copy into the child.
    os.write(1, (json.dumps(message) + "\n").encode())


def _record_requests(report: str) -> None:
    seen: list[dict[str, Any]] = []

    def record(request: SimRequest) -> None:
        seen.append(
            {
                "n": request.n,
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": {k: v for k, v in request.headers.items() if k == "anthropic-beta"},
                "body": request.body,
            }
        )

    def write() -> None:
        with open(report, "w", encoding="utf-8") as file:
            json.dump(seen, file)

    Simulator.observers.append(record)
    atexit.register(write)  # registered first, so it runs last: after the program's own atexit handlers


def _become_the_program(job: dict[str, Any]) -> None:
    """In the child: set the process up as ``python example.py`` would be, run the block, and exit."""
    os.setpgid(0, 0)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(path, flags, 0o644)
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115  (the process's stdin, for its whole life)
    sys.argv = [os.path.basename(job["file"])]
    sys.path[0] = os.path.dirname(job["file"])
    _record_requests(job["report"])
    try:
        runpy.run_path(job["file"], run_name="__main__")
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException as exc:
        # The traceback as `python example.py` prints it: from the program's first frame, not this runner's.
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != job["file"]:
            tb = tb.tb_next
        tb = tb or exc.__traceback__
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        status = 1
    # The interpreter's own way out (Py_FinalizeEx), up to the teardown: wait for the non-daemon threads
    # (after telling thread pools to finish: threading's own exit hook), run the atexit handlers, flush.
    # The teardown itself (freeing every module) changes nothing the program can show, and in a forked
    # child it would touch, and so copy, every page of the imported modules: skip it.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


def _exit_status(code: object) -> int:
    """What ``sys.exit(code)`` makes the exit status (a message goes to stderr, as the interpreter does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def serve() -> None:
    gc.freeze()  # what is imported stays out of the children's collections: they copy none of its pages
    commands = open(0, "rb", buffering=0)  # noqa: SIM115  (unbuffered: a fork copies no unread command)
    while line := commands.readline():
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _become_the_program(job)  # never returns
        _send({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _send({"returncode": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve()
