"""OpenTelemetry tracing of agentfsm's runs: ``from agentfsm.otel import instrument``.

The implementation is ``agentfsm.observe.otel`` (see its docstring and the README's
"Where events go"); this module is the short name to import it by. Needs the ``otel`` extra:
``pip install 'agentfsm[otel]'``.
"""

from agentfsm.observe.otel import CONTENT_ENV, instrument, instrumented, uninstrument

__all__ = ["CONTENT_ENV", "instrument", "instrumented", "uninstrument"]
