"""Checking a call's input against the JSON schema an MCP server gave for the tool.

A ``@tool`` function's input is checked by the pydantic model built from its type hints; an MCP tool
has no Python signature, only the ``inputSchema`` its server listed. ``jsonschema`` is not a
dependency of agentfsm (only of its tests), and pydantic does not build a model from a JSON schema,
so this module is a small validator of the JSON Schema keywords tool schemas use:

``type`` (one or a list; ``integer`` excludes ``true``/``false`` and takes ``2.0``), ``enum``, ``const``,
``properties``, ``required``, ``additionalProperties`` (false or a schema), ``patternProperties``,
``minProperties``/``maxProperties``, ``items`` (a schema, or a list as in draft 7), ``prefixItems``,
``minItems``/``maxItems``, ``uniqueItems``, ``minimum``/``maximum``/``exclusiveMinimum``/
``exclusiveMaximum``/``multipleOf``, ``minLength``/``maxLength``/``pattern``, ``anyOf``/``oneOf``/
``allOf``/``not``, ``if``/``then``/``else``, and ``$ref`` to ``#`` and ``#/$defs/...`` (``definitions``
too) inside the same schema.

Anything else (``format``, ``dependentSchemas``, remote ``$ref``, ...) is not checked here: the server
validates the call again, and its complaint reaches the model as the call's ``is_error`` result. A
schema this module cannot follow never blocks a call; only input it can show to be wrong does, with
every problem named by its path, in the words ``@tool`` uses (``'city': field required``). The tests
hold it to ``jsonschema``'s verdict on the same schemas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["schema_problems"]

_MAX_DEPTH = 64  # $ref chains and nesting: a schema that refers to itself forever stops here
_GOT_MAX = 60


def schema_problems(schema: Mapping[str, Any], value: Any) -> list[str]:
    """Every way ``value`` breaks ``schema``, one line each (``[]``: it conforms)."""
    problems: list[str] = []
    _check(schema, value, "", schema, problems, 0)
    return problems


def _where(path: str) -> str:
    return repr(path or "input")


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _GOT_MAX else text[: _GOT_MAX - 3] + "..."


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, Mapping)
    if kind == "array":
        return isinstance(value, list | tuple)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float)
    return True  # a type name this validator does not know: not checked


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None  # a remote reference: not followed (the server checks)
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Mapping) else None


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0``, but ``true != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _conforms(schema: Any, value: Any, root: Mapping[str, Any], depth: int) -> bool:
    found: list[str] = []
    _check(schema, value, "", root, found, depth)
    return not found


def _check(schema: Any, value: Any, path: str, root: Mapping[str, Any], out: list[str], depth: int) -> None:
    if schema is False:
        out.append(f"{_where(path)}: no value is allowed here")
        return
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _resolve(ref, root)
        if target is not None:
            _check(target, value, path, root, out, depth + 1)
    kinds = schema.get("type")
    if isinstance(kinds, str):
        kinds = [kinds]
    if isinstance(kinds, list) and kinds and not any(_is_type(value, str(k)) for k in kinds):
        expected = " or ".join(str(k) for k in kinds)
        out.append(f"{_where(path)}: input should be of type {expected} (got {_got(value)})")
        return  # the other keywords would only repeat the same mistake
    if "enum" in schema and isinstance(schema["enum"], list) and not any(_equal(value, e) for e in schema["enum"]):
        allowed = ", ".join(_got(e) for e in schema["enum"])
        out.append(f"{_where(path)}: input should be one of {allowed} (got {_got(value)})")
    if "const" in schema and not _equal(value, schema["const"]):
        out.append(f"{_where(path)}: input should be {_got(schema['const'])} (got {_got(value)})")
    if isinstance(value, Mapping):
        _check_object(schema, value, path, root, out, depth)
    elif isinstance(value, list | tuple):
        _check_array(schema, value, path, root, out, depth)
    elif isinstance(value, str):
        _check_string(schema, value, path, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(schema, value, path, out)
    _check_combinators(schema, value, path, root, out, depth)


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _check_object(
    schema: Mapping[str, Any], value: Mapping[str, Any], path: str, root: Mapping[str, Any], out: list[str], depth: int
) -> None:
    required = schema.get("required")
    if isinstance(required, list):
        for name in required:
            if isinstance(name, str) and name not in value:
                out.append(f"{_where(_child(path, name))}: field required")
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    patterns = schema.get("patternProperties")
    patterns = patterns if isinstance(patterns, Mapping) else {}
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        key = str(key)
        matched = False
        if key in props:
            matched = True
            _check(props[key], item, _child(path, key), root, out, depth + 1)
        for pattern, sub in patterns.items():
            try:
                hit = re.search(str(pattern), key) is not None
            except re.error:
                continue
            if hit:
                matched = True
                _check(sub, item, _child(path, key), root, out, depth + 1)
        if not matched:
            if extra is False:
                out.append(f"{_where(_child(path, key))}: unexpected field")
            elif isinstance(extra, Mapping):
                _check(extra, item, _child(path, key), root, out, depth + 1)
    low, high = schema.get("minProperties"), schema.get("maxProperties")
    if isinstance(low, int) and len(value) < low:
        out.append(f"{_where(path)}: should have at least {low} fields (got {len(value)})")
    if isinstance(high, int) and len(value) > high:
        out.append(f"{_where(path)}: should have at most {high} fields (got {len(value)})")


def _check_array(
    schema: Mapping[str, Any], value: Sequence[Any], path: str, root: Mapping[str, Any], out: list[str], depth: int
) -> None:
    prefix = schema.get("prefixItems")
    items = schema.get("items")
    start = 0
    if isinstance(prefix, list):
        for i, sub in enumerate(prefix[: len(value)]):
            _check(sub, value[i], _child(path, i), root, out, depth + 1)
        start = len(prefix)
    elif isinstance(items, list):  # draft 7's tuple form
        for i, sub in enumerate(items[: len(value)]):
            _check(sub, value[i], _child(path, i), root, out, depth + 1)
        start, items = len(items), schema.get("additionalItems", True)
    if items is False and len(value) > start:
        out.append(f"{_where(path)}: should have at most {start} items (got {len(value)})")
    elif isinstance(items, Mapping):
        for i in range(start, len(value)):
            _check(items, value[i], _child(path, i), root, out, depth + 1)
    low, high = schema.get("minItems"), schema.get("maxItems")
    if isinstance(low, int) and len(value) < low:
        out.append(f"{_where(path)}: should have at least {low} items (got {len(value)})")
    if isinstance(high, int) and len(value) > high:
        out.append(f"{_where(path)}: should have at most {high} items (got {len(value)})")
    if schema.get("uniqueItems") is True:
        for i in range(len(value)):
            if any(_equal(value[i], value[j]) for j in range(i)):
                out.append(f"{_where(path)}: items should be unique ({_got(value[i])} is repeated)")
                break


def _check_string(schema: Mapping[str, Any], value: str, path: str, out: list[str]) -> None:
    low, high, pattern = schema.get("minLength"), schema.get("maxLength"), schema.get("pattern")
    if isinstance(low, int) and len(value) < low:
        out.append(f"{_where(path)}: should have at least {low} characters (got {_got(value)})")
    if isinstance(high, int) and len(value) > high:
        out.append(f"{_where(path)}: should have at most {high} characters (got {_got(value)})")
    if isinstance(pattern, str):
        try:
            if re.search(pattern, value) is None:
                out.append(f"{_where(path)}: should match pattern {pattern!r} (got {_got(value)})")
        except re.error:
            pass  # a pattern Python cannot read (ECMA-262 only): the server checks it


def _check_number(schema: Mapping[str, Any], value: float, path: str, out: list[str]) -> None:
    def num(key: str) -> float | None:
        bound = schema.get(key)
        return bound if isinstance(bound, int | float) and not isinstance(bound, bool) else None

    low, high, xlow, xhigh, step = (
        num("minimum"),
        num("maximum"),
        num("exclusiveMinimum"),
        num("exclusiveMaximum"),
        num("multipleOf"),
    )
    if low is not None and value < low:
        out.append(f"{_where(path)}: should be greater than or equal to {low} (got {_got(value)})")
    if high is not None and value > high:
        out.append(f"{_where(path)}: should be less than or equal to {high} (got {_got(value)})")
    if xlow is not None and value <= xlow:
        out.append(f"{_where(path)}: should be greater than {xlow} (got {_got(value)})")
    if xhigh is not None and value >= xhigh:
        out.append(f"{_where(path)}: should be less than {xhigh} (got {_got(value)})")
    if step is not None and step > 0:
        quotient = value / step
        if math.isfinite(quotient) and not math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9):
            out.append(f"{_where(path)}: should be a multiple of {step} (got {_got(value)})")


def _check_combinators(
    schema: Mapping[str, Any], value: Any, path: str, root: Mapping[str, Any], out: list[str], depth: int
) -> None:
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        for sub in all_of:
            _check(sub, value, path, root, out, depth + 1)
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and any_of and not any(_conforms(s, value, root, depth + 1) for s in any_of):
        out.append(f"{_where(path)}: input matches none of the allowed shapes (anyOf) (got {_got(value)})")
    one_of = schema.get("oneOf")
    if isinstance(one_of, list) and one_of:
        matching = sum(1 for s in one_of if _conforms(s, value, root, depth + 1))
        if matching != 1:
            which = "none" if matching == 0 else f"{matching}"
            out.append(f"{_where(path)}: input should match exactly one allowed shape (oneOf), matches {which}")
    if "not" in schema and _conforms(schema["not"], value, root, depth + 1):
        out.append(f"{_where(path)}: input matches a shape that is not allowed (got {_got(value)})")
    condition = schema.get("if")
    if isinstance(condition, Mapping | bool):
        branch = schema.get("then") if _conforms(condition, value, root, depth + 1) else schema.get("else")
        if branch is not None:
            _check(branch, value, path, root, out, depth + 1)
