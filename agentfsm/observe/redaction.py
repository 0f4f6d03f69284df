"""Redaction: credentials never reach an event, a log line, an error or a stored row.

Kept apart from ``events`` (and free of heavy imports) because errors, tool
results and the command line scrub text too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_KEY_SHAPE = re.compile(r"sk-ant-[A-Za-z0-9_\-]{4,}")
_REDACTED = "[REDACTED]"


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Return ``value`` with API keys replaced by ``[REDACTED]``, recursively.

    Also usable as a building block of an application's own structlog processor.
    Runs on every event, so the common cases (numbers, short strings without a
    key in them) return at once.
    """
    kind = type(value)
    if kind is str:
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, _REDACTED)
        return _KEY_SHAPE.sub(_REDACTED, value) if "sk-ant-" in value else value
    if kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):  # a str subclass
        return redact(str(value), secrets)
    return value


def redact_processor(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor that scrubs Anthropic-shaped API keys from every field."""
    return {k: redact(v) for k, v in event_dict.items()}
