"""Loading ``MODULE:Class``: the Agent class a command line, a worker or a stored run names.

``MODULE`` is a dotted module name (found from the current directory too, as
with ``python -m``) or a ``.py`` file path. The library uses this where a name
stands for a class — a durable-engine worker serving ``--agent MODULE:Class``,
a stored run carried on by the class it recorded — and so does the command
line (``agentfsm.cli.targets`` adds what only the command line needs).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from agentfsm.errors import TargetNotFoundError


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
    """The Agent subclass ``MODULE:Class`` names; ``TargetNotFoundError`` saying why when it is not one."""
    from agentfsm.agent import Agent

    obj = load_target(spec)
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise TargetNotFoundError(f"{spec} is a {type(obj).__name__}, not an agentfsm.Agent subclass")
    return obj
