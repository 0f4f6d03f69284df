"""The inspector's web server: the standard library's ``ThreadingHTTPServer``, no framework.

Routes (``GET`` and ``HEAD``; one ``POST``, only when deciding is allowed):

* ``/`` — the run list; ``/runs/<id>[?step=N]`` — a run, as it was after step N.
* ``/api/runs`` — the list as JSON; ``/api/runs/<id>`` — a run (summary, steps, tool calls, events);
  ``/api/runs/<id>/steps/<N>`` — the history after step N and what that step added;
  ``/api/runs/<id>/graph.svg|.mmd|.dot[?step=N]`` — its graph; ``/api/signature[?run=<id>]`` — a
  fingerprint that changes when the runs (or that run) change, which the pages poll to refresh.
* ``/static/<file>`` — the stylesheet, script and icon shipped in the package.
* ``POST /runs/<id>/decide`` — decide a waiting run (form fields ``csrf``, ``trigger``, ``input``), only
  on a server given a ``decider`` (``agentfsm ui --allow-decisions``); otherwise every ``POST`` is a 405.

An unknown run or path is a 404 page (or JSON ``{"error": ...}`` under ``/api``); a store that fails is
a 503 saying why. Requests whose ``Host`` is not the address served are refused, so a web page elsewhere
cannot read the runs through a DNS name pointed at this machine. A decision must also carry the server's
CSRF token (random per start, in the page's form; compared in constant time) and, if the browser sends
an ``Origin``, come from this server's own origin: a page elsewhere cannot decide a run through the
user's browser. The decision runs in a thread of its own (a tool, API requests); the answer is a 303
to the run page, which shows it under way and then how it ended.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from agentfsm.errors import AgentfsmError, CorruptSnapshotError
from agentfsm.observe.ui import listpage, pages
from agentfsm.observe.ui.decisions import Decider, Decisions
from agentfsm.observe.ui.sources import RunRow, RunsPage, Source, shown_page, shown_run
from agentfsm.observe.ui.view import RunView, build_view, step_json
from agentfsm.redaction import environment_secrets, redact, redact_text
from agentfsm.stores.listing import MAX_LIMIT, RunFilter

log = logging.getLogger("agentfsm.ui")

_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: Pages load nothing from anywhere but this server, run no inline script or style, and send their forms (the
#: run list's filter, a GET; the decision form) to this server only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Every other answer (JSON, the graph as SVG, Mermaid and DOT text, the static files), should a browser open it
#: as a document of its own: it loads nothing and runs nothing (``sandbox``), and an SVG keeps its inline style.
RESOURCE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"
#: The largest decision form accepted (the input is a small JSON value).
MAX_FORM_BYTES = 64 * 1024
#: An Anthropic-shaped key in a body about to be sent (``agentfsm.redaction``'s shape, as bytes). Its characters
#: are never escaped in HTML, JSON, SVG or text, and replacing them with ``[REDACTED]`` is safe in all four.
_KEY_SHAPE = re.compile(rb"sk-ant-[A-Za-z0-9_\-]{4,}")


def static_files() -> dict[str, bytes]:
    """The assets shipped in the package (``agentfsm/observe/ui/static``), by name."""
    folder = resources.files("agentfsm.observe.ui").joinpath("static")
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


class NotFound(Exception):
    """A path or a run that is not there: a 404."""


class BadRequest(Exception):
    """A malformed query: a 400."""


class Forbidden(Exception):
    """A request this server refuses to act on (a foreign Host or Origin, a missing or wrong CSRF token): a 403."""


class UIServer(ThreadingHTTPServer):
    """Serves ``source``'s runs. ``url`` is where; ``serve_forever()`` runs it, ``shutdown()`` stops it.

    ``decider`` (``(conversation_id, trigger, input) -> result``) lets the pages decide waiting runs;
    None (the default) keeps the inspector read-only: every ``POST`` is refused.

    Nothing it serves holds a credential, whatever the runs hold: ``secrets`` (by default the credentials of
    this process's environment, ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_AUTH_TOKEN``) and anything shaped like
    an Anthropic key are ``[REDACTED]`` in every page and JSON answer (``sources.shown_run``), and every body
    is scrubbed of the key shape once more as it is sent.
    """

    daemon_threads = True

    def __init__(
        self,
        source: Source,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        decider: Decider | None = None,
        secrets: Iterable[str] | None = None,
    ) -> None:
        self.source = source
        self.secrets: tuple[str, ...] = environment_secrets() if secrets is None else tuple(s for s in secrets if s)
        self.decisions = Decisions(decider) if decider is not None else None
        self.static = static_files()
        super().__init__((host, port), Handler)
        bound_host, bound_port = self.server_address[:2]
        self.port = int(bound_port)
        self.host = str(bound_host)
        shown = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::", "::1") else self.host
        self.url = f"http://{shown}:{self.port}/"
        # Names a browser may use for this server; any other Host is refused (a rebound DNS name).
        names = {"localhost", "127.0.0.1", "[::1]", host if ":" not in host else f"[{host}]"}
        self.any_host = host in ("0.0.0.0", "::", "")
        self.allowed_hosts = {f"{n}:{self.port}" for n in names} | (names if self.port == 80 else set())

    def view(self, run_id: str) -> RunView:
        try:
            data = self.source.run(run_id)
        except KeyError:
            raise NotFound(f"no run {run_id!r} in {self.source.label}") from None
        return build_view(shown_run(data, self.secrets))

    def page(self, run_filter: RunFilter, offset: int, limit: int) -> RunsPage:
        """A page of the run list, as it may be shown."""
        return shown_page(self.source.page(run_filter, offset, limit), self.secrets)

    def close(self) -> None:
        self.server_close()
        self.source.close()


def _row_json(row: RunRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "agent": row.agent,
        "state": row.state,
        "finished": row.finished,
        "reason": row.reason,
        "turns": row.turns,
        "tokens": row.tokens,
        "usage": row.usage.model_dump() if row.usage is not None else None,
        "cost_usd": row.cost_usd,
        "started": row.started,
        "updated": row.updated,
        "problem": row.problem,
        "waiting": row.waiting,
        "url": f"/runs/{quote(row.id, safe='')}",
    }


def _run_json(view: RunView, signature: str) -> dict[str, Any]:
    data = view.data
    run = _row_json(data.row) | {
        "kind": data.kind,
        "model": data.model,
        "stop_reason": data.stop_reason,
        "error": data.error,
        "elapsed_s": data.elapsed_s,
    }
    waiting = data.waiting
    grown = view.growth
    return {
        "run": run,
        "steps": [s.as_json() for s in view.steps],
        "graph": {
            "agent": view.drawn_on,
            "own": view.own_graph,
            "path": view.path_until(view.last),
            "current": data.row.state,
        },
        "history": None
        if data.messages is None or grown is None
        else {"messages": len(data.messages), "exact": grown.exact, "problem": grown.problem},
        "tool_calls": [c.as_json() for c in view.tool_calls],
        "events": [e.model_dump(mode="json") for e in data.events],
        "waiting": None
        if waiting is None
        else {
            "state": waiting.state,
            "triggers": waiting.triggers,
            "triggers_known": waiting.triggers_known,
            "tool_calls": [{"id": c.id, "name": c.name, "input": c.input} for c in waiting.calls],
            "why": waiting.why,
            "line": pages.waiting_line(waiting),
        },
        "signature": signature,
    }


class Handler(BaseHTTPRequestHandler):
    server: UIServer
    server_version = "agentfsm-ui"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: a library does not print
        log.debug("%s " + format, self.address_string(), *args)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_POST(self) -> None:
        self._serve(head=False, post=True)

    def _not_allowed(self) -> None:
        api = self.path.startswith("/api")
        self._fail(
            HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed", f"{self.command} is not answered here", api, False
        )

    do_PUT = do_DELETE = do_PATCH = _not_allowed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """``http.server``'s own refusals (a malformed request line, a URL too long, an unknown method) as this
        server's error pages: with the CSP and the other headers every answer carries."""
        self.close_connection = True
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        path = getattr(self, "path", "") or ""
        self._fail(
            status, status.phrase, message or status.description, path.startswith("/api"), self.command == "HEAD"
        )

    # --- answering ---------------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes, content_type: str, *, head: bool, csp: bool = False, scrub: bool = True
    ) -> None:
        if scrub and b"sk-ant-" in body:  # the last line of defence: no key leaves, whatever the page was made of
            body = _KEY_SHAPE.sub(b"[REDACTED]", body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # Nothing leaves for another site; and the browser's Origin on this server's own form posts stays its
        # origin (under no-referrer it would send "null", which the Origin check refuses).
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("Content-Security-Policy", CSP if csp else RESOURCE_CSP)
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD" + (", POST" if self.server.decisions is not None else ""))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _html(self, status: int, text: str, head: bool) -> None:
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8", head=head, csp=True)

    def _json(self, status: int, value: Any, head: bool) -> None:
        body = json.dumps(redact(value, self.server.secrets), ensure_ascii=False, default=str).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", head=head)

    def _serve(self, *, head: bool, post: bool = False) -> None:
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        api = bool(segments) and segments[0] == "api"
        label = self.server.source.label
        try:
            if not self._host_allowed():
                self._refuse(api, head)
                return
            if post:
                self._post(segments)
            else:
                self._route(segments, parse_qs(url.query), head)
        except Forbidden as exc:
            self._fail(HTTPStatus.FORBIDDEN, "Forbidden", str(exc), api, head)
        except NotFound as exc:
            self._fail(HTTPStatus.NOT_FOUND, "Not found", str(exc), api, head)
        except BadRequest as exc:
            self._fail(HTTPStatus.BAD_REQUEST, "Bad request", str(exc), api, head)
        except CorruptSnapshotError as exc:
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, "Cannot read this run", str(exc), api, head)
        except AgentfsmError as exc:  # the store or the events file failed: say why
            self._fail(HTTPStatus.SERVICE_UNAVAILABLE, f"Cannot read {label}", str(exc), api, head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:
            log.exception("agentfsm ui: %s failed", self.path)
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error", f"{type(exc).__name__}: {exc}", api, head)

    def _host_allowed(self) -> bool:
        if self.server.any_host:
            return True
        host = (self.headers.get("Host") or "").lower()
        return host in self.server.allowed_hosts

    def _refuse(self, api: bool, head: bool) -> None:
        message = f"this inspector answers only requests for {self.server.url} (Host: {self.headers.get('Host')!r})"
        self._fail(HTTPStatus.FORBIDDEN, "Forbidden", message, api, head)

    def _fail(self, status: HTTPStatus, title: str, message: str, api: bool, head: bool) -> None:
        message = redact_text(" ".join(message.split()), self.server.secrets)
        if api:
            self._json(status, {"error": message, "status": int(status)}, head)
        else:
            self._html(status, pages.error_page(self.server.source.label, int(status), title, message), head)

    # --- deciding -----------------------------------------------------------------------------------

    def _post(self, segments: list[str]) -> None:
        decisions = self.server.decisions
        if decisions is None:
            self.close_connection = True  # the body is not read
            self._fail(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "Method not allowed",
                "this inspector only shows runs: start it with --allow-decisions to decide waiting runs from it",
                self.path.startswith("/api"),
                False,
            )
            return
        match segments:
            case ["runs", run_id, "decide"] if run_id:
                pass
            case _:
                self.close_connection = True
                raise NotFound(f"nothing to post to at {self.path.split('?')[0]}")
        self._check_origin()
        form = self._form()
        if not decisions.token_ok(form.get("csrf")):
            raise Forbidden(
                "this decision does not carry this inspector's CSRF token: decide from the run page the inspector "
                "served (reload it: the token changes each time the inspector starts)"
            )
        trigger = (form.get("trigger") or form.get("other_trigger") or "").strip()
        self._decide(decisions, run_id, trigger, form.get("input") or "")
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", f"/runs/{quote(run_id, safe='')}#waiting")
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _decide(self, decisions: Decisions, run_id: str, trigger: str, text: str) -> None:
        """Start the decision, or record why it cannot start (the run page shows either)."""
        view = self.server.view(run_id)  # a 404 for an unknown run
        waiting = view.data.waiting
        if not trigger:
            decisions.refuse(run_id, trigger, "no trigger given: press one of the trigger buttons")
            return
        if waiting is None:
            state = view.data.row.state
            decisions.refuse(run_id, trigger, f"not decided: run {run_id!r} is not waiting (it is at {state!r})")
            return
        value: Any = None
        if text.strip():
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:  # RecursionError: nested past what a reader can read back
                decisions.refuse(run_id, trigger, f"not decided: the input is not JSON ({exc})")
                return
        decisions.start(run_id, trigger, value)

    def _check_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin is None:
            return  # not sent by every client (curl); the token still has to match
        host = (self.headers.get("Host") or "").lower()
        if origin.lower() != f"http://{host}":
            raise Forbidden(f"a decision must come from this inspector's own pages (Origin: {origin!r})")

    def _form(self) -> dict[str, str]:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            self.close_connection = True
            raise BadRequest(f"a decision is a form (application/x-www-form-urlencoded), not {kind or 'nothing'}")
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_FORM_BYTES:
            self.close_connection = True
            raise BadRequest(f"a decision form is at most {MAX_FORM_BYTES} bytes")
        body = self.rfile.read(length).decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def _signature(self, run_id: str | None) -> str:
        """The source's fingerprint, and the run's decision under way, if any: the page refreshes as either moves."""
        signature = self.server.source.signature(run_id)
        decisions = self.server.decisions
        decision = decisions.latest(run_id) if decisions is not None and run_id is not None else None
        return signature if decision is None else f"{signature}-{decision.status}-{decision.started!r}"

    def _route(self, segments: list[str], query: dict[str, list[str]], head: bool) -> None:
        server, source = self.server, self.server.source
        match segments:
            case [""] | ["runs"] | ["runs", ""]:
                wanted, offset, limit = _listing(query)
                found = server.page(wanted, offset, limit)
                self._html(200, listpage.runs_page(source.label, found, wanted, source.signature()), head)
            case ["runs", run_id] if run_id:
                view = server.view(run_id)
                step = view.clamp(_step(query))
                page = pages.run_page(
                    source.label, view, step, self._signature(run_id), server.decisions, path_only=_path_only(query)
                )
                self._html(200, page, head)
            case ["static", name] if name in server.static:
                suffix = name[name.rfind(".") :]
                kind = _TYPES.get(suffix, "application/octet-stream")
                self._send(200, server.static[name], kind, head=head, scrub=False)
            case ["api", "runs"]:
                wanted, offset, limit = _listing(query)
                found = server.page(wanted, offset, limit)
                self._json(
                    200,
                    {
                        "source": source.label,
                        "signature": source.signature(),
                        "runs": [_row_json(r) for r in found.rows],
                        "offset": found.offset,
                        "limit": found.limit,
                        "total": found.total.model_dump(),
                        "by_state": found.by_state,
                        "agents": found.agents,
                    },
                    head,
                )
            case ["api", "runs", run_id] if run_id:
                view = server.view(run_id)
                body = _run_json(view, self._signature(run_id))
                decision = server.decisions.latest(run_id) if server.decisions is not None else None
                body["decision"] = decision.as_json() if decision is not None else None
                self._json(200, body, head)
            case ["api", "runs", run_id, "steps", number]:
                view = server.view(run_id)
                n = _int(number, "step")
                if not 1 <= n <= view.last:
                    raise NotFound(f"run {run_id!r} has steps 1 to {view.last}, not {n}")
                self._json(200, step_json(view, n), head)
            case ["api", "runs", run_id, "graph.svg"]:
                view = server.view(run_id)
                text, content_type = _graph_svg(view, view.clamp(_step(query)), _path_only(query))
                self._send(200, text.encode("utf-8"), content_type, head=head)
            case ["api", "runs", run_id, name] if name in _GRAPHS:
                view = server.view(run_id)
                text, content_type = _GRAPHS[name](view, view.clamp(_step(query)))
                self._send(200, text.encode("utf-8"), content_type, head=head)
            case ["api", "signature"]:
                asked = query.get("run")
                if asked:
                    server.view(asked[0])  # a 404 for an unknown run
                self._json(200, {"signature": self._signature(asked[0] if asked else None)}, head)
            case _:
                raise NotFound(f"no page at {self.path.split('?')[0]}")


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{what} must be a whole number, not {text!r}") from None


def _step(query: dict[str, list[str]]) -> int | None:
    values = query.get("step")
    return _int(values[0], "step") if values else None


def _listing(query: dict[str, list[str]]) -> tuple[RunFilter, int, int]:
    """The run list's filter and page from its query: ``state``, ``agent``, ``q`` (an id prefix), ``offset``,
    ``limit`` (100 by default, at most 1000)."""

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0].strip() or None if values else None

    offset = _int(one("offset") or "0", "offset")
    limit = _int(one("limit") or str(listpage.PAGE_SIZE), "limit")
    if offset < 0 or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"offset must be 0 or more and limit between 1 and {MAX_LIMIT}")
    return RunFilter(state=one("state"), agent=one("agent"), id_prefix=one("q")), offset, limit


def _path_only(query: dict[str, list[str]]) -> bool:
    """``?graph=path`` (only what the run went through) or ``?graph=all`` (the default)."""
    values = query.get("graph")
    if not values or values[0] == "all":
        return False
    if values[0] == "path":
        return True
    raise BadRequest(f"graph must be 'all' or 'path', not {values[0]!r}")


def _graph_svg(view: RunView, step: int, path_only: bool = False) -> tuple[str, str]:
    from agentfsm.observe.ui.svg import render_svg

    css = static_files()["graph.css"].decode("utf-8")
    svg = render_svg(view.drawn(path_only), [s.step for s in view.steps], step, style=css)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n", "image/svg+xml; charset=utf-8"


def _graph_text(kind: str) -> Callable[[RunView, int], tuple[str, str]]:
    def render(view: RunView, step: int) -> tuple[str, str]:
        from agentfsm.observe.graph import render_text

        return render_text(view.graph_at(step), "mermaid" if kind == "mmd" else "dot"), "text/plain; charset=utf-8"

    return render


_GRAPHS: dict[str, Callable[[RunView, int], tuple[str, str]]] = {
    "graph.mmd": _graph_text("mmd"),
    "graph.dot": _graph_text("dot"),
}
