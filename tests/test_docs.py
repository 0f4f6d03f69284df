"""The docs cannot rot: every ```python block in README.md and docs/*.md runs, and every link resolves.

The convention (docs/README.md, "For contributors", says the same to writers):

* Only ```python blocks run. Shell commands, program output and fragments use another fence
  (```bash, ```console, ```text); nothing else is executed.
* Each python block is a program of its own: it runs in a fresh namespace (a fresh ``__main__``
  module), in a fresh empty working directory, with a time limit (``BLOCK_TIMEOUT``), here in the
  test process (an interpreter per block would cost seconds each). So a block is exactly what a
  user would paste into a file: its own imports, no names from an earlier block.
* While a block runs, ``ANTHROPIC_BASE_URL`` points at a fresh ``agentfsm.sim.Simulator`` served on a
  loopback port and ``ANTHROPIC_API_KEY`` holds a dummy key, so ``anthropic.Anthropic()``,
  ``anthropic.AsyncAnthropic()`` and an ``Agent`` with no client talk to it unchanged.
* What that simulator answers is said by an HTML comment (invisible once rendered) right above
  the block, blank lines allowed between::

      <!-- sim: [r.tool_use("get_weather", {"location": "Hanoi"}), r.text("It is 31°C.")] -->

  The text after ``sim:`` is what goes between the parentheses of ``Simulator(...)``: a script
  (a list of replies, or one callable answering every request) and any keyword arguments, e.g.
  ``<!-- sim: [r.max_tokens("Once"), r.text(" upon")], prefill_unsupported=["claude-haiku"] -->``. ``r`` is
  ``agentfsm.sim.replies``; the names in ``SCRIPTS`` below are named scripts
  (``<!-- sim: demo -->``). A list script must be used up by the block: a reply left over means
  the comment and the block no longer agree. Without a comment the simulator echoes.
* ``<!-- docs: needs postgres -->`` above a block sets ``DATABASE_URL`` to a throwaway PostgreSQL
  server (the store tests' ``pgserver``); where none can be started the block is skipped, saying why.
* ``<!-- docs: beyond schema -->`` above a block exempts its requests from the request-schema check
  (still not from the wire rules), for features newer than the vendored OpenAPI spec (compaction,
  server-side fallbacks), as the ``beyond_schema`` mark does for a test. Directives combine with
  commas: ``<!-- docs: needs postgres, beyond schema -->``.
* Every request a block sends to any simulator (its own ones included) is checked by the suite's
  wire-rule and request-schema hooks (``tests/conftest.py``), like every other test's.

Besides running the blocks, this file is the ``mkdocs --strict`` of plain Markdown: every relative
link and ``#anchor`` resolves, every guide is in the index, no page points outside the repository,
and the reference parts that mirror the code (the Policy table, the reply builders' signatures, the
event names) are checked against it; the README's state table is checked in test_project.py. The
Policy table is generated: ``.venv/bin/python tests/test_docs.py --write`` rewrites it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import signal
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

ROOT = Path(__file__).resolve().parent.parent
DOCS_DIR = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS_DIR.glob("*.md"))]
BLOCK_TIMEOUT = 20.0  # seconds; a block is a small program on a local simulator

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
]


def _demo_script() -> list[Any]:
    from agentfsm.demo import demo_script

    return list(demo_script())


#: Named scripts a ``<!-- sim: NAME -->`` comment may use (called to build a fresh script per block).
SCRIPTS: dict[str, Callable[[], Any]] = {"demo": _demo_script}


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
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, with the ``sim:``/``docs:`` comments right above it."""
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
        found.append(Block(page, start + 1, lang, code, _directives(lines, i)))
        i = j + 1
    return found


def _directives(lines: list[str], fence_index: int) -> dict[str, str]:
    """``{"sim": ..., "docs": ...}`` from the HTML comments just above a fence (blank lines allowed)."""
    found: dict[str, str] = {}
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
        if key.strip() in ("sim", "docs"):
            found.setdefault(key.strip(), " ".join(value.split()))
        k -= 1
    return found


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in fenced_blocks(page) if b.lang in ("python", "py", "python3")]


# --- running a block ----------------------------------------------------------------------------------


def echo(request: Any) -> Any:
    """The default model: says back the text of the last message."""
    from agentfsm.sim import replies as r

    content = (request.last_message or {}).get("content")
    said = (
        content
        if isinstance(content, str)
        else " ".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")
    )
    return r.text(f"You said: {said}" if said.strip() else "Hello from the simulator.")


def simulator_for(block: Block) -> Any:
    from agentfsm.sim import Simulator
    from agentfsm.sim import replies as r

    args = block.directives.get("sim", "").strip()
    if not args:
        return Simulator(echo)
    scope = {"r": r, "Simulator": Simulator, **{name: make() for name, make in SCRIPTS.items() if name in args}}
    try:
        return eval(f"Simulator({args})", scope)
    except Exception as exc:
        raise AssertionError(
            f"{block.where}: the <!-- sim: ... --> comment does not build a Simulator: {exc!r}"
        ) from exc


@contextlib.contextmanager
def time_limit(seconds: float, where: str) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{where}: the block ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def global_state_restored() -> Iterator[types.ModuleType]:
    """A fresh ``__main__`` for the block; structlog, logging and ``__main__`` put back afterwards."""
    structlog_config = dict(structlog.get_config())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    main = types.ModuleType("__main__")
    previous_main = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        yield main
    finally:
        if previous_main is not None:
            sys.modules["__main__"] = previous_main
        structlog.configure(**structlog_config)
        root.handlers[:] = handlers
        root.setLevel(level)


BLOCKS = python_blocks()
KNOWN_NEEDS = ("needs postgres", "beyond schema")


def _needs(block: Block) -> list[str]:
    return [n.strip() for n in block.directives.get("docs", "").split(",") if n.strip()]


def _param(block: Block) -> Any:
    marks = [pytest.mark.beyond_schema] if "beyond schema" in _needs(block) else []
    return pytest.param(block, marks=marks, id=block.where)


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_python_block_runs(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    needs = _needs(block)
    unknown = [n for n in needs if n not in KNOWN_NEEDS]
    if unknown:
        pytest.fail(f"{block.where}: unknown directive <!-- docs: {', '.join(unknown)} --> (known: {KNOWN_NEEDS})")
    if "needs postgres" in needs:
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("postgres_database"))
    sim = simulator_for(block)
    # Line numbers in a traceback are the page's own: the code is compiled as the page, padded.
    code = compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")
    with sim.serve() as base_url, global_state_restored() as main:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-docs-0000000000000000")
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        monkeypatch.chdir(tmp_path)
        with time_limit(BLOCK_TIMEOUT, block.where):
            exec(code, main.__dict__)
    if sim.script:
        left = len(sim.script) - sim.replies_served
        assert left <= 0, (
            f"{block.where}: {left} of the {len(sim.script)} scripted replies were never asked for: "
            "the <!-- sim: ... --> comment and the block disagree"
        )


def test_blocks_are_found_and_directives_read() -> None:
    """The parser itself: a sim comment is attached to its block, and prose cuts the directives off."""
    page = ROOT / "docs" / "README.md"
    assert BLOCKS, "no python blocks found"
    assert any(b.directives.get("sim") for b in BLOCKS), "no block says what the simulator answers"
    lines = ["Text.", "", "<!-- sim: [r.text('a')] -->", "", "```python", "x = 1", "```"]
    assert _directives(lines, 4) == {"sim": "[r.text('a')]"}
    assert _directives(["<!-- sim: [] -->", "prose", "```python"], 2) == {}
    assert _directives(["<!--", "sim: [r.text('b')]", "-->", "```python"], 3) == {"sim": "[r.text('b')]"}
    assert page.exists()


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
    assert on_disk == GUIDES, "docs/ holds other files than the guides this test knows: update GUIDES"
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
