"""Prompt caching, modelled on the Messages API's rules, so that cache usage can be tested offline.

Source: the prompt caching guide, https://platform.claude.com/docs/en/build-with-claude/prompt-caching
(sections "How automatic prefix checking works", "Cache limitations", "What can be cached",
"Tracking cache performance", "Mixing different TTLs", "Automatic caching"); error wordings are the
real API's, as quoted in public bug reports. What is modelled:

* **Breakpoints.** A block with ``cache_control: {"type": "ephemeral"}`` (``"ttl": "5m"`` by default,
  or ``"1h"``) is a breakpoint. The prompt is read in the order tools → system → messages, one
  position per tool definition, per system block and per message content block (string content is
  one text block; consecutive messages of one role join, as the API joins them). A ``cache_control``
  inside a ``tool_result``'s content counts as a breakpoint on that ``tool_result``. A top-level
  ``cache_control`` (automatic caching) puts one on the last block that may carry one, and takes a slot.
* **Writes only at breakpoints.** A breakpoint writes one entry: the hash of everything up to and
  including its block (the ``cache_control`` marks themselves excluded), per model — if that prefix
  holds at least ``min_tokens`` tokens (1024 for most models). A shorter one is processed without
  caching, and no error is given.
* **Reads look back.** For each breakpoint, its position and the ones before it, 20 in all, are
  checked for an entry an earlier request wrote; the latest hit over all breakpoints is read.
  ``tool_choice`` and the thinking settings are part of the messages' prefix (changing them
  invalidates the messages' entries, not those of tools or system).
* **Usage.** ``cache_read_input_tokens`` is the prefix at the hit; ``cache_creation_input_tokens``
  runs from there to the last breakpoint that writes (its 1-hour and 5-minute parts, per "Mixing
  different TTLs", in ``cache_creation``); ``input_tokens`` is the rest, after the last breakpoint,
  so the three add up to the prompt's tokens.
* **Lifetime.** An entry lives 5 minutes (1 hour for ``ttl: "1h"``) from its last use; a read
  refreshes it. The clock is injectable.
* **400s.** More than 4 breakpoints; ``cache_control`` on an empty text block; a 1-hour breakpoint
  after a 5-minute one; a top-level ``cache_control`` whose ttl differs from the one on its target
  block; ``cache_control`` on a thinking block (which the request schema does not allow).

Not modelled: a minimum per model (one ``min_tokens`` per ``Simulator``; the guide gives 1,024 for
most models, 2,048 or 4,096 for some), entries becoming visible only once the response begins (here:
at once), workspace isolation, server tool results cached on their own, and older models dropping
earlier thinking blocks (and so the cache after them) when a user turn is not tool results.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agentfsm.sim.tokens import CHARS_PER_TOKEN, block_text

LOOKBACK = 20
MAX_BREAKPOINTS = 4
DEFAULT_MIN_TOKENS = 1024
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}

_NOT_MARKABLE = frozenset({"thinking", "redacted_thinking"})
_TTL_ORDER = (
    "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. "
    "Note that blocks are processed in the following order: `tools`, `system`, `messages`."
)


@dataclass(frozen=True)
class CacheUsage:
    """How one request's prompt was billed: read from the cache, written to it (per TTL), or neither."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def write(self) -> int:
        return self.write_5m + self.write_1h


@dataclass(frozen=True)
class _Prompt:
    """A request's prompt as the cache sees it: one position per block, in cache order."""

    ttls: list[str | None]  # the ttl of the breakpoint at each position (None: not one)
    tokens: list[int]  # tokens of the prefix ending at each position (when there is a breakpoint)
    digests: dict[int, str]  # hashes of those prefixes, at the positions a lookback reaches

    @property
    def breakpoints(self) -> list[int]:
        return [i for i, ttl in enumerate(self.ttls) if ttl is not None]


@dataclass
class _Entry:
    ttl_s: float
    expires: float


def without_cache_control(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request body with every ``cache_control`` removed: what is hashed and counted."""
    if not _has_marks(body):
        return dict(body)
    clean = {k: v for k, v in body.items() if k != "cache_control"}
    if isinstance(clean.get("tools"), list):
        clean["tools"] = [_strip(t) for t in clean["tools"]]
    if isinstance(clean.get("system"), list):
        clean["system"] = [_strip(b) for b in clean["system"]]
    if isinstance(clean.get("messages"), list):
        clean["messages"] = [
            {**m, "content": [_strip(b) for b in m["content"]]}
            if isinstance(m, dict) and isinstance(m.get("content"), list)
            else m
            for m in clean["messages"]
        ]
    return clean


def _strip(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    out = {k: v for k, v in block.items() if k != "cache_control"}
    if isinstance(out.get("content"), list):
        out["content"] = [_strip(b) for b in out["content"]]
    return out


def _controls(block: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``cache_control`` marks on a block and inside its content (a tool_result's blocks)."""
    found = [block["cache_control"]] if isinstance(block.get("cache_control"), dict) else []
    content = block.get("content")
    if isinstance(content, list):
        found += [
            b["cache_control"] for b in content if isinstance(b, dict) and isinstance(b.get("cache_control"), dict)
        ]
    return found


def _has_marks(body: Mapping[str, Any]) -> bool:
    return isinstance(body.get("cache_control"), dict) or any(
        isinstance(block, dict) and _controls(block) for _, block in _walk(body)
    )


def _ttl(control: Mapping[str, Any]) -> str:
    ttl = control.get("ttl")
    return ttl if ttl in TTL_SECONDS else "5m"


def _markable(block: Mapping[str, Any]) -> bool:
    return block.get("type") not in _NOT_MARKABLE and not (block.get("type") == "text" and block.get("text") == "")


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


def _sections(body: Mapping[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """The prompt in cache order, as (section, blocks): the tools, the system prompt, then each message
    (section: its role). Tokens are rounded per section, as ``count_input_tokens`` rounds them."""
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        yield "tools", tools
    system = body.get("system")
    if system is not None:
        yield "system", _blocks(system)
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict):
            yield str(message.get("role")), _blocks(message.get("content"))


def _walk(body: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(path, block) for every block of the prompt, in cache order; the path as the API's errors name it."""
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        yield f"tools.{i}", tool
    system = body.get("system")
    for i, block in enumerate(system if isinstance(system, list) else []):
        yield f"system.{i}", block
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            for j, block in enumerate(message["content"]):
                yield f"messages.{i}.content.{j}", block


def _flat(body: Mapping[str, Any]) -> list[Any]:
    return [block for _, blocks in _sections(body) for block in blocks]


def _automatic_target(flat: list[Any]) -> int:
    """The position a top-level ``cache_control`` marks: the last block that may carry a breakpoint (-1: none)."""
    return next((k for k in range(len(flat) - 1, -1, -1) if isinstance(flat[k], dict) and _markable(flat[k])), -1)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


class PromptCache:
    """One simulator's prompt cache: entries by prefix hash, with their expiry times."""

    def __init__(self, min_tokens: int = DEFAULT_MIN_TOKENS, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_tokens = min_tokens
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        now = self.clock()
        return sum(1 for e in self._entries.values() if e.expires > now)

    # --- validation -------------------------------------------------------------------------------

    def problem(self, body: Mapping[str, Any]) -> str | None:
        """The 400 message the API gives for this request's cache marks, or None when they are valid."""
        count = 0
        seen_5m = False
        for path, block in _walk(body):
            if not isinstance(block, dict):
                continue
            controls = _controls(block)
            count += len(controls)
            kind = block.get("type")
            if isinstance(block.get("cache_control"), dict):
                if kind in _NOT_MARKABLE:
                    return f"{path}.{kind}.cache_control: Extra inputs are not permitted"
                if kind == "text" and block.get("text") == "":
                    return f"{path}.text: cache_control cannot be set for empty text blocks"
            for control in controls:
                if _ttl(control) == "1h" and seen_5m:
                    return f"{path}.cache_control.ttl: {_TTL_ORDER}"
                seen_5m = seen_5m or _ttl(control) == "5m"
        top = body.get("cache_control")
        if isinstance(top, dict):
            flat = _flat(body)
            k = _automatic_target(flat)
            marked = flat[k].get("cache_control") if k >= 0 else None
            if not isinstance(marked, dict):
                count += 1
            elif _ttl(marked) != _ttl(top):
                return (
                    f"Top-level cache_control has ttl='{_ttl(top)}' but the target block already has "
                    f"cache_control with ttl='{_ttl(marked)}'"
                )
        if count > MAX_BREAKPOINTS:
            return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {count}."
        return None

    # --- accounting ---------------------------------------------------------------------------------

    @staticmethod
    def read(body: Mapping[str, Any]) -> _Prompt:
        """The request's positions, their breakpoints and, where a lookback can reach, prefix hashes."""
        sections = list(_sections(body))
        flat = [block for _, blocks in sections for block in blocks]
        ttls: list[str | None] = []
        for block in flat:
            controls = _controls(block) if isinstance(block, dict) else []
            ttls.append(_ttl(controls[-1]) if controls else None)
        top = body.get("cache_control")
        if isinstance(top, dict):  # automatic caching: the last block that may carry a breakpoint
            k = _automatic_target(flat)
            if k >= 0 and ttls[k] is None:
                ttls[k] = _ttl(top)
        marks = [i for i, ttl in enumerate(ttls) if ttl is not None]
        if not marks:
            return _Prompt(ttls, [], {})
        reach = {j for b in marks for j in range(max(0, b - LOOKBACK + 1), b + 1)}
        hasher = hashlib.sha256(_dumps(["model", body.get("model")]).encode())
        tokens: list[int] = []
        digests: dict[int, str] = {}
        done = 0  # tokens of the sections already read
        in_messages = False
        for section, blocks in sections:
            if section not in ("tools", "system") and not in_messages:
                in_messages = True  # tool_choice and thinking are part of the messages' prefix
                hasher.update(_dumps(["params", body.get("tool_choice"), body.get("thinking")]).encode())
            chars = 2 if section == "tools" else 0  # tools are counted as one JSON list
            for k, block in enumerate(blocks):
                i = len(tokens)
                plain = _strip(block) if ttls[i] is not None else block
                dumped = _dumps(plain)
                hasher.update(f"\n{section}\n{dumped}".encode())
                if section == "tools":
                    chars += len(dumped) + (2 if k else 0)
                else:
                    chars += len(block_text(plain) if isinstance(plain, Mapping) else dumped)
                tokens.append(done + math.ceil(chars / CHARS_PER_TOKEN))
                if i in reach:
                    digests[i] = hasher.copy().hexdigest()
            done += math.ceil(chars / CHARS_PER_TOKEN)
        return _Prompt(ttls, tokens, digests)

    def account(self, body: Mapping[str, Any]) -> CacheUsage:
        """Bill one (valid) request against the cache, and write its breakpoints' entries."""
        prompt = self.read(body)
        breakpoints = prompt.breakpoints
        if not breakpoints:
            return CacheUsage()
        tokens, digests = prompt.tokens, prompt.digests
        with self._lock:
            now = self.clock()
            self._entries = {k: e for k, e in self._entries.items() if e.expires > now}
            hit = -1  # the latest position, over every breakpoint's lookback, with an entry
            for b in breakpoints:
                for i in range(b, max(b - LOOKBACK, -1), -1):
                    if digests[i] in self._entries:
                        hit = max(hit, i)
                        break
            read = tokens[hit] if hit >= 0 else 0
            writers = [b for b in breakpoints if b > hit and tokens[b] >= self.min_tokens]
            hour_writers = [b for b in writers if prompt.ttls[b] == "1h"]
            upto_1h = tokens[hour_writers[-1]] if hour_writers else read
            upto_all = max(tokens[writers[-1]], upto_1h) if writers else upto_1h
            if hit >= 0:  # a read refreshes the entry
                entry = self._entries[digests[hit]]
                entry.expires = max(entry.expires, now + entry.ttl_s)
            for b in breakpoints:
                if tokens[b] >= self.min_tokens:
                    ttl_s = TTL_SECONDS[prompt.ttls[b] or "5m"]
                    old = self._entries.get(digests[b])
                    if old is None:
                        self._entries[digests[b]] = _Entry(ttl_s, now + ttl_s)
                    else:
                        old.ttl_s = max(old.ttl_s, ttl_s)
                        old.expires = max(old.expires, now + ttl_s)
            return CacheUsage(read=read, write_1h=upto_1h - read, write_5m=upto_all - upto_1h)
