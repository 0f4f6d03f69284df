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

from agentfsm import Agent, Policy, RunResult, ToolResult, Transition, Wait, actions, tool
from agentfsm.errors import AgentfsmError, ConfigurationError, InvalidHistoryError, MissingAPIKeyError
from agentfsm.machine.streaming import StreamEvent
from agentfsm.result import RunError
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


@pytest.mark.slow  # the full matrix: every key source, fault and driver
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


# --- a credential of any shape in what a tool returns (issue 21, item 3) ----------------------------------
#
# A tool that reads a configuration file or an environment hands back whatever credentials are in it: not
# only the client's own key but a key of another account, an admin key, an OAuth token, a gateway's token.
# Everything the client holds as a credential, and everything shaped like an Anthropic key (known or not),
# is replaced in a tool result before the result is sent to the model, stored, shown or logged: the model
# reads "[REDACTED]" (see docs/03, "Result limits": a model has no use for a key's value, and a prompt-
# injected one could pass it on in its next tool call), so the stored row — kept as sent — holds no key
# either, and neither does anything the inspector serves from it.

FOREIGN = "sk-ant-api03-" + "Fr0mAn0therAcc0untNotTheClients_key-" * 2 + "zz9AA"
ADMIN = "sk-ant-admin01-" + "AdminKeyOfTheOrg0123456789abcdefABCDEF" * 2 + "AA"
OAUTH = "sk-ant-oat01-" + "OAuthAccessTokenFromAClaudeLogin_0123-" * 2 + "AA"
GATEWAY = "gwk_live.7Hq2LzGatewayCredentialOfTheClient.99"  # a credential header's value, any shape
BEARER = "eyJhbGciOiJIUzI1NiJ9.corpSSOBearerPayload.s1gnatureXYZ"  # sent as "Authorization: Bearer ..."

#: (name, the credential the tool leaks, the client's credentials: api_key, auth_token, default_headers).
SHAPES: list[tuple[str, str, dict[str, Any]]] = [
    ("foreign key", FOREIGN, {"api_key": KEY}),
    ("admin key", ADMIN, {"api_key": KEY}),
    ("oauth token", OAUTH, {"api_key": KEY}),
    ("own key", KEY, {"api_key": KEY}),
    ("own key cut short", KEY[:30], {"api_key": KEY}),
    ("auth token", TOKEN, {"api_key": None, "auth_token": TOKEN}),
    ("credential header", GATEWAY, {"api_key": KEY, "default_headers": {"x-gateway-key": GATEWAY}}),
    ("bearer header", BEARER, {"api_key": None, "default_headers": {"Authorization": f"Bearer {BEARER}"}}),
]

LEAKED = {"value": ""}


@tool
def read_config() -> str:
    """Returns the deployment's configuration file."""
    return f"[deploy]\nregion = eu\nanthropic_key = {LEAKED['value']}\nreplicas = 3"


@tool
def read_config_json() -> dict[str, Any]:
    """Returns the configuration as JSON."""
    return {"region": "eu", "nested": {"keys": [LEAKED["value"]]}, "replicas": 3}


@tool
def read_config_blocks() -> list[dict[str, Any]]:
    """Returns the configuration as content blocks."""
    return [
        {"type": "text", "text": f"anthropic_key={LEAKED['value']}"},
        {
            "type": "search_result",
            "source": "file:///etc/app.env",
            "title": "app.env",
            "content": [{"type": "text", "text": f"ANTHROPIC_API_KEY={LEAKED['value']}"}],
        },
    ]


@tool
def read_config_fails() -> str:
    """Raises with the credential in its message."""
    raise PermissionError(f"refusing to print {LEAKED['value']}")


TOOLS = {"text": read_config, "json": read_config_json, "blocks": read_config_blocks, "raised": read_config_fails}


def inspector_outputs(served: Any, run_id: str) -> dict[str, str]:
    """Every page and JSON endpoint the inspector serves about ``run_id``: path → body (all must be 200)."""
    steps = served.json(f"/api/runs/{run_id}")["steps"]
    paths = ["/", "/runs", f"/runs/{run_id}", "/api/runs", f"/api/runs/{run_id}", "/api/signature"]
    for n in range(1, len(steps) + 1):
        paths += [f"/runs/{run_id}?step={n}", f"/api/runs/{run_id}/steps/{n}"]
    paths += [f"/api/runs/{run_id}/{name}" for name in ("graph.svg", "graph.mmd", "graph.dot")]
    paths += [f"/api/runs/{run_id}/graph.svg?graph=path", f"/api/signature?run={run_id}"]
    out: dict[str, str] = {}
    for path in paths:
        status, _, body = served.get(path)
        assert status == 200, (path, body[:300])
        out[path] = body.decode("utf-8")
    return out


CASES = [(name, "text", "run") for name, _, _ in SHAPES] + [
    *(("foreign key", where, "run") for where in ("json", "blocks", "raised")),
    *(("foreign key", "text", driver) for driver in ("stream", "arun", "astream")),
]


@pytest.mark.slow  # every key shape, place and driver
@pytest.mark.usefixtures("no_ambient_key")
@pytest.mark.parametrize(("shape", "where", "driver"), CASES)
def test_a_credential_of_any_shape_in_a_tool_result_is_never_sent_stored_or_shown(
    shape: str, where: str, driver: str, tmp_path: Path
) -> None:
    from test_ui import serve

    from agentfsm.observe.ui.sources import open_source

    _, secret, credentials = next(s for s in SHAPES if s[0] == shape)
    LEAKED["value"] = secret
    sim = Simulator([r.tool_use(TOOLS[where].name, {}), r.text("Configuration read.")])
    db = tmp_path / "runs.db"
    with sim.serve() as url, SQLiteStore(db, synchronous="NORMAL") as store:
        kind = anthropic.AsyncAnthropic if driver.startswith("a") else anthropic.Anthropic
        client = kind(base_url=url, max_retries=0, **credentials)
        agent = Agent(client=client, model=MODEL, tools=list(TOOLS.values()), logger=None)
        result = drive(agent, "Read the configuration.", driver, store=store, conversation_id="conv_keys")
    assert result.final_state == "done", result.error
    # Sent: the model read the result, with the credential replaced and everything else kept.
    sent = json.dumps(sim.requests[1].messages[-1]["content"])
    assert "[REDACTED]" in sent and not leaks(sent, secret), sent
    assert {"text": "region", "json": "region", "blocks": "app.env", "raised": "refusing to print"}[where] in sent
    assert not any(leaks(q.raw_body.decode(), secret) for q in sim.requests)
    # Kept: the result, its events, and the store's raw bytes (old pages and the WAL included).
    assert not leaks(json.dumps(result.model_dump(mode="json")), secret)
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*")).decode("utf-8", "replace")
    assert "[REDACTED]" in raw and not leaks(raw, secret)
    # Shown: every page and JSON endpoint of the inspector.
    served = serve(open_source(f"sqlite:///{db}"))
    try:
        for path, body in inspector_outputs(served, "conv_keys").items():
            assert not leaks(body, secret), path
    finally:
        served.stop()


def test_a_foreign_key_sharing_the_clients_key_prefix_is_redacted_whole() -> None:
    """Every real key starts ``sk-ant-api03-``: a copy of the client's key's head must not hide the rest of a
    foreign key from the key-shape rule (it did: ``[REDACTED]`` followed by the foreign key's 90 characters)."""
    from agentfsm.redaction import Redactor, redact, redact_error, redact_text

    text = f"theirs: {FOREIGN}; ours: {KEY}; ours cut: {KEY[:20]}."
    expected = "theirs: [REDACTED]; ours: [REDACTED]; ours cut: [REDACTED]."
    assert redact_text(text, [KEY]) == expected
    assert redact_error(text, [KEY]) == expected
    assert redact({"a": [text]}, [KEY]) == {"a": [expected]}
    assert Redactor([KEY]).fields({"message": text}) == {"message": expected}


# --- what the inspector serves from rows written before the fix, or by hand -------------------------------
#
# A store is data: a row an earlier agentfsm wrote keeps a tool's key verbatim, and the conversation is
# stored as sent (a key in the prompt, or one the model repeats, is in the history). The inspector
# redacts on the way out, whatever the row holds: the key shape, and the credentials of its own
# environment (ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN) whatever their shape, in every page and JSON
# endpoint. Redaction changes a text's length, so the sizes a step recorded are mapped through it: the
# history after each step is still shown exactly, a key cut by a continuation's seam never half-shown.

ENV_TOKEN = "envtok.Qm9WvaultIssuedTokenNotKeyShaped.42"  # the inspector's own ANTHROPIC_AUTH_TOKEN


class ApprovalAgent(Agent):
    """A lookup waits for a person: the waiting run's pending call holds the key the model copied."""

    model = MODEL
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask_approval", "awaiting_approval"),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
    ]


def keyed_runs(url: str, store: Store) -> None:
    """Two real runs over HTTP, then rewritten as a row of an earlier agentfsm (or a hostile writer) holds them."""
    client = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
    agent = Agent(
        client=client,
        model=MODEL,
        tools=[lookup],
        system="You look keys up.",
        policy=Policy(continuation="prefill", max_tokens=64),
        logger=None,
    )
    result = agent.run(f"My keys: {FOREIGN} and {ENV_TOKEN}. Look k up.", store=store, conversation_id="conv_old")
    assert result.final_state == "done" and [s.trigger for s in result.trace].count("continue_text") == 1, result.trace
    snap = store.load("conv_old")
    # What an earlier agentfsm stored: the tool's result as the tool returned it, credentials in the request.
    messages = json.loads(json.dumps(snap.messages).replace("value of k", f"value of k: {OAUTH} {ENV_TOKEN}"))
    request = {**(snap.request or {}), "system": f"You look keys up with {ADMIN}."}
    error = RunError(type="api_error", message=f"upstream said {FOREIGN}")
    store.save(snap.model_copy(update={"messages": messages, "request": request, "error": error, "revision": 99}))
    waiting = ApprovalAgent(client=client, tools=[lookup], logger=None).run(
        "Look my key up.", store=store, conversation_id="conv_wait"
    )
    assert waiting.final_state == "waiting"


#: The model copies a key into a tool call, then writes one out across a continuation's seam (at 30 characters).
KEYED_SCRIPT = [
    r.tool_use("lookup", {"key": "k"}, text=f"Looking up with {FOREIGN}."),
    r.max_tokens(f"Done. Your key is {FOREIGN[:30]}"),
    r.text(f"{FOREIGN[30:]}, keep it safe."),
    r.tool_use("lookup", {"key": ADMIN}),
]


@pytest.mark.usefixtures("no_ambient_key")
def test_the_inspector_serves_no_credential_from_any_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_ui import dom, has_class, serve

    from agentfsm.observe.ui.sources import open_source

    db = tmp_path / "runs.db"
    sim = Simulator(list(KEYED_SCRIPT))
    with sim.serve() as url, SQLiteStore(db) as store:
        keyed_runs(url, store)
        raw = db.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("runs.db-*"))
        assert all(k.encode() in raw for k in (FOREIGN, ADMIN, OAUTH, ENV_TOKEN))  # the row does hold them
    # An events file with credentials in its fields (written by hand: EventsWriter redacts what it writes).
    events = tmp_path / "run.jsonl"
    lines = [
        {
            "event": "run.started",
            "level": "info",
            "conversation_id": "conv_ev",
            "turn": 0,
            "state": "requesting",
            "timestamp": 1.0,
            "agent": "agentfsm.agent:Agent",
            "model": MODEL,
            "note": f"{FOREIGN} {ENV_TOKEN}",
        },
        {
            "event": "request.failed",
            "level": "error",
            "conversation_id": "conv_ev",
            "turn": 1,
            "state": "requesting",
            "timestamp": 2.0,
            "error_type": "authentication_error",
            "message": f"invalid x-api-key: {OAUTH} ({ENV_TOKEN})",
        },
        {  # a state and a trigger named with a key: names are not redacted in the data (pages link by them)
            "event": "transition",
            "level": "info",
            "conversation_id": "conv_ev",
            "turn": 1,
            "state": "failed",
            "timestamp": 2.5,
            "source": "requesting",
            "dest": "failed",
            "trigger": f"give_up_{OAUTH}",
        },
        {
            "event": "run.finished",
            "level": "info",
            "conversation_id": "conv_ev",
            "turn": 1,
            "state": "failed",
            "timestamp": 3.0,
            "final_state": "failed",
            "reason": f"request_failed {ADMIN}",
        },
    ]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))

    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", ENV_TOKEN)  # the inspector's environment
    secrets = (FOREIGN, ADMIN, OAUTH, ENV_TOKEN)
    for source, ids in ((f"sqlite:///{db}", ("conv_old", "conv_wait")), (events, ("conv_ev",))):
        served = serve(open_source(source) if isinstance(source, str) else open_source(events=source))
        try:
            for run_id in ids:
                shown = inspector_outputs(served, run_id)
                for path, body in shown.items():
                    assert not any(leaks(body, k) for k in secrets), (path, body[:2000])
                assert "[REDACTED]" in shown[f"/runs/{run_id}"] and "[REDACTED]" in shown[f"/api/runs/{run_id}"]
        finally:
            served.stop()

    served = serve(open_source(f"sqlite:///{db}"))
    try:
        body = served.json("/api/runs/conv_old")
        assert body["history"]["exact"] is True  # the steps' sizes were mapped through the redaction
        assert body["run"]["error"] == "api_error: upstream said [REDACTED]"
        calls = body["tool_calls"]
        assert calls[0]["result"] == "value of k: [REDACTED] [REDACTED]"
        texts = {}
        for n in range(1, len(body["steps"]) + 1):
            last = served.json(f"/api/runs/conv_old/steps/{n}")["messages"][-1]
            if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
                texts[n] = last["content"][-1]["text"]
        # The continuation's seam fell inside the key: the step before shows the text up to the key, never a part.
        assert sorted(set(texts.values())) == ["Done. Your key is ", "Done. Your key is [REDACTED], keep it safe."]
        prompt = served.json(f"/api/runs/conv_old/steps/{len(body['steps'])}")["messages"][0]["content"]
        assert prompt == "My keys: [REDACTED] and [REDACTED]. Look k up."
        page = dom(served.html("/runs/conv_old"))
        system = page.one(has_class("system", "details")).one(lambda n: n.tag == "pre").text()
        assert system == "You look keys up with [REDACTED]."
        waiting = served.json("/api/runs/conv_wait")["waiting"]
        assert waiting["tool_calls"][0]["input"] == {"key": "[REDACTED]"} and "[REDACTED]" in waiting["line"]
    finally:
        served.stop()


def _answer_from_the_vault(conv: Any) -> None:
    """A custom action that puts its own results in place of the executor's, then answers with them."""
    conv.tool_results = [ToolResult(tool_use_id=c.id, content=f"vault says {FOREIGN}") for c in conv.pending_tool_calls]
    actions.answer_tool_calls(conv)


class VaultAgent(Agent):
    model = MODEL
    tools = [lookup]
    transitions = [Transition("tool_use", "answer", "requesting", action=_answer_from_the_vault, runs_tools=True)]


@pytest.mark.usefixtures("no_ambient_key")
def test_results_a_custom_action_puts_in_place_are_redacted_too(tmp_path: Path) -> None:
    """``answer_tool_calls`` answers with ``conv.tool_results``: whoever put them there, they are made sendable."""
    sim = Simulator([r.tool_use("lookup", {"key": "k"}), r.text("Done.")])
    with sim.serve() as url, SQLiteStore(tmp_path / "runs.db") as store:
        agent = VaultAgent(client=anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0), logger=None)
        result = agent.run("Look k up.", store=store, conversation_id="conv_vault")
        stored = store.load("conv_vault").model_dump_json()
    assert result.final_state == "done"
    sent = json.dumps(sim.requests[1].messages[-1]["content"])
    assert "vault says [REDACTED]" in sent and not leaks(sent, FOREIGN)
    assert "vault says [REDACTED]" in stored and not leaks(stored, FOREIGN)
