"""Loading ``MODULE:Class``: the Agent class a command line or a worker names.

``MODULE`` is a dotted module name importable as it is (an installed package,
or a folder on ``PYTHONPATH``) or a ``.py`` file path. The current directory is
not searched: a module lying beside a runs database is not imported because a
name matches it. Only a name a person gives (``--agent MODULE:Class`` on the
command line, a worker's ``--agent``, ``agent_spec=`` in code) is loaded here;
a name read from a stored run or an events file never is (a stored row is data,
and importing a module runs its code).
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
    """A module by dotted name (importable as it is: no directory is added to the import path) or by ``.py``
    file path."""
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
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            as_file = spec.replace(".", "/") + ".py"
            hint = f" ({as_file} is here: name it as {as_file}:Class)" if Path(as_file).is_file() else ""
            raise TargetNotFoundError(
                f"no module named {exc.name!r}: give a .py file path, or put its folder on PYTHONPATH (the current "
                f"directory is not searched){hint}"
            ) from exc
        raise TargetNotFoundError(f"importing {spec} failed: {exc}") from exc
    except Exception as exc:
        raise TargetNotFoundError(f"importing {spec} failed: {type(exc).__name__}: {exc}") from exc


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
