"""A stored run's tool calls and their results, and an executor that answers a rerun's calls from them.

Every client ``tool_use`` block of the run's transcript (compacted messages included) with the
``tool_result`` that answered it in the next message is one recorded call. A rerun's call matches a
recorded one by its tool's name and the canonical JSON of its input (keys sorted); identical calls are
answered in the order they were recorded, each once. ``RecordedExecutor`` is a ``ToolExecutor``: it
reaches every runner as any executor does, and runs a recorded call's tool never.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from agentfsm.errors import RecordingMismatchError
from agentfsm.tools.calls import ToolCall, ToolResult
from agentfsm.tools.definition import Tool
from agentfsm.tools.executor import ToolExecutor
from agentfsm.wire.messages import blocks

Message = dict[str, Any]
#: What a rerun does with a call the recording has no result for.
Unmatched = Literal["recorded", "live", "refuse", "fail"]
TOOLS_MODES = ("recorded", "live", "refuse", "fail")

#: The text a refused call's ``is_error`` result carries (``tools="refuse"``).
REFUSED = "not run: this is a rerun against a recording, which has no result for this call"


def call_key(name: str, input: Any) -> tuple[str, str]:
    """How a call is matched: its tool's name and its input as canonical JSON."""
    return name, json.dumps(input, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def signature(call: ToolCall) -> str:
    """``name({"key": value})``, as a message shows a call."""
    return f"{call.name}({call_key(call.name, call.input)[1]})"


class Recording:
    """The recorded results of a run's client tool calls, by ``call_key``, each taken once in recorded order."""

    def __init__(self, messages: Sequence[Message], skip: Iterable[str] = ()) -> None:
        """From a transcript; ``skip``: tool_use ids whose calls are not to be answered again (those already in a
        fork's history)."""
        skipped = set(skip)
        self._results: dict[tuple[str, str], deque[Message]] = {}
        self.size = 0
        for i, message in enumerate(messages[:-1]):
            if message.get("role") != "assistant":
                continue
            answers = {b.get("tool_use_id"): b for b in blocks(messages[i + 1]) if b.get("type") == "tool_result"}
            for block in blocks(message):
                if block.get("type") != "tool_use" or block.get("id") in skipped or block.get("id") not in answers:
                    continue
                self._results.setdefault(call_key(block.get("name", ""), block.get("input")), deque()).append(
                    answers[block["id"]]
                )
                self.size += 1

    def take(self, call: ToolCall) -> ToolResult | None:
        """The next recorded result for a call like ``call``, answering it (None when there is none left)."""
        found = self._results.get(call_key(call.name, call.input))
        if not found:
            return None
        block = found.popleft()
        return ToolResult(
            tool_use_id=call.id, content=block.get("content", ""), is_error=bool(block.get("is_error")), duration_ms=0.0
        )


class RecordedExecutor:
    """A ``ToolExecutor`` answering each call from a ``Recording``; a call it has no result for is run by ``live``
    (``tools="live"``), answered with an ``is_error`` result saying it was not run (``"refuse"``, and
    ``"recorded"``), or stops the rerun with ``RecordingMismatchError`` (``"fail"``). Counts what it did."""

    def __init__(
        self, recording: Recording, live: ToolExecutor, mode: Unmatched, *, original_id: str, conversation_id: str
    ) -> None:
        self.recording, self.live, self.mode = recording, live, mode
        self.original_id, self.conversation_id = original_id, conversation_id
        self.replayed: list[ToolCall] = []
        self.ran_live: list[ToolCall] = []
        self.refused: list[ToolCall] = []

    def _answer(self, calls: Sequence[ToolCall]) -> tuple[list[ToolResult | None], list[ToolCall]]:
        answers = [self.recording.take(call) for call in calls]
        missing = [call for call, answer in zip(calls, answers, strict=True) if answer is None]
        self.replayed += [call for call, answer in zip(calls, answers, strict=True) if answer is not None]
        if missing and self.mode == "fail":
            raise RecordingMismatchError(self.conversation_id, self.original_id, signature(missing[0]))
        if self.mode != "live":
            self.refused += missing
            refused = {c.id: ToolResult(tool_use_id=c.id, content=REFUSED, is_error=True) for c in missing}
            answers = [refused.get(c.id) if a is None else a for c, a in zip(calls, answers, strict=True)]
            missing = []
        self.ran_live += missing
        return answers, missing

    def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        answers, missing = self._answer(calls)
        ran = self.live.execute(missing, tools, timeout) if missing else []
        return _in_order(calls, answers, ran)

    async def aexecute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        answers, missing = self._answer(calls)
        ran = await self.live.aexecute(missing, tools, timeout) if missing else []
        return _in_order(calls, answers, ran)


def _in_order(calls: Sequence[ToolCall], answers: list[ToolResult | None], ran: list[ToolResult]) -> list[ToolResult]:
    """One result per call, in call order: the recorded (or refused) ones, and those run live."""
    by_id = {result.tool_use_id: result for result in ran}
    out: list[ToolResult] = []
    for call, answer in zip(calls, answers, strict=True):
        found = answer if answer is not None else by_id.get(call.id)
        out.append(found if found is not None else ToolResult(tool_use_id=call.id, content=REFUSED, is_error=True))
    return out
