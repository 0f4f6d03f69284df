"""A Messages API simulator: the real ``anthropic`` client talks to a scripted model, offline.

    from agentfsm.sim import Simulator, replies as r

    sim = Simulator([r.tool_use("get_weather", {"location": "Hanoi"}), r.text("It is 31°C.")])
    client = sim.client()          # or sim.async_client(), or `with sim.serve() as base_url: ...`

It speaks the real wire protocol (JSON and SSE), validates requests the way the
API does (HTTP 400), models prompt caching (``agentfsm.sim.caching``), and can
produce every stop reason, error and stream fault on demand.
``replies.writer(document)`` writes a long text across requests to test
continuation. ``replies.recorded(path)`` and ``Simulator.from_recording(...)``
replay exchanges recorded from the real API, byte for byte. ``sim.batches``
is the Message Batches API (``agentfsm.sim.batches``): batches that end after a
set number of polls, per-request results, JSONL results billed at half price.
A request for a model it does not serve is the API's 404 (``agentfsm.sim.lineup``:
``KNOWN_MODELS`` by default, ``Simulator(models=...)`` to change it).
It serves message threads (``agentfsm.sim.threads``): ``thread`` create/continue,
expiry after ``Simulator(thread_idle_limit=...)``, ``sim.threads.forget()``.
"""

from agentfsm.sim import replies
from agentfsm.sim.batches import SimBatch, SimBatches
from agentfsm.sim.lineup import KNOWN_MODELS
from agentfsm.sim.model import BatchOutcome, ErrorReply, RecordedReply, ScriptedReply, ScriptError, SimRequest
from agentfsm.sim.recorded import Recording
from agentfsm.sim.simulator import Simulator
from agentfsm.sim.tokens import count_tokens

__all__ = [
    "KNOWN_MODELS",
    "BatchOutcome",
    "ErrorReply",
    "RecordedReply",
    "Recording",
    "ScriptError",
    "ScriptedReply",
    "SimBatch",
    "SimBatches",
    "SimRequest",
    "Simulator",
    "count_tokens",
    "replies",
]
