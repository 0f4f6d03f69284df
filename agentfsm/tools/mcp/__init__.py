"""MCP servers as tools, through the official ``mcp`` SDK (``pip install 'agentfsm[mcp]'``).

* ``server`` — ``MCPServer.stdio(...)`` / ``MCPServer.http(...)``: one server, its session on a private
  event-loop thread, opened and closed by the runs that need it
* ``tool``   — ``MCPTool``: one of its tools as a ``Tool`` (annotations, approval rule, results mapped
  to ``tool_result`` content)
* ``schema`` — a call's input checked against the JSON schema the server listed
* ``scope``  — the agent's side: the request's ``tools`` and the executor's lookup from the servers'
  current lists, and opening the servers for a run

Importing this package does not import ``mcp``; making an ``MCPServer`` without it installed is a
``ConfigurationError`` saying how to install it. The API's own MCP connector (the ``mcp_servers``
request parameter) is ``Agent(mcp_servers=[...])`` instead: the API connects to those servers itself.
"""

from agentfsm.tools.mcp.server import MCPServer
from agentfsm.tools.mcp.tool import ApprovalSetting, MCPTool, is_destructive, needs_approval_for, result_content

__all__ = ["ApprovalSetting", "MCPServer", "MCPTool", "is_destructive", "needs_approval_for", "result_content"]
