"""The wire: what goes to the Messages API and what comes back, and what it costs.

* ``api``     — one request out, one ``Reply`` (or ``RequestFailure``) back; plain or streamed
* ``sse``     — a streamed reply assembled from raw server-sent events
* ``caching`` — where prompt-caching breakpoints go on the wire copy of a request
* ``pricing`` — prices per model and the cost of a reply
* ``structured`` — structured outputs: ``output_config.format``, its schema rules, the models that take it
* ``threads`` — message threads on the wire: the beta, the rejections, where a run stands on its thread
* ``models`` — each model's request rules (prefill, forced tool_choice, sampling, thinking), from the official pages
"""
