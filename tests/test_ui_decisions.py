"""The inspector and waiting runs: the banner, the mark in the list, and deciding one from the page.

The runs are real: an agent with a ``Wait`` state (a refund waits for approval) on the simulator,
through the real ``anthropic`` client, stored in a ``SQLiteStore``. The inspector is served for
real and read over HTTP, and in headless Chromium driven over the DevTools protocol (a pipe, no
driver, no Node): the browser clicks the form's buttons, so the CSRF token, the ``Origin`` header
and the 303 are the browser's own. The decider the tests give the server carries the run on with
``agent.resume`` on a real agent and the simulator, as ``agentfsm ui --allow-decisions`` does with
``agentfsm.cli.runs.decide_run``.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import select
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from test_ui import CHROMIUM_FLAGS, Served, dom, find_chromium, has_class, install_chromium, serve

from agentfsm import Agent, RunResult, Transition, Wait, actions, tool
from agentfsm.cli import EXIT_ERROR, main
from agentfsm.observe.replay import write_events
from agentfsm.observe.ui.server import UIServer
from agentfsm.observe.ui.sources import open_source
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import Snapshot
from agentfsm.stores.sqlite import SQLiteStore

REFUNDS: list[tuple[str, float]] = []  # every refund really issued, in this process


@tool
def issue_refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    REFUNDS.append((order_id, amount))
    return f"refunded {amount} on {order_id}"


class RefundAgent(Agent):
    """Every refund waits for a person: ``approve`` runs it, ``refuse`` answers it refused."""

    model = "claude-haiku-4-5"
    tools = [issue_refund]
    states = [Wait("awaiting_approval")]
    transitions = [
        Transition("tool_use", "ask_approval", "awaiting_approval"),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
    ]


SCRIPT = [r.tool_use("issue_refund", {"order_id": "A-100", "amount": 24.0}), r.text("Refunded.")]
LINE = 'waiting for: approve | refuse — issue_refund(order_id="A-100", amount=24.0)'
#: What a row shows when the snapshot does not record the waiting state's triggers (an earlier agentfsm).
LINE_UNRECORDED = 'waiting for: a trigger not recorded with this run — issue_refund(order_id="A-100", amount=24.0)'


def stored_line() -> str:
    """The banner of a stored waiting run: with its triggers where snapshots record them (``pending_decision``)."""
    return LINE if "pending_decision" in Snapshot.model_fields else LINE_UNRECORDED


def waiting_run(store: SQLiteStore, conversation_id: str) -> RunResult:
    agent = RefundAgent(client=Simulator(list(SCRIPT)).client(max_retries=0), logger=None)
    result = agent.run("Refund order A-100.", store=store, conversation_id=conversation_id)
    assert result.final_state == "waiting" and result.waiting == "awaiting_approval"
    return result


class Deciding:
    """The decider a server is given: ``agent.resume`` on a real agent against a fresh simulator each time."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, conversation_id: str, trigger: str, input: Any) -> RunResult:
        self.calls.append((conversation_id, trigger, input))
        agent = RefundAgent(client=Simulator([r.text("Refunded.")]).client(max_retries=0), logger=None)
        return agent.resume(conversation_id, store=self.store, trigger=trigger, input=input)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    REFUNDS.clear()
    with SQLiteStore(tmp_path / "runs.db") as s:
        yield s


def serve_deciding(path: Path, store: SQLiteStore) -> tuple[Served, Deciding]:
    deciding = Deciding(store)
    return Served(UIServer(open_source(f"sqlite:///{path}"), "127.0.0.1", 0, decider=deciding)), deciding


def post(
    served: Served, path: str, fields: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    body = urlencode(fields).encode()
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=30)
    try:
        conn.request(
            "POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        )
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def token_of(page: str) -> str:
    form = dom(page).one(has_class("decide", "form"))
    return form.one(lambda n: n.attrs.get("name") == "csrf").attrs["value"]


# --- the banner and the list ----------------------------------------------------------------------------------


def test_a_waiting_run_is_singled_out(store: SQLiteStore, tmp_path: Path) -> None:
    waiting_run(store, "conv_wait")
    served = serve(open_source(f"sqlite:///{tmp_path / 'runs.db'}"))
    try:
        page = dom(served.html("/runs/conv_wait"))
        banner = page.one(has_class("waiting-banner"))
        assert banner.one(has_class("waiting-for")).text() == stored_line()
        assert "awaiting_approval" in page.one(has_class("badge")).text()
        assert not banner.all(lambda n: n.tag == "form")  # read-only: nothing to decide with
        body = served.json("/api/runs/conv_wait")
        assert body["waiting"]["state"] == "awaiting_approval" and body["waiting"]["line"] == stored_line()
        assert body["waiting"]["tool_calls"][0]["input"] == {"order_id": "A-100", "amount": 24.0}
        row = dom(served.html("/")).one(lambda n: n.attrs.get("data-run") == "conv_wait")
        assert "waiting" in row.classes and "waiting at awaiting_approval" in row.text()
        assert served.json("/api/runs")["runs"][0]["waiting"] == "awaiting_approval"
    finally:
        served.stop()


def test_the_triggers_come_from_the_stored_run_or_its_trace_never_from_its_code(store: SQLiteStore) -> None:
    from agentfsm.observe.ui.sources import stored_waiting

    waiting_run(store, "conv_wait")
    snap = store.load("conv_wait")
    old = snap.model_copy(update={"pending_decision": None}) if "pending_decision" in Snapshot.model_fields else snap
    seen = stored_waiting(old)
    assert seen is not None and not seen.triggers_known and seen.triggers == []
    assert [(c.name, c.input) for c in seen.calls] == [("issue_refund", {"order_id": "A-100", "amount": 24.0})]
    # A run that left the waiting state before (by refuse) and waits there again: the trigger seen is shown.
    trace = [*old.trace, old.trace[-1].model_copy(update={"source": "awaiting_approval", "trigger": "refuse"})]
    again = stored_waiting(old.model_copy(update={"trace": trace}))
    assert again is not None and again.triggers == ["refuse"] and not again.triggers_known


def test_an_events_file_shows_what_its_run_waits_for(store: SQLiteStore, tmp_path: Path) -> None:
    result = waiting_run(store, "conv_wait")
    write_events(result.events, tmp_path / "run.jsonl")
    served = serve(open_source(events=tmp_path / "run.jsonl"))
    try:
        line = dom(served.html("/runs/conv_wait")).one(has_class("waiting-for")).text()
        assert line == "waiting for: approve | refuse — issue_refund()"  # events carry no tool inputs
        assert served.json("/api/runs")["runs"][0]["waiting"] == "awaiting_approval"
    finally:
        served.stop()


# --- deciding, over HTTP ---------------------------------------------------------------------------------------


def test_without_the_flag_every_post_is_refused(store: SQLiteStore, tmp_path: Path) -> None:
    waiting_run(store, "conv_wait")
    served = serve(open_source(f"sqlite:///{tmp_path / 'runs.db'}"))
    try:
        status, headers, body = post(served, "/runs/conv_wait/decide", {"trigger": "approve"})
        assert status == 405 and headers["Allow"] == "GET, HEAD" and "--allow-decisions" in body.decode()
        assert "form-action 'self'" in served.get("/runs/conv_wait")[1]["Content-Security-Policy"]  # forms: here only
        assert not dom(served.html("/runs/conv_wait")).all(has_class("decide", "form"))
        assert served.get("/runs/conv_wait", method="DELETE")[0] == 405
        assert REFUNDS == [] and store.load("conv_wait").waiting == "awaiting_approval"
    finally:
        served.stop()


def test_a_decision_needs_the_token_the_host_and_the_origin(store: SQLiteStore, tmp_path: Path) -> None:
    waiting_run(store, "conv_wait")
    served, deciding = serve_deciding(tmp_path / "runs.db", store)
    try:
        page = served.html("/runs/conv_wait")
        token = token_of(page)
        other, _ = serve_deciding(tmp_path / "runs.db", store)
        try:
            assert len(token) >= 40 and token != token_of(other.html("/runs/conv_wait"))  # random per server start
        finally:
            other.stop()
        form = {"csrf": token, "trigger": "approve", "input": '{"note": "ok"}'}
        refused = [
            post(served, "/runs/conv_wait/decide", {k: v for k, v in form.items() if k != "csrf"}),
            post(served, "/runs/conv_wait/decide", {**form, "csrf": token[:-1] + ("A" if token[-1] != "A" else "B")}),
            post(served, "/runs/conv_wait/decide", form, {"Host": "attacker.example:80"}),
            post(served, "/runs/conv_wait/decide", form, {"Host": f"rebound.example:{served.server.port}"}),
            post(served, "/runs/conv_wait/decide", form, {"Origin": "http://attacker.example"}),
            post(served, "/runs/conv_wait/decide", form, {"Origin": "null"}),
        ]
        assert [status for status, _, _ in refused] == [403] * 6
        assert "CSRF token" in refused[0][2].decode() and "CSRF token" in refused[1][2].decode()
        assert "answers only requests for" in refused[2][2].decode() and "Origin" in refused[4][2].decode()
        assert deciding.calls == [] and REFUNDS == []

        origin = {"Origin": f"http://127.0.0.1:{served.server.port}"}
        status, headers, _ = post(served, "/runs/conv_wait/decide", form, origin)
        assert status == 303 and headers["Location"] == "/runs/conv_wait#waiting"
        decision = served.server.decisions.wait("conv_wait", 60)  # type: ignore[union-attr]
        assert decision is not None and decision.status == "done", decision
        assert decision.message == "decided approve: the run went on to done (end_turn)"
        assert deciding.calls == [("conv_wait", "approve", {"note": "ok"})]
        assert REFUNDS == [("A-100", 24.0)]  # the tool ran, once
        snap = store.load("conv_wait")
        assert snap.finished and snap.state == "done" and snap.input == {"note": "ok"}
        done = dom(served.html("/runs/conv_wait"))
        assert done.one(has_class("decision")).text() == "decided approve: the run went on to done (end_turn)"
        assert not done.all(has_class("waiting-for")) and not done.all(has_class("decide", "form"))

        # The same form again: the run is not waiting any more, and the page says so; nothing runs.
        status, _, _ = post(served, "/runs/conv_wait/decide", form)
        assert status == 303
        again = served.server.decisions.latest("conv_wait")  # type: ignore[union-attr]
        assert again is not None and again.status == "failed" and "is not waiting" in again.message
        assert "is not waiting" in dom(served.html("/runs/conv_wait")).one(has_class("decision")).text()
        assert REFUNDS == [("A-100", 24.0)] and len(deciding.calls) == 1
    finally:
        served.stop()


def test_a_bad_trigger_or_input_reaches_the_page(store: SQLiteStore, tmp_path: Path) -> None:
    waiting_run(store, "conv_wait")
    served, deciding = serve_deciding(tmp_path / "runs.db", store)
    try:
        token = token_of(served.html("/runs/conv_wait"))
        assert post(served, "/runs/conv_wait/decide", {"csrf": token, "trigger": "approve", "input": "{oops"})[0] == 303
        bad_json = served.server.decisions.latest("conv_wait")  # type: ignore[union-attr]
        assert bad_json is not None and bad_json.status == "failed" and "the input is not JSON" in bad_json.message
        assert deciding.calls == []

        assert post(served, "/runs/conv_wait/decide", {"csrf": token, "trigger": "launch"})[0] == 303
        decision = served.server.decisions.wait("conv_wait", 60)  # type: ignore[union-attr]
        assert decision is not None and decision.status == "failed"
        assert "trigger 'launch' does not leave the waiting state 'awaiting_approval'" in decision.message
        assert "approve, refuse" in decision.message
        page = dom(served.html("/runs/conv_wait"))
        assert "does not leave the waiting state" in page.one(has_class("decision-failed")).text()
        assert page.one(has_class("waiting-for")).text() == stored_line()  # still waiting, and still decidable
        assert page.all(has_class("decide", "form")) and REFUNDS == []
        assert post(served, "/runs/nope/decide", {"csrf": token, "trigger": "approve"})[0] == 404
        assert post(served, "/runs/conv_wait/other", {"csrf": token})[0] == 404
        status, _, body = served.get("/runs/conv_wait/decide", method="POST")  # no form at all
        assert status == 400 and "is a form" in body.decode()
    finally:
        served.stop()


def test_cli_flags_for_deciding(
    tmp_path: Path, store: SQLiteStore, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting_run(store, "conv_wait")
    db = str(tmp_path / "runs.db")
    assert main(["ui", "--events", str(tmp_path / "x.jsonl"), "--allow-decisions"]) == EXIT_ERROR
    assert "--allow-decisions needs a store" in one_line(capsys)
    assert main(["ui", "--store", db, "--sim", "x.json"]) == EXIT_ERROR
    assert "add --allow-decisions" in one_line(capsys)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    assert main(["ui", "--store", db, "--port", "0", "--allow-decisions", "--sim", "x.json"]) == EXIT_ERROR
    assert "name the Agent class that carries them on with --agent MODULE:Class" in one_line(capsys)
    agent = ["--agent", f"{__name__}:RefundAgent"]  # deciding runs code: the operator names it
    assert main(["ui", "--store", db, "--port", "0", "--allow-decisions", *agent]) == EXIT_ERROR
    assert "no Anthropic API key" in one_line(capsys)  # checked before serving, not on the first click
    assert main(["ui", "--store", db, "--port", "0", "--allow-decisions", *agent, "--sim", "missing.json"]) == (
        EXIT_ERROR
    )
    assert "no such simulator script: missing.json" in one_line(capsys)
    assert main(["ui", "--store", db, "--port", "0", "--allow-decisions", "--agent", "nowhere_xyz:A"]) == EXIT_ERROR
    assert "no module named 'nowhere_xyz'" in one_line(capsys)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("agentfsm: error: ") and "Traceback" not in err
    return err


# --- in a real browser, over the DevTools protocol -----------------------------------------------------------


class Chromium:
    """Headless Chromium driven over ``--remote-debugging-pipe``: JSON messages, NUL-terminated, on fds 3 and 4."""

    def __init__(self, exe: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds() -> None:  # the child reads commands on fd 3 and writes answers on fd 4
            read, write = os.dup(to_browser_r), os.dup(from_browser_w)  # copies first: either may be 3 or 4
            os.dup2(read, 3)
            os.dup2(write, 4)
            os.set_inheritable(3, True)  # dup2 onto itself keeps close-on-exec
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,
            pass_fds=(3, 4),  # kept open through exec (the fds the preexec function put there)
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=self.session)

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self._from_browser, 1 << 16)
            assert chunk, "Chromium closed the pipe"
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, *, session: str | None = None, timeout: float = 30, **params: Any) -> Any:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._next:
                assert "error" not in answer, answer
                return answer.get("result")
            self.events.append(answer)

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        """The next event ``method`` of the page (one already received counts)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._message(deadline))

    def open(self, url: str, *, landing: str | None = None) -> None:
        """Go to ``url`` and wait for its page to load (or, with ``landing``, for the page it leads to:
        the first loaded page whose address starts so)."""
        self.events.clear()
        self.call("Page.navigate", session=self.session, url=url)
        while True:
            self.wait_for("Page.loadEventFired")
            if landing is None or str(self.run("location.href")).startswith(landing):
                return

    def run(self, script: str, *, timeout: float = 30) -> Any:
        """``script``'s value in the page (a promise is awaited)."""
        result = self.call(
            "Runtime.evaluate",
            session=self.session,
            timeout=timeout,
            expression=script,
            returnByValue=True,
            awaitPromise=True,
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def submit(self, script: str) -> None:
        """Run ``script`` (which submits a form) and wait for the page it leads to."""
        self.events.clear()
        self.run(script)
        self.wait_for("Page.loadEventFired")

    def dom(self) -> Any:
        return dom(self.run("document.documentElement.outerHTML"))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def chromium() -> Iterator[Chromium]:
    exe = find_chromium() or install_chromium()
    profile = Path(tempfile.mkdtemp(prefix="agentfsm-chromium-cdp-"))
    browser = Chromium(exe, profile)
    try:
        yield browser
    finally:
        browser.close()
        subprocess.run(["rm", "-rf", str(profile)], check=False)


#: Presses the approve button (or, where the run does not record its triggers, types approve and presses decide).
APPROVE = """(function () {
  var button = document.querySelector('form.decide button[value="approve"]');
  if (!button) {
    document.querySelector('form.decide input[name=other_trigger]').value = 'approve';
    button = document.querySelector('form.decide button[value=""]');
  }
  button.click();
})()"""

#: Resolves once the page shows how a decision ended (the page refreshes itself while the run moves).
DECIDED = """new Promise(function (resolve, reject) {
  function look() {
    var el = document.querySelector('.decision-done, .decision-failed');
    if (el) { resolve(el.textContent); return true; }
    return false;
  }
  if (look()) return;
  new MutationObserver(function () { look(); }).observe(document, {childList: true, subtree: true});
  setTimeout(function () { reject(new Error('no decision shown')); }, 25000);
})"""


class Attacker(http.server.BaseHTTPRequestHandler):
    """A page elsewhere that posts a decision to the inspector as soon as it loads (a CSRF attempt)."""

    target = ""
    token = ""

    def do_GET(self) -> None:
        body = (
            f'<form method="post" action="{self.target}"><input name="csrf" value="{self.token}">'
            '<input name="trigger" value="approve"></form><script>document.forms[0].submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow  # Chromium
def test_in_a_browser_deciding_is_refused_then_done(chromium: Chromium, store: SQLiteStore, tmp_path: Path) -> None:
    waiting_run(store, "conv_wait")
    readonly = serve(open_source(f"sqlite:///{tmp_path / 'runs.db'}"))
    served, deciding = serve_deciding(tmp_path / "runs.db", store)
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=attacker.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    page_url = f"{served.url}/runs/conv_wait"
    try:
        # Without --allow-decisions: no form, and a post from the page itself is refused.
        chromium.open(f"{readonly.url}/runs/conv_wait")
        assert chromium.dom().one(has_class("waiting-for")).text() == stored_line()
        assert chromium.run("document.querySelectorAll('form').length") == 0
        status = chromium.run(
            "fetch('/runs/conv_wait/decide', {method: 'POST', body: new URLSearchParams({trigger: 'approve'})})"
            ".then(function (r) { return r.status; })"
        )
        assert status == 405

        # With it: the page has the form; a wrong token, then no token, are refused.
        chromium.open(page_url)
        assert chromium.run("document.documentElement.dataset.js") == "ready"
        buttons = chromium.run("Array.from(document.querySelectorAll('form.decide button')).map(b => b.value)")
        assert buttons == (["approve", "refuse"] if stored_line() == LINE else [""])  # "": the typed trigger's
        chromium.submit("document.querySelector('input[name=csrf]').value = 'wrong';" + APPROVE)
        refused = chromium.dom()
        assert refused.one(lambda n: n.attrs.get("id") == "main").attrs["data-status"] == "403"
        assert "CSRF token" in refused.one(has_class("error")).text()
        chromium.open(page_url)
        chromium.submit("document.querySelector('input[name=csrf]').remove();" + APPROVE)
        assert chromium.dom().one(lambda n: n.attrs.get("id") == "main").attrs["data-status"] == "403"

        # A page elsewhere posting the form — even with the right token — is refused by its Origin ...
        Attacker.target, Attacker.token = f"{page_url}/decide", served.server.decisions.token  # type: ignore[union-attr]
        chromium.open(f"http://127.0.0.1:{attacker.server_address[1]}/", landing=f"{page_url}/decide")
        assert "decision must come from this inspector's own pages" in chromium.dom().one(has_class("error")).text()
        # ... and a DNS name pointed at this machine is refused by its Host.
        chromium.open(f"http://rebound.localhost:{served.server.port}/runs/conv_wait")
        assert "answers only requests for" in chromium.dom().one(has_class("error")).text()
        assert deciding.calls == [] and REFUNDS == [] and store.load("conv_wait").waiting == "awaiting_approval"

        # From the page, with all of it: a JSON input, the approve button. The tool runs once.
        chromium.open(page_url)
        chromium.submit("document.querySelector('textarea[name=input]').value = '{\"by\": \"ops\"}';" + APPROVE)
        assert chromium.run("location.pathname + location.hash") == "/runs/conv_wait#waiting"
        shown = chromium.run(DECIDED, timeout=40)
        assert shown == "decided approve: the run went on to done (end_turn)"
        assert deciding.calls == [("conv_wait", "approve", {"by": "ops"})] and REFUNDS == [("A-100", 24.0)]
        page = chromium.dom()
        assert "done" in page.one(has_class("badge")).text() and not page.all(has_class("decide", "form"))
    finally:
        attacker.shutdown()
        attacker.server_close()
        served.stop()
        readonly.stop()
