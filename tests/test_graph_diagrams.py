"""``diagrams/`` is up to date with the code, checked by the command docs/08-seeing-a-run.md gives to regenerate it."""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest

from agentfsm.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
GUIDE = (ROOT / "docs" / "08-seeing-a-run.md").read_text()


def guide_command() -> list[str]:
    """The arguments of the guide's ``agentfsm diagrams`` command, globs expanded as a shell would."""
    found = re.findall(r"^\.venv/bin/agentfsm (diagrams .*)$", GUIDE, re.M)
    assert len(found) == 1, "docs/08-seeing-a-run.md must give exactly one `.venv/bin/agentfsm diagrams ...` command"
    args: list[str] = []
    for word in shlex.split(found[0]):
        args += sorted(glob.glob(word, root_dir=ROOT)) if any(c in word for c in "*?[") else [word]
    return args


def test_diagrams_are_up_to_date_with_the_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    code = main([*guide_command(), "--check"])
    err = capsys.readouterr().err
    assert code == 0, (
        f"diagrams/ is out of date; run the `agentfsm diagrams` command of docs/08-seeing-a-run.md.\n{err}"
    )


def test_the_check_needs_no_graphviz(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from agentfsm.observe import graph

    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    monkeypatch.chdir(ROOT)
    assert main([*guide_command(), "--check"]) == 0, capsys.readouterr().err


def test_the_diagrams_cover_the_base_agent_and_every_example_agent() -> None:
    args = guide_command()
    assert args[:3] == ["diagrams", "--out", "diagrams"] and "agentfsm:Agent" in args
    names = {p.stem for p in (ROOT / "diagrams").glob("*.mmd")}
    assert {"Agent", "WeatherAgent", "LongWriter", "run_demo"} <= names
    for name in names:
        for suffix in (".dot", ".svg"):
            assert (ROOT / "diagrams" / f"{name}{suffix}").exists()


def test_the_readme_shows_a_real_diagram_from_diagrams() -> None:
    images = re.findall(r"!\[[^\]]*\]\((diagrams/[^)]+\.svg)\)", README)
    assert images, "the README shows no diagram from diagrams/"
    for image in images:
        svg = (ROOT / image).read_text()
        assert "<svg" in svg and ">requesting</text>" in svg
