"""The shared corpus of real recorded API traffic, and the official OpenAPI spec beside it.

The corpus stays where it is (``../shared/realtraffic/`` from the repository,
or ``$AGENTFSM_REALTRAFFIC``); tests that need it skip with ``SKIP_REASON``
when it is absent. ``load_corpus()`` lists the recordings from ``index.jsonl``
without reading them (collection stays fast); a record's file is read the
first time ``.recording`` (or ``.response``, ``.sse``, ``.request``) is used.

Parametrise over records with ``params(records)``: ids are the file names, so
``pytest -k pause_turn`` picks recordings by name; one recording of each shape is in
the fast lane (``-m "not slow"``), the rest in the slow tier.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import pytest

from agentfsm.machine.table import STOP_REASONS, UNKNOWN_STOP_REASON
from agentfsm.sim import Recording

ENV_VAR = "AGENTFSM_REALTRAFFIC"
CORPUS_DIR = Path(os.environ.get(ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "realtraffic")
OPENAPI_FILE = CORPUS_DIR / "openapi" / "anthropic-openapi.tryAGI-vendored.json"
SKIP_REASON = (
    f"the real-traffic corpus is not at {CORPUS_DIR} (set ${ENV_VAR} to its folder: the one holding index.jsonl)"
)

Kind = Literal["real", "synthetic", "issue"]
_FOLDERS: dict[str, Kind] = {"_suspect_synthetic": "synthetic", "_from_issue_reports": "issue"}


def available() -> bool:
    return (CORPUS_DIR / "index.jsonl").is_file()


@dataclass(frozen=True)
class Record:
    """One corpus entry: its index line, and (read on first use) its recording."""

    file: str
    kind: Kind
    index: Mapping[str, Any] = field(repr=False)

    @property
    def path(self) -> Path:
        return CORPUS_DIR / self.file

    @property
    def name(self) -> str:
        return Path(self.file).name

    @property
    def streaming(self) -> bool:
        """The answer was recorded as SSE."""
        return bool(self.index.get("streaming"))

    @property
    def recorded_stop_reason(self) -> str | None:
        """The index's stop_reason: the raw value, or ``error:<type>`` for an error body."""
        value = self.index.get("stop_reason")
        return None if value in (None, "None") else str(value)

    @cached_property
    def recording(self) -> Recording:
        return Recording.load(self.path)

    @property
    def request(self) -> dict[str, Any] | None:
        return self.recording.request

    @property
    def response(self) -> dict[str, Any] | None:
        """The JSON body, when the answer was recorded as JSON."""
        return self.recording.response

    @property
    def sse(self) -> str | None:
        """The raw SSE text, when the answer was recorded as a stream."""
        return self.recording.sse

    @property
    def status_code(self) -> int:
        return self.recording.status_code

    @property
    def is_error(self) -> bool:
        return self.recording.is_error

    @cached_property
    def message(self) -> dict[str, Any] | None:
        """The Message answered (folded from the SSE for a streamed one); None for an error body."""
        return self.recording.message()

    @property
    def stop_reason(self) -> str | None:
        """The answer's stop_reason as sent (None for errors and null stop reasons)."""
        value = (self.message or {}).get("stop_reason")
        return value if isinstance(value, str) else None

    @property
    def expected_state(self) -> str:
        """Where SPEC.md §1 routes this answer: the state named for its stop_reason, or ``unknown_stop_reason``."""
        reason = self.stop_reason
        return reason if reason in STOP_REASONS else UNKNOWN_STOP_REASON


@cache
def _index() -> tuple[Record, ...]:
    records: list[Record] = []
    with (CORPUS_DIR / "index.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            entry = json.loads(line)
            file = str(entry["file"])
            folder = file.split("/", 1)[0] if "/" in file else ""
            kind: Kind = _FOLDERS.get(folder, "real")
            records.append(Record(file=file, kind=kind, index=entry))
    return tuple(records)


def load_corpus(kind: Kind = "real", *, streaming: bool | None = None) -> list[Record]:
    """The corpus entries of one kind (``real`` excludes ``_suspect_synthetic/`` and ``_from_issue_reports/``).

    ``streaming=True`` keeps the SSE recordings, ``False`` the JSON ones. Empty when the corpus is absent.
    """
    if not available():
        return []
    return [r for r in _index() if r.kind == kind and (streaming is None or r.streaming == streaming)]


def by_name(name: str) -> Record:
    """The record whose file name is ``name`` (skips the test when the corpus is absent)."""
    if not available():
        pytest.skip(SKIP_REASON)
    for record in _index():
        if record.name == name or record.file == name:
            return record
    raise LookupError(f"no recording named {name!r} in {CORPUS_DIR / 'index.jsonl'}")


def shape(record: Record) -> tuple[Any, ...]:
    """What tells recordings apart for the machine: JSON or SSE, stop_reason, block and delta types, citations,
    whether the request was recorded, Bedrock's framing (from the index, without reading the file)."""
    index = record.index
    return (
        record.streaming,
        record.recorded_stop_reason,
        tuple(sorted(set(index.get("block_types") or ()))),
        tuple(sorted(set(index.get("delta_types") or ()))),
        bool(index.get("has_citations")),
        bool(index.get("has_request")),
        bool(index.get("bedrock")),
    )


def params(records: Iterable[Record]) -> list[Any]:
    """``pytest.param`` per record, id = its file name; a single skipping param when the corpus is absent.

    The first record of each ``shape`` is in the fast lane; the others (the same shapes again, ~7 in 8 of
    the corpus: half a minute of CPU) are marked ``slow``, so plain ``pytest`` still runs every one.
    """
    seen: set[tuple[Any, ...]] = set()
    out = []
    for r in records:
        first = shape(r) not in seen
        seen.add(shape(r))
        marks = () if first else (pytest.mark.slow,)
        out.append(pytest.param(r, id=r.name.removesuffix(".json"), marks=marks))
    if not out:
        return [pytest.param(None, marks=pytest.mark.skip(reason=SKIP_REASON), id="corpus-absent")]
    return out


def tally(records: Iterable[Record]) -> Counter[str]:
    """How many records per index stop_reason (for messages and the README numbers)."""
    return Counter(r.recorded_stop_reason or "null" for r in records)


# --- the official request schema ---------------------------------------------------------------------


@cache
def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    return spec


@cache
def request_validators() -> dict[str, Any] | None:
    """JSON Schema validators for ``CreateMessageParams`` and ``BetaCreateMessageParams``, built once.

    ``$ref``s resolve into the vendored OpenAPI 3.1 document (its schemas are
    JSON Schema 2020-12). None when the corpus (and so the spec) is absent.
    """
    if not OPENAPI_FILE.is_file():
        return None
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = _spec()
    uri = "urn:anthropic-openapi"
    registry: Registry[Any] = Registry().with_resource(uri, Resource(contents=spec, specification=DRAFT202012))
    validators: dict[str, Any] = {}
    for name in ("CreateMessageParams", "BetaCreateMessageParams", *MESSAGE_SCHEMA.values()):
        ref = f"{uri}#/components/schemas/{name}"
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": ref}
        validators[name] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


def schema_name(query: str, headers: Mapping[str, str]) -> str:
    """Which request schema applies: the beta one for ``/v1/messages?beta=true`` or an ``anthropic-beta`` header."""
    beta = "beta=true" in query or bool(headers.get("anthropic-beta"))
    return "BetaCreateMessageParams" if beta else "CreateMessageParams"


#: The schema of one item of ``messages`` in each request schema (the spec's ``messages`` is just an array of it).
MESSAGE_SCHEMA = {"CreateMessageParams": "InputMessage", "BetaCreateMessageParams": "BetaInputMessage"}


def schema_problems(body: Mapping[str, Any], name: str) -> list[str] | None:
    """Why ``body`` does not validate against schema ``name`` (best match first); None if the spec is absent.

    The spec says nothing of ``messages`` but "an array of InputMessage" (no length, nothing across
    items), so a body is valid exactly when it is valid with no messages and each message is valid on
    its own; each part is checked once per distinct JSON (``_part_problem``'s cache). A history grows a
    message or two per request, so the suite-wide check costs a conversation's length, not its square:
    checking whole bodies was more than half the CPU time of the machine tests.
    """
    if request_validators() is None:
        return None
    messages = body.get("messages")
    if not isinstance(messages, list):
        found = _part_problem(name, _canonical(body))
        return [] if found is None else [f"{name} at {found[0] or '(body)'}: {found[1]}"]
    found = _part_problem(name, _canonical({**body, "messages": []}))
    if found is not None:
        return [f"{name} at {found[0] or '(body)'}: {found[1]}"]
    for i, message in enumerate(messages):
        found = _part_problem(MESSAGE_SCHEMA[name], _canonical(message))
        if found is not None:
            where = "/".join(p for p in (f"messages/{i}", found[0]) if p)
            return [f"{name} at {where}: {found[1]}"]
    return []


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=8192)
def _part_problem(schema: str, instance_json: str) -> tuple[str, str] | None:
    """The best-matching error of one instance (given as canonical JSON) against ``schema``: (path, message)."""
    import jsonschema

    validators = request_validators()
    assert validators is not None
    errors = list(validators[schema].iter_errors(json.loads(instance_json)))
    if not errors:
        return None
    best = jsonschema.exceptions.best_match(errors)
    return "/".join(str(p) for p in best.absolute_path), best.message[:300]


@cache
def ga_input_block_types() -> frozenset[str] | None:
    """Content block types a GA (non-beta) request may carry, per the spec's ``InputContentBlock``."""
    if not OPENAPI_FILE.is_file():
        return None
    mapping = _spec()["components"]["schemas"]["InputContentBlock"]["discriminator"]["mapping"]
    return frozenset(mapping)
