"""Tools: Python functions the model calls, and who runs them.

* ``definition`` — ``@tool`` and ``Tool``: a function's schema, its input validated before it runs
* ``calls``      — ``ToolCall`` in, ``ToolResult`` out: what a tool returned, made sendable;
  ``ToolResults``, the list ``conv.tool_results`` is, which takes nothing else
* ``executor``   — the ``ToolExecutor`` protocol and the default concurrent executor
* ``limits``     — cutting an enormous tool result down to the policy's bound
"""

from agentfsm.tools.calls import ToolCall, ToolResult
from agentfsm.tools.definition import Tool, tool, tool_params
from agentfsm.tools.executor import DefaultExecutor, ToolExecutor

__all__ = ["DefaultExecutor", "Tool", "ToolCall", "ToolExecutor", "ToolResult", "tool", "tool_params"]
