"""The inspector's web server: the standard library's ``ThreadingHTTPServer``, no framework.

Routes (all ``GET``; ``HEAD`` too):

* ``/`` — the run list; ``/runs/<id>[?step=N]`` — a run, as it was after step N.
* ``/api/runs`` — the list as JSON; ``/api/runs/<id>`` — a run (summary, steps, tool calls, events);
  ``/api/runs/<id>/steps/<N>`` — the history after step N and what that step added;
  ``/api/runs/<id>/graph.svg|.mmd|.dot[?step=N]`` — its graph; ``/api/signature[?run=<id>]`` — a
  fingerprint that changes when the runs (or that run) change, which the pages poll to refresh.
* ``/static/<file>`` — the stylesheet, script and icon shipped in the package.

An unknown run or path is a 404 page (or JSON ``{"error": ...}`` under ``/api``); a store that fails is
a 503 saying why. Requests whose ``Host`` is not the address served are refused, so a web page elsewhere
cannot read the runs through a DNS name pointed at this machine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from agentfsm.errors import AgentfsmError, CorruptSnapshotError
from agentfsm.observe.ui import pages
from agentfsm.observe.ui.sources import RunRow, Source
from agentfsm.observe.ui.view import RunView, build_view, step_json

log = logging.getLogger("agentfsm.ui")

_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: Pages load nothing from anywhere but this server, and run no inline script or style.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def static_files() -> dict[str, bytes]:
    """The assets shipped in the package (``agentfsm/observe/ui/static``), by name."""
    folder = resources.files("agentfsm.observe.ui").joinpath("static")
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


class NotFound(Exception):
    """A path or a run that is not there: a 404."""


class BadRequest(Exception):
    """A malformed query: a 400."""


class UIServer(ThreadingHTTPServer):
    """Serves ``source``'s runs. ``url`` is where; ``serve_forever()`` runs it, ``shutdown()`` stops it."""

    daemon_threads = True

    def __init__(self, source: Source, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.source = source
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
        return build_view(data)

    def close(self) -> None:
        self.server_close()
        self.source.close()


def _row_json(row: RunRow) -> dict[str, Any]:
    from urllib.parse import quote

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

    # --- answering ---------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, *, head: bool, csp: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if csp:
            self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _html(self, status: int, text: str, head: bool) -> None:
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8", head=head, csp=True)

    def _json(self, status: int, value: Any, head: bool) -> None:
        body = json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", head=head)

    def _serve(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        api = bool(segments) and segments[0] == "api"
        label = self.server.source.label
        try:
            if not self._host_allowed():
                self._refuse(api, head)
                return
            self._route(segments, parse_qs(url.query), head)
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
        message = " ".join(message.split())
        if api:
            self._json(status, {"error": message, "status": int(status)}, head)
        else:
            self._html(status, pages.error_page(self.server.source.label, int(status), title, message), head)

    def _route(self, segments: list[str], query: dict[str, list[str]], head: bool) -> None:
        server, source = self.server, self.server.source
        match segments:
            case [""] | ["runs"] | ["runs", ""]:
                self._html(200, pages.runs_page(source.label, source.runs(), source.signature()), head)
            case ["runs", run_id] if run_id:
                view = server.view(run_id)
                step = view.clamp(_step(query))
                self._html(200, pages.run_page(source.label, view, step, source.signature(run_id)), head)
            case ["static", name] if name in server.static:
                suffix = name[name.rfind(".") :]
                self._send(200, server.static[name], _TYPES.get(suffix, "application/octet-stream"), head=head)
            case ["api", "runs"]:
                rows = source.runs()
                self._json(
                    200,
                    {"source": source.label, "signature": source.signature(), "runs": [_row_json(r) for r in rows]},
                    head,
                )
            case ["api", "runs", run_id] if run_id:
                view = server.view(run_id)
                self._json(200, _run_json(view, source.signature(run_id)), head)
            case ["api", "runs", run_id, "steps", number]:
                view = server.view(run_id)
                n = _int(number, "step")
                if not 1 <= n <= view.last:
                    raise NotFound(f"run {run_id!r} has steps 1 to {view.last}, not {n}")
                self._json(200, step_json(view, n), head)
            case ["api", "runs", run_id, name] if name in _GRAPHS:
                view = server.view(run_id)
                text, content_type = _GRAPHS[name](view, view.clamp(_step(query)))
                self._send(200, text.encode("utf-8"), content_type, head=head)
            case ["api", "signature"]:
                wanted = query.get("run")
                if wanted:
                    server.view(wanted[0])  # a 404 for an unknown run
                self._json(200, {"signature": source.signature(wanted[0] if wanted else None)}, head)
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


def _graph_svg(view: RunView, step: int) -> tuple[str, str]:
    from agentfsm.observe.ui.svg import render_svg

    css = static_files()["graph.css"].decode("utf-8")
    svg = render_svg(view.graph, [s.step for s in view.steps], step, style=css)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n", "image/svg+xml; charset=utf-8"


def _graph_text(kind: str) -> Callable[[RunView, int], tuple[str, str]]:
    def render(view: RunView, step: int) -> tuple[str, str]:
        from agentfsm.observe.graph import render_text

        graph = view.graph
        if step < view.last:  # the path as it was after that step
            from agentfsm.observe.graph import build, resolve_agent

            trace = [s.step for s in view.steps[:step]]
            graph = build(
                resolve_agent(view.drawn_on).table(), title=graph.title, trace=trace, current=view.state_at(step)
            )
        return render_text(graph, "mermaid" if kind == "mmd" else "dot"), "text/plain; charset=utf-8"

    return render


_GRAPHS: dict[str, Callable[[RunView, int], tuple[str, str]]] = {
    "graph.svg": _graph_svg,
    "graph.mmd": _graph_text("mmd"),
    "graph.dot": _graph_text("dot"),
}
