"""The Messages API's own request validation, as HTTP 400 messages.

Only the rules an agent loop can break are modelled, with the wording the real
API uses (taken from recorded error bodies), and what each model refuses by its
request rules (``agentfsm.wire.models``, the table the machine reads too).
``validate`` returns the first problem found, or ``None`` for a request the real
API would accept.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping
from typing import Any

from agentfsm.wire import models, structured

PrefillPolicy = Collection[str] | Callable[[str], bool] | None
"""Which models reject an assistant prefill: model-name prefixes, a predicate, or None for the model rules."""

PREFILL_NOT_SUPPORTED = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)


def default_prefill_unsupported(model: str) -> bool:
    """The models whose request rules refuse prefill (``agentfsm.wire.models``: Claude 4.6 and later, and any name
    the table does not know)."""
    return not models.rules_for(model).prefill


def prefill_predicate(policy: PrefillPolicy) -> Callable[[str], bool]:
    """Turn the ``prefill_unsupported`` argument of ``Simulator`` into a predicate on the model name."""
    if policy is None:
        return default_prefill_unsupported
    if callable(policy):
        return policy
    prefixes = tuple(policy)
    return lambda model: model.startswith(prefixes)


# The wording of the refusals of ``agentfsm.wire.models``. The thinking ones are quoted on the "What's new in
# Claude Opus 5.5" page; the sampling one is the live API's, as reported for Claude Opus 4.7 and Sonnet 5
# (github.com/Comfy-Org/ComfyUI/issues/13923, github.com/braintrustdata/lingua/pull/335). No recorded body of a
# forced tool_choice refusal, of Sonnet 5.5's thinking-disabled refusal (its page says only that the message
# points to between_tools) or of the temperature-and-top_p one was found: those three are modelled on the others.
THINKING_NOT_SUPPORTED = (
    '"thinking.type.{kind}" is not supported for this model. Use "thinking.type.adaptive" and '
    '"output_config.effort" to control thinking behavior.'
)
THINKING_OFF_INSTEAD = (
    '"thinking.type.disabled" is not supported for this model. Use "thinking.type.{off}" to turn off up-front thinking.'
)
SAMPLING_DEPRECATED = "`{name}` is deprecated for this model."
SAMPLING_ONE_OF = "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
FORCED_TOOL_CHOICE = (
    '"tool_choice.type.{kind}" is not supported for this model. Use "tool_choice.type.auto" or "tool_choice.type.none".'
)


def _check_model_rules(body: Mapping[str, Any]) -> str | None:
    """What the body's model refuses in its parameters (``agentfsm.wire.models``), as the API words it."""
    rules = models.rules_for(str(body["model"]))
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") in ("any", "tool") and not rules.forced_tool_choice:
        return FORCED_TOOL_CHOICE.format(kind=choice.get("type"))
    for name in models.SAMPLING_PARAMS:
        if name in body and rules.sampling == "refused":
            return SAMPLING_DEPRECATED.format(name=name)
    if rules.sampling == "one_of" and "temperature" in body and "top_p" in body:
        return SAMPLING_ONE_OF
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    if kind == "enabled" and not rules.thinking_budget:
        return THINKING_NOT_SUPPORTED.format(kind="enabled")
    if kind == "disabled" and not rules.thinking_disabled:
        if rules.thinking_off is not None:
            return THINKING_OFF_INSTEAD.format(off=rules.thinking_off)
        return THINKING_NOT_SUPPORTED.format(kind="disabled")
    return None


def _blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _is_empty(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    return content == "" or content == []


def _check_shape(body: Mapping[str, Any], model_max_tokens: int) -> str | None:
    model = body.get("model")
    if "model" not in body:
        return "model: Field required"
    if not isinstance(model, str):
        return "model: Input should be a valid string"
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if max_tokens > model_max_tokens:
        return (
            f"max_tokens: {max_tokens} > {model_max_tokens}, which is the maximum allowed number of output tokens "
            f"for {model}"
        )
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    if "messages" not in body:
        return "messages: Field required"
    messages = body["messages"]
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{i}: Input should be a valid dictionary"
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return f"messages.{i}.content: Field required"
        content = message["content"]
        if not isinstance(content, str | list):
            return f"messages.{i}.content: Input should be a valid string or a valid list"
        if isinstance(content, list):
            for k, block in enumerate(content):
                if not isinstance(block, dict) or "type" not in block:
                    return f"messages.{i}.content.{k}.type: Field required"
    return None


def _opens_with_compaction(message: Mapping[str, Any]) -> bool:
    """A compacted history starts with the compaction block, in the assistant message it came back in."""
    blocks = _blocks(message)
    return message.get("role") == "assistant" and bool(blocks) and blocks[0].get("type") == "compaction"


def _check_roles(messages: list[dict[str, Any]]) -> str | None:
    if messages[0]["role"] != "user" and not _opens_with_compaction(messages[0]):
        return 'messages: first message must use the "user" role'
    for prev, cur in itertools.pairwise(messages):
        if prev["role"] == cur["role"] == "assistant":
            return (
                'messages: roles must alternate between "user" and "assistant", '
                'but found multiple "assistant" roles in a row'
            )
    last = len(messages) - 1
    for i, message in enumerate(messages):
        if _is_empty(message) and not (i == last and message["role"] == "assistant"):
            return (
                f"messages.{i}: all messages must have non-empty content except for the optional final assistant "
                "message"
            )
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for block in _blocks(message):
            if block.get("type") == "text":
                text = block.get("text")
                if text == "":
                    return "messages: text content blocks must be non-empty"
                if isinstance(text, str) and not text.strip():
                    return "messages: text content blocks must contain non-whitespace text"
    return None


def _tool_use_ids(message: Mapping[str, Any]) -> list[str]:
    return [str(b.get("id")) for b in _blocks(message) if b.get("type") == "tool_use"]


def _check_tool_pairing(messages: list[dict[str, Any]]) -> str | None:
    """tool_use ↔ tool_result pairing; consecutive user messages count as one (the API merges them)."""
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i == len(messages) - 1:
            continue
        wanted = _tool_use_ids(message)
        if not wanted:
            continue
        answered: set[str] = set()
        j = i + 1
        while j < len(messages) and messages[j]["role"] == "user":
            answered.update(str(b.get("tool_use_id")) for b in _blocks(messages[j]) if b.get("type") == "tool_result")
            j += 1
        missing = [tool_id for tool_id in wanted if tool_id not in answered]
        if missing:
            return (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                "in the next message."
            )
    previous_ids: list[str] = []
    for j, message in enumerate(messages):
        if message["role"] == "assistant":
            previous_ids = _tool_use_ids(message)
            continue
        for k, block in enumerate(_blocks(message)):
            if block.get("type") == "tool_result" and str(block.get("tool_use_id")) not in previous_ids:
                return (
                    f"messages.{j}.content.{k}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
    return None


def is_pause_resume(message: Mapping[str, Any]) -> bool:
    """A final assistant message the server continues, not a prefill: a pause_turn sent back (it ends in an
    unanswered ``server_tool_use``), or a compaction (it ends in the compaction block)."""
    blocks = _blocks(message)
    return bool(blocks) and blocks[-1].get("type") in ("server_tool_use", "compaction")


def _check_final_assistant(messages: list[dict[str, Any]], model: str, no_prefill: Callable[[str], bool]) -> str | None:
    last = messages[-1]
    if last["role"] != "assistant":
        return None
    blocks = _blocks(last)
    if blocks:
        final = blocks[-1]
        kind = final.get("type")
        if kind in ("thinking", "redacted_thinking"):
            return f"messages.{len(messages) - 1}: The final block in an assistant message cannot be `{kind}`."
        text = final.get("text")
        if kind == "text" and isinstance(text, str) and text != text.rstrip():
            return "messages: final assistant content cannot end with trailing whitespace"
    if no_prefill(model) and not is_pause_resume(last):
        return PREFILL_NOT_SUPPORTED
    return None


def _check_output_config(body: Mapping[str, Any]) -> str | None:
    """``output_config``: its ``format`` is a JSON schema in the API's subset, on a model with structured outputs.

    The rules are the "Structured outputs" page's (``agentfsm.wire.structured``); the wording is modelled on the
    API's validation errors (no structured-output 400 is in the recorded traffic).
    """
    config = body.get("output_config")
    if config is None:
        return None
    if not isinstance(config, dict):
        return "output_config: Input should be a valid dictionary"
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return "output_config.format: Input should be a valid dictionary"
    if fmt.get("type") != "json_schema":
        return "output_config.format.type: Input should be 'json_schema'"
    if "schema" not in fmt:
        return "output_config.format.schema: Field required"
    if not isinstance(fmt["schema"], dict):
        return "output_config.format.schema: Input should be a valid dictionary"
    model = str(body.get("model"))
    if not structured.supports_structured_outputs(model):
        return f"output_config.format: structured outputs are not supported on the model {model!r}"
    problem = structured.schema_problems(fmt["schema"])
    return None if problem is None else f"output_config.format.{problem}"


def validate(
    body: Mapping[str, Any],
    *,
    model_max_tokens: int,
    prefill_unsupported: Callable[[str], bool] = default_prefill_unsupported,
) -> str | None:
    """The 400 ``invalid_request_error`` message the real API would give this body, or ``None`` if it is valid."""
    problem = _check_shape(body, model_max_tokens)
    if problem is not None:
        return problem
    messages: list[dict[str, Any]] = body["messages"]
    return (
        _check_model_rules(body)
        or _check_output_config(body)
        or _check_roles(messages)
        or _check_tool_pairing(messages)
        or _check_final_assistant(messages, str(body["model"]), prefill_unsupported)
    )
