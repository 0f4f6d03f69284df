"""Secrets: an API key, however it is passed, never appears in events, stored rows or exception messages.

The key is passed as ``api_key=``, through ``ANTHROPIC_API_KEY``, or as ``auth_token=`` (a bearer
token not shaped like an Anthropic key, so only exact redaction can catch it), and it also turns up
where a careless program puts it: in the prompt, in what a tool returns, in a tool's exception, in
the input the model sends a tool, and in an HTTP error body from the server. Each run is scanned:
every event on the result, everything emitted to structlog, every streamed event, every row a
``MemoryStore`` and a ``SQLiteStore`` were asked to save (and the SQLite files' raw bytes), the
result, and every request body sent to the API.

What the key in the prompt means: the caller's own messages are data the caller sent, so they are
kept and stored verbatim (changing them would send a different conversation to the model on resume);
everything agentfsm writes itself — events, logs, errors, tool results, the other fields of a
stored row — is scrubbed of the key. The one place the key may appear is inside the caller's own
messages, and the test checks exactly that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import structlog

from agentfsm import Agent, Policy, RunResult, tool
from agentfsm.errors import AgentfsmError, ConfigurationError, InvalidHistoryError, MissingAPIKeyError
from agentfsm.machine.streaming import StreamEvent
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import Snapshot, Store
from agentfsm.stores.memory import MemoryStore
from agentfsm.testing import drive

try:
    from agentfsm.stores.sqlite import SQLiteStore
except ImportError:  # being written alongside; its part of the scan is skipped without it
    SQLiteStore = None  # type: ignore[assignment,misc]

#: As long as a real key (108 characters), so a copy cut short somewhere is still most of a key.
KEY = "sk-ant-api03-" + "Xq7TOPSECRETkeyDoNotLeak9f8e7d6c5b4a" * 2 + "AAbbCCddEEffGGhhIIjj-AA"
TOKEN = "corp-gw-token.Zr81VeryPrivateBearerValue.41"  # not shaped like an Anthropic key
MODEL = "claude-haiku-4-5"

# --- what the scripted model and tools do with the secret ----------------------------------------------

SECRET = {"value": ""}  # the secret of the run in progress, for the tools below


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


@tool
def reveal() -> str:
    """Returns a configuration dump (with the key in it)."""
    return f"config loaded: api_key={SECRET['value']} region=eu"


@tool
def leaky_fail() -> str:
    """Raises with the key in its message."""
    raise PermissionError(f"upstream rejected credentials {SECRET['value']}")


@tool
def count(n: int) -> str:
    """Counts to n."""
    return str(n)


WHERE = ["prompt", "tool_result", "tool_error", "tool_input", "http_error_body"]


def script(where: str, secret: str) -> list[Any]:
    if where == "prompt":
        return [r.tool_use("lookup", {"key": "k"}), r.text("Here you go.")]
    if where == "tool_result":
        return [r.tool_use("reveal", {}), r.text("Loaded.")]
    if where == "tool_error":
        return [r.tool_use("leaky_fail", {}), r.text("It failed.")]
    if where == "tool_input":  # the model copies the key into a tool's input; the validation error quotes it
        return [r.tool_use("count", {"n": secret}), r.text("Bad input.")]
    return [
        r.tool_use("lookup", {"key": "k"}),
        r.http_error(401, "authentication_error", f"invalid x-api-key: {secret}"),
    ]


def prompt_for(where: str, secret: str) -> str:
    return f"My API key is {secret}. Look k up." if where == "prompt" else "Look k up."


# --- stores that keep every row they were asked to save ------------------------------------------------------


class Recording:
    """A store that remembers every snapshot it saved, as the JSON text written."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.rows: list[str] = []

    def save(self, snapshot: Snapshot) -> None:
        self.rows.append(snapshot.model_dump_json())
        self.inner.save(snapshot)

    def load(self, conversation_id: str) -> Snapshot:
        return self.inner.load(conversation_id)

    def list(self) -> Any:
        return self.inner.list()

    def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool:
        return self.inner.acquire(conversation_id, owner, lease_s)

    def release(self, conversation_id: str, owner: str) -> None:
        self.inner.release(conversation_id, owner)


def stores(tmp_path: Path) -> Iterator[tuple[str, Recording, Path | None]]:
    yield "memory", Recording(MemoryStore()), None
    if SQLiteStore is not None:
        path = tmp_path / "runs.sqlite"
        yield "sqlite", Recording(SQLiteStore(path, synchronous="NORMAL")), path  # no fsync per save: faster


# --- running one scenario under one driver ----------------------------------------------------------------


def client_for(way: str, sim: Simulator, asynchronous: bool) -> anthropic.Anthropic | anthropic.AsyncAnthropic | None:
    if way == "env":  # no client: the agent makes one from ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL)
        return None
    kw: dict[str, Any] = {"max_retries": 0}
    if way == "api_key":
        kw["api_key"] = KEY
    else:
        kw.update(api_key=None, auth_token=TOKEN)
    return sim.async_client(**kw) if asynchronous else sim.client(**kw)


def run(agent: Agent, prompt: str, driver: str, store: Store) -> tuple[RunResult, list[StreamEvent]]:
    """The result, and what a stream yielded before it (nothing for run and arun)."""
    events: list[StreamEvent] = []
    result = drive(agent, prompt, driver, store=store, stream_events=events)
    return result, events[:-1]


def leaks(text: str, secret: str) -> bool:
    """The secret, or a good part of it (its first or last 20 characters), is in ``text``."""
    return any(part in text for part in (secret, secret[:20], secret[-20:]))


def agentfsms_part(data: dict[str, Any], model_has_it: bool) -> dict[str, Any]:
    """A snapshot or result (as JSON) without the conversation's own content: the caller's message, and,
    when the model was given the key to repeat, the model's replies. What is left, agentfsm wrote."""
    messages = data["messages"][1:]
    if model_has_it:
        messages = [m for m in messages if m["role"] != "assistant"]
        data = {k: v for k, v in data.items() if k not in ("reply", "answer", "text")}
    return {**data, "messages": messages}


@pytest.fixture
def no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_ambient_key")
@pytest.mark.parametrize("driver", ["run", "stream", "arun", "astream"])
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("way", ["api_key", "env", "auth_token"])
def test_the_key_never_reaches_events_logs_stored_rows_or_results(
    way: str, where: str, driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = TOKEN if way == "auth_token" else KEY
    SECRET["value"] = secret
    for name, store, path in stores(tmp_path):
        sim = Simulator(script(where, secret))
        asynchronous = driver.startswith("a")
        # the environment's client reaches the simulator over a loopback socket; the others in process
        with sim.serve() if way == "env" else contextlib.nullcontext("") as base_url:
            if way == "env":
                monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
                monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
            agent = Agent(
                client=client_for(way, sim, asynchronous),
                model=MODEL,
                tools=[lookup, reveal, leaky_fail, count],
                policy=Policy(stream_retries=0),
            )
            with structlog.testing.capture_logs() as logs:
                result, streamed = run(agent, prompt_for(where, secret), driver, store)
        label = f"{way}/{where}/{driver}/{name}"
        # the key did go where it belongs: the request's credentials header
        headers = sim.requests[0].headers
        assert secret in headers.get("x-api-key", "") + headers.get("authorization", ""), label
        assert result.final_state == ("failed" if where == "http_error_body" else "done"), label

        # (a) events, structlog, streamed events
        assert result.events and logs, label
        assert not leaks(json.dumps([e.model_dump() for e in result.events]), secret), label
        assert not leaks(json.dumps(logs, default=str), secret), label
        assert not leaks(json.dumps([e.model_dump(mode="json") for e in streamed]), secret), label
        # (b) every stored row, outside the conversation's own content; the prompt itself is kept as sent
        model_has_it = where == "tool_input"  # the scripted model repeats the key in a tool call
        assert store.rows, label
        for row in store.rows:
            data = json.loads(row)
            assert not leaks(json.dumps(agentfsms_part(data, model_has_it)), secret), f"{label}: {row[:3000]}"
            assert data["messages"][0] == {"role": "user", "content": prompt_for(where, secret)}
        if path is not None and where not in ("prompt", "tool_input"):  # raw bytes, old pages and WAL included
            raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*")).decode("utf-8", "replace")
            assert not leaks(raw, secret), label
        # the result (its error included)
        assert not leaks(json.dumps(agentfsms_part(result.model_dump(mode="json"), model_has_it)), secret), label
        if result.error is not None:
            assert "[REDACTED]" in result.error.message, label
        # and the model never read the key from agentfsm: not in a tool result, not anywhere unless given it
        if where not in ("prompt", "tool_input"):
            assert not any(leaks(q.raw_body.decode(), secret) for q in sim.requests), label
        if where in ("tool_result", "tool_error", "tool_input"):
            sent = sim.requests[1].messages[-1]["content"][0]["content"]
            assert "[REDACTED]" in sent and not leaks(sent, secret), label  # the text kept, the key scrubbed


# --- exceptions raised to the caller -------------------------------------------------------------------------


def _messages(exc: BaseException) -> str:
    """An exception's message and repr, and those of everything it was raised from."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 20:
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


@pytest.mark.usefixtures("no_ambient_key")
def test_the_key_is_in_no_exception_raised_to_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[BaseException] = []

    def catch(fn: Any, kind: type[BaseException]) -> None:
        with pytest.raises(kind) as info:
            fn()
        raised.append(info.value)

    sim = Simulator([r.text("never")])
    # a client of the wrong kind for the driver
    catch(lambda: Agent(client=sim.async_client(api_key=KEY)).run("hi"), ConfigurationError)
    catch(lambda: list(Agent(client=sim.async_client(auth_token=TOKEN, api_key=None)).stream("hi")), ConfigurationError)
    # no usable key in the environment (set, but empty); an async run of an agent given a sync client
    # (never a client made from the environment instead)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    catch(lambda: Agent().run("hi"), MissingAPIKeyError)
    catch(lambda: asyncio.run(Agent(client=sim.client(api_key=KEY)).arun("hi")), ConfigurationError)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    # malformed histories that carry the key (in a role, in tool ids, in content) next to a configured key
    keyed = Agent(client=sim.client(api_key=KEY))
    for history in (
        [{"role": KEY, "content": "hi"}],
        [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": KEY, "content": "x"}]}],
        [{"role": "user", "content": KEY}, {"role": "assistant", "content": [{"type": "tool_use", "id": KEY}]}],
        [{"role": "user", "content": KEY}, {"role": "user", "content": [KEY]}],
        [{"role": "assistant", "content": f"my key: {KEY}"}],
    ):
        catch(lambda h=history: keyed.run(h), InvalidHistoryError)
    catch(lambda: Agent().run(f"   {KEY}"[:3]), InvalidHistoryError)  # an empty prompt, key in the environment
    assert sim.requests == []
    assert len(raised) == 10
    for exc in raised:
        assert isinstance(exc, AgentfsmError)
        assert not leaks(_messages(exc), KEY) and not leaks(_messages(exc), TOKEN), _messages(exc)


# --- the fast path of redaction, and the secrets an agent knows -------------------------------------------


@pytest.mark.parametrize(
    ("secret", "value"),
    [
        # the common case: a repr of the whole value shows the key's head, and the walk redacts it
        ("sk-live-abcdef012345", {"a": ["x sk-live-abcdef01 cut short", 1], "b": ("sk-live-abcdef012345",)}),
        # a key with a quote: a repr may escape it, so the value is always walked
        ("ab'cd\"ef\\gh-12345", {"a": "said: ab'cd\"ef\\gh-12345 (with both ' and \" around)"}),
        # a key with a character repr escapes: walked too
        ("tab\there-12345678", {"nested": {"deeper": ["tab\there-12345678"]}}),
    ],
)
def test_redaction_finds_a_key_however_repr_would_show_it(secret: str, value: Any) -> None:
    from agentfsm.redaction import redact

    clean = redact(value, [secret])
    assert secret[:8] not in json.dumps(clean) and secret[:8] not in repr(clean)
    assert "[REDACTED]" in json.dumps(clean)


def test_redaction_gives_back_a_clean_value_untouched() -> None:
    from agentfsm.redaction import redact

    value = {"usage": {"input_tokens": 3}, "block_types": ["text"], "stop_reason": "end_turn"}
    assert redact(value, ["sk-ant-api03-" + "x" * 40]) is value


class _Text(str):
    """A str subclass: the event fields' fast check must not take it for a plain string."""


@pytest.mark.parametrize(
    "fields",
    [
        {"message": "the key is sk-live-abcdef012345, sent"},  # a plain string
        {"message": "cut short: sk-live-abcdef01"},  # a prefix of the key, its head and more
        {"usage": {"note": "sk-live-abcdef012345"}},  # a dict in the fields
        {"names": ["a", ("b", "sk-live-abcdef012345")]},  # a tuple in a list: two levels down
        {"deep": {"a": {"b": {"c": "sk-live-abcdef012345"}}}},  # deeper than the fast check looks
        {"text": _Text("sk-live-abcdef012345")},  # a str subclass
        {"other": "an Anthropic-shaped key: sk-ant-api03-unknownKEY"},  # a key shape, known or not
    ],
)
def test_event_fields_are_redacted_wherever_a_key_sits_in_them(fields: dict[str, Any]) -> None:
    from agentfsm.redaction import Redactor

    clean = Redactor(["sk-live-abcdef012345", "short"]).fields(fields)
    assert clean is not fields
    assert "sk-live-abcdef01" not in repr(clean) and "sk-ant-api03" not in repr(clean)
    assert "[REDACTED]" in repr(clean)


def test_clean_event_fields_come_back_as_they_are_and_a_short_key_is_left_in_events() -> None:
    from agentfsm.redaction import Redactor

    fields = {"turn": 3, "ok": True, "ms": 1.5, "none": None, "sizes": [3, 2, 0], "usage": {"input_tokens": 3}}
    redactor = Redactor(["sk-live-abcdef012345"])
    assert redactor.fields(fields) is fields
    # a credential under 8 characters cannot be told from text: redacted in error messages only
    word = {"reason": "a short key"}
    assert Redactor(["short"]).fields(word) is word


def test_an_agent_knows_the_key_of_a_client_it_made_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-late-" + "k" * 30)
    agent = Agent(logger=None)
    assert agent.secrets() == []  # no client yet
    _ = agent.client  # made from the environment now
    assert agent.secrets() == ["sk-ant-late-" + "k" * 30]
