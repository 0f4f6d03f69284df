"""``agentfsm batch``: many conversations of one Agent class through the Message Batches API.

    agentfsm batch --agent MODULE:CLASS --prompts prompts.jsonl --store URL [--poll 60]

``prompts.jsonl`` has one conversation per line: a JSON string (the prompt),
or an object with ``prompt`` (a string or a message list) or ``messages``, and
optionally ``id``. A line without ``id`` is named ``<file stem>-<line number>``,
so running the same command again on the same store carries a crashed run on
(stored batches are polled, never sent twice; finished conversations are only
reported). Progress goes to stderr — redrawn in place on a terminal, plain
lines otherwise — and one JSON line per conversation (its result) to stdout,
or to ``--out FILE``, at the end. Exit 0 when every conversation ended
``done``, 3 when some did not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agentfsm.cli.output import EXIT_NOT_DONE
from agentfsm.errors import ConfigurationError, TargetNotFoundError


def add_commands(sub: Any) -> None:
    batch = sub.add_parser(
        "batch", help="run many conversations through the Message Batches API (half price; crash-safe resume)"
    )
    batch.add_argument("--agent", required=True, metavar="MODULE:AgentClass", help="the Agent class to run")
    batch.add_argument(
        "--prompts",
        required=True,
        metavar="FILE",
        help="JSON lines: a prompt string, or {'id': ..., 'prompt': str or messages} per conversation",
    )
    batch.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="where conversations and batches are kept: a SQLite file or a postgresql:// URI (run the "
        "same command again on it to carry on after a crash)",
    )
    batch.add_argument("--poll", type=float, default=60.0, metavar="SECONDS", help="seconds between polls (60)")
    batch.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="stop polling after SECONDS: a batch still in progress is left for the same command to carry on "
        "(its conversations end with reason batch_unfinished); default: until every batch ends",
    )
    batch.add_argument("--out", metavar="FILE", help="write the results (JSON lines) to FILE instead of stdout")
    batch.add_argument("--events", metavar="FILE", help="also write every event as JSON lines to FILE")
    batch.add_argument(
        "--sim",
        metavar="SCRIPT",
        help="run on the simulator (as `agentfsm run --sim`); without it, the real API (ANTHROPIC_API_KEY)",
    )
    batch.add_argument(
        "--sim-polls", type=int, default=1, metavar="N", help="with --sim: the poll on which each batch ends (1)"
    )
    batch.set_defaults(func=cmd_batch)


def read_prompts(path: str) -> list[tuple[str, Any]]:
    """``(conversation_id, prompt)`` per non-blank line of a prompts file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TargetNotFoundError(f"no such prompts file: {path}") from None
    items: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ConfigurationError(f"{path} line {number} is not JSON: {exc}") from None
        cid: Any = f"{file.stem}-{number}"
        if isinstance(value, dict):
            cid = value.get("id", cid)
            prompt = value.get("prompt", value.get("messages"))
            if prompt is None:
                raise ConfigurationError(f"{path} line {number}: an object needs 'prompt' (or 'messages')")
        else:
            prompt = value
        if not isinstance(cid, str) or not cid:
            raise ConfigurationError(f"{path} line {number}: 'id' must be a non-empty string")
        items.append((cid, prompt))
    if not items:
        raise ConfigurationError(f"{path} holds no prompts")
    seen: set[str] = set()
    for cid, _ in items:
        if cid in seen:
            raise ConfigurationError(f"{path}: the id {cid!r} is used twice")
        seen.add(cid)
    return items


def result_line(result: Any) -> dict[str, Any]:
    """What the results file says about one conversation."""
    return {
        "id": result.conversation_id,
        "final_state": result.final_state,
        "reason": result.reason,
        "stop_reason": result.stop_reason,
        "text": result.text,
        "turns": result.turns,
        "usage": result.usage.model_dump(),
        "cost_usd": result.cost_usd,
        "batched": result.batched,
        "error": result.error.model_dump() if result.error else None,
    }


def cmd_batch(args: argparse.Namespace) -> int:
    from agentfsm.batch import BatchRunner, ProgressDisplay
    from agentfsm.cli.targets import command_client, make_agent
    from agentfsm.loading import load_agent_class
    from agentfsm.stores.location import open_store

    agent_cls = load_agent_class(args.agent)
    items = read_prompts(args.prompts)
    if args.poll < 0:
        raise ConfigurationError(f"--poll must be >= 0 seconds, got {args.poll}")
    if args.deadline is not None and not args.deadline > 0:  # NaN too
        raise ConfigurationError(f"--deadline must be a number of seconds > 0, got {args.deadline}")
    client = command_client(args.sim, batch_polls=args.sim_polls)
    writer = None
    logger: Any = None
    if args.events:
        import logging

        import structlog

        from agentfsm.observe.replay import EventsWriter
        from agentfsm.redaction import redact_processor

        writer = EventsWriter(args.events)
        chain: list[Any] = [redact_processor, structlog.processors.add_log_level, writer, _drop]
        logger = structlog.wrap_logger(
            structlog.PrintLogger(sys.stderr),
            processors=chain,
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )
    try:
        agent = make_agent(agent_cls, client=client, logger=logger)
        store = open_store(args.store, create=True)
        runner = BatchRunner(
            agent, store=store, poll_interval=args.poll, deadline=args.deadline, progress=ProgressDisplay(sys.stderr)
        )
        results = runner.run_conversations(items, run_id=f"batch-{Path(args.prompts).stem}")
    finally:
        if writer is not None:
            writer.close()
    lines = "".join(json.dumps(result_line(results[cid]), ensure_ascii=False) + "\n" for cid, _ in items)
    if args.out and args.out != "-":
        Path(args.out).write_text(lines, encoding="utf-8")
    else:
        sys.stdout.write(lines)
        sys.stdout.flush()
    return 0 if all(r.final_state == "done" for r in results.values()) else EXIT_NOT_DONE


def _drop(logger: Any, method_name: str, event_dict: Any) -> Any:
    """The last processor: the events went to the file; nothing is printed (the progress display is)."""
    import structlog

    raise structlog.DropEvent
