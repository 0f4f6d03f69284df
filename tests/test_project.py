"""The project keeps its promises: README true to the code, demo and examples run, types and lint clean."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agentfsm import Agent
from agentfsm.cli import main as cli_main
from agentfsm.demo import ANSWER_END, ANSWER_START, run_demo
from agentfsm.machine.table import REQUESTING, STOP_REASONS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second() -> None:
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    assert block[0].endswith("agentfsm demo")
    ci = (ROOT / ".ci" / "run").read_text()
    assert block[1] in ci.splitlines()


def test_readme_state_table_lists_every_transition() -> None:
    rows = [line for line in README.splitlines() if line.startswith("| `")]
    for t in Agent.table().transitions:
        if t.source == REQUESTING and t.trigger in STOP_REASONS:
            continue  # the routing row lists them together
        assert any(
            row.startswith(f"| `{t.source}` | `{t.trigger}` | `{t.dest}` |")
            or (t.dest == t.source == REQUESTING and row.startswith(f"| `{t.source}` | `{t.trigger}` | `{t.dest}`"))
            for row in rows
        ), f"README state table misses {t.source} --{t.trigger}--> {t.dest}"
        for g in t.guards:
            assert g.label in README, f"guard label {g.label!r} missing from the README"
    routing = next(row for row in rows if row.startswith("| `requesting` | `end_turn`"))
    for reason in STOP_REASONS:
        assert f"`{reason}`" in routing


def test_the_demo_visits_every_promised_state() -> None:
    result, _ = run_demo()
    assert result.final_state == "done"
    visited = set(result.path)
    assert {"tool_use", "pause_turn", "max_tokens", "end_turn"} <= visited
    triggers = [s.trigger for s in result.trace]
    assert "retry_larger" in triggers and "continue_text" in triggers and "resume" in triggers
    assert result.text.endswith(ANSWER_START + ANSWER_END)


def test_cli_demo_prints_events_and_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "ladder.climbed" in out and "pause.resumed" in out and "path taken" in out
    assert "--retry_larger--> requesting" in out


def test_cli_demo_json_lines_parse(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[0]["event"] == "run.started" and lines[-1]["event"] == "run.finished"
    assert lines[-1]["final_state"] == "done"


def test_cli_errors_are_one_line_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentfsm.cli", "no-such-command"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


EXAMPLES = [
    "weather_agent",
    "long_writer",
    "custom_executor",
    "approval_agent",
    "approval_terminal",
    "approval_across_processes",
    "async_approval",
]


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_run_on_the_simulator(name: str) -> None:
    module = load_example(name)
    asked: list[str] = []
    if name == "approval_terminal":  # the person at the terminal, answering input()
        outcome: Any = module.main(ask=lambda prompt: asked.append(prompt) or "not now, we need them")
    else:
        outcome = module.main()
    result = outcome[0] if isinstance(outcome, tuple) else outcome
    assert result.final_state == "done"
    if name in ("approval_terminal", "approval_across_processes", "async_approval"):
        assert result.path.count("awaiting_approval") == 1  # it waited once, then carried on
    if name == "approval_terminal":
        refusal = result.messages[-2]["content"][0]
        assert len(asked) == 1 and refusal["is_error"] and refusal["content"] == "not now, we need them"
    if name == "long_writer":
        assert result.text == module.DOCUMENT and result.turns > 5
    if name == "approval_agent":
        assert result.path.count("awaiting_approval") == 1  # only the delete waited, and was refused
        assert "awaiting_approval" in module.ApprovalAgent.graph()
    if name == "custom_executor":
        audit = outcome[1].audit
        assert audit == ["run read_file {'path': 'notes.txt'}", "refused delete_file {'path': 'notes.txt'}"]


def test_no_print_in_the_library() -> None:
    for path in (ROOT / "agentfsm").rglob("*.py"):
        if path.parent.name == "cli" or path.name == "__main__.py":
            continue  # the command line's job is printing
        assert not re.search(r"^\s*print\(", path.read_text(), re.M), f"print() in {path}"


def _tool(name: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return [found]


def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run(
        [*_tool("mypy"), "--strict", "agentfsm"], cwd=ROOT, capture_output=True, text=True, timeout=500
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean() -> None:
    proc = subprocess.run([*_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_benchmark_script_runs_in_quick_mode() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for row in ("baseline", "tool_runner", "agentfsm run", "agentfsm arun", "agentfsm stream", "agentfsm astream"):
        assert row in out
    assert "concurrent conversations" in out and "bytes/conversation" in out and "first text delta" in out


def test_public_names_are_one_table() -> None:
    import agentfsm

    assert sorted(agentfsm.__all__) == sorted([*agentfsm._WHERE, *agentfsm._MODULES])
    for name in agentfsm.__all__:
        assert getattr(agentfsm, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = agentfsm.nope  # type: ignore[attr-defined]


def test_cli_graph_formats_are_the_graph_modules() -> None:
    from agentfsm.cli.output import FORMATS
    from agentfsm.observe.graph import FORMATS as GRAPH_FORMATS

    assert FORMATS == GRAPH_FORMATS


def test_cli_help_imports_neither_the_sdk_nor_the_machine() -> None:
    """``agentfsm --help`` stays fast because it imports nothing heavy (benchmarks/startup.py times it)."""
    probe = (
        "import sys\n"
        "from agentfsm.cli import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = [m for m in ('anthropic', 'pydantic', 'structlog', 'transitions', 'httpx') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == ""
