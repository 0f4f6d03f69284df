"""Deterministic ids shaped like the API's (``msg_01…``, ``toolu_01…``, ``req_011C…``).

Each Simulator owns one ``IdSource``; every id kind has its own seeded stream,
so a script produces the same tool ids however many requests (retries,
rejected requests) happen in between.
"""

from __future__ import annotations

import random
import threading

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # base58, as in real ids

_SHAPES: dict[str, tuple[str, int]] = {
    # kind: (fixed head after the prefix, random tail length) — 24 characters after the prefix in all
    "msg": ("01", 22),
    "toolu": ("01", 22),
    "srvtoolu": ("01", 22),
    "mcptoolu": ("01", 22),
    "req": ("011C", 20),
    "msgbatch": ("01", 22),
}


class IdSource:
    """Per-simulator generator of unique, reproducible ids."""

    def __init__(self, seed: str = "agentfsm-sim") -> None:
        self._seed = seed
        self._streams: dict[str, random.Random] = {}
        self._lock = threading.Lock()

    def new(self, kind: str) -> str:
        """A fresh id of ``kind`` (``msg``, ``toolu``, ``srvtoolu``, ``mcptoolu``, ``req``, ``msgbatch``)."""
        head, length = _SHAPES[kind]
        with self._lock:
            stream = self._streams.setdefault(kind, random.Random(f"{self._seed}:{kind}"))
            tail = "".join(stream.choice(_ALPHABET) for _ in range(length))
        return f"{kind}_{head}{tail}"
