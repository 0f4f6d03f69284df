"""``evaluate`` and ``agentfsm eval``: cases on the simulator, passing, failing and regressed; --batch; exit status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agentfsm import Agent, tool
from agentfsm.cli import main
from agentfsm.errors import ConfigurationError
from agentfsm.eval import Case, EvalReport, evaluate, load_cases
from agentfsm.testing import evaluate as evaluate_reexported


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"31°C in {city}"


class Weather(Agent):
    model = "claude-haiku-4-5"
    tools = [get_weather]


class Forecast(BaseModel):
    city: str
    celsius: int


class Typed(Agent):
    model = "claude-sonnet-4-5"
    output_type = Forecast


CALL = {"type": "tool_use", "name": "get_weather", "input": {"city": "Hanoi"}}
GOOD: dict[str, Any] = {
    "id": "hanoi",
    "prompt": "Weather in Hanoi?",
    "script": [CALL, {"type": "text", "text": "It is 31°C in Hanoi."}],
    "expect": {
        "final_state": "done",
        "reason": "end_turn",
        "visits": ["tool_use"],
        "avoids": ["max_tokens"],
        "output_regex": r"31°C",
        "tools": ["get_weather"],
        "max_turns": 2,
        "max_cost_usd": 1.0,
        "max_latency_s": 60,
    },
}
CUT: dict[str, Any] = {
    "id": "cut",
    "prompt": "Weather in Paris?",
    "script": [{"type": "max_tokens", "text": "It is"}, {"type": "text", "text": "20°C."}],
    "expect": {"final_state": "done", "avoids": ["max_tokens"], "max_turns": 1, "output": "It is20°C."},
}


def test_a_passing_and_a_failing_case() -> None:
    report = evaluate(Weather(), [GOOD, CUT])
    assert evaluate_reexported is evaluate
    good, cut = report.cases
    assert good.passed and good.failures == [] and good.tools == ["get_weather"] and good.turns == 2
    assert not cut.passed and not report.passed
    assert cut.failures == ["visited max_tokens", "2 turns > 1"], cut.failures  # the text stitched is right
    table = report.table()
    assert "hanoi  pass" in table and "cut    FAIL" in table and table.endswith("1/2 passed")


def test_every_expectation_can_fail() -> None:
    case = {
        "id": "all",
        "prompt": "Hi",
        "script": [{"type": "text", "text": "Hello"}],
        "expect": {
            "final_state": "refused", "reason": "refusal", "visits": ["tool_use"], "output": "Bye",
            "output_regex": "^B", "output_schema": {"type": "object"}, "typed_output": True,
            "tools": ["get_weather"], "max_cost_usd": 0.0, "max_turns": 0,
        },
    }  # fmt: skip
    (result,) = evaluate(Weather(), [case]).cases
    assert len(result.failures) == 10, result.failures


def test_typed_output_and_a_json_schema() -> None:
    answer = {"type": "text", "text": json.dumps({"city": "Hanoi", "celsius": 31})}
    schema = {"type": "object", "required": ["city", "celsius"], "properties": {"celsius": {"type": "integer"}}}
    expect = {"typed_output": True, "output_schema": schema}
    case = {"id": "typed", "prompt": "Hanoi?", "script": [answer], "expect": expect}
    (result,) = evaluate(Typed(), [case]).cases
    assert result.passed, result.failures
    bad = {**case, "expect": {"output_schema": {**schema, "properties": {"celsius": {"type": "string"}}}}}
    assert evaluate(Typed(), [bad]).cases[0].failures == ["schema: $.celsius is not a string"]


def test_regressions_against_an_earlier_report() -> None:
    before = evaluate(Weather(), [GOOD, {**CUT, "expect": {"final_state": "done"}}])
    assert before.passed
    now = evaluate(Weather(), [GOOD, CUT])
    assert now.regressions(before) == ["cut"]
    assert EvalReport.model_validate_json(now.model_dump_json()).regressions(before) == ["cut"]


def test_cases_run_through_the_batch_runner() -> None:
    seen: list[tuple[int, int]] = []
    report = evaluate(Weather(), [GOOD, CUT], batch=True, progress=lambda done, total: seen.append((done, total)))
    assert [c.passed for c in report.cases] == [True, False]
    assert report.cases[0].final_state == "done" and seen[-1] == (2, 2)


def test_bad_cases_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="same id"):
        evaluate(Weather(), [GOOD, GOOD])
    with pytest.raises(ConfigurationError, match="'type' must name a builder"):
        evaluate(Weather(), [{**GOOD, "script": [{"type": "nope"}]}])
    bad = tmp_path / "cases.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(ConfigurationError, match="line 1 is not a case"):
        load_cases(bad)
    assert Case.model_validate(GOOD).expect.tools == ["get_weather"]


def test_the_command_line_exit_status_report_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases, report, earlier = tmp_path / "cases.jsonl", tmp_path / "out.json", tmp_path / "earlier.json"
    cases.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**CUT, "expect": {"final_state": "done"}}) + "\n")
    args = ["eval", str(cases), "--agent", "test_eval:Weather", "--concurrency", "2"]
    assert main([*args, "--report", str(earlier)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "2/2 passed" and "2/2" in err  # the table; the progress bar on stderr
    cases.write_text(json.dumps(GOOD) + "\n" + json.dumps(CUT) + "\n")
    assert main([*args, "--report", str(report), "--compare", str(earlier), "--batch"]) == 1
    out = capsys.readouterr().out
    assert "regressions against" in out and out.rstrip().endswith("cut")
    assert [c["passed"] for c in json.loads(report.read_text())["cases"]] == [True, False]
