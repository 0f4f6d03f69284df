"""``agentfsm worker dbos|temporal``: a durable-engine worker that runs conversations until SIGTERM.

The engine's SDK (an optional extra) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any


def add_commands(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run conversations as durable workflows (DBOS or Temporal) until SIGTERM")
    engines = worker.add_subparsers(dest="engine", required=True)

    dbos = engines.add_parser("dbos", help="a DBOS worker (pip install 'agentfsm[dbos]')")
    dbos.add_argument("--database", required=True, metavar="URL", help="sqlite:///PATH or postgresql://USER@HOST/DB")
    _common(dbos)
    dbos.add_argument("--concurrency", type=int, metavar="N", help="conversations this worker runs at once")
    dbos.add_argument(
        "--recovery-interval", type=float, default=2.0, metavar="S", help="seconds between sweeps for dead workers"
    )
    dbos.add_argument("--poll-interval", type=float, default=0.25, metavar="S", help="seconds between queue polls")
    dbos.set_defaults(func=cmd_worker_dbos)

    temporal = engines.add_parser("temporal", help="a Temporal worker (pip install 'agentfsm[temporal]')")
    temporal.add_argument("--address", required=True, metavar="HOST:PORT", help="the Temporal server")
    _common(temporal)
    temporal.add_argument("--task-queue", default="agentfsm", metavar="Q", help="default: agentfsm")
    temporal.add_argument("--namespace", default="default")
    temporal.add_argument("--concurrency", type=int, metavar="N", help="workflow tasks this worker runs at once")
    temporal.add_argument(
        "--heartbeat-timeout", type=float, default=10.0, metavar="S", help="how soon a dead worker's step moves on"
    )
    temporal.add_argument(
        "--sticky-timeout", type=float, default=3.0, metavar="S", help="how soon a dead worker's workflows move on"
    )
    temporal.set_defaults(func=cmd_worker_temporal)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--agent",
        required=True,
        action="append",
        metavar="MODULE:CLASS",
        help="the Agent class to serve, built with no arguments (its client from ANTHROPIC_API_KEY / "
        "ANTHROPIC_BASE_URL); repeat to serve several",
    )
    p.add_argument(
        "--rate-limit", metavar="N/SECONDS", help="API requests shared by all workers, e.g. 50/60 (50 a minute)"
    )
    p.add_argument("--max-in-flight", type=int, metavar="N", help="API requests outstanding at once")
    p.add_argument(
        "--shutdown-grace", type=float, default=10.0, metavar="S", help="seconds running steps get after SIGTERM"
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="also copy every conversation's snapshot to this agentfsm store (a SQLite path, sqlite:///PATH or "
        "postgresql://...; for DBOS on SQLite it may be the same file) so `agentfsm runs` and `agentfsm ui` show it",
    )


def _rate_limit(args: argparse.Namespace) -> Any:
    from agentfsm.engines.core import RateLimit

    if args.rate_limit is None and args.max_in_flight is None:
        return None
    if args.rate_limit is None:
        return RateLimit(max_in_flight=args.max_in_flight)
    return RateLimit.parse(args.rate_limit, args.max_in_flight)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT; one line per conversation started/finished goes to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s agentfsm worker: %(message)s"))
    logger = logging.getLogger("agentfsm.worker")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def cmd_worker_dbos(args: argparse.Namespace) -> int:
    from agentfsm.engines.dbos import DBOSWorker

    worker = DBOSWorker(
        args.database,
        args.agent,
        concurrency=args.concurrency,
        rate_limit=_rate_limit(args),
        recovery_interval=args.recovery_interval,
        poll_interval=args.poll_interval,
        shutdown_grace=args.shutdown_grace,
        store=args.store,
    )
    worker.run(_stop_on_signals())
    return 0


def cmd_worker_temporal(args: argparse.Namespace) -> int:
    from agentfsm.engines.temporal import TemporalWorker

    worker = TemporalWorker(
        args.address,
        args.agent,
        task_queue=args.task_queue,
        namespace=args.namespace,
        concurrency=args.concurrency,
        rate_limit=_rate_limit(args),
        heartbeat_timeout=args.heartbeat_timeout,
        sticky_timeout=args.sticky_timeout,
        shutdown_grace=args.shutdown_grace,
        store=args.store,
    )
    worker.run_sync(_stop_on_signals())
    return 0
