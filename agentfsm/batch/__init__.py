"""Many conversations through the Message Batches API, at half the price.

* ``runner``   — ``BatchRunner``: every turn of every conversation in one batch; crash-safe resume
* ``requests`` — one conversation's request in a batch: its ``custom_id``, the limits, its results lines read back
* ``state``    — what one run holds: the conversations' loops, the open batches, what each tried
* ``ledger``   — what is stored about batches (``Ledger``; memory, SQLite, PostgreSQL), beside the store
* ``deadline`` — when a run stops polling (``deadline=``, the wall budget) and what it leaves for a later run
* ``progress`` — ``BatchProgress`` (what the runner reports) and ``ProgressDisplay`` (terminal or plain lines)

::

    from agentfsm.batch import BatchRunner

    results = BatchRunner(agent, store=SQLiteStore("runs.db"), poll_interval=60).run({"t1": "prompt", ...})
"""

from agentfsm.batch.ledger import BatchRecord, Entry, Ledger, MemoryLedger, PostgresLedger, SQLiteLedger, ledger_for
from agentfsm.batch.progress import BatchProgress, BatchStatus, ProgressDisplay
from agentfsm.batch.requests import custom_id, parse_reply
from agentfsm.batch.runner import BatchRunner

__all__ = [
    "BatchProgress",
    "BatchRecord",
    "BatchRunner",
    "BatchStatus",
    "Entry",
    "Ledger",
    "MemoryLedger",
    "PostgresLedger",
    "ProgressDisplay",
    "SQLiteLedger",
    "custom_id",
    "ledger_for",
    "parse_reply",
]
