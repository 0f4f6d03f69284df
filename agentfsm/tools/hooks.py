"""What ``Agent.before_tool`` may answer about a call: run it (None), ``Deny`` it, or ``Rewrite`` its input.

``before_tool(self, call, conv)`` is asked for every client tool call about to run (after its
approval, if its tool needs one); ``after_tool(self, call, result, conv)`` for every result the
executor returned, and may return a replacement ``ToolResult``. Where they run, and what happens
when one raises, is ``agentfsm.machine.around``; docs/05-extending.md, "Around every tool call",
shows both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentfsm.errors import ConfigurationError

__all__ = ["Deny", "Rewrite"]


@dataclass(frozen=True)
class Deny:
    """Do not run the call: it is answered with an ``is_error`` result whose text is ``reason`` (the model
    reads it and carries on); the tool's function never runs."""

    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ConfigurationError(
                f"Deny needs a reason the model can read (a non-empty string), got {self.reason!r:.60}"
            )


@dataclass(frozen=True)
class Rewrite:
    """Run the call with this input instead of the model's: it is validated against the tool's input
    schema first, and an input that does not validate answers the call with an ``is_error`` result saying
    so (the function never runs). The history keeps the call as the model made it."""

    input: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.input, dict):
            raise ConfigurationError(
                f"Rewrite(input=...) takes the call's new input as a dict of named parameters, got "
                f"{type(self.input).__name__}"
            )
