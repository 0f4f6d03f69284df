"""``agentfsm runs fork|rerun``: fork a stored run at a step; rerun one against its recording and compare.

``fork`` imports no code: the fork is made from the stored row alone (``agentfsm.debugging.fork_snapshot``),
under the parent's agent, model and max_tokens unless ``--model`` says otherwise, and saved ready to run.
``rerun`` runs the conversation again, so it takes the class from the person asking (``--agent``), as
``runs decide`` does, never from the row.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
from typing import Any

from agentfsm.cli.output import EXIT_NOT_DONE
from agentfsm.cli.targets import command_client, make_agent
from agentfsm.loading import load_agent_class

TOOLS_HELP = (
    "what a tool call the recording has no result for gets: recorded (the default) and refuse answer it with an "
    "error the model reads, running nothing; live runs it; fail stops the rerun"
)


def add_commands(runs_sub: Any, store_help: str) -> None:
    fork = runs_sub.add_parser(
        "fork",
        help="fork a stored conversation at a step of its trace: a new conversation whose history is exactly the "
        "history after that step, saved ready to run (agent.resume carries it on), as agent.fork does",
    )
    fork.add_argument("id", metavar="ID", help="the conversation id (or the start of one)")
    fork.add_argument("--at", metavar="STEP", type=int, required=True, help="the step (as `runs show` numbers them)")
    fork.add_argument("--model", metavar="MODEL", help="the model the fork runs on (default: the original's)")
    fork.add_argument("--new-id", metavar="ID", help="the fork's id (default: ID-fork-XXXXXXXX)")
    fork.add_argument("--store", metavar="PATH", help=store_help)
    fork.set_defaults(func=cmd_runs_fork)
    rerun = runs_sub.add_parser(
        "rerun",
        help="run a stored conversation again from its first prompt (or --at a step) with the class you name and "
        "--model, its tool calls answered from the recording; print how it compares, as agent.rerun does",
    )
    rerun.add_argument("id", metavar="ID", help="the conversation id (or the start of one)")
    rerun.add_argument(
        "--agent",
        metavar="MODULE:AgentClass",
        required=True,
        help="the Agent class that reruns it (the class a stored row names is never imported)",
    )
    rerun.add_argument("--model", metavar="MODEL", help="the model to rerun on (default: the agent's)")
    rerun.add_argument("--at", metavar="STEP", type=int, help="rerun from this step of the original (default: 0)")
    rerun.add_argument("--tools", choices=("recorded", "live", "refuse", "fail"), default="recorded", help=TOOLS_HELP)
    rerun.add_argument("--new-id", metavar="ID", help="the rerun's id (default: ID-rerun-XXXXXXXX)")
    rerun.add_argument(
        "--sim",
        metavar="SCRIPT",
        help="rerun against the simulator with this script (as for `agentfsm run`); without it, the real API "
        "(ANTHROPIC_API_KEY)",
    )
    rerun.add_argument("--json", action="store_true", help="print the comparison as JSON")
    rerun.add_argument("--store", metavar="PATH", help=store_help)
    rerun.set_defaults(func=cmd_runs_rerun)


def cmd_runs_fork(args: argparse.Namespace) -> int:
    from agentfsm.cli.runs import _load_run, _store_location
    from agentfsm.debugging.fork import fork_snapshot, new_fork_id
    from agentfsm.stores.location import store_label

    store, parent = _load_run(args)
    with contextlib.closing(store) if hasattr(store, "close") else contextlib.nullcontext():
        fid = new_fork_id(store, parent.conversation_id, args.new_id)
        snap = fork_snapshot(parent, args.at, new_id=fid, model=args.model)
        store.save(snap)
    where = shlex.quote(store_label(_store_location(args)))
    compacted = f", {len(snap.replaced_messages)} compacted away" if snap.replaced_messages else ""
    print(
        f"forked {parent.conversation_id} at step {args.at} as {fid} ({len(snap.messages)} messages{compacted}; "
        f"model {snap.model}; at {snap.state}, nothing sent)"
    )
    print(f"see it      : agentfsm runs show {shlex.quote(fid)} --store {where}")
    print(f"run it      : agent.resume({fid!r}, store=...) with the {parent.agent} you want it run by")
    return 0


def cmd_runs_rerun(args: argparse.Namespace) -> int:
    from agentfsm.cli.runs import _load_run

    store, parent = _load_run(args)
    with contextlib.closing(store) if hasattr(store, "close") else contextlib.nullcontext():
        agent = make_agent(load_agent_class(args.agent), client=command_client(args.sim), logger=None)
        done = agent.rerun(
            parent.conversation_id, store=store, tools=args.tools, at=args.at, new_id=args.new_id, model=args.model
        )
    if args.json:
        print(done.comparison.model_dump_json(indent=2))
    else:
        print(done.comparison.table())
    return 0 if done.result.final_state == "done" else EXIT_NOT_DONE
