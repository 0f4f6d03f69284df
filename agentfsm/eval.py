"""``evaluate``: run an agent on a set of cases and check each against its expectations.

A case is a prompt (run on the agent's own client: the real API) or a prompt with a scripted
simulator conversation (``script``: replies as ``agentfsm run --sim`` reads them, ``[{"type":
"tool_use", "name": "get_weather", "input": {...}}, {"type": "text", "text": "31°C."}]``), and what
the run must show (``Expect``): the final state and reason, states the path must and must not visit,
the output (exact, a regex, a JSON schema, or a valid ``output_type``), the tools called, and at
most a cost, a number of turns and a latency. ``evaluate`` runs the cases (``concurrency`` at once,
or through the Message Batches API with ``batch=True``), checks them, and returns an
``EvalReport``: a table (``report.table()``), JSON (``report.model_dump_json()``), and, given an
earlier report, the regressions (``report.regressions(previous)``: cases that passed then and fail
now). ``agentfsm eval cases.jsonl --agent MODULE:Class`` does the same from the command line.

Why not pydantic-evals: its ``Dataset``/``Case``/``Evaluator`` judge a task function's output; what
an agent run is judged on here is mostly its path (states, transitions, tools, turns, cost), which
``RunResult`` already holds, and ``--batch`` needs the cases run together, not one task call each.
Building on it would add a runtime dependency (with anyio, rich, PyYAML and logfire-api) for a table
and a comparison that are a few lines here. A team using it can wrap ``evaluate``'s per-case results
as its evaluators' input.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agentfsm.errors import ConfigurationError

if TYPE_CHECKING:
    from agentfsm.agent import Agent
    from agentfsm.result import RunResult
    from agentfsm.stores.base import Store

__all__ = ["Case", "CaseResult", "EvalReport", "Expect", "evaluate", "load_cases"]


class Expect(BaseModel):
    """What a case's run must show; every field left None (or empty) is not checked."""

    model_config = ConfigDict(extra="forbid")

    final_state: str | None = None
    reason: str | None = None
    visits: list[str] = Field(default=[], description="states the path must visit")
    avoids: list[str] = Field(default=[], description="states the path must not visit")
    output: Any = Field(default=None, description="the text (or, with an output_type, the output as JSON), exactly")
    output_regex: str | None = Field(default=None, description="a regex the text must match (re.search)")
    output_schema: dict[str, Any] | None = Field(default=None, description="a JSON schema the answer (JSON) keeps")
    typed_output: bool = Field(default=False, description="the run produced a valid output of the agent's output_type")
    tools: list[str] = Field(default=[], description="tools that must have been called (each at least once)")
    max_cost_usd: float | None = None
    max_turns: int | None = None
    max_latency_s: float | None = None


class Case(BaseModel):
    """One case: an id, a prompt, an optional simulator script, and the expectations."""

    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: str | list[dict[str, Any]]
    script: list[dict[str, Any]] | None = Field(default=None, description="simulator replies; None: the real API")
    expect: Expect = Field(default_factory=Expect)


class CaseResult(BaseModel):
    id: str
    passed: bool
    failures: list[str] = []
    final_state: str | None = None
    reason: str | None = None
    path: list[str] = []
    text: str = ""
    tools: list[str] = []
    turns: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0


class EvalReport(BaseModel):
    agent: str
    cases: list[CaseResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    def regressions(self, previous: EvalReport) -> list[str]:
        """Ids of the cases that passed in ``previous`` and do not pass now."""
        before = {c.id for c in previous.cases if c.passed}
        return [c.id for c in self.cases if c.id in before and not c.passed]

    def table(self) -> str:
        """One line per case, then a total."""
        width = max([4, *(len(c.id) for c in self.cases)])
        lines = [f"{'case':<{width}}  {'result':<6}  {'state':<10}  {'turns':>5}  {'cost $':>8}  {'secs':>6}  why"]
        for c in self.cases:
            cost = "-" if c.cost_usd is None else f"{c.cost_usd:.4f}"
            lines.append(
                f"{c.id:<{width}}  {'pass' if c.passed else 'FAIL':<6}  {c.final_state or '-':<10}  {c.turns:>5}  "
                f"{cost:>8}  {c.latency_s:>6.2f}  {'; '.join(c.failures)}".rstrip()
            )
        good = sum(c.passed for c in self.cases)
        lines.append(f"{good}/{len(self.cases)} passed")
        return "\n".join(lines)


def load_cases(source: str | FilePath) -> list[Case]:
    """Cases from a JSON Lines file (one case object per line; blank lines are skipped)."""
    path = FilePath(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"no such cases file: {path}") from None
    cases = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            cases.append(Case.model_validate_json(line))
        except ValidationError as exc:
            raise ConfigurationError(f"{path} line {n} is not a case: {exc.errors()[0]['msg']}") from exc
    return cases


def _reply(item: Mapping[str, Any], where: str) -> Any:
    from agentfsm.sim import ErrorReply, ScriptedReply
    from agentfsm.sim import replies as r

    kind = item.get("type")
    builder = getattr(r, str(kind), None) if kind in r.__all__ else None
    if builder is None:
        raise ConfigurationError(f"{where}: 'type' must name a builder of agentfsm.sim.replies, got {kind!r}")
    try:
        reply = builder(**{k: v for k, v in item.items() if k != "type"})
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where} ({kind}): {exc}") from exc
    if not isinstance(reply, ScriptedReply | ErrorReply):
        raise ConfigurationError(f"{where}: {kind!r} does not make a reply")
    return reply


def _schema_problem(value: Any, schema: Mapping[str, Any], at: str = "$") -> str | None:
    """The JSON-schema subset answers use: type, enum, const, properties, required, items, additionalProperties."""
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    kind = schema.get("type")
    if kind in ("integer", "number"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if kind == "integer":
            ok = ok and float(value).is_integer()
        if not ok:
            return f"{at} is not a {kind}"
    elif isinstance(kind, str) and kind in kinds and not isinstance(value, kinds[kind]):
        return f"{at} is not a {kind}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{at} is not one of {schema['enum']}"
    if "const" in schema and value != schema["const"]:
        return f"{at} is not {schema['const']!r}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                return f"{at}.{key} is missing"
        props = schema.get("properties", {})
        for key, sub in value.items():
            if key in props:
                problem = _schema_problem(sub, props[key], f"{at}.{key}")
                if problem:
                    return problem
            elif schema.get("additionalProperties") is False:
                return f"{at}.{key} is not allowed"
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            problem = _schema_problem(sub, schema["items"], f"{at}[{i}]")
            if problem:
                return problem
    return None


def _tools_called(result: RunResult) -> list[str]:
    return [
        str(b.get("name"))
        for m in result.messages
        if m.get("role") == "assistant" and isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]


def check(case: Case, result: RunResult, latency: float, output_type: Any = None) -> CaseResult:
    """A case's run against its expectations."""
    e, failures = case.expect, []
    path = result.path
    if e.final_state is not None and result.final_state != e.final_state:
        failures.append(f"ended {result.final_state}, not {e.final_state}")
    if e.reason is not None and result.reason != e.reason:
        failures.append(f"reason {result.reason!r}, not {e.reason!r}")
    failures += [f"never visited {s}" for s in e.visits if s not in path]
    failures += [f"visited {s}" for s in e.avoids if s in path]
    answer: Any = result.text
    if result.output is not None:
        answer = TypeAdapter(Any).dump_python(result.output, mode="json")
    if e.output is not None and answer != e.output:
        failures.append(f"output {answer!r}, not {e.output!r}")
    if e.output_regex is not None and not re.search(e.output_regex, result.text):
        failures.append(f"text does not match /{e.output_regex}/")
    if e.output_schema is not None:
        try:
            value = answer if result.output is not None else json.loads(result.text)
        except ValueError:
            failures.append("the answer is not JSON")
        else:
            problem = _schema_problem(value, e.output_schema)
            if problem:
                failures.append(f"schema: {problem}")
    if e.typed_output:
        if output_type is None:
            failures.append("typed_output: the agent has no output_type")
        elif result.output is None:
            failures.append("no valid output of the agent's output_type")
    called = _tools_called(result)
    failures += [f"never called {t}" for t in e.tools if t not in called]
    if e.max_cost_usd is not None and (result.cost_usd is None or result.cost_usd > e.max_cost_usd):
        failures.append(f"cost {result.cost_usd} > {e.max_cost_usd}")
    if e.max_turns is not None and result.turns > e.max_turns:
        failures.append(f"{result.turns} turns > {e.max_turns}")
    if e.max_latency_s is not None and latency > e.max_latency_s:
        failures.append(f"{latency:.2f} s > {e.max_latency_s} s")
    return CaseResult(
        id=case.id, passed=not failures, failures=failures, final_state=result.final_state, reason=result.reason,
        path=path, text=result.text, tools=called, turns=result.turns, cost_usd=result.cost_usd, latency_s=latency,
    )  # fmt: skip


def _errored(case: Case, exc: BaseException, latency: float) -> CaseResult:
    return CaseResult(id=case.id, passed=False, failures=[f"raised {type(exc).__name__}: {exc}"], latency_s=latency)


def _with_client(agent: Agent, client: Any) -> Agent:
    from agentfsm.exploring import agent_with_client

    return agent_with_client(agent, client)


def evaluate(
    agent: Agent,
    cases: Iterable[Case | Mapping[str, Any]],
    *,
    concurrency: int = 4,
    batch: bool = False,
    store: Store | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Run every case on ``agent`` and check it; the report holds every case's result, in order.

    Scripted cases run on a simulator of their own (the agent's settings, the simulator's client);
    the others on the agent's client. ``concurrency`` cases run at once (threads, ``run``); ``batch``
    runs them all through the Message Batches API (``BatchRunner``; scripted cases through one
    simulator, each answered from its own script). ``store`` keeps the runs (ids: the case ids).
    ``progress(done, total)`` is called after each case. Nothing is printed.
    """
    from agentfsm.sim import Simulator

    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, got {concurrency}")
    items = [c if isinstance(c, Case) else Case.model_validate(c) for c in cases]
    if len({c.id for c in items}) != len(items):
        raise ConfigurationError("two cases have the same id")
    scripts = {
        c.id: [_reply(x, f"case {c.id} script item {i}") for i, x in enumerate(c.script)]
        for c in items
        if c.script is not None
    }
    done: list[CaseResult | None] = [None] * len(items)
    if batch:
        _run_batch(agent, items, scripts, store, done, progress)
    else:

        def one(i: int) -> None:
            case = items[i]
            runner = agent
            if case.id in scripts:
                runner = _with_client(agent, Simulator(scripts[case.id]).client(max_retries=0))
            start = time.perf_counter()
            try:
                result = runner.run(case.prompt, conversation_id=case.id if store else None, store=store)
            except Exception as exc:
                done[i] = _errored(case, exc, time.perf_counter() - start)
            else:
                done[i] = check(case, result, time.perf_counter() - start, agent.output_type)
            if progress is not None:
                progress(sum(d is not None for d in done), len(items))

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(len(items))))
    return EvalReport(agent=type(agent).__qualname__, cases=[d for d in done if d is not None])


def _run_batch(
    agent: Agent,
    items: Sequence[Case],
    scripts: Mapping[str, list[Any]],
    store: Store | None,
    done: list[CaseResult | None],
    progress: Callable[[int, int], None] | None,
) -> None:
    from agentfsm.batch.runner import BatchRunner
    from agentfsm.sim import SimRequest, Simulator

    runner_agent = agent
    if scripts:
        if len(scripts) < len(items):
            raise ConfigurationError("--batch: every case is scripted, or none is (one client runs the batch)")
        by_prompt: dict[str, str] = {}
        for c in items:
            key = json.dumps(c.prompt if isinstance(c.prompt, str) else c.prompt[0]["content"], sort_keys=True)
            if key in by_prompt:
                raise ConfigurationError(f"--batch: cases {by_prompt[key]} and {c.id} have the same prompt")
            by_prompt[key] = c.id
        served = dict.fromkeys(scripts, 0)

        def answer(request: SimRequest) -> Any:  # each request answered from the script of its case
            cid = by_prompt[json.dumps(request.messages[0]["content"], sort_keys=True)]
            served[cid] += 1
            return scripts[cid][served[cid] - 1]

        runner_agent = _with_client(agent, Simulator(answer).client(max_retries=0))
    runner = BatchRunner(runner_agent, store=store, poll_interval=0)
    start = time.perf_counter()
    results = runner.run({c.id: c.prompt for c in items})
    latency = time.perf_counter() - start
    for i, c in enumerate(items):
        done[i] = check(c, results[c.id], latency, agent.output_type)
        if progress is not None:
            progress(i + 1, len(items))
