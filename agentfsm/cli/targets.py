"""What the command line's targets mean: a simulator script (``--sim``), the client a run command uses, the
agent made from a class, and what a stored run or an events file is drawn on (``drawn_table``: never a class
the data names, which would run its module's code).

Loading ``MODULE:Class`` itself is library code (``agentfsm.loading``), which the durable engines use too.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentfsm.errors import ConfigurationError, TargetNotFoundError
from agentfsm.loading import load_agent_class, load_target

if TYPE_CHECKING:
    from agentfsm.machine.state import StoredGraph
    from agentfsm.machine.table import Table


def drawn_table(
    agent_spec: str | None, recorded: str | None, stored: StoredGraph | None, *, held: str
) -> tuple[Table | StoredGraph, str]:
    """What a recorded run is drawn on, and the class name that titles it: the class ``--agent`` names (loaded:
    the person named it), else the graph stored with the run, else the base Agent's — with one line on stderr
    saying so when the run recorded another class (``held`` says why there is no stored graph). The class the
    run recorded is never imported: a stored row or an events file is data, and importing runs code."""
    from agentfsm.agent import Agent
    from agentfsm.observe.graph import short_name

    if agent_spec:
        cls = load_agent_class(agent_spec)
        return cls.table(), cls.__name__
    if stored is not None:
        return stored, short_name(recorded)
    if recorded not in (None, Agent.qualified_name()):
        print(
            f"agentfsm: note: drawn on the base Agent's graph: {held}, and the class it recorded ({recorded!r}) is "
            "not imported to draw it; name it with --agent MODULE:Class to draw on its graph",
            file=sys.stderr,
        )
    return Agent.table(), "Agent"


def load_sim_script(spec: str) -> Any:
    """A simulator script: a JSON file of replies, or ``MODULE:NAME`` (a list, or a function returning one)."""
    from agentfsm.sim import ErrorReply, ScriptedReply
    from agentfsm.sim import replies as r

    if spec.endswith(".json"):
        try:
            items = json.loads(Path(spec).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TargetNotFoundError(f"no such simulator script: {spec}") from None
        except ValueError as exc:
            raise TargetNotFoundError(f"simulator script {spec} is not JSON: {exc}") from exc
        builders = sorted(  # the reply builders of agentfsm.sim.replies, by what they return
            n
            for n, f in vars(r).items()
            if inspect.isfunction(f)
            and f.__module__ == r.__name__
            and not n.startswith("_")
            and str(inspect.signature(f).return_annotation) in ("ScriptedReply", "ErrorReply")
        )
        if not isinstance(items, list):
            raise TargetNotFoundError(f"simulator script {spec}: expected a JSON list of replies")
        script: list[Any] = []
        for i, item in enumerate(items):
            kind = item.get("type") if isinstance(item, dict) else None
            if kind not in builders:
                raise TargetNotFoundError(
                    f"simulator script {spec} item {i}: 'type' must be one of {', '.join(builders)}, got {kind!r}"
                )
            kwargs = {k: v for k, v in item.items() if k != "type"}
            try:
                reply = getattr(r, kind)(**kwargs)
            except (TypeError, ValueError) as exc:
                raise TargetNotFoundError(f"simulator script {spec} item {i} ({kind}): {exc}") from exc
            if not isinstance(reply, ScriptedReply | ErrorReply):
                raise TargetNotFoundError(f"simulator script {spec} item {i}: {kind!r} does not make a reply")
            script.append(reply)
        return script
    obj = load_target(spec)
    if callable(obj) and not isinstance(obj, type):
        required = [
            p for p in inspect.signature(obj).parameters.values() if p.default is p.empty and p.kind <= p.KEYWORD_ONLY
        ]
        if not required:
            obj = obj()  # a function that builds the script
    if isinstance(obj, list | tuple) or callable(obj):
        return obj
    raise TargetNotFoundError(f"{spec} is a {type(obj).__name__}: expected a list of replies or a function")


def command_client(sim_script: str | None, *, asynchronous: bool = False, **simulator_options: Any) -> Any:
    """The client a run command uses: the simulator given ``--sim SCRIPT`` (an ``AsyncAnthropic`` one when
    ``asynchronous``: for an agent with async hooks or actions), else None (the agent makes one from
    ``ANTHROPIC_API_KEY``), checked now so a missing key is one clear line before anything starts."""
    if sim_script:
        from agentfsm.sim import Simulator

        sim = Simulator(load_sim_script(sim_script), **simulator_options)
        return sim.async_client(max_retries=0) if asynchronous else sim.client(max_retries=0)
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise ConfigurationError(
            "no Anthropic API key: set ANTHROPIC_API_KEY to use the real API, or pass --sim SCRIPT to run "
            "on the simulator"
        )
    return None


def make_agent(agent_cls: Any, *, client: Any, logger: Any) -> Any:
    """``agent_cls(client=..., logger=...)``, or a one-line error saying why the class cannot be made so."""
    try:
        return agent_cls(client=client, logger=logger)
    except TypeError as exc:
        raise TargetNotFoundError(f"cannot make a {agent_cls.__name__} with (client=..., logger=...): {exc}") from exc
