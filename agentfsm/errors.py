"""Every exception agentfsm raises, in one place.

Two families:

* Errors raised to the *caller* (``AgentfsmError`` and its children): bad
  configuration, an invalid message history, a missing API key. They are
  raised before any request is sent, so nothing is lost.
* Errors that describe a *tool call* that went wrong (``ToolCallError`` and its
  children). They are never raised out of a run: the executor turns them into
  an ``is_error`` tool_result whose text is ``str(error)``, so every message
  here is written for the model to read and act on.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentfsm.redaction import redact


class AgentfsmError(Exception):
    """Base class of every error agentfsm raises."""


class ConfigurationError(AgentfsmError):
    """An Agent or Policy is set up in a way that cannot work."""


class MissingAPIKeyError(ConfigurationError):
    """No client was given and none can be made from the environment."""

    def __init__(self) -> None:
        super().__init__(
            "no Anthropic API key: set ANTHROPIC_API_KEY, or pass client=anthropic.Anthropic(api_key=...), "
            "or run on the simulator (agentfsm.sim.Simulator(...).client())"
        )


class InvalidHistoryError(AgentfsmError, ValueError):
    """A message list given to ``run()`` is not a valid Messages API history.

    A ``ValueError`` too, so ``except ValueError`` catches it.
    """

    def __init__(self, problem: str, index: int | None = None) -> None:
        # The problem may quote the caller's values (a role, tool ids): never an API key, even one put there.
        self.problem = problem = redact(problem)
        self.index = index
        where = f"messages[{index}]: " if index is not None else ""
        super().__init__(f"invalid message history: {where}{problem}")


class InvalidTransitionError(AgentfsmError):
    """A hook chose a trigger that does not leave the current state, or whose guard failed."""


class AlreadyDecidedError(InvalidTransitionError):
    """A waiting result was decided already: a second ``resume``/``aresume``/``load(trigger=...)`` of it.

    A wait is decided once. Nothing ran for the second decision: no tool, no request. ``how`` says who
    knows: ``"spent"`` (this process decided it), ``"held"`` (another resume in this process is deciding
    it now) or ``"stored"`` (the store holds the conversation past that wait).
    """

    def __init__(
        self, conversation_id: str, state: str, decided: str | None, *, how: str, now: str | None = None
    ) -> None:
        self.conversation_id, self.state, self.decided, self.how = conversation_id, state, decided, how
        what = f"trigger {decided!r}" if decided is not None else "its hook was asked again"
        head = f"the waiting result of conversation {conversation_id!r} (at {state!r})"
        if how == "held":
            message = (
                f"{head} is being decided right now by another resume in this process ({what}): a wait is "
                "decided once, so nothing ran here; use the RunResult that resume returns"
            )
        elif how == "stored":
            message = (
                f"{head} was decided already: the store holds the conversation past that wait (now {now}), so "
                "nothing ran. A wait is decided once: carry on from the RunResult that decision returned, or by "
                f"id: agent.resume({conversation_id!r}, store=...)"
            )
        else:
            message = (
                f"{head} was decided already in this process ({what}): a wait is decided once, so nothing ran "
                "now. Carry on from the RunResult that decision returned: if it failed midway (the API down, "
                "say), the decision still stands, and that result's messages keep all it did (agent.run"
                "(result.messages) goes on from there)"
            )
        super().__init__(message)


class ApprovalDecisionError(InvalidTransitionError):
    """An approval decision that does not decide the calls a run waits on: a call neither approved nor denied,
    an id the wait does not hold, or one both approved and denied. Nothing ran and nothing was saved: the run
    still waits, and can be decided again. ``pending`` lists the calls awaiting approval (``ToolCall``)."""

    def __init__(self, problem: str, pending: Sequence[object]) -> None:
        self.pending = list(pending)
        listed = ", ".join(f"{getattr(c, 'id', '?')} ({getattr(c, 'name', '?')})" for c in self.pending) or "none"
        super().__init__(
            f"{problem}. The calls awaiting approval: {listed}. Decide every one: "
            "agent.resume(id, approve=[ids] or approve=True, deny={id: 'reason'}) (or input="
            '{"approve": [...], "deny": {...}} with trigger="run_tools")'
        )


class InvalidConversationIdError(ConfigurationError):
    """A conversation id that is empty, blank or not a string, where an id is taken: refused before anything is
    stored, sent or enqueued."""

    def __init__(self, value: object, where: str) -> None:
        self.value, self.where = value, where
        if isinstance(value, str):
            problem = f"conversation id {value!r} is {'empty' if not value else 'blank'}"
        else:
            problem = f"a conversation id must be a string, got {type(value).__name__}"
        super().__init__(
            f"{where}: {problem}; an id names the conversation wherever it is kept (a store, an engine, a batch): "
            "give a non-empty string such as 'ticket-42', or leave it out (None) to have a new one made"
        )


def require_conversation_id(value: object, where: str) -> str:
    """``value`` if it can name a conversation (a string with something besides whitespace), else
    ``InvalidConversationIdError``; ``where`` names what took it (``"Agent.run"``)."""
    if isinstance(value, str) and value.strip():
        return value
    raise InvalidConversationIdError(value, where)


class InvalidActionError(AgentfsmError, ValueError):
    """An action cannot do what it was asked, or left a message history that breaks the rules every request keeps.

    Raised before anything is sent. The history is put back as it was before the action, and
    the conversation stays in the transition's source state (in the store too), so once the
    action (or the ``input`` given to ``resume``) is fixed, the conversation can be carried on.
    A ``ValueError`` too.
    """

    def __init__(
        self,
        message: str,
        *,
        action: str | None = None,
        transition: str | None = None,
        problems: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.action = action
        self.transition = transition
        #: For a broken history: (problem, the rule it breaks) pairs, in history order.
        self.problems = list(problems)
        super().__init__(redact(message))

    @classmethod
    def broken_history(cls, action: str, transition: str, problems: Sequence[tuple[str, str]]) -> InvalidActionError:
        found = "; ".join(f"{problem} (rule: {rule})" for problem, rule in problems)
        return cls(
            f"action {action} on {transition} left a message history that cannot be sent: {found}. The history "
            "is kept as it was before the action. Change the history through the actions of agentfsm.actions "
            "(answer_tool_calls, refuse_tool_calls, answer_with, add_user_message, keep_reply), or keep those rules",
            action=action,
            transition=transition,
            problems=problems,
        )


class ConversationLockedError(AgentfsmError):
    """Another worker holds the lease on this conversation: two workers must never advance it at once."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"conversation {conversation_id!r} is being advanced by another worker (its lease is held); "
            "wait for it to finish or for the lease to expire (Policy.lease_seconds), then resume"
        )


class UnknownConversationError(AgentfsmError, KeyError):
    """``resume``/``load`` was given an id the store does not hold. A ``KeyError`` too."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"no conversation {conversation_id!r} in the store: start one with "
            f"agent.run(prompt, store=..., conversation_id={conversation_id!r})"
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CorruptSnapshotError(AgentfsmError):
    """A stored conversation cannot be read back."""

    def __init__(self, conversation_id: str, problem: str) -> None:
        self.conversation_id = conversation_id
        self.problem = problem
        super().__init__(f"stored conversation {conversation_id!r} cannot be read: {problem}")


class IncompatibleAgentError(ConfigurationError):
    """A stored conversation is at a state the resuming Agent class does not have."""

    def __init__(self, conversation_id: str, stored_by: str, resumed_by: str, state: str) -> None:
        self.conversation_id = conversation_id
        self.stored_by, self.resumed_by, self.state = stored_by, resumed_by, state
        super().__init__(
            f"conversation {conversation_id!r} was stored by {stored_by} at state {state!r}, which {resumed_by} "
            f"does not have: resume it with an instance of {stored_by} (or of a class that declares {state!r})"
        )


# --- tool call errors: become is_error tool_results, never raised out of a run ---


class ToolCallError(AgentfsmError):
    """A tool call could not produce a result; ``str(self)`` is what the model reads."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        super().__init__(message)


class UnknownToolError(ToolCallError):
    def __init__(self, tool: str, known: Sequence[str]) -> None:
        names = ", ".join(repr(n) for n in sorted(known)) or "none"
        super().__init__(tool, f"unknown tool {tool!r}; the tools you can call are: {names}")


class ToolInputError(ToolCallError):
    """The input the model sent does not match the tool's input schema."""

    def __init__(self, tool: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "; ".join(self.problems)
        super().__init__(tool, f"invalid input for tool {tool!r}: {lines}. Fix the input and call the tool again.")


class ToolExecutionError(ToolCallError):
    """The tool function raised."""

    def __init__(self, tool: str, exc: BaseException) -> None:
        self.exc = exc
        try:
            said = str(exc)
        except Exception:  # an exception that cannot say what it is must not crash the run
            said = f"<{type(exc).__name__} whose message cannot be read>"
        super().__init__(tool, f"tool {tool!r} raised {type(exc).__name__}: {said}")


class ToolTimeoutError(ToolCallError):
    def __init__(self, tool: str, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(tool, f"tool {tool!r} did not finish within {seconds:g} s and was abandoned")


class ToolInterruptedError(ToolCallError):
    """The call was running when the agent process stopped (or the caller cancelled the run), and its tool is not
    marked idempotent."""

    def __init__(self, tool: str) -> None:
        super().__init__(
            tool,
            f"tool {tool!r} was running when the agent process stopped (or the run was cancelled); whether it "
            "finished is unknown, and it was not run again because it is not marked idempotent. Check its effect "
            "before calling it again.",
        )


class ToolReturnError(ToolCallError):
    """The tool returned something that cannot be sent to the API."""

    def __init__(self, tool: str, value: object) -> None:
        super().__init__(
            tool,
            f"tool {tool!r} returned a non-serialisable value of type {type(value).__name__}; "
            "return str, a list of content blocks, a pydantic model, or a JSON-serialisable value",
        )


# --- graphs, replay and the command line ---


class GraphvizNotFoundError(AgentfsmError):
    """SVG or PNG output was asked for and Graphviz's ``dot`` program is not installed."""

    def __init__(self, format: str = "svg") -> None:
        self.format = format
        super().__init__(
            f"{format.upper()} output needs Graphviz's `dot` program, which is not installed: install the "
            "system package `graphviz` (apt-get install graphviz, brew install graphviz, or "
            "conda install graphviz), or ask for format 'mermaid' or 'dot', which need nothing"
        )


class GraphvizRenderError(AgentfsmError):
    """Graphviz's ``dot`` ran and failed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Graphviz's dot failed: {detail}")


class EventsFileError(AgentfsmError, ValueError):
    """An events file (JSON lines) cannot be replayed: not JSON, not agentfsm events, or a broken trace."""

    def __init__(self, problem: str, source: str = "events", line: int | None = None) -> None:
        self.problem = problem
        self.line = line
        where = f"{source} line {line}" if line is not None else source
        super().__init__(f"{where}: {problem}")


class TargetNotFoundError(AgentfsmError):
    """A ``MODULE:NAME`` given on the command line does not name something that can be loaded."""


# --- stores -----------------------------------------------------------------------------------------------


class SnapshotVersionError(CorruptSnapshotError):
    """A stored conversation was written by a newer agentfsm, in a snapshot format this one does not know."""

    def __init__(self, conversation_id: str, version: object, understood: int) -> None:
        self.version = version
        super().__init__(
            conversation_id,
            f"its snapshot schema_version {version!r} is newer than this agentfsm understands ({understood}); "
            "upgrade agentfsm to read it",
        )


class StaleConversationError(ConversationLockedError):
    """Another worker advanced the conversation after this one loaded it: carrying on would fork its history."""

    def __init__(self, conversation_id: str, loaded: int, stored: int) -> None:
        AgentfsmError.__init__(
            self,
            f"conversation {conversation_id!r} was advanced by another worker after this one loaded it (loaded at "
            f"save #{loaded}, stored at save #{stored}); load it again (agent.resume / agent.load) to carry on",
        )
        self.conversation_id = conversation_id


class StoreError(AgentfsmError):
    """A store cannot be opened or used: not a store, made by a newer agentfsm, or its server is unreachable."""


class BatchError(AgentfsmError):
    """The Message Batches API could not be reached to create or follow a batch, even after retries.

    Nothing is lost: every conversation and every batch is stored, so running the same
    ``BatchRunner`` (or ``agentfsm batch``) again on the same store carries on where it stopped.
    """

    def __init__(self, doing: str, exc: BaseException) -> None:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        super().__init__(
            f"{doing} failed: {type(exc).__name__}: {redact(detail, ())}; nothing is lost — run again with the "
            "same store to carry on (stored batches are polled, never sent twice)"
        )


# --- durable engines (agentfsm.engines: DBOS, Temporal) ---


class EngineError(AgentfsmError):
    """A durable engine (DBOS, Temporal) cannot start, find or finish a conversation."""


class UnknownDurableConversationError(UnknownConversationError):
    """``engine.result(conversation_id)`` names a conversation the engine never started. A ``KeyError`` too."""

    def __init__(self, conversation_id: str, engine: str) -> None:
        AgentfsmError.__init__(
            self,
            f"no conversation {conversation_id!r} in {engine}: start one with "
            f"engine.start(agent, prompt, conversation_id={conversation_id!r})",
        )
        self.conversation_id = conversation_id


class ConversationTimeoutError(EngineError, TimeoutError):
    """A durable conversation did not finish within ``result(timeout=...)``; it carries on in the workers."""

    def __init__(self, conversation_id: str, timeout: float) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"conversation {conversation_id!r} did not finish within {timeout:g} s; it is still running on the "
            "workers: wait again with engine.result(conversation_id, timeout=...)"
        )


class DurableRunError(EngineError):
    """A durable conversation ended in an exception instead of a result (a hook or action raised, or the engine
    gave up on it); the message says which."""

    def __init__(self, conversation_id: str, problem: str) -> None:
        self.conversation_id = conversation_id
        self.problem = problem
        super().__init__(f"conversation {conversation_id!r} failed in its worker: {problem}")


class NoOutputError(AgentfsmError):
    """``RunResult.output_as`` was asked for a typed output the run does not have: it did not finish
    ``done`` (its output failed to validate, it was refused, truncated, waiting ...), or its agent had
    no ``output_type``, or the output does not validate as the type asked for."""

    def __init__(self, conversation_id: str, why: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"run {conversation_id!r} has no output to give: {why}")


class MCPServerError(AgentfsmError):
    """An MCP server a run needs failed: it could not be started, or it stopped answering (exited, crashed,
    its connection dropped). The run ends ``failed`` with this error (``result.error.type ==
    "MCPServerError"``), its history kept; the tool call that was running is answered ``is_error``."""

    def __init__(self, server: str, problem: str) -> None:
        # ``server`` names it as errors do: "MCP server 'files' (files_server.py)"
        self.server, self.problem = server, problem = server, redact(problem)
        super().__init__(f"{server}: {problem}")


class MCPToolError(ToolCallError):
    """An MCP tool answered ``isError: true`` (or the server rejected the call): its text is what the model reads."""


class ForkError(AgentfsmError, ValueError):
    """A stored run cannot be forked as asked (``agent.fork``, ``agentfsm runs fork``): the step is not one of its
    trace, its recorded history sizes do not give that step's history exactly, or the history (after ``edit=``)
    is not one the API accepts. Nothing is saved. A ``ValueError`` too."""

    def __init__(self, conversation_id: str, problem: str) -> None:
        self.conversation_id, self.problem = conversation_id, problem = conversation_id, redact(problem)
        super().__init__(f"cannot fork conversation {conversation_id!r}: {problem}")


class RecordingMismatchError(AgentfsmError):
    """A rerun with ``tools="fail"`` (``agent.rerun``) met a tool call the recording has no result for: the rerun
    stops there, with nothing run; its conversation is kept in the store at that call."""

    def __init__(self, conversation_id: str, original_id: str, call: str) -> None:
        self.conversation_id, self.original_id = conversation_id, original_id
        super().__init__(
            redact(
                f"rerun {conversation_id!r} called {call}, which run {original_id!r} has no recorded result for: "
                "tools='fail' stops the rerun here (tools='live' runs such a call, tools='refuse' answers it with "
                "an error the model reads)"
            )
        )
