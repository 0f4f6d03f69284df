"""The machine: the state table and the conversation that runs it.

* ``table``        — states named for the stop reasons, transitions as data (read it first)
* ``guards``       — the conditions on transitions (``continuations < max_continuations``)
* ``actions``      — what each transition does to the history: the only place it changes
* ``conversation`` — one run: state, history, counters; plans a step and completes it
* ``drivers``      — the I/O of a step, four ways: sync or async, plain or streamed
* ``streaming``    — what a streaming caller sees: text, rewinds, transitions, tool calls
* ``history``      — checking a message history against the wire rules
* ``stitch``       — joining continuation chunks without lost or doubled characters
"""
