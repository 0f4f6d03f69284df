"""One tool of an MCP server, as the machine sees it: a ``Tool`` whose schema and function are the server's.

``MCPTool`` is a :class:`~agentfsm.tools.Tool`, so everything the executor does for a ``@tool``
function it does for an MCP tool — the input checked first, the per-call timeout, the result cut to
the policy's limit, calls of one reply run concurrently, the exactly-once ledger on resume — with
two differences: the input is checked against the JSON schema the server listed
(``agentfsm.tools.mcp.schema``), and calling it sends ``tools/call`` to the server.

Here too: what the tool's annotations mean (``idempotentHint`` makes it ``idempotent``;
``readOnlyHint``/``destructiveHint`` decide ``needs_approval="destructive"``), and how a
``CallToolResult`` becomes ``tool_result`` content (``result_content``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from agentfsm.errors import ConfigurationError, MCPToolError, ToolInputError
from agentfsm.tools.calls import ToolCall, ToolContext
from agentfsm.tools.definition import Tool
from agentfsm.tools.mcp.schema import schema_problems

if TYPE_CHECKING:
    from agentfsm.tools.mcp.server import MCPServer

__all__ = ["ApprovalSetting", "MCPTool", "is_destructive", "needs_approval_for", "result_content"]

#: ``MCPServer(needs_approval=...)``: None/False (never), True (every tool), ``"destructive"`` (the tools
#: whose annotations do not rule it out, see ``is_destructive``), or a callable deciding per call.
ApprovalSetting = bool | Literal["destructive"] | Callable[[ToolCall], bool] | None

#: The annotation hints MCP defines, as its wire names them (``ToolAnnotations``).
HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")

#: Image types the Messages API takes in an image block.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def is_destructive(annotations: Mapping[str, Any]) -> bool:
    """Whether a tool may change or destroy something, by MCP's defaults: unless it says it is read-only
    (``readOnlyHint: true``) or says it is not destructive (``destructiveHint: false``), assume it is."""
    return annotations.get("readOnlyHint") is not True and annotations.get("destructiveHint") is not False


def needs_approval_for(annotations: Mapping[str, Any], setting: ApprovalSetting) -> bool | Callable[[ToolCall], bool]:
    """The ``needs_approval`` value of one server tool, from its annotations and the server's setting."""
    if setting is None or setting is False:
        return False
    if setting is True:
        return True
    if setting == "destructive":
        return is_destructive(annotations)
    if callable(setting):
        return setting
    raise ConfigurationError(
        f"needs_approval must be None, True, False, 'destructive' or a callable taking a ToolCall, got {setting!r}"
    )


class _Arguments(BaseModel):
    """Stands in for ``Tool.input_model``: an MCP tool's input is a JSON object, checked against its schema."""

    model_config = ConfigDict(extra="allow")


class MCPTool(Tool):
    """A tool listed by an MCP server. ``name`` is what the model calls (prefixed when the server has a
    prefix); ``remote_name`` is the server's name for it; ``annotations`` holds the hints the server gave,
    under MCP's names (``readOnlyHint``, ``destructiveHint``, ``idempotentHint``, ``openWorldHint``) —
    a hint the server left out is not there (MCP's defaults apply: see ``is_destructive``)."""

    server: MCPServer
    remote_name: str
    annotations: dict[str, Any]
    needs_approval: bool | Callable[[ToolCall], bool]

    def __init__(  # no Tool.__init__: the schema is the server's, not a Python signature's
        self,
        server: MCPServer,
        *,
        name: str,
        remote_name: str,
        description: str,
        input_schema: dict[str, Any],
        annotations: Mapping[str, Any],
    ) -> None:
        self.server = server
        self.name = self.__name__ = name
        self.remote_name = remote_name
        self.description = description
        self.input_schema = input_schema
        self.input_model = _Arguments
        self.annotations = {k: annotations[k] for k in HINTS if annotations.get(k) is not None}
        self.idempotent = self.annotations.get("idempotentHint") is True
        self.needs_approval = needs_approval_for(self.annotations, server.needs_approval)
        self.is_async = True
        self.fn = self._call
        self._params = {}
        self.context_param = "context"  # the call's key goes to the server in the request's _meta
        self.context_optional = True  # a call run outside a conversation goes without one

    def __repr__(self) -> str:
        return f"<MCPTool {self.name!r} of {self.server.name}>"

    def validate(self, raw_input: object) -> dict[str, Any]:
        """Check the model's input against the server's schema; the keyword arguments of ``fn``."""
        if not isinstance(raw_input, Mapping):
            raise ToolInputError(self.name, [f"input must be a JSON object (got {type(raw_input).__name__})"])
        problems = schema_problems(self.input_schema, dict(raw_input))
        if problems:
            raise ToolInputError(self.name, problems)
        return {"arguments": dict(raw_input)}

    async def _call(self, arguments: dict[str, Any], context: ToolContext | None = None) -> str | list[dict[str, Any]]:
        return await self.server.call(self, arguments, meta=None if context is None else request_meta(context))


#: The ``_meta`` keys of a ``tools/call`` request that carry the call's ``ToolContext``.
META_KEYS = {
    "idempotency_key": "agentfsm/idempotency_key",
    "conversation_id": "agentfsm/conversation_id",
    "tool_use_id": "agentfsm/tool_use_id",
    "attempt": "agentfsm/attempt",
}


def request_meta(context: ToolContext) -> dict[str, Any]:
    """The ``_meta`` of the ``tools/call`` request for a call: its context under ``agentfsm/`` keys (a server
    reads ``ctx.request_context.meta["agentfsm/idempotency_key"]`` or its SDK's equivalent)."""
    return {key: getattr(context, field) for field, key in META_KEYS.items()}


# --- results ----------------------------------------------------------------------------------------


def result_content(tool: str, result: Mapping[str, Any]) -> str | list[dict[str, Any]]:
    """A ``CallToolResult`` (as its JSON, camelCase) as ``tool_result`` content; raises ``MCPToolError``
    carrying the text when ``isError`` is true.

    * ``text`` → a text block (empty ones dropped);
    * ``image`` → a base64 image block, for the types the API takes (jpeg, png, gif, webp); any other
      type → a text line saying what was left out;
    * an embedded ``resource`` with ``text`` → a text block; with a ``blob``: an image as above, a PDF as a
      base64 ``document`` block, anything else a text line naming its URI, type and size (the model
      cannot read raw bytes);
    * ``resource_link`` → a text line with its URI; ``audio`` → a text line saying it was left out;
    * ``structuredContent`` → JSON text, only when the result has no content blocks: MCP asks servers
      to send the same data as text too, and the text is what the tool wrote for a reader.

    One text block comes back as a plain string, as a ``@tool`` returning ``str`` does.
    """
    out: list[dict[str, Any]] = []
    for block in result.get("content") or ():
        out.extend(_block(block))
    if not out and result.get("structuredContent") is not None:
        out.append({"type": "text", "text": json.dumps(result["structuredContent"], ensure_ascii=False)})
    if result.get("isError"):
        text = "\n".join(b["text"] for b in out if b["type"] == "text") or f"MCP tool {tool!r} reported an error"
        raise MCPToolError(tool, text)
    if not out:
        return ""
    if len(out) == 1 and out[0]["type"] == "text":
        return str(out[0]["text"])
    return out


def _block(block: Mapping[str, Any]) -> Sequence[dict[str, Any]]:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return [{"type": "text", "text": text}] if isinstance(text, str) and text.strip() else []
    if kind == "image":
        return [_binary(block.get("mimeType"), block.get("data"), "an image")]
    if kind == "audio":
        return [_note(f"[audio ({block.get('mimeType')}) left out: the model cannot take audio]")]
    if kind == "resource_link":
        name = block.get("name")
        return [_note(f"[resource {block.get('uri')}" + (f" ({name})" if name else "") + "]")]
    if kind == "resource":
        resource = block.get("resource")
        if not isinstance(resource, Mapping):
            return []
        if isinstance(resource.get("text"), str):
            text = resource["text"]
            return [{"type": "text", "text": text}] if text.strip() else []
        blob = resource.get("blob")
        mime = resource.get("mimeType")
        if mime == "application/pdf" and isinstance(blob, str):
            return [{"type": "document", "source": {"type": "base64", "media_type": mime, "data": blob}}]
        if isinstance(mime, str) and mime in IMAGE_TYPES and isinstance(blob, str):
            return [_binary(mime, blob, "an image")]
        size = len(blob) * 3 // 4 if isinstance(blob, str) else 0
        return [_note(f"[resource {resource.get('uri')} ({mime or 'binary'}, about {size} bytes) left out: binary]")]
    return [_note(f"[a {kind!r} content block left out: agentfsm does not know it]")]


def _binary(mime: Any, data: Any, what: str) -> dict[str, Any]:
    if isinstance(mime, str) and mime in IMAGE_TYPES and isinstance(data, str):
        return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
    return _note(f"[{what} of type {mime} left out: the API takes {', '.join(sorted(IMAGE_TYPES))}]")


def _note(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}
