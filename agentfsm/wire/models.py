"""What each model refuses on a request, as data: one table the machine and the simulator both read.

The 5.x models changed what a Messages API request may carry. Each row of ``RULES`` says, for one model
of the installed SDK's lineup (``anthropic.types.Model``), whether the API accepts on it: an assistant
prefill (a request ending in an assistant turn), a forced ``tool_choice`` (``any``/``tool``), the
sampling parameters (``temperature``, ``top_p``, ``top_k``), a thinking budget
(``thinking: {"type": "enabled", "budget_tokens": N}``) and ``thinking: {"type": "disabled"}``; and
how thinking behaves by default (on or off, and whether its text is returned: ``display``).

Every value comes from an official page, named in the row's ``sources`` (the URLs below). Where the
pages read say nothing for a model, the row says so in ``notes`` and the value is the conservative one:
refused (the machine then never sends it, and a caller who sets it is told before any request).

How the machine uses a row (``agentfsm.machine``):

* **continuation** — ``Policy(continuation="auto")`` continues a cut text by prefill only on a model whose
  row accepts prefill, else by prompt from the first continuation: it never eats a 400 to find out.
  ``continuation="prefill"`` on a model that refuses it is a ``ConfigurationError`` when the agent is made.
* **request parameters** — ``request_params`` setting what the agent's model refuses (a forced
  ``tool_choice``, a sampling parameter, a thinking budget, ``thinking: disabled``) is a
  ``ConfigurationError`` when the agent is made (``check_request``), with what to send instead: the API
  would refuse every request of the run, and dropping the setting quietly would change what the caller
  asked for.
* **another model mid-run** (a refusal fallback, a fallback chain): the request is adapted to that model
  (``request_for_model``): what it refuses is dropped or replaced by its nearest accepted form, and the
  thinking blocks of the other model are left out (they are tied to the model that made them); the run
  says what changed in a ``request.adapted`` event. The caller's settings were written for the agent's
  model, and a fallback that fails on them would defeat its purpose.
* **safety net** — a model whose row accepts prefill but whose server refuses one (a row that is wrong, a
  proxy serving another model under the name) still gets the old recovery: the 400 is caught once, the run
  goes on by prompt (``continuation.fallback``) and the agent remembers it (``remember_prefill_refused``).

A name not in the table (a fine-tune, a newer model) gets ``DEFAULT``: the strictest row (everything the
newest models refuse, refused). Older ids (``agentfsm.sim.lineup.LEGACY_MODELS``: Claude 3.x, Sonnet 4.0 and
4.5, Opus 4.0 and 4.1) get ``LEGACY``, which accepts everything, as those models did. Dated and
platform-prefixed names (``claude-opus-4-5-20251101``, ``us.anthropic.claude-opus-4-6-v1``) resolve to
their model's row.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from agentfsm.errors import ConfigurationError

# --- the official pages the rules are read from ------------------------------------------------------------

SONNET_5_5 = "https://platform.claude.com/docs/en/models/sonnet-5-5/whats-new-sonnet-5-5"
OPUS_5_5 = "https://platform.claude.com/docs/en/models/opus-5-5/whats-new-opus-5-5"
HAIKU_5_5 = "https://platform.claude.com/docs/en/models/haiku-5-5/whats-new-haiku-5-5"
FABLE_5 = "https://platform.claude.com/docs/en/models/fable-5/migration-guide"
FABLE_5_1 = "https://platform.claude.com/docs/en/models/fable-5-1/migration-guide"
FABLE_5_2 = "https://platform.claude.com/docs/en/models/fable-5-2/whats-new-fable-5-2"
THINKING_TROUBLESHOOTING = "https://platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting"
MIGRATION_GUIDE = "https://platform.claude.com/docs/en/about-claude/models/migration-guide"
WORKING_WITH_MESSAGES = "https://platform.claude.com/docs/en/build-with-claude/working-with-messages"
HAIKU_4_5 = "https://platform.claude.com/docs/en/models/haiku-4-5/migration-guide"
MODELS_OVERVIEW = "https://platform.claude.com/docs/en/models/overview"

Sampling = Literal["accepted", "one_of", "refused"]
"""``accepted``: any of temperature/top_p/top_k; ``one_of``: temperature or top_p, not both; ``refused``: none."""
ThinkingDefault = Literal["off", "on", "always"]
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")


@dataclass(frozen=True)
class ModelRules:
    """What one model accepts on a request (True: accepted; False: the API answers HTTP 400)."""

    model: str
    prefill: bool
    forced_tool_choice: bool
    sampling: Sampling
    thinking_budget: bool
    thinking_disabled: bool
    #: The lowest thinking setting where ``disabled`` is refused and another type replaces it (``between_tools``
    #: on Sonnet 5.5), or None: there, leave ``thinking`` out (adaptive) and lower ``output_config.effort``.
    thinking_off: str | None = None
    #: Thinking when the request does not set it: off, on (adaptive, can be disabled), always (cannot).
    thinking_default: ThinkingDefault = "off"
    #: Whether thinking text comes back by default: False where ``display`` defaults to ``omitted`` (thinking
    #: blocks arrive with an empty ``thinking`` field: the text between tool calls too).
    thinking_text_by_default: bool = True
    sources: tuple[str, ...] = ()
    notes: str = ""
    refused: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        names = [
            name
            for name, accepted in (
                ("prefill", self.prefill),
                ("forced tool_choice", self.forced_tool_choice),
                ("sampling parameters", self.sampling != "refused"),
                ("thinking budget", self.thinking_budget),
                ('thinking {"type": "disabled"}', self.thinking_disabled),
            )
            if not accepted
        ]
        object.__setattr__(self, "refused", tuple(names))


def _row(model: str, base: ModelRules, **changes: Any) -> ModelRules:
    return replace(base, model=model, **changes)


def _rows(models: tuple[str, ...], base: ModelRules, **changes: Any) -> list[ModelRules]:
    """One row per model of a family that shares its rules (a model and its dated id, Fable and Mythos)."""
    return [_row(model, base, **changes) for model in models]


#: The newest models' rules: what Sonnet 5.5 (the default model) refuses, with thinking always on.
_STRICT = ModelRules(
    model="",
    prefill=False,
    forced_tool_choice=False,
    sampling="refused",
    thinking_budget=False,
    thinking_disabled=False,
    thinking_default="always",
    thinking_text_by_default=False,
)
#: Claude Opus 4.7 and 4.8, Sonnet 5, Opus 5: no prefill, budget or sampling; forced tool_choice and disabled taken.
_GEN_4_7 = replace(
    _STRICT,
    forced_tool_choice=True,
    thinking_disabled=True,
    thinking_default="off",
    sources=(WORKING_WITH_MESSAGES, MIGRATION_GUIDE, THINKING_TROUBLESHOOTING),
)
_OPEN = ModelRules(
    model="", prefill=True, forced_tool_choice=True, sampling="accepted", thinking_budget=True, thinking_disabled=True
)
_PREFILL_NOTE = (
    "prefill: refused on Claude 4.6 and later models (Using the Messages API, 'Prefilling a response'; the "
    "migration guide, 'Prefill removal')."
)
_SAMPLING_NOTE = (
    "sampling: the pages read here do not name this model; refused since Claude Opus 4.7 (migration guide), "
    "kept refused (conservative)."
)

RULES: dict[str, ModelRules] = {
    r.model: r
    for r in (
        _row(
            "claude-sonnet-5-5",
            _STRICT,
            thinking_off="between_tools",
            thinking_default="on",
            sources=(SONNET_5_5, THINKING_TROUBLESHOOTING, WORKING_WITH_MESSAGES),
            notes="forced tool use returns an error; thinking disabled is a 400 whose message points to "
            "between_tools, the lowest setting (low, medium, high effort only); adaptive thinking on by default; "
            "text between tool calls comes back in thinking blocks, display omitted by default. "
            + _PREFILL_NOTE
            + " "
            + _SAMPLING_NOTE,
        ),
        _row(
            "claude-opus-5-5",
            _STRICT,
            sources=(OPUS_5_5, WORKING_WITH_MESSAGES),
            notes="thinking can't be disabled: disabled and enabled+budget_tokens are 400s; forced tool use returns "
            "an error; thinking blocks empty at the default display. " + _PREFILL_NOTE + " " + _SAMPLING_NOTE,
        ),
        _row(
            "claude-haiku-5-5",
            _STRICT,
            forced_tool_choice=True,
            thinking_default="on",
            sources=(HAIKU_5_5, WORKING_WITH_MESSAGES),
            notes="breaking: manual extended thinking, non-default sampling parameters and assistant prefill return "
            "errors; thinking text omitted by default. Forced tool use is not among its breaking changes: "
            "accepted. The page says nothing of thinking disabled: refused (conservative).",
        ),
        *_rows(
            ("claude-fable-5-2", "claude-mythos-5-2"),
            _STRICT,
            sources=(FABLE_5_2, FABLE_5_1),
            notes="the changes from Fable 5.1 lift none of its refusals: thinking disabled and budget_tokens are "
            "400s, forced tool_choice (any/tool) is a 400; adaptive thinking always on. "
            + _PREFILL_NOTE
            + " "
            + _SAMPLING_NOTE,
        ),
        *_rows(
            ("claude-fable-5-1", "claude-mythos-5-1"),
            _STRICT,
            sources=(FABLE_5_1, OPUS_5_5),
            notes="thinking disabled and budget_tokens are 400s; tool_choice auto/none only, any/tool a 400. "
            + _PREFILL_NOTE
            + " "
            + _SAMPLING_NOTE,
        ),
        *_rows(
            ("claude-fable-5", "claude-mythos-5"),
            _STRICT,
            forced_tool_choice=True,
            sources=(FABLE_5, FABLE_5_1),
            notes="thinking disabled and budget_tokens are 400s; forced tool use became an error only in 5.1 "
            "(accepted here). " + _PREFILL_NOTE + " " + _SAMPLING_NOTE,
        ),
        _row(
            "claude-sonnet-5",
            _GEN_4_7,
            thinking_default="on",
            sources=(SONNET_5_5, THINKING_TROUBLESHOOTING, WORKING_WITH_MESSAGES),
            notes="accepts thinking disabled and forced tool use (both changed only in Sonnet 5.5); budget_tokens "
            "a 400. " + _PREFILL_NOTE + " " + _SAMPLING_NOTE,
        ),
        _row(
            "claude-opus-5",
            _GEN_4_7,
            thinking_default="on",
            sources=(OPUS_5_5, THINKING_TROUBLESHOOTING, WORKING_WITH_MESSAGES),
            notes="thinking on by default; disabled accepted at effort high or below; forced tool use accepted "
            "(changed only in Opus 5.5). " + _PREFILL_NOTE + " " + _SAMPLING_NOTE,
        ),
        *_rows(
            ("claude-opus-4-8", "claude-opus-4-7"),
            _GEN_4_7,
            notes="budget_tokens a 400 from Claude 4.7 on; sampling parameters removed in Opus 4.7. " + _PREFILL_NOTE,
        ),
        _row(
            "claude-mythos-preview",
            _STRICT,
            thinking_budget=True,
            thinking_default="on",
            sources=(THINKING_TROUBLESHOOTING, WORKING_WITH_MESSAGES),
            notes="supports both thinking modes (budget accepted); rejects prefill. The pages read here say nothing "
            "of forced tool_choice, sampling or thinking disabled: refused (conservative).",
        ),
        *_rows(
            ("claude-opus-4-6", "claude-sonnet-4-6"),
            _OPEN,
            prefill=False,
            sources=(MIGRATION_GUIDE, THINKING_TROUBLESHOOTING),
            notes="prefill removal: a 400 on Claude 4.6 models; budget_tokens deprecated but accepted.",
        ),
        *_rows(
            ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
            _OPEN,
            sampling="one_of",
            sources=(HAIKU_4_5, THINKING_TROUBLESHOOTING),
            notes="temperature or top_p, not both (a 400); extended thinking (budget) its only thinking mode.",
        ),
        *_rows(
            ("claude-opus-4-5", "claude-opus-4-5-20251101"),
            _OPEN,
            sampling="one_of",
            sources=(THINKING_TROUBLESHOOTING, MIGRATION_GUIDE),
            notes="prefill accepted (removed from 4.6 on); extended thinking its only mode. The pages read here "
            "say nothing of its sampling: temperature or top_p, not both, as on Haiku 4.5 (conservative).",
        ),
    )
}

#: A name the table does not know: the strictest rules (a newer model refuses at least what the newest do).
DEFAULT = _row("(any other model)", _STRICT, notes="not in the table: the strictest rules")
#: Older ids (``agentfsm.sim.lineup.LEGACY_MODELS``): everything accepted, as those models did.
LEGACY = _row("(an older model)", _OPEN, notes="Claude 3.x and 4.0-4.5 ids outside the SDK's lineup")

#: The safety net's memory: per agent (weakly held), the models whose server refused a prefill their rules allow.
_learned: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _base_name(model: str) -> str:
    """``us.anthropic.claude-opus-4-6-v1`` → ``claude-opus-4-6-v1``: the name from its ``claude-`` on."""
    at = model.find("claude-")
    return model[at:] if at > 0 else model


def _lookup(name: str) -> ModelRules | None:
    if name in RULES:
        return RULES[name]
    best = max((key for key in RULES if name.startswith(key) and name[len(key)] in "-@.:"), key=len, default=None)
    return None if best is None else RULES[best]


def rules_for(model: str) -> ModelRules:
    """The request rules of ``model``: its row, a dated or platform-prefixed name's model's, ``LEGACY`` for an
    older id, else ``DEFAULT``."""
    name = _base_name(model)
    found = _lookup(name)
    if found is not None:
        return found
    from agentfsm.sim.lineup import LEGACY_MODELS  # the ids the simulator serves beyond the SDK's lineup

    if name in LEGACY_MODELS or name.startswith(("claude-2", "claude-3", "claude-instant")):
        return LEGACY
    return DEFAULT


def prefill_allowed(model: str, *, by: Any = None) -> bool:
    """Whether a continuation may prefill on ``model``: its row accepts prefill and (given ``by``, an agent) that
    agent has not seen the model refuse one (``remember_prefill_refused``)."""
    if not rules_for(model).prefill:
        return False
    return by is None or model not in _learned.get(by, ())


def remember_prefill_refused(model: str, *, by: Any) -> None:
    """The safety net: ``model``'s row accepts prefill but its server refused one; ``by`` (the agent) continues by
    prompt from the start in its later runs."""
    _learned.setdefault(by, set()).add(model)


# --- what a request carries, against the rules ------------------------------------------------------------------


def _forced(params: Mapping[str, Any]) -> bool:
    choice = params.get("tool_choice")
    return isinstance(choice, Mapping) and choice.get("type") in ("any", "tool")


def _thinking_type(params: Mapping[str, Any]) -> str | None:
    thinking = params.get("thinking")
    return str(thinking.get("type")) if isinstance(thinking, Mapping) else None


def check_request(model: str, params: Mapping[str, Any], *, continuation: str = "auto") -> None:
    """Raise ``ConfigurationError`` when an agent's every request would carry what ``model`` refuses (before any
    request is sent), saying what to send instead."""
    rules = rules_for(model)
    fixes = []
    if _forced(params) and not rules.forced_tool_choice:
        fixes.append("a forced tool_choice (any/tool): use auto or none (output_type asks for a typed answer unforced)")
    sampling = [name for name in SAMPLING_PARAMS if name in params]
    if sampling and rules.sampling == "refused":
        fixes.append(f"{'/'.join(sampling)}: leave sampling parameters out")
    elif rules.sampling == "one_of" and {"temperature", "top_p"} <= set(sampling):
        fixes.append("temperature with top_p: send one of the two")
    kind = _thinking_type(params)
    if kind == "enabled" and not rules.thinking_budget:
        fixes.append('a thinking budget: use thinking {"type": "adaptive"} and output_config.effort')
    if kind == "disabled" and not rules.thinking_disabled:
        off = rules.thinking_off
        fixes.append(
            f'thinking {{"type": "disabled"}}: use {{"type": "{off}"}}'
            if off
            else 'thinking {"type": "disabled"}: leave thinking out and lower output_config.effort'
        )
    if continuation == "prefill" and not rules.prefill:
        fixes.append('Policy(continuation="prefill"): use "auto" (prompts where prefill is refused) or "prompt"')
    if fixes:
        raise ConfigurationError(
            f"{model} answers HTTP 400 to {'; to '.join(fixes)} (agentfsm.wire.models.rules_for({model!r}); "
            f"{rules.sources[0] if rules.sources else 'no page names this model: the strictest rules'})"
        )


def strip_thinking(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` without thinking and redacted_thinking blocks (a message they would leave empty is kept as it
    was): for a conversation carried on by another model, which cannot read them (thinking blocks are tied to the
    model and the conversation that produced them)."""
    out = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "assistant" and isinstance(content, list):
            kept = [
                b for b in content if not (isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking"))
            ]
            if kept and len(kept) != len(content):
                message = {**message, "content": kept}
        out.append(message)
    return out


def request_for_model(
    params: Mapping[str, Any], model: str, *, from_model: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """``params`` (a whole request body) made fit for ``model``, and what was changed, one phrase each.

    For a request written for another model (``from_model``: a fallback, a chain's next hop): a forced
    ``tool_choice`` becomes ``auto`` (its ``disable_parallel_tool_use`` kept), refused sampling parameters are
    dropped (``top_p`` when only one of temperature and top_p is accepted), a refused thinking budget becomes
    adaptive thinking, a refused ``thinking: disabled`` becomes the model's lowest setting (``between_tools``) or
    is left out, and thinking blocks from ``from_model`` (when it differs) are left out of the messages. The
    model is set to ``model``. A request ending in an assistant prefill is left as it is: whether to prompt
    instead is the continuation's decision (``prefill_allowed``).
    """
    rules = rules_for(model)
    out = dict(params)
    out["model"] = model
    changed: list[str] = []
    if _forced(out) and not rules.forced_tool_choice:
        choice = dict(out["tool_choice"])
        auto = {"type": "auto"}
        if "disable_parallel_tool_use" in choice:
            auto["disable_parallel_tool_use"] = choice["disable_parallel_tool_use"]
        out["tool_choice"] = auto
        changed.append(f"tool_choice {choice.get('type')} -> auto")
    drop = [n for n in SAMPLING_PARAMS if n in out] if rules.sampling == "refused" else []
    if rules.sampling == "one_of" and "temperature" in out and "top_p" in out:
        drop = ["top_p"]
    for name in drop:
        del out[name]
        changed.append(f"{name} dropped")
    kind = _thinking_type(out)
    if kind == "enabled" and not rules.thinking_budget:
        out["thinking"] = {"type": "adaptive"}
        changed.append("thinking budget -> adaptive")
    elif kind == "disabled" and not rules.thinking_disabled:
        if rules.thinking_off is not None:
            out["thinking"] = {"type": rules.thinking_off}
            changed.append(f"thinking disabled -> {rules.thinking_off}")
        else:
            del out["thinking"]
            changed.append("thinking disabled dropped (the model always thinks)")
    messages = out.get("messages")
    if from_model is not None and _base_name(from_model) != _base_name(model) and isinstance(messages, list):
        stripped = strip_thinking(messages)
        if stripped != messages:
            out["messages"] = stripped
            changed.append(f"thinking blocks of {from_model} left out")
    return out, changed


def table_rows() -> list[tuple[str, ...]]:
    """The table as rows of text, for docs/11 (checked against it by tests/test_model_rules.py)."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "**400**"

    rows: list[tuple[str, ...]] = []
    for rules in (*RULES.values(), DEFAULT, LEGACY):
        sampling = {"accepted": "yes", "one_of": "one of temperature/top_p", "refused": "**400**"}[rules.sampling]
        disabled = yes(rules.thinking_disabled)
        if rules.thinking_off is not None:
            disabled += f" (use `{rules.thinking_off}`)"
        rows.append(
            (
                f"`{rules.model}`" if rules.model.startswith("claude") else rules.model,
                yes(rules.prefill),
                yes(rules.forced_tool_choice),
                sampling,
                yes(rules.thinking_budget),
                disabled,
                rules.thinking_default,
                "yes" if rules.thinking_text_by_default else "omitted",
            )
        )
    return rows
