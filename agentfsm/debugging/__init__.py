"""Debugging stored runs: fork one at a step, rerun one against its recording, compare two.

* ``fork``      — ``agent.fork``: a new conversation whose history is exactly a stored run's after a step
* ``recording`` — a run's tool calls and results; ``RecordedExecutor`` answers a rerun's calls from them
* ``rerun``     — ``agent.rerun``: the conversation again under new settings, tools from the recording
* ``compare``   — ``Comparison``: where two runs' paths part, their costs and answers
"""

from agentfsm.debugging.compare import Comparison, RunSide, compare
from agentfsm.debugging.fork import fork_snapshot, history_after
from agentfsm.debugging.recording import RecordedExecutor, Recording
from agentfsm.debugging.rerun import Rerun

__all__ = [
    "Comparison",
    "RecordedExecutor",
    "Recording",
    "Rerun",
    "RunSide",
    "compare",
    "fork_snapshot",
    "history_after",
]
