"""Stores: where a conversation is saved after every transition, so a crash loses nothing.

* ``base``     — ``Snapshot`` (a conversation as data) and the ``Store`` protocol
* ``memory``   — ``MemoryStore``: a dict, for tests and resume within one process
* ``sqlite``   — ``SQLiteStore``: one file, one machine
* ``postgres`` — ``PostgresStore``: many workers on many machines (``agentfsm[postgres]``)
* ``location`` — a store named by a URL or path (``sqlite:///runs.db``, ``postgresql://…``), opened
"""

from agentfsm.stores.base import RunSummary, Snapshot, Store
from agentfsm.stores.memory import MemoryStore
from agentfsm.stores.postgres import PostgresStore
from agentfsm.stores.sqlite import SQLiteStore

__all__ = ["MemoryStore", "PostgresStore", "RunSummary", "SQLiteStore", "Snapshot", "Store"]
