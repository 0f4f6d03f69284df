"""Agent: the class users subclass to build an agent.

Class attributes configure it (model, system prompt, tools, policy); the
constructor's arguments override them for one instance, so an ``Agent`` is
also usable without subclassing. A subclass may add states and transitions
(``states``, ``transitions``), which are merged with the inherited table once
per class, and may override one hook per state, ``on_<state>``, to choose the
transition taken from it (``async def`` under ``arun``/``astream``). The table is
built and checked when the class is defined: a state the subclass adds must be
a ``Wait``, have a hook, or have exactly one way out (``table.unsafe_states``).

A run that reaches a ``Wait`` state returns ``final_state == "waiting"``;
``resume(id_or_result, trigger=..., input=...)`` carries it on. A tool with
``needs_approval`` stops the run in ``awaiting_tool_approval`` until
``resume(id_or_result, approve=..., deny=...)``. Around every tool call,
``before_tool`` may deny it or rewrite its input and ``after_tool`` may replace
its result (``agentfsm.machine.around``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anthropic

from agentfsm import debugging as _debugging
from agentfsm.errors import (
    AgentfsmError,
    ConfigurationError,
    InvalidHistoryError,
    UnknownConversationError,
    require_conversation_id,
)
from agentfsm.machine import decisions
from agentfsm.machine.conversation import Conversation
from agentfsm.machine.output import OutputSpec, spec_for
from agentfsm.machine.request import static_params
from agentfsm.machine.streaming import StreamEvent
from agentfsm.machine.table import (
    BASE_STATES,
    BASE_TRANSITIONS,
    Table,
    Transition,
    is_async,
    merge,
    unsafe_states,
)
from agentfsm.observe.events import default_logger
from agentfsm.policy import Policy
from agentfsm.result import RunResult
from agentfsm.stores.base import Store
from agentfsm.tools.calls import ToolCall, ToolResult
from agentfsm.tools.definition import Tool, tool_params
from agentfsm.tools.executor import ToolExecutor, shared_executor
from agentfsm.tools.hooks import Deny, Rewrite
from agentfsm.tools.mcp.scope import ToolSet
from agentfsm.tools.mcp.server import MCPServer
from agentfsm.wire.api import client_from_environment
from agentfsm.wire.messages import Message, answer_abandoned_calls, validate_history

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

_UNSET: Any = object()
_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|cookie|credential", re.IGNORECASE)
_C = TypeVar("_C", anthropic.Anthropic, anthropic.AsyncAnthropic)

DEFAULT_MODEL = "claude-sonnet-5-5"


class Agent:
    """A Claude agent run as a finite-state machine over the API's stop reasons.

    Subclass and set the class attributes, or pass them to the constructor::

        class WeatherAgent(Agent):
            model = "claude-sonnet-5-5"
            system = "You are a concise weather assistant."
            tools = [get_weather, {"type": "web_search_20250305", "name": "web_search"}]
            policy = Policy(max_tokens=1024)

        result = WeatherAgent(client=anthropic.Anthropic()).run("Weather in Hanoi?")
    """

    model: str = DEFAULT_MODEL
    system: str | list[dict[str, Any]] | None = None
    #: ``@tool`` functions, server-tool dicts, and ``MCPServer``s (agentfsm.tools.mcp): their tools, listed.
    tools: Sequence[Tool | dict[str, Any] | MCPServer] = ()
    policy: Policy = Policy()
    #: Any other Messages API parameters sent with every request (temperature, stop_sequences, thinking, ...).
    request_params: Mapping[str, Any] = {}
    #: Beta feature names; when set, requests go through ``client.beta.messages``.
    betas: Sequence[str] = ()
    #: The type of the answer (a pydantic model, or any type ``pydantic.TypeAdapter`` validates): the run's
    #: ``result.output`` is one, validated (``agentfsm.machine.output``). None: a text answer only.
    output_type: Any = None
    #: The API's MCP connector: servers the API itself connects to (``{"type": "url", "name", "url",
    #: "authorization_token"?}``), sent as ``mcp_servers`` with its beta; each gets an ``mcp_toolset`` entry in
    #: ``tools`` unless the tools configure it. Their ``mcp_tool_use``/``mcp_tool_result`` blocks are the server's.
    mcp_servers: Sequence[Mapping[str, Any]] = ()
    #: OpenTelemetry spans of this agent's runs go to this provider (``agentfsm[otel]``); None follows
    #: ``agentfsm.otel.instrument()`` (no spans unless it was called).
    tracer_provider: TracerProvider | None = None

    #: States and transitions this class adds to its parent's table (see ``agentfsm.machine.table``);
    #: a state declared ``Wait("name")`` is where a run stops until it is resumed with a trigger.
    states: ClassVar[Sequence[str]] = ()
    transitions: ClassVar[Sequence[Transition]] = ()
    _table: ClassVar[Table | None] = None
    _async: ClassVar[tuple[frozenset[str], tuple[str, ...]] | None] = None
    _tool_hooks: ClassVar[tuple[tuple[bool, bool], tuple[bool, bool]] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Build and check the class's table now, so a mistake in it is an error where the class is defined."""
        super().__init_subclass__(**kwargs)
        table = cls.table()
        declared = {str(s) for c in cls.__mro__ if issubclass(c, Agent) for s in c.__dict__.get("states", ())}
        problems = unsafe_states(table, declared=declared, has_hook=lambda s: callable(getattr(cls, f"on_{s}", None)))
        if problems:
            raise ConfigurationError(f"{cls.__qualname__}: " + "; ".join(problems))
        cls._async_info()

    def __init__(
        self,
        client: anthropic.Anthropic | anthropic.AsyncAnthropic | None = None,
        *,
        model: str | None = None,
        system: str | list[dict[str, Any]] | None = _UNSET,
        tools: Sequence[Tool | dict[str, Any] | MCPServer] | None = None,
        policy: Policy | None = None,
        executor: ToolExecutor | None = None,
        request_params: Mapping[str, Any] | None = None,
        betas: Sequence[str] | None = None,
        output_type: Any = _UNSET,
        mcp_servers: Sequence[Mapping[str, Any]] | None = None,
        logger: Any = _UNSET,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._client: anthropic.Anthropic | anthropic.AsyncAnthropic | None = None
        self._aclient: anthropic.AsyncAnthropic | None = None
        if isinstance(client, anthropic.AsyncAnthropic):
            self._aclient = client
        elif client is not None:
            self._client = client
        if model is not None:
            self.model = model
        if system is not _UNSET:
            self.system = system
        if tools is not None:
            self.tools = tools
        if policy is not None:
            self.policy = policy
        if request_params is not None:
            self.request_params = request_params
        if betas is not None:
            self.betas = betas
        if output_type is not _UNSET:
            self.output_type = output_type
        if mcp_servers is not None:
            self.mcp_servers = mcp_servers
        if not isinstance(self.policy, Policy):
            raise ConfigurationError(f"policy must be an agentfsm.Policy, got {type(self.policy).__name__}")
        # Every run of every driver, engine and the batch runner is made from an Agent: checked here, once,
        # before any request. A model that only turns up at run time (a server-side fallback) cannot be.
        self.policy.require_prices([self.model, *self.policy.named_models()])
        self.executor: ToolExecutor = executor if executor is not None else shared_executor()
        # By default: the standard library logger "agentfsm", silent until the application configures logging.
        self.logger: Any = default_logger() if logger is _UNSET else logger
        if tracer_provider is not None:
            from agentfsm.observe.otel import check_provider

            self.tracer_provider = check_provider(tracer_provider)
        local = [t for t in self.tools if not isinstance(t, MCPServer)]
        self._tool_map: dict[str, Tool] = {t.name: t for t in local if isinstance(t, Tool)}
        #: How the run asks for ``output_type`` and validates it; None without one.
        self.output_spec: OutputSpec | None = (
            None
            if self.output_type is None
            else spec_for(self.output_type, self.policy, [self.model, *self.policy.fallback_chain])
        )
        self._static_params = static_params(self, local)
        #: The tools with the MCP servers' among them (None: no MCP server; the tools never change). The
        #: connector's toolsets and the final-answer tool of an output_type come after the servers' tools.
        self.toolset: ToolSet | None = None
        if len(local) < len(self.tools):
            self.toolset = ToolSet(self.tools, extra=self._static_params.get("tools", [])[len(tool_params(local)) :])

    # --- the state table, once per class ----------------------------------------------------

    @classmethod
    def table(cls) -> Table:
        """This class's states and transitions (its own, then its parents')."""
        table = cls.__dict__.get("_table")
        if table is None:
            parent = next((b for b in cls.__mro__[1:] if issubclass(b, Agent)), None)
            if parent is None:
                table = merge(None, BASE_STATES, BASE_TRANSITIONS)
            else:
                table = merge(parent.table(), cls.__dict__.get("states", ()), cls.__dict__.get("transitions", ()))
            cls._table = table
        return table

    @classmethod
    def _async_info(cls) -> tuple[frozenset[str], tuple[str, ...]]:
        info = cls.__dict__.get("_async")
        if info is None:
            table = cls.table()
            hooks = frozenset(s for s in table.states if is_async(getattr(cls, f"on_{s}", None)))
            parts = [f"on_{s}" for s in table.states if s in hooks]
            parts += [getattr(t.action, "__qualname__", repr(t.action)) for t in table.transitions if t.awaits]
            parts += [name for name in ("before_tool", "after_tool") if is_async(getattr(cls, name))]
            info = (hooks, tuple(dict.fromkeys(parts)))
            cls._async = info
        return info

    @classmethod
    def async_hook_states(cls) -> frozenset[str]:
        """The states whose hook is ``async def`` (the async drivers await it)."""
        return cls._async_info()[0]

    @classmethod
    def tool_hooks(cls) -> tuple[tuple[bool, bool], tuple[bool, bool]]:
        """``((defined, async), (defined, async))`` for ``before_tool`` and ``after_tool``: whether this class
        overrides each, and whether it is ``async def`` (``agentfsm.machine.around`` asks them)."""
        found = cls.__dict__.get("_tool_hooks")
        if found is None:
            before, after = cls.before_tool, cls.after_tool
            found = (
                (before is not Agent.before_tool, is_async(before)),
                (after is not Agent.after_tool, is_async(after)),
            )
            cls._tool_hooks = found
        return found

    @classmethod
    def async_parts(cls) -> tuple[str, ...]:
        """The ``async def`` hooks and actions of this class: with any, only arun/astream/aresume can run it."""
        return cls._async_info()[1]

    @classmethod
    def qualified_name(cls) -> str:
        """``module:QualName``: how events and results name the class, and how the CLI loads it."""
        return f"{cls.__module__}:{cls.__qualname__}"

    # --- running --------------------------------------------------------------------------------

    def run(
        self,
        prompt: str | Sequence[Message],
        *,
        conversation_id: str | None = None,
        store: Store | None = None,
    ) -> RunResult:
        """Run one conversation to a final state: done, truncated, refused or failed (or ``waiting``).

        ``prompt`` is a string or a Messages API history (which may end in an
        assistant prefill). An invalid history raises ``ValueError`` before
        any request is sent. API errors do not raise: they end the run in
        ``failed`` with ``result.error`` set and the history kept. With a
        ``store``, the conversation is saved after every transition and can be
        carried on with ``resume`` after a crash. A run that reaches a ``Wait``
        returns normally with ``final_state == "waiting"``: ``resume`` decides it.
        """
        return self.start(prompt, conversation_id=conversation_id, store=store, asynchronous=False).run()

    def stream(
        self, prompt: str | Sequence[Message], *, conversation_id: str | None = None, store: Store | None = None
    ) -> Iterator[StreamEvent]:
        """Run over streamed requests, yielding text deltas, transitions and tool calls as they happen.

        The last event is a ``ResultEvent`` carrying the same ``RunResult`` ``run`` returns.
        """
        return self.start(prompt, conversation_id=conversation_id, store=store, asynchronous=False).stream()

    async def arun(
        self, prompt: str | Sequence[Message], *, conversation_id: str | None = None, store: Store | None = None
    ) -> RunResult:
        """``run`` with an ``anthropic.AsyncAnthropic`` client."""
        return await self.start(prompt, conversation_id=conversation_id, store=store, asynchronous=True).arun()

    def astream(
        self, prompt: str | Sequence[Message], *, conversation_id: str | None = None, store: Store | None = None
    ) -> AsyncIterator[StreamEvent]:
        """``stream`` with an ``anthropic.AsyncAnthropic`` client."""
        return self.start(prompt, conversation_id=conversation_id, store=store, asynchronous=True).astream()

    def start(
        self,
        prompt: str | Sequence[Message],
        *,
        conversation_id: str | None = None,
        store: Store | None = None,
        asynchronous: bool | None = None,
    ) -> Conversation:
        """Begin a conversation without running it: step it with ``conversation.step()`` (or ``astep``).

        ``asynchronous`` says which client the conversation will use (True: ``AsyncAnthropic``,
        False: ``Anthropic``), so a missing key or a client of the wrong kind is reported now; left
        None, the client the agent was given decides, and a driver of the other kind raises
        ``ConfigurationError`` before sending anything. A ``conversation_id`` that is empty or blank is a
        ``ConfigurationError`` too (leave it None for a new one).
        """
        if conversation_id is not None:
            require_conversation_id(conversation_id, "Agent.run")
        messages = self._initial_messages(prompt)
        self._check_client(asynchronous)
        if store is not None and conversation_id is not None:
            try:
                store.load(conversation_id)
            except KeyError:
                pass
            else:
                raise ConfigurationError(
                    f"conversation {conversation_id!r} is already in the store: carry it on with "
                    "agent.resume(conversation_id, store=...), or pick a new id"
                )
        return Conversation(self, messages, conversation_id, store=store)

    def load(
        self,
        conversation: str | RunResult,
        *,
        store: Store | None = None,
        trigger: str | None = None,
        input: Any = None,
        asynchronous: bool | None = None,
        approve: Sequence[str] | bool | None = None,
        deny: Mapping[str, str] | Sequence[str] | None = None,
    ) -> Conversation:
        """A stored conversation, rebuilt at its last transition (step it, inspect it, or run it).

        ``conversation`` is an id in ``store``, or a ``RunResult`` that stopped waiting (then no
        store is needed: the result carries the conversation). ``trigger``/``input`` (or, waiting
        for approval, ``approve``/``deny``) decide a waiting conversation as ``resume`` does;
        ``load(...).stream()`` resumes it streamed.
        ``asynchronous`` as for ``start``.

        A waiting result names one wait, and a wait is decided once: a result whose wait was decided
        already raises ``AlreadyDecidedError`` (with a store: the stored conversation has moved past that
        wait; without one: this process decided it), and nothing runs.

        Raises ``UnknownConversationError`` for an id the store does not hold, ``CorruptSnapshotError``
        for a row that cannot be read back as a valid conversation, and ``IncompatibleAgentError``
        when the conversation is at a state this Agent class does not have.
        """
        if not isinstance(conversation, RunResult):
            require_conversation_id(conversation, "Agent.resume")
        self._check_client(asynchronous)
        if store is not None:
            cid = conversation.conversation_id if isinstance(conversation, RunResult) else conversation
            try:
                snapshot = store.load(cid)
            except KeyError:
                raise UnknownConversationError(cid) from None
            if isinstance(conversation, RunResult):
                decisions.check_same_wait(conversation, snapshot)
        elif isinstance(conversation, RunResult):
            own = conversation.snapshot
            if own is None:
                if conversation.final_state == "waiting":
                    raise ConfigurationError(
                        f"this waiting result of run {conversation.conversation_id!r} carries no conversation: a "
                        "RunResult read back from its own JSON does not (result.snapshot is not part of it). Resume "
                        "the RunResult the run returned, a copy made with agentfsm.engines.core.result_to_json / "
                        "result_from_json, or give store= to carry on a stored one"
                    )
                raise ConfigurationError(
                    f"run {conversation.conversation_id!r} is {conversation.final_state}, not waiting: only a result "
                    "that stopped to wait carries its conversation (give store= to carry on a stored one)"
                )
            if own.wait_token is None:  # made before waits were named: this object, at least, is decided once
                own.wait_token = uuid.uuid4().hex
            if own.waiting is not None:  # a wait this process decided (or is deciding) is not handed out again
                decisions.check(conversation.conversation_id, own.state, own.wait_token)
            snapshot = own.model_copy(deep=True)
        else:
            raise ConfigurationError(
                f"resume needs store= to find conversation {conversation!r}, or the waiting RunResult itself: "
                "agent.resume(result, trigger=...)"
            )
        if approve is not None or deny is not None:
            trigger, input = decisions.approval_decision(trigger, input, approve, deny)
        conv = Conversation.restore(self, snapshot, store)
        if trigger is not None or input is not None:
            conv.decide(trigger, input=input)
        return conv

    def _resumed(
        self,
        conversation: str | RunResult,
        store: Store | None,
        trigger: str | None,
        input: Any,
        asynchronous: bool,
        approve: Sequence[str] | bool | None = None,
        deny: Mapping[str, str] | Sequence[str] | None = None,
    ) -> Conversation:
        conv = self.load(
            conversation,
            store=store,
            trigger=trigger,
            input=input,
            asynchronous=asynchronous,
            approve=approve,
            deny=deny,
        )
        if conv.waiting is not None:
            conv.decide()  # no trigger: ask the waiting state's hook again (it may decide now, or wait on)
        return conv

    def resume(
        self,
        conversation: str | RunResult,
        *,
        store: Store | None = None,
        trigger: str | None = None,
        input: Any = None,
        approve: Sequence[str] | bool | None = None,
        deny: Mapping[str, str] | Sequence[str] | None = None,
    ) -> RunResult:
        """Carry a conversation on to a final state, or to its next wait.

        A stored one after a crash (committed tool results are not run again); or a waiting
        one, along ``trigger`` (a transition leaving the waiting state; anything else is an
        ``InvalidTransitionError`` listing the ones that can), with ``input`` (JSON) for the
        hook and the action as ``conv.input``. Without a trigger, a waiting state's hook is
        asked again. ``conversation`` is an id in ``store``, or a waiting ``RunResult`` (then
        no store is needed, in the same process).

        A waiting result is decided once: resuming it again (or a copy of it) raises
        ``AlreadyDecidedError`` and runs nothing, even when the first resume failed midway —
        carry on from what that resume returned. Input that is not JSON (NaN, Infinity, more
        than 100 levels deep) is a ``ConfigurationError``, and nothing is saved.

        Waiting in ``awaiting_tool_approval`` (a tool with ``needs_approval``): ``approve=[ids]`` (or
        ``True``: every call not denied) runs those calls, ``deny={id: "reason"}`` answers those with an
        ``is_error`` result carrying the reason, and the run carries on. Every call awaiting approval
        (``result.pending_tool_calls``) must be in one or the other: else ``ApprovalDecisionError``, listing
        them, and the run still waits. ``approve``/``deny`` are the trigger ``run_tools`` with
        ``input={"approve": [...], "deny": {...}}``.
        """
        return self._resumed(conversation, store, trigger, input, False, approve, deny).run()

    async def aresume(
        self,
        conversation: str | RunResult,
        *,
        store: Store | None = None,
        trigger: str | None = None,
        input: Any = None,
        approve: Sequence[str] | bool | None = None,
        deny: Mapping[str, str] | Sequence[str] | None = None,
    ) -> RunResult:
        """``resume`` with an ``anthropic.AsyncAnthropic`` client (async hooks and actions are awaited)."""
        return await self._resumed(conversation, store, trigger, input, True, approve, deny).arun()

    @staticmethod
    def _initial_messages(prompt: str | Sequence[Message]) -> list[Message]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise InvalidHistoryError("the prompt is empty")
            return [{"role": "user", "content": prompt}]
        if isinstance(prompt, bytes | bytearray) or not isinstance(prompt, Sequence):
            raise InvalidHistoryError(
                f"the prompt must be a string or a non-empty list of message dicts, got {type(prompt).__name__}"
            )
        return validate_history(answer_abandoned_calls(list(prompt)))

    @property
    def client(self) -> anthropic.Anthropic:
        """The sync SDK client; made from the environment (``ANTHROPIC_API_KEY``) when no client was given.

        An agent given only an ``AsyncAnthropic`` client never makes a sync one behind the caller's
        back (it would talk to wherever the environment points): ``ConfigurationError`` instead.
        """
        if self._client is None:
            if self._aclient is not None:
                raise ConfigurationError(
                    "run() and stream() need an anthropic.Anthropic client, and this agent was given an "
                    "anthropic.AsyncAnthropic one: use arun() / astream(), or pass client=anthropic.Anthropic(...)"
                )
            self._client = client_from_environment(anthropic.Anthropic)
        if not isinstance(self._client, anthropic.Anthropic):
            raise ConfigurationError(
                f"run() and stream() need an anthropic.Anthropic client; this agent has a "
                f"{type(self._client).__name__}: use arun() / astream()"
            )
        return self._client

    @property
    def aclient(self) -> anthropic.AsyncAnthropic:
        """The async SDK client; made from the environment when no client was given (``ConfigurationError``
        when the agent was given a sync ``Anthropic`` client: it is never swapped for one from the environment)."""
        if self._aclient is None:
            if self._client is not None:
                raise ConfigurationError(
                    f"arun() and astream() need an anthropic.AsyncAnthropic client, and this agent was given a "
                    f"{type(self._client).__name__} one: use run() / stream(), or pass "
                    "client=anthropic.AsyncAnthropic(...)"
                )
            self._aclient = client_from_environment(anthropic.AsyncAnthropic)
        return self._aclient

    def _check_client(self, asynchronous: bool | None) -> None:
        """Raise now (not at the first request) for a missing key or a client of the wrong kind."""
        if asynchronous is None:  # whichever kind was given; none given: the environment's sync client
            asynchronous = self._aclient is not None and self._client is None
        _ = self.aclient if asynchronous else self.client

    # --- hooks: one per state -------------------------------------------------------------------

    def hook(self, state: str, conv: Conversation) -> Any:
        """Ask ``on_<state>`` which trigger to fire: a trigger, ``Wait`` to stop here, or None to let the
        table decide (first allowed; in a ``Wait`` state, None waits)."""
        method = getattr(self, f"on_{state}", None)
        if method is None:
            return None
        return method(conv)

    def on_requesting(self, conv: Conversation) -> str | None:
        """Before a request. Return a trigger to leave ``requesting`` without sending one."""
        return None

    def on_end_turn(self, conv: Conversation) -> str | None:
        return None

    def on_max_tokens(self, conv: Conversation) -> str | None:
        return None

    def on_stop_sequence(self, conv: Conversation) -> str | None:
        return None

    def on_tool_use(self, conv: Conversation) -> str | None:
        return None

    def on_pause_turn(self, conv: Conversation) -> str | None:
        return None

    def on_compaction(self, conv: Conversation) -> str | None:
        return None

    def on_refusal(self, conv: Conversation) -> str | None:
        return None

    def on_model_context_window_exceeded(self, conv: Conversation) -> str | None:
        return None

    def on_unknown_stop_reason(self, conv: Conversation) -> str | None:
        return None

    # --- hooks around every tool call ------------------------------------------------------------

    def before_tool(
        self, call: ToolCall, conv: Conversation
    ) -> Deny | Rewrite | Awaitable[Deny | Rewrite | None] | None:
        """Asked before each client tool call runs (after its approval, if its tool needs one).

        Return None to run it, ``Deny("reason")`` to answer it with an ``is_error`` result carrying the
        reason (the function never runs), or ``Rewrite(input={...})`` to run it with that input instead
        (validated against the tool's schema first; an input that does not validate is an ``is_error``
        result saying so). May be ``async def`` (then only ``arun``/``astream``/``aresume`` and the
        engines run the agent). A hook that raises fails closed: the call is not run.
        """
        return None

    def after_tool(
        self, call: ToolCall, result: ToolResult, conv: Conversation
    ) -> ToolResult | Awaitable[ToolResult | None] | None:
        """Asked after each client tool call the executor ran, with the call as it ran and its result.

        Return None to keep the result, or a ``ToolResult`` to send instead (it answers the same call).
        May be ``async def``. A hook that raises fails closed: the result is withheld, and the model reads
        an ``is_error`` result saying the check failed.
        """
        return None

    # --- what conversations ask of their agent ------------------------------------------------

    def static_params(self) -> dict[str, Any]:
        """Request parameters that are the same for every request of every run (with MCP servers among the
        tools: ``tools`` is their current lists, and changes when a server's list does)."""
        if self.toolset is None:
            return self._static_params
        tools, _ = self.toolset.current()
        cached = self.__dict__.get("_mcp_params")
        if cached is not None and cached[0] is tools:
            return cached[1]  # type: ignore[no-any-return]
        params = {**self._static_params, "tools": tools}
        if not tools:
            del params["tools"]
        self.__dict__["_mcp_params"] = (tools, params)
        return params

    @property
    def tool_map(self) -> dict[str, Tool]:
        """The client tools by name, as executors receive them (MCP servers' tools included, as now listed)."""
        if self.toolset is None:
            return self._tool_map
        return self.toolset.current()[1]

    def tools_problem(self) -> AgentfsmError | None:
        """Why a run cannot go on with this agent's tools (an MCP server failed, or two tools got one name
        when a server listed its tools again), or None. Asked before every request."""
        return None if self.toolset is None else self.toolset.problem()

    # --- MCP servers kept open across runs -----------------------------------------------------------

    def __enter__(self) -> Agent:
        """``with agent:`` keeps the agent's MCP servers open across its runs (each run otherwise starts
        and stops them). A server that fails to start raises ``MCPServerError`` here."""
        if self.toolset is not None:
            self.toolset.open()
            failed = next((s.failure for s in self.toolset.servers if s.failure is not None), None)
            if failed is not None:
                self.toolset.close()
                raise failed
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.toolset is not None:
            self.toolset.close()
            self.toolset.release_lazy()

    async def __aenter__(self) -> Agent:
        """``async with agent:``: ``with agent:``, awaited."""
        if self.toolset is not None:
            await self.toolset.aopen()
            failed = next((s.failure for s in self.toolset.servers if s.failure is not None), None)
            if failed is not None:
                await self.toolset.aclose()
                raise failed
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.toolset is not None:
            await self.toolset.aclose()
            await self.toolset.arelease_lazy()

    def close(self) -> None:
        """Stop the MCP servers this agent opened outside a run (stepping, a durable engine's worker)."""
        if self.toolset is not None:
            self.toolset.release_lazy()

    def secrets(self) -> list[str]:
        """Credential strings that must never reach an event, an error, a log line or a stored row.

        Every credential the clients hold, whatever its shape: ``api_key``, ``auth_token``, and the
        values of credential headers given as ``default_headers`` (``Authorization``, ``x-api-key``,
        anything naming a key, token, secret or cookie), with and without their ``Bearer`` scheme.
        """
        cached = self.__dict__.get("_secrets_cache")
        # Asked for on every request and event log: kept while the agent holds the same client objects.
        if cached is not None and cached[0] is self._client and cached[1] is self._aclient:
            return list(cached[2])
        found: list[str] = []
        for client in (self._client, self._aclient):
            if client is None:
                continue
            found += [s for s in (client.api_key, client.auth_token) if isinstance(s, str) and s]
            headers = getattr(client, "_custom_headers", None)
            if isinstance(headers, Mapping):
                for name, value in headers.items():
                    if isinstance(value, str) and value and _CREDENTIAL_HEADER.search(str(name)):
                        found.append(value)
                        scheme, _, rest = value.partition(" ")
                        if rest and scheme.lower() in ("bearer", "basic", "token"):
                            found.append(rest.strip())
        if self.toolset is not None:
            found += self.toolset.credentials()
        found += [str(s["authorization_token"]) for s in self.mcp_servers if s.get("authorization_token")]
        secrets = list(dict.fromkeys(found))
        self.__dict__["_secrets_cache"] = (self._client, self._aclient, tuple(secrets))
        return secrets

    fork = _debugging.fork.fork  # agent.fork(id, store=, at=, ...): a stored run's history after a step, ready to run
    rerun = _debugging.rerun.rerun  # agent.rerun(id, store=, tools="recorded", ...): again, tools from the recording

    # --- drawing ---------------------------------------------------------------------------------

    @classmethod
    def graph(cls, format: str = "mermaid") -> str:
        """This class's state graph, added states and transitions included: ``mermaid``, ``dot`` or ``svg`` text."""
        from agentfsm.observe.graph import agent_graph

        return agent_graph(cls, format)
