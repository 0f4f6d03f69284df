"""The machine: the state table and the one loop that runs it.

* ``table``        — states named for the stop reasons, transitions as data (read it first); ``_fsm``: the
                     ``transitions`` Machine that executes what the table decides
* ``guards``       — the conditions on transitions (``continuations < max_continuations``)
* ``actions``      — what each transition does to the history: the only place it changes
* ``state``        — ``RunState``: everything about a run that changes as it runs, declared once
* ``plan``         — what the next step needs: ``SendRequest``, ``RunTools``, ``Fire``, ... (effects)
* ``core``         — the step, sans I/O: plan it, complete it with the outcome, resend a broken stream
* ``loop``         — the one loop: a generator of effects every runner interprets
* ``around``       — around every tool call: a person's approval, then ``before_tool``, the call, ``after_tool``
* ``persistence``  — the lease, the saves, and the exactly-once rule for tool calls
* ``decisions``    — a wait is decided once: the waits this process decided, for runs without a store;
                     ``approve=``/``deny=`` as the decision they are
* ``conversation`` — one run's public face: what hooks, guards and actions read, ``decide`` and stepping
* ``drivers``      — the loop's I/O four ways: sync or async, plain or streamed
* ``streaming``    — what a streaming caller sees: text, rewinds, transitions, tool calls
* ``request``      — what every request of an agent carries besides its messages, worked out once
* ``serverside``   — request shaping for compaction and server-side fallbacks
* ``stitch``       — joining continuation chunks without lost or doubled characters
* ``output``       — typed output (``Agent.output_type``): asked for, validated, sent back when invalid
* ``threads``      — message threads as a transport: continue the server's thread with only the new messages
"""
