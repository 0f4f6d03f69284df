"""Two runs of one conversation side by side: where their paths part, what each cost, what each answered."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agentfsm.result import RunResult, TraceStep


class RunSide(BaseModel):
    """One run of a comparison, from the fork point on."""

    conversation_id: str
    model: str
    #: The states it went through from the fork point: where it was, then each state it moved to.
    path: list[str]
    #: Its steps from the fork point, as ``source --trigger--> dest``.
    steps: list[str]
    final_state: str
    reason: str | None = None
    text: str = ""
    #: The typed output (``output_type``), as JSON; None without one.
    output: Any = None
    #: Dollars (None when a model's price is unknown): the whole run's, a fork's own from its start.
    cost_usd: float | None = None
    tokens: int = 0
    turns: int = 0

    @classmethod
    def of(cls, result: RunResult, skip: int = 0) -> RunSide:
        trace = result.trace[skip:]
        path = [trace[0].source, *(step.dest for step in trace)] if trace else [result.final_state]
        output = result.output.model_dump(mode="json") if isinstance(result.output, BaseModel) else result.output
        return cls(
            conversation_id=result.conversation_id,
            model=result.model,
            path=path,
            steps=[_step(step) for step in trace],
            final_state=result.final_state,
            reason=result.reason,
            text=result.text,
            output=output,
            cost_usd=result.cost_usd,
            tokens=result.usage.total_tokens,
            turns=result.turns,
        )


def _step(step: TraceStep) -> str:
    return f"{step.source} --{step.trigger}--> {step.dest}"


class Comparison(BaseModel):
    """A rerun (or any run forked from ``original``) against the original, from the fork point ``at`` on."""

    original: RunSide
    rerun: RunSide
    #: The original's step the rerun went on from (0: its prompt): the fork point, or, for a fork at a step whose
    #: reply the original had not acted on yet (a tool round, a wait), the step before that reply was asked for.
    at: int = 0
    #: The first step, numbered as the original's trace, where the two runs took different transitions (or one
    #: had a step the other had not); None when they took the same path.
    diverged_at: int | None = None
    #: Tool calls of the rerun answered from the recording, run live, and refused (the recording had none).
    replayed_calls: int = 0
    live_calls: int = 0
    refused_calls: int = 0

    @property
    def same_path(self) -> bool:
        return self.diverged_at is None

    @property
    def same_text(self) -> bool:
        return self.original.text == self.rerun.text and self.original.output == self.rerun.output

    def table(self) -> str:
        """The comparison as a short text table (what ``agentfsm runs rerun`` prints)."""

        def cost(side: RunSide) -> str:
            return "unknown" if side.cost_usd is None else f"${side.cost_usd:.6f}"

        def text(side: RunSide) -> str:
            shown = " ".join(side.text.split())
            return repr(shown if len(shown) <= 48 else shown[:47] + "…")

        rows = [
            ("", "original", "rerun"),
            ("id", self.original.conversation_id, self.rerun.conversation_id),
            ("model", self.original.model, self.rerun.model),
            ("final state", self.original.final_state, self.rerun.final_state),
            ("steps", str(len(self.original.steps)), str(len(self.rerun.steps))),
            ("tokens", str(self.original.tokens), str(self.rerun.tokens)),
            ("cost", cost(self.original), cost(self.rerun)),
            ("text", text(self.original), text(self.rerun)),
        ]
        width = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = [f"{a.ljust(width[0])}  {b.ljust(width[1])}  {c}".rstrip() for a, b, c in rows]
        if self.diverged_at is None:
            lines.append(f"paths: the same from step {self.at}")
        else:
            k = self.diverged_at - self.at - 1
            mine = self.original.steps[k] if k < len(self.original.steps) else "(no step)"
            theirs = self.rerun.steps[k] if k < len(self.rerun.steps) else "(no step)"
            lines.append(f"paths: diverge at step {self.diverged_at}: {mine}  vs  {theirs}")
        calls = self.replayed_calls, self.live_calls, self.refused_calls
        lines.append("tool calls: {} from the recording, {} live, {} refused".format(*calls))
        return "\n".join(lines)


def compare(original: RunResult, rerun: RunResult, *, at: int = 0) -> Comparison:
    """Compare ``rerun`` (a run forked from ``original`` at step ``at``: its trace starts there) with ``original``."""
    mine = [_step(step) for step in original.trace[at:]]
    theirs = [_step(step) for step in rerun.trace]
    diverged = next((at + i + 1 for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
    if diverged is None and len(mine) != len(theirs):
        diverged = at + min(len(mine), len(theirs)) + 1
    return Comparison(original=RunSide.of(original, at), rerun=RunSide.of(rerun), at=at, diverged_at=diverged)
