"""The project keeps its promises: README true to the code, demo and examples run, types and lint clean.

The guides in docs/ are checked by test_docs.py.
"""

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
    # From scratch every time, as a newcomer gets it: a venv left over from an older run once held an
    # older SDK and hid a red build.
    assert block[1].startswith("python3 -m venv --clear .venv && ")


def readme_state_rows() -> list[list[str]]:
    section = README.split("## The state table", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def test_readme_state_table_lists_every_transition() -> None:
    """One row per transition, in the table's order (the routing row lists the stop reasons together),
    the guard column being exactly the guards' labels."""
    expected: list[tuple[str, str, str, str]] = []
    for t in Agent.table().transitions:
        if t.source == REQUESTING and t.trigger in STOP_REASONS:
            if t.trigger == STOP_REASONS[0]:
                triggers = ", ".join(f"`{s}`" for s in STOP_REASONS)
                expected.append((f"`{REQUESTING}`", triggers, "the state of that name", ""))
            continue
        expected.append((f"`{t.source}`", f"`{t.trigger}`", f"`{t.dest}`", t.condition))
    rows = readme_state_rows()
    got = [(r[0], r[1], r[2], r[3]) for r in rows]
    assert all(len(r) == 5 and r[4] for r in rows), "each row has 5 cells: source, trigger, dest, guard, what it does"
    missing = [e for e in expected if e not in got]
    extra = [g for g in got if g not in expected]
    assert not missing and not extra, (
        "README.md's state table differs from agentfsm/machine/table.py:\n"
        + "".join(f"  missing row: | {' | '.join(m)} | ... |\n" for m in missing)
        + "".join(f"  row not in the code: | {' | '.join(x)} | ... |\n" for x in extra)
    )
    assert got == expected, "README.md's state table must list the transitions in the code's order"


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


@pytest.mark.slow  # a subprocess
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
    pytest.param("approval_across_processes", marks=pytest.mark.slow),  # two processes
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


def test_the_library_never_imports_the_command_line() -> None:
    # The command line is built on the library, never the other way round: loading MODULE:Class is
    # agentfsm.loading, which the engines use as the CLI does. (``python -m agentfsm`` is the CLI itself.)
    import ast

    found = []
    checked = 0
    for path in (ROOT / "agentfsm").rglob("*.py"):
        if path.parent.name == "cli" or path.name == "__main__.py":
            continue
        checked += 1
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.startswith("agentfsm.cli")]
    assert checked > 50 and not found, found


def test_no_module_grows_past_what_a_reader_holds() -> None:
    # One concept per module: none over 700 lines, and the conversation (what hooks see) under 600.
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in (ROOT / "agentfsm").rglob("*.py")}
    assert len(sizes) > 50
    assert not {p: n for p, n in sizes.items() if n > 700}, "split these modules"
    assert sizes[Path("agentfsm/machine/conversation.py")] < 600


def _tool(name: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return [found]


@pytest.mark.slow  # runs mypy
def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run(
        [*_tool("mypy"), "--strict", "agentfsm"], cwd=ROOT, capture_output=True, text=True, timeout=500
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow  # runs ruff
def test_ruff_is_clean() -> None:
    proc = subprocess.run([*_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow  # runs a benchmark in a subprocess
def test_bench_quick_is_a_smoke_test_that_every_contender_still_runs() -> None:
    """``bench.py --quick`` measures nothing (2 rounds x 2 conversations): it only proves the script runs.

    The numbers the docs quote come from a full run; the quick run's header says its numbers measure nothing.
    """
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith("agentfsm benchmarks (quick: a smoke test, these numbers measure nothing;")
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


@pytest.mark.slow  # a subprocess
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
