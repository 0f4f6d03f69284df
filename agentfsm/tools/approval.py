"""Approval on a tool: which calls wait for a person, and what a person's decision about them says.

A tool made with ``@tool(needs_approval=True)`` (or a function of the call) makes a reply that
calls it stop the run in the waiting state ``awaiting_tool_approval`` before that call runs
(``agentfsm.machine.table``; the calls of the same reply that need no approval run first). A
decision — ``agent.resume(id, approve=[ids] | True, deny={id: "reason"})``, or the trigger
``run_tools`` with that as its ``input`` (``agentfsm runs decide``, the inspector's form) — must
decide every call the run waits on; this module reads and checks it, without I/O. Where it is
carried out is ``agentfsm.machine.around``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentfsm.errors import ApprovalDecisionError, ConfigurationError
from agentfsm.tools.calls import ToolCall
from agentfsm.tools.definition import Tool

__all__ = ["DEFAULT_DENIAL", "decision", "read_decision", "requires_approval"]

#: What the model reads for a call a person denied without giving a reason.
DEFAULT_DENIAL = "A person denied this tool call; it was not run."


def requires_approval(tools: Mapping[str, Tool], call: ToolCall) -> bool:
    """Whether ``call`` waits for a person's approval: its tool's ``needs_approval`` (an unknown tool needs
    none: it never runs, the executor answers it)."""
    tool = tools.get(call.name)
    return tool is not None and tool.needs_approval is not False and tool.requires_approval(call)


def decision(
    pending: Sequence[ToolCall], approve: Sequence[str] | bool | None, deny: Mapping[str, str] | Sequence[str] | None
) -> dict[str, Any]:
    """The decision ``resume(approve=..., deny=...)`` gives, as the JSON input it is stored as:
    ``{"approve": [ids], "deny": {id: reason}}``, every call of ``pending`` in one or the other.

    ``approve=True`` approves every call not denied; ``deny`` maps ids to the reason the model reads (a list
    of ids, or an empty reason, gives ``DEFAULT_DENIAL``). Raises ``ApprovalDecisionError`` for a call left
    undecided, an id the wait does not hold, or an id both approved and denied; ``ConfigurationError`` for
    values of the wrong type.
    """
    ids = [c.id for c in pending]
    denied = _denials(deny)
    if approve is True:
        approved = [i for i in ids if i not in denied]
    elif approve is None or approve is False:
        approved = []
    elif isinstance(approve, str) or not isinstance(approve, Sequence):
        raise ConfigurationError(
            f"approve= takes a list of tool_use ids or True (every call not denied), got {type(approve).__name__}"
        )
    else:
        approved = [str(i) if isinstance(i, str) else _bad_id(i) for i in approve]
    unknown = [i for i in [*approved, *denied] if i not in ids]
    if unknown:
        raise ApprovalDecisionError(f"the run is not waiting on {', '.join(map(repr, unknown))}", pending)
    both = [i for i in approved if i in denied]
    if both:
        raise ApprovalDecisionError(f"{', '.join(map(repr, both))} is both approved and denied", pending)
    undecided = [i for i in ids if i not in denied and i not in approved]
    if undecided:
        raise ApprovalDecisionError(f"no decision for {', '.join(map(repr, undecided))}", pending)
    return {"approve": [i for i in ids if i in approved], "deny": {i: denied[i] for i in ids if i in denied}}


def read_decision(pending: Sequence[ToolCall], given: Any) -> dict[str, Any]:
    """A decision given as ``input`` (``{"approve": [...] or true, "deny": {...} or [...]}``), checked and
    normalised as ``decision`` does; anything else is an ``ApprovalDecisionError``."""
    if not isinstance(given, Mapping) or not set(given) <= {"approve", "deny"}:
        raise ApprovalDecisionError(
            f'the decision of an approval wait is input={{"approve": [ids] or true, "deny": {{id: reason}}}}, '
            f"got {given!r:.80}",
            pending,
        )
    return decision(pending, given.get("approve"), given.get("deny"))


def _denials(deny: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    if deny is None:
        return {}
    if isinstance(deny, Mapping):
        out: dict[str, str] = {}
        for key, reason in deny.items():
            if reason is not None and not isinstance(reason, str):
                raise ConfigurationError(
                    f"deny= maps each tool_use id to the reason the model reads (a string), got "
                    f"{type(reason).__name__} for {key!r}"
                )
            out[str(key) if isinstance(key, str) else _bad_id(key)] = (
                reason if reason is not None and reason.strip() else DEFAULT_DENIAL
            )
        return out
    if isinstance(deny, str) or not isinstance(deny, Sequence):
        raise ConfigurationError(f"deny= takes {{tool_use_id: reason}} (or a list of ids), got {type(deny).__name__}")
    return {str(i) if isinstance(i, str) else _bad_id(i): DEFAULT_DENIAL for i in deny}


def _bad_id(value: object) -> str:
    raise ConfigurationError(f"a tool_use id is a string (call.id), got {type(value).__name__} {value!r:.40}")
