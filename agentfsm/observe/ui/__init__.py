"""``agentfsm ui``: a run inspector in the browser, served from the standard library.

    agentfsm ui --store sqlite:///runs.db        # or a SQLite path, or postgresql://...
    agentfsm ui --events run.jsonl               # a recorded events file
    agentfsm ui --store runs.db --allow-decisions   # and decide waiting runs from their pages

* ``sources`` — where runs come from: a store (a page at a time) or an events file (``open_source``)
* ``history`` — the history as it stood after each step, from the final one and the trace's sizes
* ``view``    — a run made ready to show: steps, tool calls, graph
* ``svg``     — the state graph laid out and drawn as SVG (no Graphviz, no JavaScript library)
* ``pages``   — a run's page and what every page shares; ``listpage`` — the run list; ``static/`` — the stylesheet,
  script and icon the pages load
* ``server``  — ``UIServer``, a ``ThreadingHTTPServer`` with the pages and a JSON API
* ``decisions`` — deciding waiting runs from a page (``UIServer(..., decider=...)``): the CSRF token, the
  decisions carried out off the request thread

From Python::

    from agentfsm.observe.ui import UIServer, open_source

    server = UIServer(open_source("sqlite:///runs.db"), port=0)   # port 0: any free port
    server.url                                                     # 'http://localhost:<port>/'
    server.serve_forever()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentfsm.observe.ui.server import UIServer
    from agentfsm.observe.ui.sources import Source, open_source

__all__ = ["Source", "UIServer", "open_source"]


def __getattr__(name: str) -> Any:
    if name == "UIServer":
        from agentfsm.observe.ui.server import UIServer

        return UIServer
    if name in ("open_source", "Source"):
        from agentfsm.observe.ui import sources

        return getattr(sources, name)
    raise AttributeError(f"module 'agentfsm.observe.ui' has no attribute {name!r}")
