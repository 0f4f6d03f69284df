"""Durable engines: conversations as workflows on DBOS or Temporal, for many workers on many machines.

* ``core``     — what both engines share: the workflow body over the conversation's step API
  (``plan`` replays as plain code; a request and a tool call are the only
  durable steps), the step bodies, the workflow's input and result as JSON, the agents a worker serves
* ``dbos``     — ``DBOSEngine`` (client) and ``DBOSWorker`` on DBOS Transact (``pip install 'agentfsm[dbos]'``)
* ``temporal`` — ``TemporalEngine`` (client) and ``TemporalWorker`` on Temporal (``pip install 'agentfsm[temporal]'``)

Nothing is imported here: each engine module imports its engine's SDK, which is an optional extra.
"""
