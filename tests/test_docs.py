"""The docs cannot rot: every ```python block in README.md and docs/*.md runs as a reader would run it,
prints what it says it prints, and every link resolves.

The convention (docs/README.md, "For contributors", says the same to writers):

* Only ```python blocks run. Shell commands, program output and fragments use another fence
  (```bash, ```console, ```text); nothing else is executed.
* A python block is a whole program, run exactly as shown: the block is written to ``example.py`` in a
  fresh empty folder and run there as ``python example.py`` would run it, in a process of its own
  (``tests/blockrunner.py`` forks it from an interpreter that has imported the SDK once: see its
  docstring for why and for what that shares). Nothing is added to it and nothing is hidden: no
  simulator behind the scenes, no API key and no ``ANTHROPIC_*`` or ``AGENTFSM_*`` variable in its
  environment. A block that talks to a model builds its own, visibly::

      from agentfsm.sim import Simulator, replies as r

      sim = Simulator([r.tool_use("get_weather", {"city": "Hanoi"}), r.text("It is 31°C.")])
      result = Agent(client=sim.client(), tools=[get_weather]).run("Weather in Hanoi?")

  It must exit with status 0, within ``BLOCK_TIMEOUT``, and write no warning on stderr.
* **What a block prints is what its comments say.** The comment at the end of a line that ends a
  ``print(...)`` call is what it prints; for a call without one, the whole-line comments right below
  that line (up to a blank line or code) are. One line of output each, in the order of the source;
  ``...`` stands for any text (several lines too). The program's stdout must match them exactly
  (trailing spaces aside), and a block whose comments show no output must print nothing. A mismatch
  fails showing both texts::

      print(result.final_state, result.turns)  # done 2
      for step in result.trace:
          print(step.trigger)
      # tool_use
      # ...

* Directives are HTML comments right above a block (blank lines allowed), and only say what the block
  needs from its environment, never what it does: ``<!-- docs: needs postgres -->`` sets ``DATABASE_URL``
  to a throwaway PostgreSQL database (the store tests' ``pgserver``; where none can be started the block
  is skipped, saying why), and the page says the block reads ``DATABASE_URL``. ``<!-- docs: beyond
  schema -->`` exempts its requests from the request-schema check (still not from the wire rules), for
  features newer than the vendored OpenAPI spec, as the ``beyond_schema`` mark does for a test.
  Directives combine with commas: ``<!-- docs: needs postgres, beyond schema -->``.
* ``<!-- docs: real API -->`` marks a block about the real API (the README's quickstart with a key): CI
  has no key and no network, so such a block is compiled and its imports are checked, not run. The
  prose right above it must say so (it mentions ``ANTHROPIC_API_KEY`` or "real API"), and the next
  python block of the page must be its twin on the simulator, which runs. Keep them few.
* Every Messages request a block sends to any simulator is checked against the wire rules
  (``agentfsm.wire.messages.wire_problems``) and the API's request schema, as in the rest of the suite.
* Blocks use only model names the installed SDK lists (``anthropic.types.Model``): the simulator, like
  the API, answers an unknown model with 404.
* The old hidden ``<!-- sim: ... -->`` comments are gone: one left anywhere fails the test.

Besides running the blocks, this file is the ``mkdocs --strict`` of plain Markdown: every relative
link and ``#anchor`` resolves, every guide is in the index and ends by pointing to the next one, no page
points outside the repository, and the reference parts that mirror the code (the Policy table, the reply
builders' signatures, the event names, docs/01's table of every command of ``agentfsm --help``) are
checked against it; the README's state table is checked in test_project.py. The Policy table is
generated: ``.venv/bin/python tests/test_docs.py --write`` rewrites it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import itertools
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import tokenize
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS_DIR = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS_DIR.glob("*.md"))]
BLOCK_TIMEOUT = 60.0  # seconds; most blocks take well under one, the DBOS and Temporal ones a few

# The guides, in reading order: docs/README.md lists exactly these, in this order.
GUIDES = [
    "01-getting-started.md",
    "02-state-machine.md",
    "03-tools.md",
    "04-streaming-and-async.md",
    "05-extending.md",
    "06-persistence.md",
    "07-testing-with-the-simulator.md",
    "08-seeing-a-run.md",
    "09-scaling-out.md",
    "10-bulk-runs.md",
    "11-configuration.md",
    "12-troubleshooting.md",
    "13-mcp-and-typed-output.md",
    "14-debugging-and-evaluating.md",
    "15-exploring-and-evaluating.md",
]

NEEDS_POSTGRES, BEYOND_SCHEMA, REAL_API = "needs postgres", "beyond schema", "real API"
KNOWN_DIRECTIVES = (NEEDS_POSTGRES, BEYOND_SCHEMA, REAL_API)


# --- reading the pages --------------------------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_COMMENT = re.compile(r"^<!--(.*?)-->$", re.S)


@dataclass
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the first line of code
    lang: str
    code: str
    directives: list[str] = field(default_factory=list)
    prose_before: str = ""  # the paragraph right above the block (its directives skipped)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, with the ``docs:`` directives right above it."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["info"].strip().split(" ")[0]
        start = i + 1
        j = start
        while j < len(lines) and not re.match(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]):
            j += 1
        code = "\n".join(line[indent:] for line in lines[start:j]) + "\n"
        directives, above = _directives(lines, i)
        found.append(Block(page, start + 1, lang, code, directives, _paragraph_ending_at(lines, above)))
        i = j + 1
    return found


def _directives(lines: list[str], fence_index: int) -> tuple[list[str], int]:
    """The ``docs:`` directives in the HTML comments just above a fence (blank lines allowed), and the
    index of the line above them."""
    found: list[str] = []
    k = fence_index - 1
    while k >= 0:
        if not lines[k].strip():
            k -= 1
            continue
        if not lines[k].rstrip().endswith("-->"):
            break  # prose: the directives end here
        end = k
        while k >= 0 and "<!--" not in lines[k]:
            k -= 1
        m = _COMMENT.match("\n".join(lines[max(k, 0) : end + 1]).strip())
        if k < 0 or not m:
            break
        key, _, value = m[1].strip().partition(":")
        if key.strip() == "docs":
            found += [d.strip() for d in value.split(",") if d.strip()]
        k -= 1
    return found, k


def _paragraph_ending_at(lines: list[str], k: int) -> str:
    while k >= 0 and not lines[k].strip():
        k -= 1
    end = k
    while k >= 0 and lines[k].strip():
        k -= 1
    return "\n".join(lines[k + 1 : end + 1])


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in fenced_blocks(page) if b.lang in ("python", "py", "python3")]


BLOCKS = python_blocks()


# --- what a block says it prints ----------------------------------------------------------------------


def expected_output(code: str) -> str:
    """The output a block's comments show ('' when they show none).

    The comment at the end of the line that ends a ``print(...)`` call; for a call without one, the
    whole-line comments right below that line. One line of output each, in source order.
    """
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, a whole-line comment)
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            text = token.string[1:].removeprefix(" ")
            comments[token.start[0]] = (text, not token.line[: token.start[1]].strip())
    print_ends = sorted(
        {
            node.end_lineno
            for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
            if node.end_lineno is not None
        }
    )
    lines: list[str] = []
    for end in print_ends:
        if end in comments and not comments[end][1]:
            lines.append(comments[end][0])
            continue
        below = end + 1
        while below in comments and comments[below][1]:
            lines.append(comments[below][0])
            below += 1
    return "\n".join(lines)


def _normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


def output_matches(expected: str, actual: str) -> bool:
    """``actual`` is ``expected`` with each ``...`` standing for any text, trailing spaces aside."""
    pattern = ".*?".join(re.escape(part) for part in _normalised(expected).split("..."))
    return re.fullmatch(pattern, _normalised(actual), re.S) is not None


# --- running a block as a program ---------------------------------------------------------------------


@dataclass
class Ran:
    """What a block's process did."""

    returncode: int
    stdout: str
    stderr: str
    requests: list[dict[str, Any]]  # the Messages API requests it sent to simulators, as received


class BlockRunner:
    """Drives ``tests/blockrunner.py``: one process, started once, that forks one child per block."""

    def __init__(self, folder: Path) -> None:
        self._stderr = folder / "blockrunner.stderr"
        with self._stderr.open("w") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("blockrunner.py"))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                bufsize=0,
            )
        self._pending = b""

    def _answer(self, deadline: float | None) -> dict[str, Any] | None:
        """The runner's next answer line, or None if the deadline passes first."""
        assert self._process.stdout is not None
        while b"\n" not in self._pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._process.stdout], [], [], wait)
            if not ready:
                return None
            chunk = os.read(self._process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"the block runner died: {self._stderr.read_text()[-3000:]}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, file: Path, env: dict[str, str], timeout: float) -> Ran:
        folder = file.parent.parent
        out, err, report = folder / "stdout", folder / "stderr", folder / "requests.json"
        job = {"file": str(file), "cwd": str(file.parent), "env": env}
        job |= {"stdout": str(out), "stderr": str(err), "report": str(report)}
        assert self._process.stdin is not None
        self._process.stdin.write((json.dumps(job) + "\n").encode())
        started = self._answer(None)
        assert started is not None
        ended = self._answer(time.monotonic() + timeout)
        if ended is None:  # out of time: end the block's whole process group, then collect its status
            os.killpg(started["pid"], signal.SIGKILL)
            ended = self._answer(None)
            assert ended is not None
            raise TimeoutError(f"the block ran longer than {timeout:g} s; its output so far:\n{out.read_text()}")
        requests = json.loads(report.read_text()) if report.exists() else []
        return Ran(ended["returncode"], out.read_text(), err.read_text(), requests)

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=30)


@pytest.fixture(scope="module")
def block_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlockRunner]:
    runner = BlockRunner(tmp_path_factory.mktemp("blockrunner"))
    try:
        yield runner
    finally:
        runner.close()


def reader_environment() -> dict[str, str]:
    """This process's environment as a reader's would be: no key, no API address, no agentfsm settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AGENTFSM_"))}


def on_the_page(block: Block, text: str, file: Path) -> str:
    """``text`` with the block file's line numbers turned into the page's."""

    def page_line(m: re.Match[str]) -> str:
        return f'File "{block.page.relative_to(ROOT)}", line {block.line + int(m[1]) - 1}'

    return re.sub(rf'File "{re.escape(str(file))}", line (\d+)', page_line, text)


_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ", re.M)


def request_problems(requests: list[dict[str, Any]], *, check_schema: bool) -> list[str]:
    """What the requests break: the wire rules, and (unless exempt) the API's request schema."""
    import realtraffic

    from agentfsm.sim.wire import MESSAGES_PATH
    from agentfsm.wire.messages import wire_problems

    problems: list[str] = []
    for request in requests:
        if request["method"] != "POST" or request["path"] != MESSAGES_PATH or not request["body"]:
            continue  # the Message Batches calls; their requests are checked one by one
        problems += [f"request #{request['n']}: {p}" for p in wire_problems(request["body"].get("messages", []))]
        if check_schema:
            name = realtraffic.schema_name(request["query"], request["headers"])
            problems += [
                f"request #{request['n']}: {p}" for p in realtraffic.schema_problems(request["body"], name) or []
            ]
    return problems


def _param(block: Block) -> Any:
    marks = [pytest.mark.beyond_schema] if BEYOND_SCHEMA in block.directives else []
    return pytest.param(block, marks=marks, id=block.where)


@pytest.mark.slow  # each block runs in a process of its own
@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_python_block_runs_as_shown(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    unknown = [d for d in block.directives if d not in KNOWN_DIRECTIVES]
    assert not unknown, (
        f"{block.where}: unknown directive <!-- docs: {', '.join(unknown)} --> (known: {KNOWN_DIRECTIVES})"
    )
    if REAL_API in block.directives:
        check_real_api_block(block)
        return
    env = reader_environment()
    if NEEDS_POSTGRES in block.directives:
        env["DATABASE_URL"] = request.getfixturevalue("postgres_database")
    runner: BlockRunner = request.getfixturevalue("block_runner")
    (tmp_path / "work").mkdir()
    file = tmp_path / "work" / "example.py"
    file.write_text(block.code)
    ran = runner.run(file, env, BLOCK_TIMEOUT)

    stderr = on_the_page(block, ran.stderr, file)
    assert ran.returncode == 0, f"{block.where}: the block exited with status {ran.returncode}:\n{stderr}"
    assert not _WARNING.search(ran.stderr), f"{block.where}: the block writes a warning on stderr:\n{stderr}"
    expected = expected_output(block.code)
    assert output_matches(expected, ran.stdout), (
        f"{block.where}: the block prints something else than its comments say.\n"
        f"--- its comments say:\n{expected or '(nothing)'}\n--- it printed:\n{ran.stdout or '(nothing)'}"
    )
    problems = request_problems(ran.requests, check_schema=BEYOND_SCHEMA not in block.directives)
    assert not problems, f"{block.where}: requests break the wire rules or the request schema:\n" + "\n".join(problems)


def check_real_api_block(block: Block) -> None:
    """A block about the real API: said so above it, compiles, imports, and has a twin that runs."""
    assert "ANTHROPIC_API_KEY" in block.prose_before or "real API" in block.prose_before, (
        f"{block.where}: a <!-- docs: real API --> block must say so in the paragraph above it "
        "(name ANTHROPIC_API_KEY or say 'real API')"
    )
    tree = ast.parse(block.code, str(block.page))
    compile(tree, str(block.page), "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    importlib.import_module(f"{node.module}.{alias.name}")
    same_page = [b for b in BLOCKS if b.page == block.page]
    after = same_page[same_page.index(block) + 1 :]
    twin = after[0] if after else None
    assert twin is not None and REAL_API not in twin.directives and "Simulator(" in twin.code, (
        f"{block.where}: a real-API block must be followed by its twin on the simulator (the next python block)"
    )


def test_no_hidden_simulator_comment_is_left() -> None:
    """The old convention scripted the model in invisible ``<!-- sim: ... -->`` comments: never again."""
    left = [
        f"{page.relative_to(ROOT)}:{n}"
        for page in PAGES
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if re.search(r"<!--\s*sim\s*:", line)
    ]
    assert not left, f"hidden <!-- sim: --> comments (build a Simulator in the block instead): {left}"


def known_models() -> set[str]:
    from anthropic.types import Model

    def literals(tp: Any) -> Iterator[str]:
        if typing.get_origin(tp) is typing.Literal:
            yield from (a for a in typing.get_args(tp) if isinstance(a, str))
        else:
            for arg in typing.get_args(tp):
                yield from literals(arg)

    return set(literals(Model))


def test_blocks_use_only_models_the_sdk_knows() -> None:
    known = known_models()
    assert "claude-sonnet-5-5" in known, "anthropic.types.Model lists no models: the check would prove nothing"
    unknown = [
        f"{block.where}: {node.value!r}"
        for block in BLOCKS
        for node in ast.walk(ast.parse(block.code))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if re.fullmatch(r"claude-[\w.-]+", node.value) and node.value not in known
    ]
    listing = "\n  ".join(unknown)
    assert not unknown, f"model names the installed SDK does not list (anthropic.types.Model):\n  {listing}"


def test_the_parsers_read_what_the_convention_says() -> None:
    """Directives, the paragraph above a block, and the output comments, on small made-up pages."""
    assert BLOCKS, "no python blocks found"
    lines = ["Text.", "", "<!-- docs: needs postgres, beyond schema -->", "", "```python", "x = 1", "```"]
    assert _directives(lines, 4) == (["needs postgres", "beyond schema"], 0)
    assert _directives(["<!-- docs: real API -->", "prose", "```python"], 2) == ([], 1)
    assert _directives(["<!--", "docs: real API", "-->", "```python"], 3) == (["real API"], -1)
    assert _paragraph_ending_at(["# Head", "", "With a key:", "more.", "", "<!-- x -->"], 4) == "With a key:\nmore."

    code = "x = 2\nprint(x)  # 2\n# not output\nfor i in range(2):\n    print(i)\n# 0\n# 1\n\n# not output\n"
    assert expected_output(code + 'print("a", end="")\n') == "2\n0\n1"
    assert expected_output("print(\n    'x',\n)  # x\ny = 1  # not output\n") == "x"
    assert output_matches("a ... c", "a b\nb c\n") and output_matches("x", "x  \n\n")
    assert not output_matches("done 7", "done 8") and not output_matches("", "anything")


def cli_commands() -> list[str]:
    """Every command ``agentfsm --help`` offers, subcommands spelt out (``runs list``), and its own options."""
    import argparse

    from agentfsm.cli import build_parser

    def walk(parser: argparse.ArgumentParser, prefix: str) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found = list(walk(sub, f"{prefix}{name} "))
                    yield from found or [f"{prefix}{name}"]

    parser = build_parser()
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    return [*options, *walk(parser, "")]


def test_the_getting_started_guide_lists_every_command() -> None:
    page = DOCS_DIR / "01-getting-started.md"
    section = page.read_text().split("## The command line", 1)[1]
    rows = re.findall(r"^\| `agentfsm ([^`]*)`", section, re.M)
    commands = cli_commands()
    assert "runs list" in commands, "no subcommands found: the check would prove nothing"
    missing = [c for c in commands if not any(row == c or row.startswith(f"{c} ") for row in rows)]
    assert not missing, f"{page.relative_to(ROOT)}'s command table lacks: {missing}"


def test_every_guide_ends_by_pointing_to_the_next() -> None:
    for guide, following in itertools.pairwise(GUIDES):
        text = (DOCS_DIR / guide).read_text()
        nexts = re.findall(r"^Next: \[[^\]]+\]\(([^)]+)\)\.$", text, re.M)
        assert nexts == [following], f"docs/{guide}: one 'Next: [...]({following}).' line, found {nexts}"
        assert text.rstrip().splitlines()[-1].startswith("Next: "), f"docs/{guide}: the 'Next:' line must come last"


# --- links: what mkdocs --strict would check ------------------------------------------------------------

_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_REF_DEF = re.compile(r"^\s*\[[^\]]+\]:\s*(?P<target>\S+)", re.M)


def prose(page: Path) -> str:
    """The page without its fenced blocks and inline code (links there are not links)."""
    lines = page.read_text().splitlines()
    keep: list[str] = []
    fence: str | None = None
    for line in lines:
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m["fence"]
            keep.append("")
            continue
        if fence is not None:
            if re.match(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
                fence = None
            keep.append("")
            continue
        keep.append(re.sub(r"`[^`]*`", "``", line))
    return "\n".join(keep)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)  # code spans keep their text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def raw_anchors(page: Path) -> set[str]:
    """Anchors from the raw headings (code spans included), outside fenced blocks."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    fence: str | None = None
    for line in page.read_text().splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m["fence"]
            continue
        if fence is not None:
            if re.match(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
                fence = None
            continue
        h = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if h:
            base = slug(h[2])
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def _title_anchor(page: Path) -> str | None:
    title = re.search(r"^# (.+)$", prose(page), re.M)
    return slug(title[1]) if title else None


def links(page: Path) -> list[str]:
    text = prose(page)
    return [m["target"] for m in _LINK.finditer(text)] + [m["target"] for m in _REF_DEF.finditer(text)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_link_and_anchor_resolves(page: Path) -> None:
    problems: list[str] = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: — outside this check
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{target}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{target}: {dest.relative_to(ROOT)} does not exist")
            continue
        if anchor and not path_part and anchor == _title_anchor(page):
            problems.append(f"{target}: points at this page's own title, not at a section of it")
        if anchor:
            if dest.suffix != ".md":
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in raw_anchors(dest):
                problems.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}: broken links:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_no_page_refers_to_what_a_reader_does_not_have(page: Path) -> None:
    text = page.read_text()
    for phrase in ("SPEC.md", "NOTES-", "seed article", "../shared", "/work/"):
        assert phrase not in text, f"{page.relative_to(ROOT)} mentions {phrase!r}, which a reader does not have"


def test_the_library_cites_the_guides_not_internal_notes() -> None:
    for path in (ROOT / "agentfsm").rglob("*.py"):
        text = path.read_text()
        for phrase in ("SPEC.md", "NOTES-", "seed article"):
            assert phrase not in text, f"{path.relative_to(ROOT)} cites {phrase!r}: point it at a guide in docs/"


def test_the_index_lists_every_guide_in_reading_order() -> None:
    on_disk = sorted(p.name for p in DOCS_DIR.glob("*.md") if p.name != "README.md")
    assert on_disk == sorted(GUIDES), "docs/ holds other files than the guides this test knows: update GUIDES"
    index = prose(DOCS_DIR / "README.md")
    listed = [t for t in re.findall(r"\]\(([^)#]+\.md)\)", index) if t in GUIDES]
    assert list(dict.fromkeys(listed)) == GUIDES, "docs/README.md must link every guide, in reading order"
    readme = prose(ROOT / "README.md")
    for guide in GUIDES:
        assert f"docs/{guide}" in readme, f"README.md does not link docs/{guide}"


def test_the_index_names_every_folder_of_the_package() -> None:
    index = (DOCS_DIR / "README.md").read_text()
    for folder in sorted(p.parent.name for p in (ROOT / "agentfsm").glob("*/__init__.py")):
        assert re.search(rf"^agentfsm/{folder}/ ", index, re.M), (
            f"docs/README.md does not say what agentfsm/{folder}/ is"
        )


def test_the_readme_stays_a_front_door() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 12 * 1024, f"README.md is {size:,} bytes (at most 12 KiB): move detail into a guide in docs/"


# --- reference parts that mirror the code ----------------------------------------------------------------


def annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    text = inspect.formatannotation(annotation)
    return re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+([A-Za-z_]\w*)", r"\1", text)  # agentfsm.wire.pricing.Price -> Price


def signature_text(name: str, fn: Callable[..., Any]) -> str:
    """``name(a: int, *, b: str = 'x') -> R`` with the annotations as written in the source."""
    sig = inspect.signature(fn)
    parts: list[str] = []
    star = False
    params = list(sig.parameters.values())
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        star = star or p.kind is p.VAR_POSITIONAL
        if p.annotation is not p.empty:
            text += f": {annotation_text(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY):
            parts.append("/")
    returns = "" if sig.return_annotation is sig.empty else f" -> {annotation_text(sig.return_annotation)}"
    return f"{name}({', '.join(parts)}){returns}"


def test_the_simulator_guide_lists_every_reply_builder_with_its_signature() -> None:
    from agentfsm.sim import replies

    page = DOCS_DIR / "07-testing-with-the-simulator.md"
    documented = dict(re.findall(r"^- `(([a-z_]+)\(.*\)(?: -> [^`]+)?)`", page.read_text(), re.M))
    by_name = {sig.split("(", 1)[0]: sig for sig in documented}
    problems = []
    for name in replies.__all__:
        want = signature_text(name, getattr(replies, name))
        if name not in by_name:
            problems.append(f"missing: - `{want}` — ...")
        elif by_name[name] != want:
            problems.append(f"differs: the guide says `{by_name[name]}`, the code is `{want}`")
    extra = sorted(set(by_name) - set(replies.__all__))
    problems += [f"not a builder of agentfsm.sim.replies: {name}" for name in extra]
    assert not problems, f"{page.relative_to(ROOT)}, reply builders:\n  " + "\n  ".join(problems)


def test_the_events_guide_lists_every_event_name_in_order() -> None:
    from agentfsm.observe.events import EVENT_NAMES

    page = DOCS_DIR / "08-seeing-a-run.md"
    rows = re.findall(r"^\| `([a-z_.]+)` \|", page.read_text(), re.M)
    names = [n for n in rows if "." in n or n in EVENT_NAMES]
    assert names == list(EVENT_NAMES), (
        f"{page.relative_to(ROOT)}'s event table must list EVENT_NAMES exactly, in order:\n"
        f"  missing {[n for n in EVENT_NAMES if n not in names]}, extra {[n for n in names if n not in EVENT_NAMES]}"
    )


# --- the Policy reference, generated -----------------------------------------------------------------------

POLICY_PAGE = DOCS_DIR / "11-configuration.md"
POLICY_START = "<!-- policy-table: generated by `.venv/bin/python tests/test_docs.py --write`; do not edit -->"
POLICY_END = "<!-- end of policy-table -->"


def _bounds(metadata: list[Any]) -> str:
    marks = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    found = []
    for item in metadata:
        for attr, mark in marks.items():
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{mark} {value:g}" if isinstance(value, float) else f"{mark} {value}")
    return ", ".join(found)


def policy_table() -> str:
    """The reference table of every Policy field: name, type (and bounds), default, meaning."""
    from agentfsm.policy import Policy

    lines = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, info in Policy.model_fields.items():
        kind = annotation_text(info.annotation).replace("|", "\\|")
        bounds = _bounds(list(info.metadata))
        default = repr(info.default).replace("|", "\\|")
        meaning = (info.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | `{kind}`{' ' + bounds if bounds else ''} | `{default}` | {meaning} |")
    return "\n".join(lines)


def policy_section(text: str) -> str:
    if POLICY_START not in text or POLICY_END not in text:
        raise AssertionError(f"{POLICY_PAGE.relative_to(ROOT)} lost its generated-table markers")
    return text.split(POLICY_START, 1)[1].split(POLICY_END, 1)[0].strip("\n")


def write_policy_table() -> None:
    text = POLICY_PAGE.read_text()
    head, rest = text.split(POLICY_START, 1)
    _, tail = rest.split(POLICY_END, 1)
    POLICY_PAGE.write_text(f"{head}{POLICY_START}\n{policy_table()}\n{POLICY_END}{tail}")


def test_every_policy_field_is_described() -> None:
    from agentfsm.policy import Policy

    bare = [name for name, info in Policy.model_fields.items() if not (info.description or "").strip()]
    assert not bare, f"Policy fields without a description= (the configuration guide shows it): {bare}"


def test_the_configuration_guide_lists_every_policy_field() -> None:
    assert policy_section(POLICY_PAGE.read_text()) == policy_table(), (
        f"{POLICY_PAGE.relative_to(ROOT)}'s Policy table is out of date: "
        "run .venv/bin/python tests/test_docs.py --write"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_policy_table()
        print(f"wrote the Policy table of {POLICY_PAGE.relative_to(ROOT)}")
    else:
        sys.exit("usage: python tests/test_docs.py --write   (regenerates the Policy table of the configuration guide)")
