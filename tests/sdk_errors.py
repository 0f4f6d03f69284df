"""How the anthropic SDK surfaces a cut connection, across the versions the project supports.

The simulator promises the wire (a body cut mid-stream, a socket closed before any response); the
SDK decides which exception says so, and that changed in 2.17 (a cut stream used to raise the
transport's ``httpx2.RemoteProtocolError`` unwrapped; it is now an ``anthropic.APIConnectionError``
raised from it). Tests assert the promise, not one version's wording.
"""

from __future__ import annotations

import anthropic
import httpx2


def cause_chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def assert_dropped(exc: BaseException, cut: str) -> None:
    """A cut connection, as the client surfaces it: a connection error (the SDK wraps the transport's since
    2.17; before, a cut stream raised ``httpx2.RemoteProtocolError`` unwrapped) caused by the transport's
    ``RemoteProtocolError`` saying what was cut. Never a finished message, never an HTTP status error."""
    assert isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError), repr(exc)
    protocol = [e for e in cause_chain(exc) if isinstance(e, httpx2.RemoteProtocolError)]
    assert protocol and cut in str(protocol[0]), cause_chain(exc)
