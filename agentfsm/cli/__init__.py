"""The ``agentfsm`` command line, one module per family of commands.

* ``running``  — ``demo`` and ``run``
* ``drawing``  — ``graph``, ``replay`` and ``diagrams``
* ``runs``     — ``runs list|show|graph|decide`` over a store
* ``debugging`` — ``runs fork|rerun``: fork a stored run at a step, rerun one against its recording
* ``ui``       — ``ui``: the run inspector in the browser
* ``sim``      — ``sim serve``
* ``batch``    — ``batch``: many conversations through the Message Batches API
* ``worker``   — ``worker dbos|temporal``: durable-engine workers (``agentfsm.engines``)
* ``checking`` — ``explore`` (every path on the simulator) and ``eval`` (cases, a table, a report)
* ``targets``  — what ``MODULE:NAME`` means; ``output`` — exit codes and writing graphs

Errors are one line on stderr and a non-zero exit, never a traceback. Exit
codes: 0 success; 1 an error (a module or class that does not exist, a
malformed events file, Graphviz or an API key missing, stale diagrams); 2 a
usage error; 3 a run that ended in a state other than ``done``.

Start-up is kept cheap: command modules import the SDK, pydantic and the
machine only inside the command that needs them, so ``agentfsm --help`` is fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from agentfsm.cli import batch, checking, drawing, running, runs, sim, ui, worker
from agentfsm.cli.output import EXIT_ERROR, EXIT_NOT_DONE, EXIT_USAGE
from agentfsm.errors import AgentfsmError

__all__ = ["EXIT_ERROR", "EXIT_NOT_DONE", "EXIT_USAGE", "build_parser", "main", "without_start_directory"]


def without_start_directory() -> None:
    """Take off the import path the directory ``python -m agentfsm`` put first on it (the current one), so the
    command imports as the installed ``agentfsm`` script does: no module is found because it lies where the
    command runs (beside a runs database, say). ``MODULE:Class`` is an importable module or a ``.py`` path."""
    if sys.path and (sys.path[0] == "" or os.path.realpath(sys.path[0]) == os.path.realpath(os.getcwd())):
        del sys.path[0]


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"agentfsm: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: ``agentfsm X.Y.Z``, read from the installed package's metadata when asked (one source of
    truth: pyproject.toml), not at every start."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print agentfsm's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("agentfsm")
        except PackageNotFoundError:  # imported from a source tree that was never installed
            found = "(not installed: pip install -e . to record its version)"
        print(f"agentfsm {found}")  # on stdout, as argparse's own version action does
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="agentfsm",
        description="Claude agent loops as finite-state machines.",
        epilog="MODULE:Class names a class by a module importable as it is (an installed package, or a folder on "
        "PYTHONPATH) or by a .py file path; the current directory is not searched. Only a class named so is "
        "imported: looking at stored runs or events files (runs list|show|graph, replay, ui) imports none.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    for commands in (running, drawing, sim, runs, ui, batch, worker, checking):
        commands.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported on one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `agentfsm ... | head`: the reader left; say nothing more
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # the command line reports, it does not dump tracebacks
        message = str(exc) if isinstance(exc, AgentfsmError) else f"{type(exc).__name__}: {exc}"
        print(f"agentfsm: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_ERROR
    return code
