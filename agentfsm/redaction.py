"""Redaction: credentials never reach an event, a log line, an error or a stored row.

The one place agentfsm scrubs text. Kept apart from ``events`` (and free of
heavy imports) because errors, tool results, stores and the command line
scrub text too.

What is redacted, given the credentials the client holds (``Agent.secrets()``):

* A credential of ``MIN_SECRET_CHARS`` (8) characters or more: every copy of
  it, and every copy of any prefix of it at least ``MIN_SECRET_CHARS`` long
  (an error body that quotes a key cut short must not leak most of it).
* A shorter credential (``"x"`` in a test) cannot be told from ordinary text,
  so it is redacted only where a key can appear: in an error message from the
  API or the transport (``redact_error``: an error body may echo the header it
  rejected), as a whole word (between spaces, quotes or punctuation such as
  ``:`` ``=`` ``,``) — never every ``x`` in a text, and never in events, tool
  results or the conversation.
* Anything shaped like an Anthropic key (``sk-ant-…``), known or not.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

#: Credentials shorter than this are redacted only in error messages, as whole words;
#: a copy of a longer one's first ``MIN_SECRET_CHARS`` characters or more is redacted as the credential.
MIN_SECRET_CHARS = 8

REDACTED = "[REDACTED]"

#: The environment variables the ``anthropic`` client reads its credentials from (``environment_secrets``).
CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")

_KEY_SHAPE = re.compile(r"sk-ant-[A-Za-z0-9_\-]{4,}")
#: What may stand on either side of a short credential quoted as a word in an error message.
_WORD_EDGE = r"\s\"'`=:,;()\[\]{}<>"


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Return ``value`` with credentials replaced by ``[REDACTED]``, recursively (dict values, lists, tuples).

    Also usable as a building block of an application's own structlog processor.
    Runs on every event, so it is built for the common case, where nothing needs
    redacting: one ``repr`` of the whole value (done in C) is searched for
    ``sk-ant-`` and for the credentials' first characters, and when neither is
    there the value comes back as it is. Otherwise it is walked, and a dict or
    list is copied only where something in it changed.
    """
    found = _as_tuple(secrets)
    heads, searchable = _heads(found)
    if searchable:
        try:
            text = repr(value)
        except Exception:  # an object that cannot say what it is: walk it instead
            text = None
        if text is not None and "sk-ant-" not in text:
            for head in heads:
                if head in text:
                    break
            else:
                return value
    return _clean(value, heads, found)


class Redactor:
    """One client's credentials, prepared once: what a conversation's events are redacted with.

    ``fields`` is ``redact`` for an event's fields, built for the case of nearly every event: nothing to
    redact, and values that are numbers, short strings, and small lists or dicts of them. Those are
    checked in place (each string searched for ``sk-ant-`` and the credentials' first characters), with
    no ``repr`` built; anything else, or anything that matches, goes through ``redact``.
    """

    __slots__ = ("_heads", "secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = tuple(s for s in secrets if s)
        self._heads = tuple(s[:MIN_SECRET_CHARS] for s in self.secrets if len(s) >= MIN_SECRET_CHARS)

    def fields(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with credentials redacted: ``data`` itself when there are none in it."""
        return self.scrub(data)[0]

    def scrub(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """``fields``, and whether ``data`` was plain: its values exactly numbers, booleans, None, strings, and
        lists, tuples or dicts of them two deep (what an event log can keep packed, ``observe.events``)."""
        if _plainly_clean(data.values(), self._heads, 2):
            return data, True
        cleaned: dict[str, Any] = redact(data, self.secrets)
        return cleaned, False


def _plainly_clean(values: Iterable[Any], heads: tuple[str, ...], depth: int) -> bool:
    """Whether ``values`` hold only numbers, None and strings free of keys, in lists or dicts ``depth`` deep."""
    for value in values:
        kind = type(value)
        if kind is str:
            if "sk-ant-" in value:
                return False
            for head in heads:
                if head in value:
                    return False
        elif kind is int or kind is float or kind is bool or value is None:
            continue
        elif not depth:
            return False
        elif kind is list or kind is tuple:
            if not _plainly_clean(value, heads, depth - 1):
                return False
        elif kind is dict:
            if not _plainly_clean(value.values(), heads, depth - 1):
                return False
        else:  # another type: its repr is what redact searches
            return False
    return True


@functools.lru_cache(maxsize=64)
def _heads(found: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """The first ``MIN_SECRET_CHARS`` characters of each long credential, and whether all of them would
    show unchanged in a ``repr`` (one that ``repr`` escapes could hide there, so values are walked instead)."""
    heads = tuple(s[:MIN_SECRET_CHARS] for s in found if len(s) >= MIN_SECRET_CHARS)
    return heads, all(head.isprintable() and not any(c in head for c in "'\"\\") for head in heads)


def _clean(value: Any, heads: tuple[str, ...], found: tuple[str, ...]) -> Any:
    kind = type(value)
    if kind is str:
        return redact_text(value, found)
    if kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, dict):
        changed: dict[Any, Any] | None = None
        for k, v in value.items():
            c = _clean(v, heads, found)
            if c is not v:
                if changed is None:
                    changed = dict(value)
                changed[k] = c
        return value if changed is None else changed
    if isinstance(value, list | tuple):
        items = [_clean(v, heads, found) for v in value]
        if kind is list and all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items
    if isinstance(value, str):  # a str subclass
        return redact_text(str(value), found)
    return value


def redact_text(text: str, secrets: Sequence[str] = (), *, words: bool = False, shapes: bool = True) -> str:
    """``text`` with ``secrets`` redacted (see the module docstring): those of ``MIN_SECRET_CHARS`` or more, and
    with ``words`` (for error messages) a shorter one standing alone as a word; ``shapes`` also redacts anything
    shaped like ``sk-ant-…``.

    Every match is found in the original text and each run of matched characters becomes one ``[REDACTED]``:
    a copy of the client's key's head (``sk-ant-api03-``, which every key shares) cannot hide the rest of a
    foreign key from the key-shape rule by being replaced first.
    """
    spans = redaction_spans(text, secrets, words=words, shapes=shapes)
    if not spans:
        return text
    parts: list[str] = []
    at = 0
    for start, end in spans:
        parts += [text[at:start], REDACTED]
        at = end
    return "".join(parts) + text[at:]


def redaction_spans(
    text: str, secrets: Sequence[str] = (), *, words: bool = False, shapes: bool = True
) -> list[tuple[int, int]]:
    """Where ``redact_text`` redacts ``text``: ``(start, end)`` runs of characters, sorted, none touching another.

    For a caller that must know what moved where (the inspector maps a step's text length through them).
    """
    found: list[tuple[int, int]] = []
    for secret in secrets:
        if not secret:
            continue
        if len(secret) >= MIN_SECRET_CHARS:
            if secret[:MIN_SECRET_CHARS] in text:
                found += _copies(text, secret)
        elif words and secret in text:
            edge = _WORD_EDGE
            pattern = f"(?:(?<=[{edge}])|^){re.escape(secret)}(?=[{edge}]|$)"
            found += [m.span() for m in re.finditer(pattern, text)]
    if shapes and "sk-ant-" in text:
        found += [m.span() for m in _KEY_SHAPE.finditer(text)]
    if len(found) < 2:
        return found
    found.sort()
    merged = [found[0]]
    for start, end in found[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def redact_error(text: str, secrets: Iterable[str] = ()) -> str:
    """An error message (from the API, the SDK or the transport) with credentials redacted, short ones as words too."""
    return redact_text(text, _as_tuple(secrets), words=True)


def _copies(text: str, secret: str) -> list[tuple[int, int]]:
    """Every copy in ``text`` of ``secret``, or of a prefix of it ``MIN_SECRET_CHARS`` or longer."""
    head = secret[:MIN_SECRET_CHARS]
    found: list[tuple[int, int]] = []
    at = 0
    while (start := text.find(head, at)) >= 0:
        end = start + len(head)
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        found.append((start, end))
        at = end
    return found


def environment_secrets() -> tuple[str, ...]:
    """The credentials this process's environment holds (``CREDENTIAL_VARIABLES``): what a viewer of stored
    runs (the inspector, ``agentfsm runs show``) redacts besides the key shape, whatever their shape."""
    return tuple(v for v in (os.environ.get(name) for name in CREDENTIAL_VARIABLES) if v)


def _as_tuple(secrets: Iterable[str]) -> tuple[str, ...]:
    return secrets if isinstance(secrets, tuple) else tuple(secrets)


def redact_processor(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor that scrubs Anthropic-shaped API keys from every field."""
    return {k: redact(v) for k, v in event_dict.items()}
