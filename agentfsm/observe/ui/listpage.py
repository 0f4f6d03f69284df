"""The inspector's run list: a filter (state, agent, id prefix), the filtered set's totals, and one page of it.

Drawn from a store's paged listing (``agentfsm.stores.listing``): a page of rows and the totals, never
every run; built from the pieces every page shares (``pages``).
"""

from __future__ import annotations

from agentfsm.observe.ui.pages import (
    _e,
    cost,
    iso,
    layout,
    quote_id,
    short_agent,
    state_badge,
    tokens_title,
    when,
)
from agentfsm.observe.ui.sources import RunsPage
from agentfsm.stores.listing import RunFilter

#: Runs on one page of the run list.
PAGE_SIZE = 100


def runs_page(label: str, found: RunsPage, wanted: RunFilter, signature: str) -> str:
    """The run list: a filter (state, agent, id prefix), the filtered set's totals, and one page of it."""
    main = (
        f'<main id="main" data-page="runs" data-poll="/api/signature" data-signature="{_e(signature)}" data-live="1">'
    )
    everything = not (wanted.state or wanted.agent or wanted.id_prefix)
    if everything and not found.rows and found.offset == 0:
        body = (
            f'{main}<h1>Runs</h1><p class="empty">No runs in {_e(label)} yet. A run is stored by '
            "<code>agent.run(prompt, store=agentfsm.SQLiteStore(PATH))</code>; this page shows it as soon as "
            "it starts.</p></main>"
        )
        return layout("Runs", label, body)
    out = [main, "<h1>Runs</h1>", _filter_form(found, wanted), _totals(found, label, everything)]
    if not found.rows:
        out.append('<p class="empty">No run matches.</p></main>')
        return layout("Runs", label, "".join(out))
    out.append(
        '<table class="runs"><thead><tr><th>Run</th><th>Agent</th><th>Final state</th><th>Reason</th>'
        '<th class="num">Turns</th><th class="num">Tokens</th><th class="num">Cost</th><th>Started</th>'
        "</tr></thead><tbody>"
    )
    for row in found.rows:
        href = f"/runs/{_e(quote_id(row.id))}"
        problem = f'<div class="problem">cannot be read: {_e(row.problem)}</div>' if row.problem else ""
        tokens = "—" if row.tokens is None else f"{row.tokens:,}"
        kind = " finished" if row.finished else (" waiting" if row.waiting else " unfinished")
        out.append(
            f'<tr class="run{kind}" data-run="{_e(row.id)}">'
            f'<td class="id"><a href="{href}">{_e(row.id)}</a>{problem}</td>'
            f'<td class="agent" title="{_e(row.agent or "")}">{_e(short_agent(row.agent))}</td>'
            f'<td class="state">{state_badge(row.state, row.finished, row.waiting)}</td>'
            f'<td class="reason">{_e(row.reason or "—")}</td>'
            f'<td class="num turns">{row.turns}</td>'
            f'<td class="num tokens" title="{_e(tokens_title(row))}">{tokens}</td>'
            f'<td class="num cost">{_e(cost(row.cost_usd))}</td>'
            f'<td class="started"><time datetime="{_e(iso(row.started))}">{_e(when(row.started))}</time></td></tr>'
        )
    out.append("</tbody></table>")
    out.append(_pager(found, wanted))
    out.append("</main>")
    return layout("Runs", label, "".join(out))


def _list_url(wanted: RunFilter, offset: int = 0, **change: str | None) -> str:
    from urllib.parse import urlencode

    params = {"state": wanted.state, "agent": wanted.agent, "q": wanted.id_prefix} | change
    query = {k: v for k, v in params.items() if v}
    if offset:
        query["offset"] = str(offset)
    return "/?" + urlencode(query) if query else "/"


def _filter_form(found: RunsPage, wanted: RunFilter) -> str:
    """A GET form: works without the script; the list refreshes with its filter kept."""
    states = sorted(found.by_state.items(), key=lambda kv: (-kv[1], kv[0]))
    if wanted.state and wanted.state not in found.by_state:
        states.append((wanted.state, 0))
    state_options = '<option value="">every state</option>' + "".join(
        f'<option value="{_e(s)}"{" selected" if s == wanted.state else ""}>{_e(s)} ({n:,})</option>' for s, n in states
    )
    agents = list(found.agents)
    if wanted.agent and wanted.agent not in agents:
        agents.append(wanted.agent)
    agent_options = '<option value="">every agent</option>' + "".join(
        f'<option value="{_e(a)}"{" selected" if a == wanted.agent else ""}>{_e(short_agent(a))}</option>'
        for a in agents
    )
    return (
        '<form class="filter" method="get" action="/">'
        f'<label>state <select name="state">{state_options}</select></label>'
        f'<label>agent <select name="agent">{agent_options}</select></label>'
        f'<label>id starts with <input name="q" value="{_e(wanted.id_prefix or "")}" autocomplete="off" '
        'spellcheck="false"></label><button type="submit">filter</button>'
        + ("" if not (wanted.state or wanted.agent or wanted.id_prefix) else ' <a href="/">clear</a>')
        + "</form>"
    )


def _totals(found: RunsPage, label: str, everything: bool) -> str:
    t = found.total
    where = f"in {_e(label)}" if everything else f"matching, in {_e(label)}"
    states = " · ".join(
        f'<span class="by-state" data-state="{_e(s)}">{_e(s)} {n:,}</span>'
        for s, n in sorted(found.by_state.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    unpriced = f" (+{t.unpriced:,} of unknown cost)" if t.unpriced else ""
    return (
        f'<p class="count totals" data-runs="{t.runs}" data-tokens="{t.tokens}" data-cost="{t.cost_usd!r}">'
        f"<b>{t.runs:,}</b> run{'' if t.runs == 1 else 's'} {where} · tokens <b>{t.tokens:,}</b> · "
        f"cost <b>${t.cost_usd:.6f}</b>{unpriced}</p>" + (f'<p class="states">{states}</p>' if states else "")
    )


def _pager(found: RunsPage, wanted: RunFilter) -> str:
    total, offset, size = found.total.runs, found.offset, found.limit
    first = offset + 1 if found.rows else 0
    shown = f"runs <b>{first:,}–{offset + len(found.rows):,}</b> of <b>{total:,}</b>"
    last_offset = max(total - 1, 0) // size * size

    def link(cls: str, target: int, text: str, off: bool) -> str:
        if off:
            return f'<span class="{cls} off">{text}</span>'
        return f'<a class="{cls}" href="{_e(_list_url(wanted, target))}">{text}</a>'

    return (
        '<nav class="pager" aria-label="pages of runs">'
        + link("first", 0, "« newest", offset == 0)
        + link("prev", max(offset - size, 0), "‹ newer", offset == 0)
        + f'<span class="where">{shown}</span>'
        + link("next", offset + size, "older ›", offset + size >= total)
        + link("last", last_offset, "oldest »", offset >= last_offset)
        + "</nav>"
    )
