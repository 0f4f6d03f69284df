"""What every request of an agent carries besides its messages, worked out once when the Agent is made.

``core.request_params`` adds the per-request part (model, max_tokens, messages, prompt-caching marks,
server-side shaping); an MCP server's tools replace ``tools`` as the server lists them (``ToolSet``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agentfsm.errors import ConfigurationError
from agentfsm.machine.output import OUTPUT_TOOL
from agentfsm.machine.serverside import check_request_params
from agentfsm.tools.definition import Tool, tool_params
from agentfsm.wire import models

if TYPE_CHECKING:
    from agentfsm.agent import Agent


def static_params(agent: Agent, local: Sequence[Tool | dict[str, Any]]) -> dict[str, Any]:
    """What every request of ``agent`` carries besides its model, max_tokens and messages: the system prompt, the
    tools (``local``: the agent's own and server tools; an MCP server's come from ``ToolSet``), the connector's
    servers, the typed output's format or tool, and ``request_params``. Worked out once, when the agent is made."""
    params: dict[str, Any] = {}
    if agent.system:
        params["system"] = agent.system
    toolsets = connector_toolsets(agent.mcp_servers, local)
    if local or toolsets:
        params["tools"] = tool_params(local) + toolsets
    if agent.mcp_servers:
        params["mcp_servers"] = [dict(s) for s in agent.mcp_servers]
    spec = agent.output_spec
    if spec is not None:
        config = agent.request_params.get("output_config")
        if isinstance(config, Mapping) and config.get("format") is not None:
            raise ConfigurationError(
                "request_params['output_config'] sets a format and output_type is set: output_type asks for "
                "its own (output_config.format with its JSON schema); give one of the two"
            )
        if spec.mode == "tool":
            if any(p.get("name") == OUTPUT_TOOL for p in params.get("tools", ())):
                raise ConfigurationError(
                    f"a tool is named {OUTPUT_TOOL!r}, the name of the tool an output_type is asked for with "
                    f'(Policy.output_mode="tool", or a model without structured outputs): rename the tool'
                )
            params["tools"] = [*params.get("tools", ()), spec.tool_param()]
    reserved = {"model", "max_tokens", "messages", "stream"} & set(agent.request_params)
    if reserved:
        raise ConfigurationError(
            f"request_params may not set {sorted(reserved)}: the machine controls them "
            "(use model= and Policy.max_tokens)"
        )
    check_request_params(agent.policy, agent.request_params)
    # What the agent's model refuses, before any request (agentfsm.wire.models); a fallback's request is adapted.
    models.check_request(agent.model, agent.request_params, continuation=agent.policy.continuation)
    if agent.policy.fallback_model and agent.policy.continuation == "prefill":  # a prefill is not adapted: refused
        models.check_request(agent.policy.fallback_model, {}, continuation="prefill")
    params.update(agent.request_params)
    return params


def connector_toolsets(
    servers: Sequence[Mapping[str, Any]], local: Sequence[Tool | dict[str, Any]]
) -> list[dict[str, Any]]:
    """An ``mcp_toolset`` entry for each connector server the agent's tools do not configure already (the
    API offers a connector server's tools only through one)."""
    configured = {t.get("mcp_server_name") for t in local if isinstance(t, Mapping) and t.get("type") == "mcp_toolset"}
    entries = []
    for server in servers:
        if not isinstance(server, Mapping) or not isinstance(server.get("name"), str):
            raise ConfigurationError(
                "mcp_servers entries are the API's MCP server definitions, "
                f"{{'type': 'url', 'name': ..., 'url': ...}}; got {server!r:.80}"
            )
        if server["name"] not in configured:
            entries.append({"type": "mcp_toolset", "mcp_server_name": server["name"]})
    return entries
