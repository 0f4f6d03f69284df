"""Fork a stored run at a step: a new conversation whose history is exactly the history after that step.

A store keeps one snapshot per run (its latest), and each step of its trace records the size of the history
after it (``TraceStep.history_size``). The library's actions only grow the history, except a compaction, which
moves the messages it summarises to ``replaced_messages`` and starts over from its block. So the history after
step ``k`` is the final transcript's compaction segment that step ``k`` falls in, cut to step ``k``'s size
(``agentfsm.observe.ui.history.history_at``, the inspector's own cut), with the earlier segments as its
``replaced_messages``: byte for byte what the run held then.

Decisions (docs/14-debugging-and-evaluating.md says them to users):

* ``at`` counts steps as ``result.trace`` does: 1 is after the first transition; 0 is the prompt the run
  started from (the history when its first step left ``requesting``, which no such step changes).
* The fork starts in ``requesting``, ready to send its next request; nothing is sent until it is run. A reply
  received at step ``k`` but not yet acted on (a tool round not yet answered, a wait not yet decided, a text cut
  at max_tokens not yet continued) is not part of the history: the fork asks for it again, under its overrides
  — that is the "what if this step had gone to another model" question. A history that ends in an assistant
  turn is sent as a prefill (as ``agent.run(history)`` would), so a continuation goes on from its text.
* A history that ends in client ``tool_use`` blocks with no results (only a custom action that keeps a reply
  before its calls are answered makes one) starts in ``tool_use`` with those calls pending: they run, live, when
  the fork runs (under ``agent.rerun``, answered from the recording).
* The fork's counters, usage, cost and trace start at zero: they are the fork's own (but for the compactions
  its history holds, which count against ``max_compactions``; a history that opens with a compaction block
  is treated as just compacted). Its answer holds the trailing prefill's text, if any (a continuation by
  prompt stitched text the fork does not hold).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentfsm.errors import ConfigurationError, ForkError, InvalidHistoryError, require_conversation_id
from agentfsm.machine.state import Counters, ForkedFrom
from agentfsm.observe.ui.history import history_at
from agentfsm.stores.base import Snapshot, Store
from agentfsm.tools.executor import ToolExecutor
from agentfsm.wire import models
from agentfsm.wire.api import RequestFailure, reply_from
from agentfsm.wire.messages import blocks, opens_with_compaction, text_of, tool_use_ids, validate_history

if TYPE_CHECKING:
    from agentfsm.agent import Agent
    from agentfsm.machine.conversation import Conversation
    from agentfsm.policy import Policy

Message = dict[str, Any]
#: ``edit=``: given the fork's history (a copy), returns the history to start from (or changes it and returns None).
Edit = Callable[[list[Message]], "list[Message] | None"]


def history_after(parent: Snapshot, at: int) -> tuple[list[Message], list[Message]]:
    """``(replaced_messages, messages)`` as they stood after step ``at`` of the stored run ``parent``.

    Raises ``ForkError`` for a step that is not in its trace, or a trace whose sizes do not give that history
    exactly (written before agentfsm kept them, or a custom action rewrote the history).
    """
    cid = parent.conversation_id
    trace = parent.trace
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= len(trace):
        raise ForkError(cid, f"at={at!r} is not a step of its trace: give 0 (its prompt) to {len(trace)}")
    if not trace:
        raise ForkError(cid, "it has no steps to fork at")
    sizes = [step.history_size for step in trace]
    if any(size is None for size in sizes):
        raise ForkError(cid, "it was recorded before agentfsm kept the history's size at each step")
    # The transcript's compaction segments: the history shrinks at each compaction applied.
    transcript = [*parent.replaced_messages, *parent.messages]
    segments: list[list[Message]] = []
    start = 0
    for i in range(1, len(sizes)):
        before, now = sizes[i - 1], sizes[i]
        assert before is not None and now is not None
        if now < before:
            segments.append(transcript[start : start + before[0]])
            start += before[0]
    segments.append(transcript[start:])
    if start != len(parent.replaced_messages):
        raise ForkError(
            cid,
            f"its history shrank {len(segments) - 1} times, but not by the {len(parent.replaced_messages)} messages "
            "its compactions replaced (a custom action rewrote it): no step's history can be told exactly",
        )
    step = max(at, 1)  # step 0, the prompt: the history when the first step left requesting
    known = [size for size in sizes if size is not None]
    segment = sum(1 for i in range(1, step) if known[i] < known[i - 1])
    size = known[step - 1]
    if size[0] > len(segments[segment]):
        raise ForkError(cid, f"step {step} recorded {size[0]} messages, more than the stored history holds")
    replaced = [m for seg in segments[:segment] for m in seg]
    return copy.deepcopy(replaced), copy.deepcopy(history_at(segments[segment], size))


def fork_snapshot(
    parent: Snapshot,
    at: int,
    *,
    new_id: str,
    agent: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    continuation_mode: str | None = None,
    edit: Edit | None = None,
) -> Snapshot:
    """The snapshot a fork of ``parent`` at step ``at`` starts from (not saved): ready to run in ``requesting``
    (or ``tool_use``, its calls pending). ``agent``, ``model``, ``max_tokens`` and ``continuation_mode`` default to
    the parent's. Imports no agent code: ``agentfsm runs fork`` makes one from a stored row alone."""
    cid = parent.conversation_id
    replaced, messages = history_after(parent, at)
    if edit is not None:
        edited = edit(messages)
        messages = messages if edited is None else edited
    try:
        validate_history(messages, stored=True)  # every rule but those about the last message
        pending = messages[-1]["role"] == "assistant" and bool(tool_use_ids(messages[-1]))
        if not pending:  # then it must be a history to send as it is
            validate_history(messages)
    except InvalidHistoryError as exc:
        where = "the edited history" if edit is not None else f"the history after step {at}"
        raise ForkError(cid, f"{where} is not one the API accepts: {exc}") from None
    fields: dict[str, Any] = {
        "conversation_id": new_id,
        "agent": agent or parent.agent,
        "messages": messages,
        "replaced_messages": replaced,
        "model": model or parent.model,
        "max_tokens": max_tokens or parent.max_tokens,
        "continuation_mode": continuation_mode or parent.continuation_mode,
        "request": parent.request,
        "graph": parent.graph,
        "forked_from": ForkedFrom(conversation_id=cid, step=at),
        "revision": 1,
    }
    if opens_with_compaction(messages[0]):  # as the run stood after the compaction: it counts, and is recent
        compactions = sum(1 for m in [*replaced, messages[0]] if opens_with_compaction(m))
        fields.update(counters=Counters(compactions=compactions), compaction_applied_at=0)
    last = messages[-1]
    if pending:
        reply = reply_from(
            {
                "id": f"msg_fork_{uuid.uuid4().hex[:20]}",
                "type": "message",
                "role": "assistant",
                "model": fields["model"],
                "content": last["content"],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        )
        if isinstance(reply, RequestFailure):
            raise ForkError(cid, f"its pending tool calls cannot be read: {reply.message}")
        fields.update(state="tool_use", reply=reply, reply_kept=True, answer=text_of(blocks(last)))
    elif last.get("role") == "assistant":
        alone = len(messages) == 1 and opens_with_compaction(last)
        fields.update(pending_kind="compacted" if alone else "caller_prefill", answer=text_of(blocks(last)))
    return Snapshot(**fields)


def with_overrides(
    agent: Agent,
    *,
    model: str | None = None,
    policy: Policy | None = None,
    system: str | list[dict[str, Any]] | None = None,
    executor: ToolExecutor | None = None,
) -> Agent:
    """``agent`` itself when nothing is overridden, else a copy of it (its class, its other settings and any
    attributes a subclass set) with these settings: made by the base ``Agent.__init__``, so every check and
    derived setting (prices, the output type's request) holds for the new ones."""
    if model is None and policy is None and system is None and executor is None:
        return agent
    from agentfsm.agent import Agent

    other = copy.copy(agent)
    Agent.__init__(
        other,
        agent._client or agent._aclient,
        model=model or agent.model,
        system=agent.system if system is None else system,
        tools=agent.tools,
        policy=policy or agent.policy,
        executor=executor or agent.executor,
        request_params=agent.request_params,
        betas=agent.betas,
        output_type=agent.output_type,
        mcp_servers=agent.mcp_servers,
        logger=agent.logger,
        tracer_provider=agent.tracer_provider,
    )
    other._client, other._aclient = agent._client, agent._aclient
    return other


def new_fork_id(store: Store, parent_id: str, new_id: str | None, kind: str = "fork") -> str:
    """``new_id``, checked and not in ``store`` yet; or a fresh ``{parent_id}-{kind}-{hex}``."""
    if new_id is None:
        return f"{parent_id}-{kind}-{uuid.uuid4().hex[:8]}"
    require_conversation_id(new_id, "fork")
    try:
        store.load(new_id)
    except KeyError:
        return new_id
    raise ConfigurationError(f"conversation {new_id!r} is already in the store: pick another new_id")


def load_parent(store: Store, conversation_id: str) -> Snapshot:
    from agentfsm.errors import UnknownConversationError

    require_conversation_id(conversation_id, "fork")
    try:
        return store.load(conversation_id)
    except KeyError:
        raise UnknownConversationError(conversation_id) from None


def start_fork(
    agent: Agent,
    parent: Snapshot,
    at: int,
    *,
    store: Store,
    new_id: str | None,
    edit: Edit | None,
    asynchronous: bool | None = None,
) -> Conversation:
    """Save the fork of ``parent`` at ``at`` under ``agent``'s settings and return it loaded, ready to run."""
    fid = new_fork_id(store, parent.conversation_id, new_id)
    auto_prompt = agent.policy.continuation == "auto" and not models.prefill_allowed(agent.model, by=agent)
    mode = "prompt" if agent.policy.continuation == "prompt" or auto_prompt else "prefill"
    snap = fork_snapshot(
        parent,
        at,
        new_id=fid,
        agent=type(agent).qualified_name(),
        model=agent.model,
        max_tokens=agent.policy.max_tokens,
        continuation_mode=mode,
        edit=edit,
    )
    store.save(snap)
    return agent.load(fid, store=store, asynchronous=asynchronous)


def fork(
    agent: Agent,
    conversation_id: str,
    *,
    store: Store,
    at: int,
    new_id: str | None = None,
    model: str | None = None,
    policy: Policy | None = None,
    system: str | list[dict[str, Any]] | None = None,
    edit: Edit | None = None,
) -> Conversation:
    """Fork the stored run ``conversation_id`` at step ``at`` (as ``result.trace`` counts: 1 is after the first
    transition, 0 its prompt) into a new conversation of ``store`` (``new_id``, else ``{id}-fork-{hex}``) whose
    history is exactly the history after that step, then ``edit(messages)`` applied; run under this agent with
    ``model``/``policy``/``system`` in place of its own (None: its own; ``system=""`` drops the system prompt).

    Sends nothing: returns the fork saved and loaded, ready — ``.run()``, ``.stream()``, ``.step()``, or later
    ``agent.resume(new_id, store=store)`` (the model is stored with it; ``policy`` and ``system`` are the
    agent's, so resume it with an agent set up the same way). Its stored state records ``forked_from`` (the
    id and the step). Raises ``UnknownConversationError`` for an id the store does not hold, ``ForkError``
    for a step not in its trace, a history its recorded sizes cannot give exactly, or an edited history
    the API would refuse (nothing is saved), ``ConfigurationError`` for a ``new_id`` already stored.
    """
    parent = load_parent(store, conversation_id)
    forked = with_overrides(agent, model=model, policy=policy, system=system)
    return start_fork(forked, parent, at, store=store, new_id=new_id, edit=edit)
