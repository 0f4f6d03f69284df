"""Typed output: ``Agent(output_type=Invoice)`` makes ``result.output`` a validated ``Invoice``.

An ``OutputSpec`` is made once per agent from its ``output_type`` (a pydantic model, or any type
``pydantic.TypeAdapter`` takes: ``list[int]``, a ``TypedDict``, a dataclass ...) and says how the run
asks for it (``Policy.output_mode``):

* **native** — the API's structured outputs: every request carries ``output_config.format`` with the
  type's JSON schema (made to the API's rules by ``anthropic.transform_schema``: see
  ``agentfsm.wire.structured``), and the final text is the output as JSON. Tools in the loop are
  fine: the API takes JSON outputs and tools in one request. A continuation after ``max_tokens``
  goes without the format — constrained decoding would start a new JSON document instead of going
  on with the cut one — so the cut JSON is continued as text (prefill or prompt, as any text) and
  the stitched whole is what gets validated.
* **tool** — a ``final_answer`` tool whose input is the output (a type whose schema is not an
  object is wrapped as ``{"response": ...}``): the model calls it to answer. Never forced
  (``tool_choice`` stays the agent's: a forced choice is a 400 with thinking and on the 5.x models).
  A reply that calls it with a valid input ends the run ``done`` (its other tool calls are not run,
  as in pydantic-ai's "early" end); a reply that ends its turn without calling it is asked to.
* **auto** (the default) — native when the agent's model, and the policy's ``fallback_model`` if
  any, support structured outputs (``wire.structured.supports_structured_outputs``), else tool.

The checks are guards and actions of the state table (``machine/table.py``): a reply whose output
does not validate is sent back with the validation errors — a user message after a text answer,
an ``is_error`` ``tool_result`` for a ``final_answer`` call — while ``counters.output_retries`` is
under ``Policy.max_output_retries``; then the run ends ``failed`` with reason ``invalid_output`` and
the errors in ``result.error``. The counter is in the run's state, so a run stored mid-retry and
resumed keeps counting. A refusal is a refusal (``refused``), never an invalid output.

Streamed, a native run shows the output as it arrives: an ``OutputEvent`` carrying the JSON parsed
so far (``pydantic_core.from_json(..., allow_partial="trailing-strings")``) whenever it changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anthropic
import pydantic_core
from pydantic import TypeAdapter, ValidationError
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError, PydanticUserError

from agentfsm.errors import ConfigurationError
from agentfsm.machine import actions
from agentfsm.machine.guards import guard
from agentfsm.result import RunError
from agentfsm.tools.calls import ToolCall, ToolResult
from agentfsm.wire import messages as history
from agentfsm.wire import structured

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation
    from agentfsm.machine.streaming import OutputEvent
    from agentfsm.policy import Policy

#: The tool an agent in tool mode answers through.
OUTPUT_TOOL = "final_answer"
#: The key a non-object output is wrapped in, as the final_answer tool's input.
WRAPPER_KEY = "response"
#: Pending kinds of a request that goes on with text already in the answer: sent without the format.
CONTINUING = ("prefill", "caller_prefill", "prompt")

Mode = Literal["native", "tool"]


@dataclass(frozen=True)
class Check:
    """What one reply's output came to: the validated value, or the errors the model is shown."""

    value: Any = None
    errors: str | None = None
    #: The final_answer call judged (tool mode); None for a text answer.
    call_id: str | None = None

    @property
    def valid(self) -> bool:
        return self.errors is None


class OutputSpec:
    """An agent's ``output_type``, ready to ask for and to validate (made once per type and mode)."""

    def __init__(self, output_type: Any, mode: Mode) -> None:
        self.type = output_type
        self.mode: Mode = mode
        self.name = str(getattr(output_type, "__name__", None) or repr(output_type))
        try:
            self.adapter: TypeAdapter[Any] = TypeAdapter(output_type)
            raw = self.adapter.json_schema()
        except (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema, PydanticUserError, TypeError) as exc:
            raise ConfigurationError(
                f"output_type={self.name} has no JSON schema pydantic can make ({exc.__class__.__name__}: {exc}); "
                "give a pydantic model or a type pydantic.TypeAdapter can validate and describe"
            ) from None
        #: The schema the model sees: as the API's structured outputs take it (native), or as the tool's input.
        try:
            self.schema: dict[str, Any] = anthropic.transform_schema(raw) if mode == "native" else raw
        except ValueError as exc:
            raise ConfigurationError(
                f"output_type={self.name} cannot be asked for with structured outputs ({exc}); "
                'use Policy(output_mode="tool"), or a more specific type'
            ) from None
        self.wrapped = mode == "tool" and raw.get("type") != "object"

    def tool_param(self) -> dict[str, Any]:
        """The final_answer tool's definition (tool mode)."""
        schema = self.schema
        if self.wrapped:
            inner = {k: v for k, v in schema.items() if k != "$defs"}
            schema = {"type": "object", "properties": {WRAPPER_KEY: inner}, "required": [WRAPPER_KEY]}
            if "$defs" in self.schema:  # references resolve from the root
                schema["$defs"] = self.schema["$defs"]
        return {
            "name": OUTPUT_TOOL,
            "description": (
                f"Give your final answer ({self.name}) by calling this tool once, with the answer as its input, "
                "when you have everything you need. Do not answer in text: only this call counts as the answer."
            ),
            "input_schema": schema,
        }

    def validate_text(self, text: str) -> Check:
        """A text answer (native mode): JSON of the type."""
        if not text.strip():
            return Check(errors=f"The reply holds no text; answer with JSON matching the {self.name} schema.")
        try:
            return Check(value=self.adapter.validate_json(text))
        except ValidationError as exc:
            return Check(errors=describe(exc))

    def validate_input(self, value: Any, call_id: str) -> Check:
        """A final_answer call's input (tool mode)."""
        if self.wrapped:
            if not isinstance(value, dict) or WRAPPER_KEY not in value:
                return Check(errors=f"{WRAPPER_KEY}: Field required", call_id=call_id)
            value = value[WRAPPER_KEY]
        try:
            return Check(value=self.adapter.validate_python(value), call_id=call_id)
        except ValidationError as exc:
            return Check(errors=describe(exc), call_id=call_id)


def describe(exc: ValidationError) -> str:
    """Validation errors as the model and the developer read them: one ``where: what`` per line."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error.get("loc", ())) or "(the whole answer)"
        lines.append(f"{where}: {error.get('msg')}")
    return "\n".join(lines) or str(exc)


@functools.lru_cache(maxsize=256)
def _cached_spec(output_type: Any, mode: Mode) -> OutputSpec:
    return OutputSpec(output_type, mode)


def spec_for(output_type: Any, policy: Policy, models: list[str]) -> OutputSpec:
    """The spec of an agent with ``output_type`` whose requests may go to ``models`` (its model, then the
    policy's fallback model): native or tool by ``policy.output_mode``."""
    mode: Mode
    if policy.output_mode == "auto":
        mode = "native" if all(structured.supports_structured_outputs(m) for m in models) else "tool"
    else:
        mode = policy.output_mode
    try:
        return _cached_spec(output_type, mode)
    except TypeError:  # an unhashable type (an Annotated with unhashable metadata): made each time
        return OutputSpec(output_type, mode)


# --- the request ---------------------------------------------------------------------------------------


def shape_request(conv: Conversation, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with ``output_config.format`` in native mode, except on a continuation of cut text."""
    spec = conv.agent.output_spec
    if spec is None or spec.mode != "native" or conv.runstate.pending_kind in CONTINUING:
        return params
    return structured.with_format(params, spec.schema)


def split_calls(conv: Conversation, calls: list[ToolCall]) -> tuple[list[ToolCall], dict[str, ToolResult]]:
    """A reply's calls to hand the executor, and the answers to its final_answer calls, which never run:
    the validation errors (``is_error``), or an acknowledgement of a valid one that is not the run's end."""
    spec = conv.agent.output_spec
    if spec is None or spec.mode != "tool" or not any(c.name == OUTPUT_TOOL for c in calls):
        return calls, {}
    run: list[ToolCall] = []
    answered: dict[str, ToolResult] = {}
    for call in calls:
        if call.name != OUTPUT_TOOL:
            run.append(call)
            continue
        found = spec.validate_input(call.input, call.id)
        answered[call.id] = (
            ToolResult(tool_use_id=call.id, content="Final answer received.")
            if found.valid
            else ToolResult(tool_use_id=call.id, content=_retry_text(spec, found), is_error=True)
        )
    return run, answered


# --- judging a reply -----------------------------------------------------------------------------------


def check(conv: Conversation) -> Check | None:
    """The reply's output, judged (once per reply): None where the state has no output to judge."""
    spec = conv.agent.output_spec
    reply = conv.runstate.reply
    if spec is None or reply is None:
        return None
    state = conv.runstate.state
    cached = conv._output_check
    if cached is not None and cached[0] is reply and cached[1] == state:
        return cached[2]
    found = _judge(conv, spec, state)
    conv._output_check = (reply, state, found)
    return found


def _judge(conv: Conversation, spec: OutputSpec, state: str) -> Check | None:
    reply = conv.require_reply()
    if spec.mode == "native":
        return spec.validate_text(actions.stitched_answer(conv, reply)) if state == "end_turn" else None
    given = [b for b in reply.content if b.get("type") == "tool_use" and b.get("name") == OUTPUT_TOOL]
    if given:
        last = given[-1]
        return spec.validate_input(last.get("input"), str(last.get("id")))
    if state == "end_turn":
        missing = f"No final answer was given: call the {OUTPUT_TOOL} tool with your answer ({spec.name}) as its input."
        return Check(errors=missing)
    return None


def result_value(conv: Conversation) -> Any:
    """``RunResult.output``: the validated output of a run that finished ``done``, else None."""
    spec = conv.agent.output_spec
    run = conv.runstate
    if spec is None or run.state != "done" or run.reply is None:
        return None
    if spec.mode == "native":
        found: Check | None = spec.validate_text(run.answer)
    else:
        found = _judge(conv, spec, "tool_use")
    return found.value if found is not None and found.valid else None


# --- guards and actions of the state table ---------------------------------------------------------------


@guard("output invalid")
def output_invalid(conv: Conversation) -> bool:
    found = check(conv)
    return found is not None and not found.valid


@guard("output_retries < max_output_retries")
def output_retries_left(conv: Conversation) -> bool:
    return conv.counters.output_retries < conv.policy.max_output_retries


@guard("final_answer valid")
def output_given(conv: Conversation) -> bool:
    found = check(conv)
    return found is not None and found.valid and found.call_id is not None


def _retry_text(spec: OutputSpec, found: Check) -> str:
    if found.call_id is not None:
        return (
            f"The {OUTPUT_TOOL} input is not a valid {spec.name}:\n{found.errors}\nCall {OUTPUT_TOOL} again, corrected."
        )
    if spec.mode == "tool":
        return str(found.errors)
    return f"Your answer is not a valid {spec.name}:\n{found.errors}\nReply again with only the corrected JSON."


def _required(conv: Conversation) -> tuple[OutputSpec, Check]:
    spec, found = conv.agent.output_spec, check(conv)
    if spec is None or found is None or found.valid:
        raise ConfigurationError("an output action was taken on a reply whose output does not need it")
    return spec, found


def retry_output(conv: Conversation) -> None:
    """Send the invalid output back with its validation errors, counted against ``Policy.max_output_retries``.

    A text answer is kept, followed by a user message with the errors; a final_answer call is answered by
    an ``is_error`` tool_result with them (``split_calls``), beside the results of the reply's other calls.
    """
    spec, found = _required(conv)
    conv.counters.output_retries += 1
    conv.emit(
        "output.invalid", level="warning", mode=spec.mode, errors=found.errors, retry=conv.counters.output_retries
    )
    if found.call_id is not None:
        actions.answer_tool_calls(conv)
        return
    actions.keep_reply(conv)
    text = _retry_text(spec, found)
    last = conv.messages[-1] if conv.messages else None
    if last is not None and last.get("role") == "user" and not history.is_tool_result_message(last):
        conv.messages[-1] = {"role": "user", "content": [*history.blocks(last), {"type": "text", "text": text}]}
    else:
        conv.messages.append({"role": "user", "content": text})
    conv.runstate.pending_kind = None


def fail_invalid_output(conv: Conversation) -> None:
    """No retry left: the run fails, the invalid reply kept, the errors in ``result.error``."""
    spec, found = _required(conv)
    conv.emit("output.invalid", level="warning", mode=spec.mode, errors=found.errors, retry=None)
    actions.keep_reply(conv)
    retries = conv.counters.output_retries
    run = conv.runstate
    run.reason = "invalid_output"
    run.error = RunError(
        type="invalid_output",
        message=(
            f"the output is not a valid {spec.name} after {retries} "
            f"{'retry' if retries == 1 else 'retries'} (Policy.max_output_retries={conv.policy.max_output_retries}):"
            f"\n{found.errors}"
        ),
    )


def finish_with_output(conv: Conversation) -> None:
    """A final_answer call with a valid output: the run is done (the reply's other calls are not run)."""
    actions.keep_reply(conv)
    conv.runstate.reason = OUTPUT_TOOL


# --- streaming -----------------------------------------------------------------------------------------------


class PartialOutput:
    """The output of a streamed native run as it arrives: the JSON parsed so far, each time it changes."""

    def __init__(self, base: str) -> None:
        self._base = base
        self._last: Any = _NOTHING

    @classmethod
    def of(cls, conv: Conversation) -> PartialOutput | None:
        """For the request about to stream; None unless the agent asks for its output natively."""
        spec = conv.agent.output_spec
        if spec is None or spec.mode != "native":
            return None
        kind = conv.runstate.pending_kind
        return cls(conv.answer if kind in (*CONTINUING, "pause") else "")

    def update(self, shown: str) -> OutputEvent | None:
        from agentfsm.machine.streaming import OutputEvent

        text = self._base + shown
        if not text.strip():
            return None
        try:
            value = pydantic_core.from_json(text, allow_partial="trailing-strings")
        except ValueError:
            return None
        if value == self._last:
            return None
        self._last = value
        return OutputEvent(partial=value)


_NOTHING: Any = object()
