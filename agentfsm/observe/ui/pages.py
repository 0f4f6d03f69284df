"""The inspector's HTML: a run's page, error pages, and what every page shares (the list is ``listpage``).

Pages are complete without JavaScript: a run page is drawn as it was after
the step its URL asks for (``?step=N``, by default the last), and the
previous/next links load the neighbouring steps. ``static/ui.js`` makes the
same page step through without reloading (``#step=N``, the arrow keys) by
reading the ``data-step`` of each piece: a message, block or run of text
with ``data-step`` greater than the step shown is hidden, one equal to it is
marked ``added`` (the diff from the step before). Every value shown is
escaped; nothing is loaded from outside the server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from html import escape
from typing import Any
from urllib.parse import quote

from agentfsm.observe.events import Event
from agentfsm.observe.ui.decisions import Decision, Decisions
from agentfsm.observe.ui.history import Growth, pieces
from agentfsm.observe.ui.sources import PendingCall, RunRow, Waiting
from agentfsm.observe.ui.svg import render_svg
from agentfsm.observe.ui.view import RunView, StepView, ToolCallView
from agentfsm.wire.messages import blocks

#: Shown when the source is an events file, on every run page.
EVENTS_NOTE = (
    "Read from an events file: it records every request, reply, transition and tool call with its timing, "
    "but no message content and no tool inputs or results. Serve the store (--store) to see those."
)
STORE_NOTE = (
    "Read from a store, which keeps each run's latest history, usage, trace and tool timings, but not its "
    "events (request latencies, retries): serve an events file of the run (--events FILE) to see those."
)


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def quote_id(run_id: str) -> str:
    """A run id as one path segment of a URL."""
    return quote(run_id, safe="")


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))


def cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"


def short_agent(agent: str | None) -> str:
    if not agent:
        return "—"
    return agent.rpartition(":")[2] or agent


def layout(title: str, label: str, body: str) -> str:
    """A whole page around ``body`` (a ``<main>`` element)."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · agentfsm ui</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/ui.css"><link rel="stylesheet" href="/static/graph.css">'
        '<script src="/static/ui.js" defer></script></head><body>'
        f'<header class="top"><a class="brand" href="/">agentfsm ui</a>'
        f'<span class="source" title="what this inspector reads">{_e(label)}</span>'
        '<span class="live-status" aria-live="polite"></span></header>'
        f"{body}</body></html>\n"
    )


def state_badge(state: str, finished: bool, waiting: str | None = None) -> str:
    if waiting is not None:
        return (
            f'<span class="badge state-waiting" title="stopped to wait for a decision">waiting at {_e(waiting)}</span>'
        )
    kind = state if finished else "live"
    text = state if finished else f"at {state}"
    return f'<span class="badge state-{_e(kind)}">{_e(text)}</span>'


def call_text(call: PendingCall, limit: int = 120) -> str:
    """A held-back tool call as an operator reads it: ``name(arg=value, ...)``, values as JSON (cut at ``limit``)."""

    def shown(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False, default=str)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    if isinstance(call.input, dict):
        return f"{call.name}({', '.join(f'{k}={shown(v)}' for k, v in call.input.items())})"
    return f"{call.name}()" if call.input is None else f"{call.name}({shown(call.input)})"


def waiting_line(waiting: Waiting) -> str:
    """``waiting for: approve | refuse — issue_refund(order_id="A-100", amount=24.0)``, as plain text."""
    if waiting.triggers_known:
        triggers = " | ".join(waiting.triggers) or "(no trigger leaves this state)"
    else:
        triggers = " | ".join(waiting.triggers) + " (and perhaps others: not recorded with this run)"
        if not waiting.triggers:
            triggers = "a trigger not recorded with this run"
    calls = "; ".join(call_text(c) for c in waiting.calls)
    return f"waiting for: {triggers}" + (f" — {calls}" if calls else "")


def tokens_title(row: RunRow) -> str:
    u = row.usage
    if u is None:
        return ""
    return (
        f"input {u.input_tokens:,} · output {u.output_tokens:,} · cache read {u.cache_read_input_tokens:,} · "
        f"cache write {u.cache_creation_input_tokens:,} · {u.requests} requests"
    )


# --- a run ------------------------------------------------------------------------------------------------


def run_page(
    label: str,
    view: RunView,
    step: int,
    signature: str,
    decisions: Decisions | None = None,
    *,
    path_only: bool = False,
) -> str:
    """A run's page; with ``decisions`` (an inspector started with ``--allow-decisions``), a waiting run's
    banner has the form that decides it; ``path_only`` draws only the states and transitions the run went
    through."""
    row = view.data.row
    last = view.last
    decision = decisions.latest(row.id) if decisions is not None else None
    live = "0" if row.finished and (decision is None or decision.status != "running") else "1"
    graph = "path" if path_only else "all"
    out = [
        f'<main id="main" data-page="run" data-run="{_e(row.id)}" data-step="{step}" data-last="{last}" '
        f'data-live="{live}" data-poll="/api/signature?run={_e(quote_id(row.id))}" data-signature="{_e(signature)}" '
        f'data-graph="{graph}">'
    ]
    keep = "&amp;graph=path" if path_only else ""  # the links keep the graph view
    out.append(_summary(view))
    out.append(_waiting(view, decisions, decision))
    out.append(_stepper(view, step, keep))
    out.append('<div class="grid">')
    out.append(_graph_panel(view, step, path_only))
    out.append(_timeline(view, step, keep))
    out.append(_history(view, step))
    out.append(_tools(view, step))
    out.append(_request(view))
    out.append("</div></main>")
    return layout(row.id, label, "".join(out))


def _summary(view: RunView) -> str:
    data, row = view.data, view.data.row
    u = row.usage
    facts = [
        ("agent", f'<span title="{_e(row.agent or "")}">{_e(row.agent or "—")}</span>'),
        ("model", _e(data.model or "—")),
        ("reason", _e(row.reason or "—")),
        ("stop reason", _e(data.stop_reason or "—")),
        ("turns", str(row.turns)),
        (
            "tokens",
            "—"
            if u is None
            else f'<span title="{_e(tokens_title(row))}">{u.total_tokens:,}</span> '
            f'<span class="dim">(in {u.input_tokens:,}, out {u.output_tokens:,})</span>',
        ),
        ("cost", _e(cost(row.cost_usd))),
        ("started", f'<time datetime="{_e(iso(row.started))}">{_e(when(row.started))}</time>'),
        ("wall time", "—" if data.elapsed_s is None else f"{data.elapsed_s:.2f} s"),
    ]
    parent = data.forked_from
    if parent is not None:  # a fork (agent.fork, agent.rerun): its parent's page, at the step it was cut at
        href = f"/runs/{_e(quote_id(parent.conversation_id))}?step={parent.step}"
        link = f'<a class="forked-from" href="{href}">{_e(parent.conversation_id)}</a> at step {parent.step}'
        facts.insert(1, ("forked from", link))
    dl = "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in facts)
    error = f'<p class="error">{_e(data.error)}</p>' if data.error else ""
    note = EVENTS_NOTE if data.kind == "events" else STORE_NOTE
    graph_note = ""
    if not view.own_graph:
        held = (
            "an events file records no graph"
            if data.kind == "events"
            else "its row holds none (stored by an earlier agentfsm, or unreadable)"
        )
        graph_note = (
            f"<p class=\"note\">The graph is the base Agent's, not that of the run's class {_e(row.agent)}: "
            f"{held}, and the inspector never imports a run's code to draw it. Steps that graph lacks are "
            "dashed.</p>"
        )
    running = ""
    if data.running:
        running = (
            f'<p class="warning">{len(data.running)} tool call(s) were running at the last save and have no result: '
            "if the process stopped, agent.resume answers them as interrupted (or runs them again if idempotent).</p>"
        )
    return (
        f'<section class="summary"><h1><span class="run-id">{_e(row.id)}</span> '
        f"{state_badge(row.state, row.finished, row.waiting)}</h1><dl>{dl}</dl>{error}{running}"
        f'<p class="note">{_e(note)}</p>{graph_note}</section>'
    )


def _waiting(view: RunView, decisions: Decisions | None, decision: Decision | None) -> str:
    """The banner of a waiting run: what it waits for, the decision taken from here, and (when allowed) the form."""
    waiting, row = view.data.waiting, view.data.row
    if waiting is None and decision is None:
        return ""
    out = ['<section class="waiting-banner" id="waiting">']
    if waiting is not None:
        out.append(f'<p class="waiting-for">{_e(waiting_line(waiting))}</p>')
        why = f" because {_e(waiting.why)}" if waiting.why else ""
        out.append(
            f'<p class="note">Stopped at <code>{_e(waiting.state)}</code>{why} until someone decides: '
            f"<code>agent.resume(&quot;{_e(row.id)}&quot;, store=..., trigger=...)</code> or "
            f"<code>agentfsm runs decide {_e(row.id)} TRIGGER --agent MODULE:Class</code>.</p>"
        )
    if decision is not None:
        out.append(
            f'<p class="decision decision-{_e(decision.status)}" data-status="{_e(decision.status)}">'
            + (f"deciding {_e(decision.trigger)}…" if decision.status == "running" else _e(decision.message))
            + "</p>"
        )
    if decisions is not None and waiting is not None and (decision is None or decision.status != "running"):
        out.append(_decide_form(row.id, waiting, decisions.token))
    out.append("</section>")
    return "".join(out)


def _decide_form(run_id: str, waiting: Waiting, token: str) -> str:
    buttons = "".join(
        f'<button type="submit" name="trigger" value="{_e(t)}">{_e(t)}</button>' for t in waiting.triggers
    )
    other = ""
    if not waiting.triggers_known:  # the row does not say which triggers leave the state: let one be typed
        other = (
            '<label>trigger <input name="other_trigger" autocomplete="off" spellcheck="false"></label>'
            '<button type="submit" name="trigger" value="">decide</button>'
        )
    return (
        f'<form class="decide" method="post" action="/runs/{_e(quote_id(run_id))}/decide">'
        f'<input type="hidden" name="csrf" value="{_e(token)}">'
        '<label class="input">input (JSON, optional: what the hook and the action read as conv.input)'
        '<textarea name="input" rows="2" spellcheck="false" placeholder=\'{"reason": "..."}\'></textarea></label>'
        f'<div class="buttons">{buttons}{other}</div></form>'
    )


def step_label(view: StepView) -> str:
    s = view.step
    return f"turn {s.turn} · {s.source} → {s.dest} ({s.trigger})"


def _stepper(view: RunView, step: int, keep: str = "") -> str:
    last = view.last
    if not last:
        return '<nav class="stepper"><span class="where">no transitions yet</span></nav>'

    def link(cls: str, target: int, text: str, key: str) -> str:
        off = target < 1 or target > last or target == step
        attrs = ' aria-disabled="true" tabindex="-1"' if off else ""
        target = min(max(target, 1), last)
        return (
            f'<a class="{cls}{" off" if off else ""}" href="?step={target}{keep}" data-goto="{target}" '
            f'title="{key}"{attrs}>{text}</a>'
        )

    this = view.steps[step - 1]
    return (
        '<nav class="stepper" aria-label="step through the transitions">'
        + link("first", 1, "« first", "first step (Home)")
        + link("prev", step - 1, "◀ previous", "previous step (←)")
        + f'<span class="where">step <b class="step-no">{step}</b> of <b>{last}</b>: '
        f'<span class="step-label">{_e(step_label(this))}</span></span>'
        + link("next", step + 1, "next ▶", "next step (→)")
        + link("last", last, "last »", "last step (End)")
        + "</nav>"
    )


def _graph_panel(view: RunView, step: int, path_only: bool) -> str:
    graph = view.drawn(path_only)
    svg = render_svg(graph, [s.step for s in view.steps], step)
    rid = _e(quote_id(view.data.row.id))
    here = f"?step={step}&" if step else "?"
    toggle = (
        f'<a class="graph-all" href="{here}graph=all">whole graph</a> · <b>path only</b>'
        if path_only
        else f'<b>whole graph</b> · <a class="graph-path" href="{here}graph=path">path only</a>'
    )
    query = "?graph=path" if path_only else ""
    wait = ' <span class="key wait"></span>waits for a decision (Wait)' if graph.waits else ""
    return (
        f'<section class="panel graph-panel" data-graph="{"path" if path_only else "all"}">'
        f'<h2>State graph <span class="graph-view">{toggle}</span></h2>'
        f'<figure class="graph">{svg}</figure>'
        '<p class="legend"><span class="key current"></span>current state <span class="key visited"></span>visited '
        f'<span class="key taken"></span>transition taken (×count so far){wait}'
        f' · <a href="/api/runs/{rid}/graph.svg{query}">SVG</a> <a href="/api/runs/{rid}/graph.mmd">Mermaid</a> '
        f'<a href="/api/runs/{rid}/graph.dot">DOT</a></p></section>'
    )


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.2f} ms"
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.2f} s"


def _event_text(event: Event) -> str:
    data = dict(event.data)
    usage = data.pop("usage", None)
    parts = []
    for key, value in data.items():
        if key in ("source", "dest", "trigger") and event.event == "transition":
            continue
        if value is None or value == [] or value == {}:
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={text if len(text) <= 80 else text[:79] + '…'}")
    if isinstance(usage, dict):
        parts.append(f"tokens in {usage.get('input_tokens', 0)} out {usage.get('output_tokens', 0)}")
    return " ".join(parts)


def _timeline(view: RunView, step: int, keep: str = "") -> str:
    out = ['<section class="panel timeline"><h2>Timeline</h2>']
    if not view.steps:
        out.append('<p class="empty">No transition yet.</p></section>')
        return "".join(out)
    start = view.data.events[0].timestamp if view.data.events else None
    out.append('<ol class="steps">')
    for s in view.steps:
        cls = "selected" if s.index == step else ("future" if s.index > step else "past")
        answered = [c for c in view.tool_calls if c.answered_at == s.index and c.kind == "client"]
        tools = "".join(
            f'<span class="tool{" error" if c.is_error else ""}">{_e(c.name)} {_ms(c.duration_ms)}</span>'
            for c in answered
        )
        change = f'<span class="change">{_e(s.change)}</span>' if s.change else ""
        events = ""
        if s.events:
            items = []
            for ev in s.events:
                offset = f"+{ev.timestamp - start:.3f} s" if start is not None and ev.timestamp else ""
                items.append(
                    f'<li class="event level-{_e(ev.level)}"><span class="t">{_e(offset)}</span> '
                    f'<span class="name">{_e(ev.event)}</span> <span class="data">{_e(_event_text(ev))}</span></li>'
                )
            events = f'<ul class="events">{"".join(items)}</ul>'
        out.append(
            f'<li class="{cls}" data-step="{s.index}" data-label="{_e(step_label(s))}">'
            f'<a href="?step={s.index}{keep}" data-goto="{s.index}"><span class="n">{s.index}</span>'
            f'<span class="turn">turn {s.step.turn}</span>'
            f'<span class="move">{_e(s.step.source)} → <b>{_e(s.step.dest)}</b></span>'
            f'<span class="trigger">{_e(s.step.trigger)}</span></a>'
            f'<div class="details">{change}{tools}</div>{events}</li>'
        )
    out.append("</ol></section>")
    return "".join(out)


# --- the history --------------------------------------------------------------------------------------------


def _mark(at: int, step: int) -> str:
    """The attributes of a piece that appeared at step ``at``, on the page of step ``step``."""
    hidden = " hidden" if at > step else ""
    added = ' class="added"' if at == step and step > 1 else ""
    return f' data-step="{at}"{added}{hidden}'


def _mark_cls(cls: str, at: int, step: int) -> str:
    hidden = " hidden" if at > step else ""
    extra = " added" if at == step and step > 1 else ""
    return f' class="{cls}{extra}" data-step="{at}"{hidden}'


#: The most characters of one value (a tool's input or result, a block) a page draws. A browser takes tens of
#: seconds to lay out a 5 MB line, and no one reads it there: the page says how much more there is, and the
#: run's JSON (``/api/runs/<id>``) has every character.
SHOWN_CHARS = 20_000


def _cut(text: str) -> str:
    """``text`` escaped, at most ``SHOWN_CHARS`` of it, and a note of what was left out."""
    if len(text) <= SHOWN_CHARS:
        return _e(text)
    more = len(text) - SHOWN_CHARS
    return f'{_e(text[:SHOWN_CHARS])}<span class="dim cut">… {more:,} more characters (all in the run\'s JSON)</span>'


def _json(value: Any) -> str:
    return _cut(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return _cut(content)
    if isinstance(content, list):
        parts = []
        for b in content:
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text":
                parts.append(_cut(str(b.get("text", ""))))
            elif kind in ("image", "document"):
                parts.append(f"[{kind}]")
            elif kind == "web_search_result":  # its encrypted_content is for the model, not for reading
                parts.append(f"{_e(b.get('title'))} — {_e(b.get('url'))}")
            else:
                parts.append(_json(b))
        return "\n".join(parts)
    return _json(content)


def _block(block: dict[str, Any], text_pieces: Iterable[tuple[str, int]], step: int) -> str:
    kind = str(block.get("type"))
    if kind == "text":
        spans = "".join(f"<span{_mark(at, step)}>{_e(chunk)}</span>" for chunk, at in text_pieces)
        return f'<pre class="text">{spans}</pre>'
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        return (
            f'<div class="head">{_e(kind)} <b>{_e(block.get("name"))}</b> <code>{_e(block.get("id"))}</code></div>'
            f'<pre class="json">{_json(block.get("input"))}</pre>'
        )
    if kind == "tool_result" or kind.endswith("_tool_result"):
        error = " (error)" if block.get("is_error") else ""
        return (
            f'<div class="head">{_e(kind)} for <code>{_e(block.get("tool_use_id"))}</code>{error}</div>'
            f'<pre class="result">{_result_text(block.get("content"))}</pre>'
        )
    if kind in ("thinking", "redacted_thinking"):
        text = block.get("thinking") if kind == "thinking" else "(redacted)"
        return f'<details><summary>{_e(kind)}</summary><pre class="text">{_e(text)}</pre></details>'
    return f'<div class="head">{_e(kind)}</div><pre class="json">{_json(block)}</pre>'


def _history(view: RunView, step: int) -> str:
    if step:
        out = [f'<section class="panel history"><h2>History after step <span class="step-no">{step}</span></h2>']
    else:  # stored as it started: the history it was given
        out = ['<section class="panel history"><h2>History (no transition yet)</h2>']
    messages = view.data.messages
    grown = view.growth
    if messages is None or grown is None:
        sizes = [s.step.history_size for s in view.steps]
        size = sizes[step - 1] if step and sizes and sizes[step - 1] else None
        where = f"After this step the history held {size[0]} messages. " if size else ""
        out.append(f'<p class="note">{where}An events file holds no message content.</p></section>')
        return "".join(out)
    out.append(
        '<p class="legend"><span class="key added"></span>added by this step (the diff from the step before) · '
        "a message that a later step extends is marked ⋯</p>"
    )
    if not grown.exact and grown.problem:
        out.append(f'<p class="warning">Every step shows the stored (latest) history: {_e(grown.problem)}.</p>')
    out.append('<div class="messages">')
    step = max(step, 1)  # with no transition yet, everything there is was there from the start
    visible_last = _last_visible(grown, step)
    for i, message in enumerate(messages):
        at = grown.messages[i] if grown.exact else 1
        role = str(message.get("role"))
        grows = " grows-later" if i == visible_last and _grows_after(grown, i, step) else ""
        out.append(
            f"<article{_mark_cls(f'message role-{_e(role)}{grows}', at, step)}>"
            f'<header><span class="idx">#{i + 1}</span> <span class="role">{_e(role)}</span></header>'
        )
        for j, block in enumerate(blocks(message)):
            b_at = grown.blocks[i][j] if grown.exact else 1
            text = block.get("text") if block.get("type") == "text" else None
            chunks = pieces(text, grown.cuts.get((i, j)), b_at) if isinstance(text, str) else []
            kind = _e(block.get("type"))
            out.append(f"<div{_mark_cls('block ' + kind, b_at, step)}>{_block(block, chunks, step)}</div>")
        out.append("</article>")
    out.append("</div></section>")
    return "".join(out)


def _last_visible(grown: Growth, step: int) -> int:
    return max((i for i, at in enumerate(grown.messages) if at <= step), default=-1)


def _grows_after(grown: Growth, i: int, step: int) -> bool:
    later = [at for at in grown.blocks[i] if at > step]
    later += [at for (m, _), cuts in grown.cuts.items() if m == i for _, at in cuts if at > step]
    return bool(later)


# --- tool calls -------------------------------------------------------------------------------------------


def _tools(view: RunView, step: int) -> str:
    calls = view.tool_calls
    out = ['<section class="panel tools"><h2>Tool calls</h2>']
    if not calls:
        out.append('<p class="empty">No tool calls.</p></section>')
        return "".join(out)
    events = view.data.kind == "events"
    out.append(
        '<table class="tools"><thead><tr><th class="num">Step</th><th>Tool</th><th>Input</th><th>Result</th>'
        '<th class="num">Duration</th></tr></thead><tbody>'
    )
    for c in calls:
        out.append(_tool_row(c, step, events))
    out.append("</tbody></table></section>")
    return "".join(out)


def _tool_row(c: ToolCallView, step: int, events: bool) -> str:
    at = c.called_at or 1
    cls = ["call", c.kind, c.status]
    if c.is_error:
        cls.append("error")
    if at > step:
        cls.append("future")
    if step > 1 and (c.answered_at == step or c.called_at == step):
        cls.append("added")
    where = str(c.called_at or "—")
    if c.answered_at and c.answered_at != c.called_at:
        where += f"→{c.answered_at}"
    if events:
        given = '<span class="dim">not in events</span>'
        got = '<span class="dim">not in events</span>' if c.status == "finished" else _e(c.status)
    else:
        given = f'<pre class="json">{_json(c.input)}</pre>'
        if c.status in ("answered", "committed"):
            got = f'<pre class="result">{_result_text(c.result)}</pre>'
            if c.status == "committed":
                got = '<span class="dim">committed, not yet in the history</span>' + got
        else:
            got = f'<span class="dim">{_e(c.status)}</span>'
    kind = "" if c.kind == "client" else ' <span class="dim">(server tool)</span>'
    error = ' <span class="badge state-failed">error</span>' if c.is_error else ""
    return (
        f'<tr class="{" ".join(cls)}" data-step="{at}" data-answered="{c.answered_at or ""}">'
        f'<td class="num">{_e(where)}</td><td><b>{_e(c.name)}</b>{kind}{error}<br><code>{_e(c.id)}</code></td>'
        f'<td>{given}</td><td>{got}</td><td class="num">{_ms(c.duration_ms)}</td></tr>'
    )


# --- what the requests are sent with ------------------------------------------------------------------------


def _request(view: RunView) -> str:
    """The model, max_tokens and every other request parameter the run is sent with; the system prompt and
    each tool (description, input schema) folded. From the stored snapshot: no Agent class is imported."""
    data = view.data
    params = dict(data.request or {})
    system = params.pop("system", None)
    tools = params.pop("tools", None)
    rows = [("model", _e(data.model or "—")), ("max_tokens", _e(data.max_tokens if data.max_tokens else "—"))]
    rows += [(_e(k), f"<code>{_e(json.dumps(v, ensure_ascii=False, default=str))}</code>") for k, v in params.items()]
    table = "".join(f'<tr><th>{name}</th><td data-param="{name}">{value}</td></tr>' for name, value in rows)
    out = ['<section class="panel request"><h2>Requests are sent with</h2>', f'<table class="params">{table}</table>']
    if data.request is None:
        where = "an events file" if data.kind == "events" else "this stored run (an earlier agentfsm saved it)"
        out.append(f'<p class="note">The system prompt, the tools and the other parameters are not in {where}.</p>')
    else:
        if system is None:
            out.append('<p class="note">No system prompt.</p>')
        else:
            text = system if isinstance(system, str) else _result_text(system)
            shown = _e(text) if isinstance(system, str) else text
            out.append(
                f'<details class="system"><summary>system prompt ({len(str(text)):,} characters)</summary>'
                f'<pre class="text">{shown}</pre></details>'
            )
        out.append(_tool_list(tools if isinstance(tools, list) else []))
    out.append("</section>")
    return "".join(out)


def _tool_list(tools: list[Any]) -> str:
    if not tools:
        return '<p class="note">No tools.</p>'
    items = []
    for t in tools:
        spec = t if isinstance(t, dict) else {"name": str(t)}
        name = spec.get("name") or spec.get("type") or "?"
        description = spec.get("description")
        schema = spec.get("input_schema")
        kind = "" if "input_schema" in spec or "type" not in spec else f' <span class="dim">({_e(spec["type"])})</span>'
        body = f'<p class="description">{_e(description)}</p>' if description else ""
        shown = schema if schema is not None else {k: v for k, v in spec.items() if k != "name"}
        body += f'<pre class="json">{_json(shown)}</pre>'
        items.append(
            f'<li><details class="tool-spec" data-tool="{_e(name)}"><summary><b>{_e(name)}</b>{kind}'
            f"{' — ' + _e(_first_line(description)) if description else ''}</summary>{body}</details></li>"
        )
    head = f'<p class="tools-head">{len(tools)} tool{"" if len(tools) == 1 else "s"}:</p>'
    return f'{head}<ul class="tool-specs">{"".join(items)}</ul>'


def _first_line(text: Any) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= 100 else line[:99] + "…"


# --- errors ------------------------------------------------------------------------------------------------


def error_page(label: str, status: int, title: str, message: str) -> str:
    body = (
        f'<main id="main" class="error-page" data-status="{status}"><h1>{_e(title)}</h1>'
        f'<p class="error">{_e(message)}</p><p><a href="/">All runs</a></p></main>'
    )
    return layout(title, label, body)
