"""Tools: Python functions the model calls, and who runs them.

* ``definition`` — ``@tool`` and ``Tool``: a function's schema, its input validated before it runs
* ``calls``      — ``ToolCall`` in, ``ToolResult`` out: what a tool returned, made sendable;
  ``ToolContext``, a call's idempotency key and attempt; ``ToolResults``, the list ``conv.tool_results``
  is, which takes nothing else
* ``executor``   — the ``ToolExecutor`` protocol and the default concurrent executor
* ``limits``     — cutting an enormous tool result down to the policy's bound
* ``approval``   — which calls wait for a person's approval (``needs_approval``), and reading a decision
* ``hooks``      — ``Deny`` and ``Rewrite``: what ``Agent.before_tool`` may answer about a call
"""

from agentfsm.tools.calls import ToolCall, ToolContext, ToolResult
from agentfsm.tools.definition import Tool, tool, tool_params
from agentfsm.tools.executor import DefaultExecutor, ToolExecutor
from agentfsm.tools.hooks import Deny, Rewrite

__all__ = [
    "DefaultExecutor",
    "Deny",
    "Rewrite",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolExecutor",
    "ToolResult",
    "tool",
    "tool_params",
]
