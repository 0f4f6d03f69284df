"""A live terminal view of running conversations, built from their structlog events.

Every step of a run is already a structlog event, so the view is a structlog
processor: it keeps, per conversation, the current state, the turn, the
tokens so far and the tool calls running, prints one compact line per event,
keeps a status line at the bottom of a terminal, and prints the path taken
when the run finishes. It renders, so it goes last in a processor chain (it
drops the event afterwards)::

    view = LiveView()
    agent = MyAgent(logger=view.logger())          # or, in your own configuration:
    structlog.configure(processors=[redact_processor, structlog.processors.add_log_level, view])

On a stream that is not a terminal (a pipe, a file) there is no status line
and no colour: the event lines and the final summary only.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog

from agentfsm.redaction import redact_processor

_HEADER = ("event", "level", "conversation_id", "turn", "state", "timestamp")
_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
_LEVEL_COLOURS = {"warning": "\x1b[33m", "error": "\x1b[31m"}
_CLEAR_LINE = "\r\x1b[2K"


@dataclass
class RunView:
    """What the view knows about one conversation."""

    conversation_id: str
    state: str = "requesting"
    turn: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None
    running: dict[str, str] = field(default_factory=dict)  # tool_use_id -> tool name
    steps: list[tuple[int, str, str, str]] = field(default_factory=list)  # (turn, source, trigger, dest)
    final: Mapping[str, Any] | None = None


class LiveView:
    """Renders agentfsm's events for a person watching a terminal. Thread-safe."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, colors: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", lambda: False)())
        self.colors = self.tty if colors is None else colors
        self.runs: dict[str, RunView] = {}
        self._current: RunView | None = None
        self._status_shown = False
        self._lock = threading.Lock()

    def logger(self, *processors: Any) -> Any:
        """A structlog logger that renders through this view; ``processors`` run first (e.g. an EventsWriter)."""
        chain: list[Any] = [redact_processor, structlog.processors.add_log_level, *processors, self]
        return structlog.wrap_logger(
            structlog.PrintLogger(self.stream),
            processors=chain,
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )

    # --- the processor --------------------------------------------------------------------------------

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
        with self._lock:
            run = self._observe(event_dict)
            self._write(self._line(event_dict, method_name))
            if run is not None and run.final is not None and event_dict.get("event") == "run.finished":
                self._write("\n".join(self.summary(run)))
                self._current = None
            self._draw_status()
        raise structlog.DropEvent

    def _observe(self, ev: MutableMapping[str, Any]) -> RunView | None:
        cid = ev.get("conversation_id")
        if not isinstance(cid, str):
            return None
        run = self.runs.setdefault(cid, RunView(cid))
        self._current = run
        name = ev.get("event")
        if isinstance(ev.get("turn"), int):
            run.turn = ev["turn"]
        if isinstance(ev.get("state"), str):
            run.state = ev["state"]
        if name == "run.started":
            run.model = ev.get("model")
        elif name == "response.received":
            usage = ev.get("usage") or {}
            run.input_tokens += int(usage.get("input_tokens") or 0)
            run.output_tokens += int(usage.get("output_tokens") or 0)
        elif name == "tool.started":
            run.running[str(ev.get("tool_use_id"))] = str(ev.get("tool"))
        elif name == "tool.finished":
            run.running.pop(str(ev.get("tool_use_id")), None)
        elif name == "transition":
            run.state = str(ev.get("dest"))
            run.steps.append((run.turn, str(ev.get("source")), str(ev.get("trigger")), str(ev.get("dest"))))
        elif name == "run.finished":
            run.final = ev
            run.running.clear()
        return run

    # --- what is shown ----------------------------------------------------------------------------------

    def _line(self, ev: MutableMapping[str, Any], method_name: str) -> str:
        name = str(ev.get("event", ""))
        level = str(ev.get("level", method_name))
        turn = ev.get("turn")
        state = str(ev.get("state", ""))
        if name == "transition":
            details = f"{ev.get('source')} --{ev.get('trigger')}--> {ev.get('dest')}"
        else:
            details = " ".join(f"{k}={_short(v)}" for k, v in ev.items() if k not in _HEADER)
        head = f"{turn:>4}  {state:<16} " if isinstance(turn, int) else f"{'':>4}  {'':<16} "
        text = f"{head}{name:<22} {details}".rstrip()
        colour = _LEVEL_COLOURS.get(level)
        if self.colors and colour:
            return f"{colour}{text}{_RESET}"
        return text

    def status(self) -> str:
        """The status line: the current state, the turn, tokens so far, and the tool calls running."""
        run = self._current
        if run is None:
            return ""
        parts = [
            f"{_BOLD if self.colors else ''}{run.state}{_RESET if self.colors else ''}",
            f"turn {run.turn}",
            f"tokens {run.input_tokens:,} in / {run.output_tokens:,} out",
        ]
        if run.running:
            counts = Counter(run.running.values())
            parts.append("running " + ", ".join(f"{n} ×{c}" if c > 1 else n for n, c in counts.items()))
        return "● " + " │ ".join(parts)

    def summary(self, run: RunView) -> list[str]:
        """The lines printed when ``run`` finishes: its outcome and the path it took."""
        final = run.final or {}
        usage = final.get("usage") or {}
        reason = final.get("reason")
        lines = [
            "",
            f"final state : {final.get('final_state', run.state)}" + (f" ({reason})" if reason else ""),
            f"requests    : {final.get('turns', run.turn)}",
            f"usage       : {int(usage.get('input_tokens') or run.input_tokens):,} input + "
            f"{int(usage.get('output_tokens') or run.output_tokens):,} output tokens",
            "path taken  :",
        ]
        lines += [f"  turn {turn:>2}  {src:>14} --{trig}--> {dst}" for turn, src, trig, dst in run.steps]
        lines.append(f"edges taken : {edge_counts(run.steps)}")
        return lines

    def _write(self, text: str) -> None:
        if self._status_shown:
            self.stream.write(_CLEAR_LINE)
            self._status_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _draw_status(self) -> None:
        if not self.tty:
            return
        line = self.status()
        if not line:
            return
        width = shutil.get_terminal_size((100, 24)).columns
        self.stream.write(_CLEAR_LINE + _fit(line, width - 1))
        self.stream.flush()
        self._status_shown = True


def edge_counts(steps: Sequence[tuple[int, str, str, str]]) -> str:
    """``tool_use → requesting ×7 · ...``: each edge taken, with how often, in the order first taken."""
    counts = Counter((src, dst) for _, src, _, dst in steps)
    return " · ".join(f"{src} → {dst} ×{n}" for (src, dst), n in counts.items()) or "(none)"


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, Mapping) and "input_tokens" in value:  # usage: the two numbers people read
        return f"{value.get('input_tokens') or 0}in/{value.get('output_tokens') or 0}out"
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit(line: str, width: int) -> str:
    """Cut ``line`` to ``width`` visible characters (ANSI codes do not count)."""
    visible, out, i = 0, [], 0
    while i < len(line) and visible < width:
        if line[i] == "\x1b":
            end = line.find("m", i)
            end = len(line) - 1 if end < 0 else end
            out.append(line[i : end + 1])
            i = end + 1
            continue
        out.append(line[i])
        visible += 1
        i += 1
    return "".join(out) + (_RESET if "\x1b" in line else "")
