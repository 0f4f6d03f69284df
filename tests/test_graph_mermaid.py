"""The Mermaid we write is valid Mermaid: checked by the real Mermaid parser, and by a strict grammar.

The real parser is the ``mermaid`` npm package (with ``jsdom``, which it needs
to load), installed by this module into pytest's cache directory
(``.pytest_cache/``, git-ignored) the first time it runs. Its parse of every
diagram is compared with the state table: the same states, the same edges,
the same labels. Without node/npm (or the registry) those tests skip, saying
why; the strict grammar check below runs everywhere. The grammar is the
subset of ``stateDiagram-v2`` we emit, written conservatively (ids that are
never keywords, labels with no character that ends or changes a statement),
and the real parser is shown to reject what the grammar rejects.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentfsm import Agent, Conversation, Transition, Wait, guard
from agentfsm.demo import run_demo
from agentfsm.observe.graph import MERMAID_RESERVED, build, mermaid_ids, to_mermaid
from agentfsm.result import TraceStep

HERE = Path(__file__).resolve().parent
PARSER_SCRIPT = HERE / "test_graph_mermaid.mjs"
# Mermaid 11 runs on node >= 18 (12 asks for node 22); jsdom 26 on node >= 18.
NPM_PACKAGES = {"mermaid": "11.17.2", "jsdom": "26.1.0"}


# --- an agent whose names Mermaid would choke on ----------------------------------------------------


@guard('x; y #1 "quoted" 50% %% done: {ok} <b>')
def awkward_guard(conv: Conversation) -> bool:
    return False


@guard("always")
def always(conv: Conversation) -> bool:
    return True


AWKWARD_STATES = ["awaiting-approval", "state", "end", "two words", 'say "hi"', "a;b", "50% done", "#1", "ünï", "s0"]


class AwkwardAgent(Agent):
    states = AWKWARD_STATES
    transitions = [
        Transition("tool_use", "ask-approval", "awaiting-approval", (awkward_guard,)),
        Transition("awaiting-approval", "approve", "state", (always,)),
        Transition("state", "end", "end"),
        Transition("end", "go on", "two words"),
        Transition("two words", "say", 'say "hi"'),
        Transition('say "hi"', "semi", "a;b"),
        Transition("a;b", "pct", "50% done"),
        Transition("50% done", "hash", "#1"),
        Transition("#1", "uni", "ünï"),
        Transition("ünï", "s", "s0"),
        Transition("s0", "back", "requesting"),
    ]


class WaitingAgent(Agent):
    """Waiting states are drawn with a class of their own (one with a name Mermaid needs an id for)."""

    states = [Wait("awaiting-approval"), Wait("review")]
    transitions = [
        Transition("tool_use", "ask", "awaiting-approval"),
        Transition("awaiting-approval", "approve", "requesting"),
        Transition("awaiting-approval", "escalate", "review"),
        Transition("review", "close", "done"),
    ]


WAITING_TRACE = [
    TraceStep(source="requesting", dest="tool_use", trigger="tool_use", turn=1),
    TraceStep(source="tool_use", dest="awaiting-approval", trigger="ask", turn=1),
    TraceStep(source="awaiting-approval", dest="review", trigger="escalate", turn=1),
]


AWKWARD_TRACE = [
    TraceStep(source="requesting", dest="tool_use", trigger="tool_use", turn=1),
    TraceStep(source="tool_use", dest="awaiting-approval", trigger="ask-approval", turn=1),
    TraceStep(source="awaiting-approval", dest="state", trigger="approve", turn=1),
    TraceStep(source="state", dest="end", trigger="end", turn=1),
    TraceStep(source="end", dest="two words", trigger="go on", turn=1),
]


def corpus() -> dict[str, Any]:
    """Graphs to check: base, path-highlighted, awkward names, awkward names with a path."""
    demo, _ = run_demo()
    return {
        "base": build(Agent.table(), title="Agent"),
        "demo-path": build(Agent.table(), title="WeatherAgent: done", trace=demo.trace, current="done"),
        "awkward": build(AwkwardAgent.table(), title='Awkward: "names"; 100% #1'),
        "awkward-path": build(AwkwardAgent.table(), title="a: b", trace=AWKWARD_TRACE, current="two words"),
        "start-only": build(Agent.table(), current="requesting"),
        "waits": build(WaitingAgent.table(), title="Waiting"),
        "waits-path": build(WaitingAgent.table(), title="Waiting (review)", trace=WAITING_TRACE, current="review"),
    }


# --- the strict grammar -------------------------------------------------------------------------------

ID = r"[A-Za-z_][A-Za-z0-9_]*"
ENTITY = r"#(?:[0-9]+|[A-Za-z]+);"
# A label: no raw ; # % " & and no line break; "<" only where it cannot open an HTML tag.
TEXT = rf"(?:[^;#%\"&<\n\r]|<(?![A-Za-z/!?])|{ENTITY})+"
STYLE = r"[a-z-]+:[#A-Za-z0-9.]+(?:,[a-z-]+:[#A-Za-z0-9.]+)*"
LINE_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("comment", re.compile(r"    %% (?!\{)[^\n]*")),
    ("declare", re.compile(rf'    state "(?P<text>{TEXT})" as (?P<id>{ID})')),
    ("edge", re.compile(rf"    (?P<src>\[\*\]|{ID}) --> (?P<dst>\[\*\]|{ID})(?:: (?P<label>{TEXT}))?")),
    ("classdef", re.compile(rf"    classDef (?P<name>{ID}) {STYLE}")),
    ("class", re.compile(rf"    class (?P<ids>{ID}(?:,{ID})*) (?P<name>{ID})")),
]


def strict_problems(text: str) -> list[str]:
    """Every way ``text`` strays from the strict stateDiagram-v2 subset; [] when it conforms."""
    problems: list[str] = []
    if not text.endswith("\n"):
        problems.append("the text does not end with a newline")
    lines = text.split("\n")[:-1]
    if lines[:1] == ["---"]:
        if len(lines) < 4 or lines[2] != "---" or not lines[1].startswith("title: "):
            return [*problems, "front matter must be exactly: ---, title: <JSON string>, ---"]
        try:
            title = json.loads(lines[1][len("title: ") :])
        except ValueError:
            title = None
        if not isinstance(title, str):
            problems.append("the title is not a JSON string")
        lines = lines[3:]
    if lines[:1] != ["stateDiagram-v2"]:
        return [*problems, "the diagram does not start with stateDiagram-v2"]
    declared: dict[str, str] = {}
    used: set[str] = set()
    classdefs: set[str] = set()
    starts = 0

    def check_id(ident: str, n: int) -> None:
        if ident.lower() in MERMAID_RESERVED:
            problems.append(f"line {n}: {ident!r} is a Mermaid keyword, not a state id")

    def check_text(value: str, n: int) -> None:
        if value != value.strip() or "  " in value:
            problems.append(f"line {n}: label {value!r} has stray whitespace")

    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            problems.append(f"line {n}: blank line")
            continue
        rule = next(((name, m) for name, rx in LINE_RULES if (m := rx.fullmatch(line))), None)
        if rule is None:
            problems.append(f"line {n}: not in the grammar: {line!r}")
            continue
        kind, m = rule
        if kind == "declare":
            check_id(m["id"], n)
            check_text(m["text"], n)
            if m["id"] in declared or m["id"] in used:
                problems.append(f"line {n}: {m['id']!r} declared twice, or after its first use")
            declared[m["id"]] = m["text"]
        elif kind == "edge":
            for end in (m["src"], m["dst"]):
                if end != "[*]":
                    check_id(end, n)
                    used.add(end)
            if m["src"] == "[*]":
                starts += 1
                if m["dst"] == "[*]" or m["label"] is not None:
                    problems.append(f"line {n}: the start arrow must be plain")
            if m["dst"] == "[*]" and m["label"] is not None:
                problems.append(f"line {n}: an end arrow has no label")
            if m["label"] is not None:
                check_text(m["label"], n)
        elif kind == "classdef":
            classdefs.add(m["name"])
        elif kind == "class":
            if m["name"] not in classdefs:
                problems.append(f"line {n}: class {m['name']!r} is used before its classDef")
            for ident in m["ids"].split(","):
                check_id(ident, n)
                if ident not in used and ident not in declared:
                    problems.append(f"line {n}: class names an unknown state {ident!r}")
    if starts != 1:
        problems.append(f"{starts} start arrows; expected exactly one")
    return problems


# Texts the grammar must refuse (and the real parser too, where it refuses them rather than misreading them).
BAD_FOR_BOTH = {
    "dash in an id": "stateDiagram-v2\n    [*] --> x-y\n",
    "keyword as an id": "stateDiagram-v2\n    [*] --> state\n    state --> b: go\n",
    "quote in a description": 'stateDiagram-v2\n    state "a "b"" as s0\n    [*] --> s0\n',
    "class as an id": "stateDiagram-v2\n    [*] --> class\n",
    "arrow to nothing": "stateDiagram-v2\n    [*] --> a\n    a --> : x\n",
}
BAD_FOR_GRAMMAR_ONLY = {  # Mermaid accepts these but reads them differently from what was meant
    "semicolon cuts a label": "stateDiagram-v2\n    [*] --> a\n    a --> b: x; y\n",
    "space in an id": "stateDiagram-v2\n    [*] --> two words\n",
    "colon in an id": "stateDiagram-v2\n    [*] --> a:b\n",
    "hash in a label": "stateDiagram-v2\n    [*] --> a\n    a --> b: #1\n",
    "directive comment": "stateDiagram-v2\n    %%{init: {}}%%\n    [*] --> a\n",
    "HTML tag in a label": "stateDiagram-v2\n    [*] --> a\n    a --> b: x <b>y</b>\n",
    "entity in a label": "stateDiagram-v2\n    [*] --> a\n    a --> b: x &lt; y\n",
}


@pytest.mark.parametrize("name", ["base", "demo-path", "awkward", "awkward-path", "start-only", "waits", "waits-path"])
def test_generated_mermaid_meets_the_strict_grammar(name: str) -> None:
    text = to_mermaid(corpus()[name])
    assert strict_problems(text) == [], text


@pytest.mark.parametrize("text", [*BAD_FOR_BOTH.values(), *BAD_FOR_GRAMMAR_ONLY.values()])
def test_the_strict_grammar_refuses_what_mermaid_would_reject_or_misread(text: str) -> None:
    assert strict_problems(text) != []


def test_awkward_state_names_get_safe_ids_and_keep_their_names() -> None:
    ids = mermaid_ids(["requesting", *AWKWARD_STATES])
    assert ids["requesting"] == "requesting" and ids["s0"] == "s0"
    for name in AWKWARD_STATES:
        assert re.fullmatch(ID, ids[name]) and ids[name].lower() not in MERMAID_RESERVED
    assert len(set(ids.values())) == len(ids)  # no two states share an id ("s0" is taken by a state)
    text = to_mermaid(corpus()["awkward"])
    assert 'state "say #quot;hi#quot;" as ' in text and 'state "a#59;b" as ' in text
    assert 'state "50#37; done" as ' in text and 'state "#35;1" as ' in text


# --- the real parser ---------------------------------------------------------------------------------


def _install_parser(cache_dir: Path) -> Path | str:
    """The folder holding the parser, installed if needed; or why it cannot be had."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are not installed, so the real Mermaid parser cannot be used"
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
        major = int(version.strip().lstrip("v").split(".")[0])
    except (ValueError, OSError, subprocess.SubprocessError):
        major = 0
    if major < 18:
        return f"node {major} is too old for mermaid {NPM_PACKAGES['mermaid']} (needs >= 18)"
    manifest = json.dumps({"private": True, "dependencies": NPM_PACKAGES}, indent=2)
    installed = cache_dir / "node_modules" / "mermaid" / "package.json"
    wanted = cache_dir / "package.json"
    if wanted.exists() and wanted.read_text() == manifest and installed.exists():
        return cache_dir
    wanted.write_text(manifest)
    try:
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=cache_dir,
            capture_output=True,
            text=True,
            timeout=540,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"npm install of the Mermaid parser failed: {exc}"
    if proc.returncode != 0 or not installed.exists():
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return f"npm install of the Mermaid parser failed (exit {proc.returncode}): {tail}"
    return cache_dir


@pytest.fixture(scope="session")
def mermaid_parse(request: pytest.FixtureRequest) -> Callable[[Sequence[str]], list[dict[str, Any]]]:
    """Parse texts with the real Mermaid parser (npm ``mermaid``), installing it on first use."""
    cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`
    cache_dir = (
        Path(cache.mkdir("mermaid-parser")) if cache is not None else Path(tempfile.gettempdir()) / "agentfsm-mermaid"
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    where = _install_parser(cache_dir)
    if isinstance(where, str):
        pytest.skip(f"Mermaid parser tests skipped: {where}; the strict grammar check still ran")
    script = where / PARSER_SCRIPT.name
    if not script.exists() or script.read_text() != PARSER_SCRIPT.read_text():
        shutil.copyfile(PARSER_SCRIPT, script)
    node = shutil.which("node")
    assert node is not None

    def parse(texts: Sequence[str]) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [node, str(script)], input=json.dumps(list(texts)), capture_output=True, text=True, timeout=300, cwd=where
        )
        assert proc.returncode == 0, proc.stderr
        result: list[dict[str, Any]] = json.loads(proc.stdout)
        return result

    return parse


def _decode(text: str) -> str:
    """Undo Mermaid's entity encoding (``#59;`` → ``;``) and its HTML escaping of labels."""
    text = re.sub(r"ﬂ°°(\d+)¶ß", lambda m: chr(int(m.group(1))), text)
    text = re.sub(r"ﬂ°(\w+)¶ß", lambda m: html.unescape(f"&{m.group(1)};"), text)
    return html.unescape(text)


@pytest.mark.slow  # Node
def test_the_real_mermaid_parser_reads_back_every_state_edge_and_label(
    mermaid_parse: Callable[[Sequence[str]], list[dict[str, Any]]],
) -> None:
    graphs = corpus()
    texts = {name: to_mermaid(g) for name, g in graphs.items()}
    parsed = dict(zip(texts, mermaid_parse(list(texts.values())), strict=True))
    for name, graph in graphs.items():
        got = parsed[name]
        assert got["ok"], f"{name}: {got.get('error')}\n{texts[name]}"
        assert got["type"] == "stateDiagram"
        ids = mermaid_ids(graph.states)
        expected = [("root_start", ids[graph.initial], "")]
        expected += [(ids[e.source], ids[e.dest], e.label) for e in graph.edges]
        expected += [(ids[s], "root_end", "") for s in graph.states if s in graph.terminal]
        assert [(a, b, _decode(t)) for a, b, t in got["relations"]] == expected, name
        states = got["states"]
        assert set(states) == {*ids.values(), "root_start", "root_end"}, name
        for state, ident in ids.items():
            descriptions = [_decode(d) for d in states[ident]["descriptions"]]
            assert descriptions == ([] if ident == state else [state]), (name, state)
            want = "current" if state == graph.current else "visited" if state in graph.visited else None
            waiting = ["waiting"] if state in graph.waits else []
            assert states[ident]["classes"] == waiting + ([want] if want else []), (name, state)


@pytest.mark.slow  # Node
def test_the_real_mermaid_parser_rejects_what_the_grammar_rejects(
    mermaid_parse: Callable[[Sequence[str]], list[dict[str, Any]]],
) -> None:
    results = mermaid_parse(list(BAD_FOR_BOTH.values()))
    for (name, text), got in zip(BAD_FOR_BOTH.items(), results, strict=True):
        assert not got["ok"], f"Mermaid accepted {name!r}:\n{text}"
    # ... and the ones it accepts, it misreads: the label is cut at the semicolon
    cut = mermaid_parse([BAD_FOR_GRAMMAR_ONLY["semicolon cuts a label"]])[0]
    assert cut["ok"] and ["a", "b", "x"] in cut["relations"]
