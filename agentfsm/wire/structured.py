"""Structured outputs on the wire: the ``output_config.format`` parameter, its schema rules, and which models take it.

What the API says (the "Structured outputs" page of the Claude docs, and requests recorded from the
live API in the real-traffic corpus: pydantic-ai's ``test_mixed_tools_native_output``, mirascope's
``test_structured_output*``):

* **The parameter**: ``output_config: {"format": {"type": "json_schema", "schema": {...}}}`` — GA,
  no beta header (the earlier beta's ``output_format`` parameter and ``structured-outputs-2025-11-13``
  header still work for a transition period; this module never sends them). The reply's text is
  JSON matching the schema. It goes beside the request's other ``output_config`` keys (``effort``).
* **With tools**: JSON outputs and tools may be used in the same request (recorded live: a request
  with both, answered first by tool calls, then by the JSON text).
* **The schema** is a subset of JSON Schema: every object must say ``"additionalProperties": false``;
  numerical constraints (``minimum``, ``maximum``, ``multipleOf`` ...), string length and pattern
  constraints, array constraints other than ``minItems`` 0 or 1, external ``$ref`` and recursive
  schemas are not supported. ``anthropic.transform_schema`` (the SDK's own, used by
  ``messages.parse``) turns a pydantic schema into one that keeps these rules, moving each
  unsupported constraint into the ``description``; the client validates the reply against the full
  type afterwards, so those constraints still hold.
* **The models** (``supports_structured_outputs``): generally available on Claude Opus 4.5 and 4.6,
  Sonnet 4.5 and 4.6 and Haiku 4.5, and on the models after them (Opus 4.7 and 4.8, the 5.x
  generation); Opus 4.1 had it only in the launch beta (``output_format`` with the beta header); the
  Claude 3 models and Opus/Sonnet 4.0 never had it. A model this rule does not know (a fine-tune, a
  name newer than this list) counts as not supporting it: ``Policy(output_mode="native")`` says
  otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: ``claude-<family>-<major>[-<minor>]`` anywhere in a model id (Bedrock and Vertex ids carry it inside).
_FAMILY_FIRST = re.compile(r"claude-(?:opus|sonnet|haiku|fable|mythos)-(\d+)(?:-(\d{1,2}))?(?![0-9])")
#: The first version with structured outputs generally available (Opus, Sonnet and Haiku 4.5).
FIRST_SUPPORTED = (4, 5)

#: Keywords the API's JSON-schema subset does not take (``anthropic.transform_schema`` moves them into the
#: description); ``minItems`` is allowed at 0 or 1 only.
UNSUPPORTED_KEYWORDS = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "patternProperties",
    }
)


def supports_structured_outputs(model: str) -> bool:
    """Whether ``model`` takes ``output_config.format`` (JSON outputs), by the rule in this module's docstring."""
    found = _FAMILY_FIRST.search(model)
    if found is None:
        return False
    major, minor = int(found.group(1)), int(found.group(2) or 0)
    return (major, minor) >= FIRST_SUPPORTED


def output_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``output_config.format`` value asking for replies that match ``schema``."""
    return {"type": "json_schema", "schema": dict(schema)}


def with_format(params: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with ``output_config.format`` set to ``schema``, any other ``output_config`` key kept."""
    given = params.get("output_config")
    config = dict(given) if isinstance(given, Mapping) else {}
    config["format"] = output_format(schema)
    return {**params, "output_config": config}


def schema_problems(schema: Any, path: str = "schema") -> str | None:
    """The first rule of the API's JSON-schema subset that ``schema`` breaks, as a sentence; None when it keeps them.

    Iterative, with a bound on the nodes visited, so no schema (however deep or large) can overflow the stack.
    """
    stack: list[tuple[Any, str]] = [(schema, path)]
    visited = 0
    while stack:
        node, where = stack.pop()
        visited += 1
        if visited > 10_000:
            return f"{path}: the schema is too large"
        if isinstance(node, list):
            stack.extend((item, f"{where}.{i}") for i, item in enumerate(node))
            continue
        if not isinstance(node, Mapping):
            continue
        stack.extend((value, f"{where}.{key}") for key, value in node.items() if isinstance(value, Mapping | list))
        if where.endswith((".properties", ".$defs", ".definitions")):
            continue  # a mapping of names to schemas: its keys are names, not keywords
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return f"{where}.$ref: only references inside the schema are supported, got {ref!r}"
        kind = node.get("type")
        is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
        if is_object and node.get("additionalProperties") is not False:
            return f"{where}: for 'object' type, 'additionalProperties' must be explicitly set to false"
        for key in sorted(UNSUPPORTED_KEYWORDS & set(node)):
            return f"{where}.{key}: the '{key}' keyword is not supported in structured output schemas"
        min_items = node.get("minItems")
        if min_items is not None and min_items not in (0, 1):
            return f"{where}.minItems: only 0 or 1 is supported, got {min_items!r}"
    return None
