"""What ``MODULE:NAME`` on the command line means: a module (or ``.py`` file) and a name in it.

The current directory is on the import path, as with ``python -m``, so a
user's own modules are found wherever the command runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from agentfsm.errors import ConfigurationError, TargetNotFoundError


def load_module(spec: str) -> ModuleType:
    """A module by dotted name (found from the current directory too) or by ``.py`` file path."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise TargetNotFoundError(f"no such Python file: {spec}")
        name = path.stem if path.stem not in sys.modules else f"{path.stem}_{abs(hash(path.resolve())):x}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise TargetNotFoundError(f"cannot load {spec} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses, pydantic and pickling look modules up by name
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise TargetNotFoundError(f"importing {spec} failed: {type(exc).__name__}: {exc}") from exc
        return module
    _cwd_on_path()
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise TargetNotFoundError(
                f"no module named {spec!r} (give a dotted module name importable from here, or a .py file path)"
            ) from exc
        raise TargetNotFoundError(f"importing {spec} failed: {exc}") from exc
    except Exception as exc:
        raise TargetNotFoundError(f"importing {spec} failed: {type(exc).__name__}: {exc}") from exc


def _cwd_on_path() -> None:
    """The current directory on the import path, as ``python -m`` does, so local modules are found."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_recorded_agent_class(recorded: str | None) -> Any:
    """The Agent class a run recorded (``module:QualName``), imported with the current directory on the
    import path; ``TargetNotFoundError`` saying why when it cannot be loaded here."""
    from agentfsm.agent import Agent

    if not recorded or recorded == Agent.qualified_name():
        return Agent
    module_name, sep, qualname = recorded.partition(":")
    if not sep or not module_name or not qualname:
        raise TargetNotFoundError(f"the recorded agent class {recorded!r} is not MODULE:Class")
    _cwd_on_path()
    problem = None
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except ImportError as exc:
        problem = f"importing {module_name} failed: {exc}"
    except AttributeError:
        problem = f"module {module_name} has no {qualname}"
    except Exception as exc:  # the module ran and raised
        problem = f"importing {module_name} failed: {type(exc).__name__}: {exc}"
    else:
        if isinstance(found, type) and issubclass(found, Agent):
            return found
        problem = f"it is a {type(found).__name__}, not an agentfsm.Agent subclass"
    raise TargetNotFoundError(f"cannot load the recorded agent class {recorded} ({problem})")


def recorded_agent_class(recorded: str | None) -> Any:
    """The Agent class a run recorded, as ``load_recorded_agent_class`` finds it; for drawing only: when
    it cannot be loaded here, the base ``Agent`` is returned and one line on stderr says so (and how to
    name the class)."""
    from agentfsm.agent import Agent

    try:
        return load_recorded_agent_class(recorded)
    except TargetNotFoundError as exc:
        print(
            f"agentfsm: warning: {exc}; drawing on the base Agent's graph (name the class with --agent MODULE:Class)",
            file=sys.stderr,
        )
        return Agent


def split_target(spec: str) -> tuple[str, str | None]:
    """``MODULE:NAME`` → (MODULE, NAME); a bare module or file → (it, None)."""
    module, sep, name = spec.rpartition(":")
    if not sep or not module or os.sep in name or "/" in name:
        return spec, None
    return module, name


def load_target(spec: str) -> Any:
    """The object ``MODULE:NAME`` names."""
    module_spec, name = split_target(spec)
    if name is None:
        raise TargetNotFoundError(
            f"{spec!r} names no class: write MODULE:NAME, e.g. examples/weather_agent.py:WeatherAgent "
            "or mypackage.agents:MyAgent"
        )
    module = load_module(module_spec)
    try:
        return getattr(module, name)
    except AttributeError:
        agents = ", ".join(agent_classes(module)) or "none"
        raise TargetNotFoundError(
            f"module {module_spec!r} has no {name!r} (Agent classes defined there: {agents})"
        ) from None


def agent_classes(module: ModuleType) -> dict[str, type[Any]]:
    """The Agent subclasses a module defines (not those it imports)."""
    from agentfsm.agent import Agent

    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, Agent) and obj.__module__ == module.__name__
    }


def load_agent_class(spec: str) -> Any:
    from agentfsm.agent import Agent

    obj = load_target(spec)
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise TargetNotFoundError(f"{spec} is a {type(obj).__name__}, not an agentfsm.Agent subclass")
    return obj


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
