"""``agentfsm explore`` and ``agentfsm eval``: check an agent on every path, or on a set of cases.

    agentfsm explore MODULE:Class [--depth 4] [--no-faults] [--no-crashes] [--driver run]
    agentfsm eval cases.jsonl --agent MODULE:Class [--concurrency 4] [--batch] [--store URL]
                  [--compare previous.json] [--report eval-report.json]

Both exit 0 when everything held, 1 when something did not (a counterexample; a failed case or a
regression), as every command does on an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agentfsm.cli.output import EXIT_ERROR


def add_commands(sub: Any) -> None:
    explore = sub.add_parser(
        "explore", help="run an Agent class on the simulator through every sequence of replies, checking every path"
    )
    explore.add_argument("agent", metavar="MODULE:AgentClass", help="the Agent class (made as Class())")
    explore.add_argument("--depth", type=int, default=4, help="requests per path (4)")
    explore.add_argument("--no-faults", action="store_true", help="no malformed replies, HTTP errors, broken streams")
    explore.add_argument("--no-crashes", action="store_true", help="no crash-and-resume before each save")
    explore.add_argument("--driver", choices=("run", "arun", "stream", "astream"), default="run")
    explore.set_defaults(func=cmd_explore)

    ev = sub.add_parser("eval", help="run an Agent class on cases (JSON lines) and check each; a table and a report")
    ev.add_argument("cases", metavar="CASES.jsonl", help="one case per line: {id, prompt, script?, expect}")
    ev.add_argument("--agent", required=True, metavar="MODULE:AgentClass", help="the Agent class to evaluate")
    ev.add_argument("--concurrency", type=int, default=4, metavar="N", help="cases run at once (4)")
    ev.add_argument("--batch", action="store_true", help="run the cases through the Message Batches API")
    ev.add_argument("--store", metavar="URL", help="keep the runs: a SQLite file or a postgresql:// URI")
    ev.add_argument("--compare", metavar="PREVIOUS.json", help="an earlier report: list the cases that regressed")
    ev.add_argument("--report", metavar="OUT.json", default="eval-report.json", help="where the JSON report goes")
    ev.set_defaults(func=cmd_eval)


def cmd_explore(args: argparse.Namespace) -> int:
    from agentfsm.exploring import explore
    from agentfsm.loading import load_agent_class

    cls = load_agent_class(args.agent)
    found = explore(cls, args.depth, faults=not args.no_faults, crashes=not args.no_crashes, driver=args.driver)
    print(found.summary())
    return 0 if found.ok else EXIT_ERROR


def _bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def cmd_eval(args: argparse.Namespace) -> int:
    from agentfsm.cli.targets import make_agent
    from agentfsm.eval import EvalReport, evaluate, load_cases
    from agentfsm.loading import load_agent_class

    cases = load_cases(args.cases)
    previous = None
    if args.compare:
        try:
            previous = EvalReport.model_validate_json(Path(args.compare).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"--compare {args.compare}: not a report this command wrote ({exc})") from None
    store = None
    if args.store:
        from agentfsm.stores.location import open_store

        store = open_store(args.store, create=True)
    agent = make_agent(load_agent_class(args.agent), client=None, logger=None)
    report = evaluate(agent, cases, concurrency=args.concurrency, batch=args.batch, store=store, progress=_bar)
    print(report.table())
    Path(args.report).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    regressed = report.regressions(previous) if previous is not None else []
    if previous is not None:
        print(f"regressions against {args.compare}: {', '.join(regressed) if regressed else 'none'}")
    return 0 if report.passed else EXIT_ERROR
