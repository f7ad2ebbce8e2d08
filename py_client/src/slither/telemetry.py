"""Telemetry: the engine's events, delivered to Python handlers attached by prefix.

>>> import slither
>>> events = []
>>> with slither.telemetry.attach("slither.pipe.", lambda e, m, md: events.append((e, m, md))):
...     pipe.run(client, items)

A handler is ``handler(event, measurements, metadata)``: the event's full name,
and two dicts (e.g. ``{"duration_us": 812}`` and ``{"pipe": "score", "stage":
"prepare", ...}``). It runs on the thread that emits (a pipe's stage threads, or
the thread iterating a run) with the GIL held, so keep it short; what it raises
goes to ``sys.unraisablehook`` and never breaks the run. Events emitted in this
process (a broker's own events stay in the broker):

- ``slither.pipe.run.start`` / ``.stop`` (duration_us, items_in, items_out,
  skipped, failures, unfinished) / ``.exception`` (a halt; duration_us, and in
  metadata stage, item, kind, type, message); metadata pipe, session, run,
  status (``ok``, ``cancelled``, ``halted``).
- ``slither.pipe.stage.start`` (size) / ``.stop`` (size, duration_us): around each
  chunk a local stage or router handles and each batch of a python stage;
  metadata pipe, session, run, stage, kind (``native``, ``router``, ``python``).
- ``slither.pipe.stage.exception`` (attempt): one per item failure; metadata adds
  item, failure, type, message, policy.

``run.start`` comes before every stage event of its run, and ``run.stop`` (or
``.exception``) after every one. With no handler attached, emitting costs the
engine one relaxed atomic load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slither import _native

__all__ = ["Attachment", "attach"]

Handler = Callable[[str, dict[str, Any], dict[str, Any]], Any]

# Attachments stay attached until detached, even when the caller drops them.
_live: set[Attachment] = set()


class Attachment:
    """A handler attached to events; :meth:`detach` (or leaving the ``with``) stops it."""

    __slots__ = ("__weakref__", "_native", "handler", "prefix")

    def __init__(self, prefix: str, handler: Handler) -> None:
        self.prefix = prefix
        self.handler = handler
        self._native = _native.telemetry_attach(prefix, handler)

    def detach(self) -> None:
        """Stops delivery (a call under way on another thread finishes). Safe twice."""
        self._native.detach()
        _live.discard(self)

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        return f"<slither.telemetry.Attachment prefix={self.prefix!r}>"


def attach(prefix: str, handler: Handler) -> Attachment:
    """Calls ``handler(event, measurements, metadata)`` for every event whose name
    starts with ``prefix`` (``""``: all), until the attachment is detached."""
    if not isinstance(prefix, str):
        raise _native.InvalidType(f"prefix must be a str, not '{type(prefix).__name__}'")
    if not callable(handler):
        raise _native.InvalidType("handler must be callable")
    a = Attachment(prefix, handler)
    _live.add(a)
    return a
