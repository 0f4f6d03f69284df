"""Seeing a run: its events, its graph, and its replay.

* ``events`` — every step of a run as a structured event, with stable names; where events go
  (stdlib logging by default, structlog, an observer)
* ``otel``   — OpenTelemetry spans with the GenAI conventions, built from the events (``agentfsm[otel]``)
* ``graph``  — an Agent's state graph and the path a run took (Mermaid, DOT, SVG)
* ``replay`` — events written as JSON lines, read back into traces
* ``live``   — the terminal's live view of a run
"""
