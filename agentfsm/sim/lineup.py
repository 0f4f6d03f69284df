"""The model names the simulator serves; any other is the API's 404, as a misspelt name is on the real API.

``Simulator(models=...)`` takes the names it knows: a collection of exact names, or a predicate on
the name; None (the default) is ``KNOWN_MODELS``: the installed SDK's lineup (the ``Literal`` of
``anthropic.types.Model``) and ``LEGACY_MODELS``, older ids the API served that recorded traffic
and older code still name. To widen the default, pass ``models=[*KNOWN_MODELS, "my-fine-tune"]``; to
accept every name, ``models=lambda name: True``.

The refusal is the one the API sends for a model it does not know (recorded from the live API, e.g.
``mirascope__test_model_not_found__*`` and ``pyd__test_model_name_suggestion_anthropic__0`` in the
real-traffic corpus): HTTP 404 with
``{"type": "error", "error": {"type": "not_found_error", "message": "model: <name>"}, "request_id": ...}``,
after the body has passed validation, and before anything is sampled; a request of a Message Batch
with such a model ends ``errored`` with that error.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Collection

import anthropic

ModelPolicy = Collection[str] | Callable[[str], bool] | None
"""Which model names the simulator serves: exact names, a predicate, or None for ``KNOWN_MODELS``."""


def sdk_lineup() -> tuple[str, ...]:
    """The model names of the installed SDK's ``anthropic.types.Model`` (its ``Literal`` part)."""
    return tuple(name for arg in typing.get_args(anthropic.types.Model) for name in typing.get_args(arg))


#: Ids the API served before the installed SDK's lineup: retired or superseded models that the real-traffic
#: corpus and the tests of agentfsm (and of code written a year ago) still name.
LEGACY_MODELS: frozenset[str] = frozenset(
    {
        "claude-2.0",
        "claude-2.1",
        "claude-3-haiku-20240307",
        "claude-3-haiku-48k-20240307",  # as Amazon Bedrock names a context-size variant in its replies
        "claude-3-sonnet-20240229",
        "claude-3-sonnet-28k-20240229",  # likewise
        "claude-3-opus-20240229",
        "claude-3-opus-latest",
        "claude-3-5-sonnet-20240620",
        "claude-3-5-sonnet-20241022",
        "claude-3-5-sonnet-latest",
        "claude-3-5-haiku-20241022",
        "claude-3-5-haiku-latest",
        "claude-3-7-sonnet-20250219",
        "claude-3-7-sonnet-latest",
        "claude-sonnet-4-20250514",
        "claude-sonnet-4-0",
        "claude-opus-4-20250514",
        "claude-opus-4-0",
        "claude-opus-4-1-20250805",
        "claude-opus-4-1",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-5",
    }
)

#: What ``Simulator()`` serves unless given ``models=``.
KNOWN_MODELS: frozenset[str] = frozenset(sdk_lineup()) | LEGACY_MODELS


def model_predicate(policy: ModelPolicy) -> Callable[[str], bool]:
    """Turn the ``models`` argument of ``Simulator`` into a predicate on the model name."""
    if policy is None:
        return KNOWN_MODELS.__contains__
    if callable(policy):
        return policy
    if isinstance(policy, str):  # one name, not its characters
        return frozenset((policy,)).__contains__
    return frozenset(policy).__contains__


def not_found_message(model: str) -> str:
    """The ``not_found_error`` message of the API's 404 for a model it does not know."""
    return f"model: {model}"
