"""Dispatch from Python: ``Client.dispatch`` and ``Client.map``, and what they report.

``client.dispatch(items, "module:function", ...)`` runs ``function(batch, ctx)``
on the broker's worker pool over batches of ``items`` and returns a
:class:`Dispatch`, an iterator of results: a bounded, store-aware replacement for
``multiprocessing.Pool.imap``. It reads the input only while the job has room
(``max_in_flight × batch_size`` items between being read and their results being
taken), so an endless generator and a paused consumer keep memory bounded; it
yields before the input ends; and every item ends exactly once, as a result or
with its error, whatever workers die meanwhile.

Failed items, by ``on_error``:

- ``"halt"`` (default): the job stops; results that completed before still come
  out, then :class:`DispatchError` (with the failure and the failed items).
- ``"skip"``: failed items are dropped from the output and listed in
  :attr:`Dispatch.errors` as ``(item, FailureInfo)``.
- ``("route", output)``: failed items come out in the stream as :class:`Failed`
  objects (``item``, ``error``, ``output``) in their place.
- :class:`Retry`: the batch runs again (on another worker when one is free) up
  to ``max_attempts`` runs, then the ``then`` policy applies.
"""

from __future__ import annotations

import operator
import traceback
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from slither import _native

__all__ = ["Dispatch", "DispatchError", "Failed", "FailureInfo", "ItemError", "Retry"]


class ItemError:
    """A handler's result that fails one item, not the batch.

    ``ItemError(exc)`` takes the type, message and traceback of an exception;
    ``ItemError("message", type="ValueError")`` gives them as text. The caller
    sees the item under its job's error policy (skipped, routed, or halting).
    """

    __slots__ = ("message", "traceback", "type")

    def __init__(self, error: BaseException | str, type: str | None = None) -> None:
        if isinstance(error, BaseException):
            self.type = type or error.__class__.__qualname__
            self.message = str(error)
            self.traceback = "".join(traceback.format_exception(error))
        else:
            self.type = type or "ItemError"
            self.message = str(error)
            self.traceback = ""

    def __repr__(self) -> str:
        return f"ItemError({self.message!r}, type={self.type!r})"


class FailureInfo:
    """Why an item or a batch failed, as data.

    ``kind``: ``item_error``, ``exception``, ``bad_result``, ``worker_died``,
    ``timeout``, ``quarantined``, ``circuit_open`` or ``cancelled``; ``type`` and
    ``message``: the exception's (or the kind's); ``traceback``: the worker's,
    when it sent one; ``batch``, ``attempt``, ``worker``: where it happened (0
    when unknown); ``stage``: the pipe stage it failed at ("" outside a pipe).
    """

    __slots__ = ("attempt", "batch", "kind", "message", "stage", "traceback", "type", "worker")

    def __init__(
        self,
        kind: str,
        type: str,
        message: str,
        traceback: str = "",
        batch: int = 0,
        attempt: int = 0,
        worker: int = 0,
        stage: str = "",
    ) -> None:
        self.kind = kind
        self.type = type
        self.message = message
        self.traceback = traceback
        self.batch = batch
        self.attempt = attempt
        self.worker = worker
        self.stage = stage

    def __str__(self) -> str:
        where = ", ".join(
            f"{k} {v}" for k, v in (("batch", self.batch), ("attempt", self.attempt),
                                    ("worker", self.worker)) if v
        )
        return f"{self.type}: {self.message}" + (f" ({where})" if where else "")

    def __repr__(self) -> str:
        stage = f", stage={self.stage!r}" if self.stage else ""
        return (f"FailureInfo(kind={self.kind!r}, type={self.type!r}, message={self.message!r}"
                f"{stage})")


class Failed:
    """An item that failed under ``on_error=("route", output)``, yielded in its place."""

    __slots__ = ("error", "item", "output")

    def __init__(self, item: Any, error: FailureInfo, output: str) -> None:
        self.item = item
        self.error = error
        self.output = output

    def __repr__(self) -> str:
        return f"Failed({self.item!r}, {self.error}, output={self.output!r})"


class Retry:
    """Retry failed batches: up to ``max_attempts`` runs in all, waiting
    ``backoff`` seconds after the first failure (times ``multiplier`` after each
    next, at most ``max_backoff``), then ``then`` (``"halt"``, ``"skip"`` or
    ``("route", output)``). A batch that killed its worker on every run is
    quarantined (a poison batch) instead of sent again.
    """

    __slots__ = ("backoff", "max_attempts", "max_backoff", "multiplier", "then")

    def __init__(
        self,
        max_attempts: int = 3,
        backoff: float = 0.1,
        then: str | tuple[str, str] = "halt",
        multiplier: float = 2.0,
        max_backoff: float = 10.0,
    ) -> None:
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool):
            raise _native.InvalidType(f"Retry: max_attempts must be an int, not '{type(max_attempts).__name__}'")
        for what, v in (("backoff", backoff), ("multiplier", multiplier), ("max_backoff", max_backoff)):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise _native.InvalidType(f"Retry: {what} must be a number, not '{type(v).__name__}'")
        if max_attempts < 1:
            raise _native.InvalidArgument(f"Retry: max_attempts must be at least 1 (got {max_attempts})")
        if backoff < 0 or multiplier < 1 or max_backoff < 0:
            raise _native.InvalidArgument("Retry: backoff and max_backoff must be >= 0, multiplier >= 1")
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.then = then
        self.multiplier = multiplier
        self.max_backoff = max_backoff

    def __repr__(self) -> str:
        return f"Retry({self.max_attempts}, backoff={self.backoff}, then={self.then!r})"


class DispatchError(_native.SlitherError):
    """A dispatch halted (``on_error="halt"``, or a retry's fallback), or its
    pool broke (circuit open). ``error`` is the failure that stopped it
    (:class:`FailureInfo`), ``failed`` the ``(item, FailureInfo)`` pairs that
    failed, ``cancelled`` how many items never ran, and ``results`` the partial
    results (:meth:`Client.map`; empty from an iterator, which yielded them).
    """

    code = "dispatch"

    def __init__(
        self,
        error: FailureInfo,
        failed: list[tuple[Any, FailureInfo]],
        cancelled: int,
        results: list[Any] | None = None,
    ) -> None:
        super().__init__(f"dispatch halted: {error}")
        self.error = error
        self.failed = failed
        self.cancelled = cancelled
        self.results = results if results is not None else []


_native._set_dispatch_types(FailureInfo, Failed, DispatchError)


def _policy(on_error: Any) -> tuple[Any, ...]:
    def fallback(p: Any) -> tuple[Any, ...]:
        if p in ("halt", "skip"):
            return (p,)
        if isinstance(p, tuple) and len(p) == 2 and p[0] == "route" and isinstance(p[1], str):
            return ("route", p[1])
        raise _native.InvalidArgument(
            f"on_error must be 'halt', 'skip', ('route', output) or slither.Retry(...) (got {p!r})"
        )

    if isinstance(on_error, Retry):
        return ("retry", on_error.max_attempts, on_error.backoff, on_error.multiplier,
                on_error.max_backoff, fallback(on_error.then))
    return fallback(on_error)


class Dispatch(_native.Dispatch):
    """The results of one dispatch job, as an iterator (see :meth:`Client.dispatch`).

    Iterating waits for results without holding the GIL. Also: :meth:`close`
    (cancel what still runs; the context manager calls it), :attr:`errors` (items
    skipped, with their errors), :attr:`moves` (sessions that lost their worker),
    :attr:`stats` (counters, among them ``pulled``: items read from the input).
    ``len()``-less inputs have no length hint; sized ones make tqdm show a total.

    Raises :class:`BrokerUnavailable` when the broker goes away (within about a
    second plus the client's timeout), :class:`DispatchError` at the end of a job
    that halted, and whatever the input iterable raises (the job is cancelled).
    """

    def __init__(self, where: dict[str, Any], iterable: Iterable[Any], *args: Any,
                 total: int | None, **kwargs: Any) -> None:
        super().__init__(where, iterable, *args, **kwargs)
        self._total = total

    def __length_hint__(self) -> int:
        if self._total is None:
            return NotImplemented
        return max(0, self._total - self.ended_count)

    def __enter__(self) -> Dispatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats
        return f"<slither.Dispatch job={s['job']} pulled={s['pulled']} yielded={s['yielded']}>"


class _ProgressDispatch(Dispatch):
    """A Dispatch that calls ``progress(items_ended)`` after each result."""

    def __init__(self, *args: Any, progress: Callable[[int], Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress

    def __next__(self) -> Any:
        try:
            return super().__next__()
        finally:
            self._progress(self.ended_count)


def dispatch(
    where: dict[str, Any],
    iterable: Iterable[Any],
    function: str,
    batch_size: int = 64,
    max_in_flight: int = 8,
    ordering: str = "preserve",
    on_error: Any = "halt",
    timeout: float | None = None,
    session_id: str | None = None,
    affinity: str = "hint",
    pool: str = "",
    weight_fn: Callable[[Any], float] | None = None,
    max_weight: float | None = None,
    key_fn: Callable[[Any], Hashable] | None = None,
    stage: str | None = None,
    metadata: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
    idle_timeout: float = 300.0,
) -> Dispatch:
    """Opens a dispatch job; see :meth:`slither.Client.dispatch`."""
    if not isinstance(function, str):
        raise _native.InvalidType(f"function must be a 'module:function' string (got {type(function).__name__})")
    _check_iterable(iterable, "the input")
    for what, n in (("batch_size", batch_size), ("max_in_flight", max_in_flight)):
        if not isinstance(n, int) or isinstance(n, bool):
            raise _native.InvalidType(f"{what} must be an int, not '{type(n).__name__}'")
    for what, x in (("timeout", timeout), ("max_weight", max_weight), ("idle_timeout", idle_timeout)):
        if x is not None and (not isinstance(x, (int, float)) or isinstance(x, bool)):
            raise _native.InvalidType(f"{what} must be a number of seconds, not '{type(x).__name__}'"
                                      if "timeout" in what else
                                      f"{what} must be a number, not '{type(x).__name__}'")
    for what, t, optional in (("ordering", ordering, False), ("affinity", affinity, False),
                              ("pool", pool, False), ("session_id", session_id, True),
                              ("stage", stage, True)):
        if not isinstance(t, str) and not (optional and t is None):
            raise _native.InvalidType(f"{what} must be a str, not '{type(t).__name__}'")
    for what, fn in (("weight_fn", weight_fn), ("key_fn", key_fn), ("progress", progress)):
        if fn is not None and not callable(fn):
            raise _native.InvalidType(f"{what} must be callable, not '{type(fn).__name__}'")
    if metadata is not None and not isinstance(metadata, dict):
        raise _native.InvalidType(f"metadata must be a dict, not '{type(metadata).__name__}'")
    if batch_size < 1:
        raise _native.InvalidArgument(f"batch_size must be at least 1 (got {batch_size})")
    if max_in_flight < 1:
        raise _native.InvalidArgument(f"max_in_flight must be at least 1 (got {max_in_flight})")
    if key_fn is not None and weight_fn is not None:
        raise _native.InvalidArgument("give key_fn or weight_fn, not both")
    if max_weight is not None and weight_fn is None:
        raise _native.InvalidArgument("max_weight needs a weight_fn")
    hint = operator.length_hint(iterable, -1)
    total = hint if hint >= 0 and hasattr(iterable, "__len__") else None
    args = (where, iterable, function, batch_size, max_in_flight, ordering, _policy(on_error),
            timeout, session_id, affinity, pool, weight_fn, max_weight, key_fn, stage, metadata,
            idle_timeout)
    if progress is not None:
        return _ProgressDispatch(*args, total=total, progress=progress)
    return Dispatch(*args, total=total)


def _check_iterable(iterable: Any, what: str) -> None:
    """InvalidType (also a TypeError) for an input that cannot be iterated."""
    try:
        iter(iterable)
    except TypeError:
        raise _native.InvalidType(f"{what} must be iterable, not '{type(iterable).__name__}'") from None


def map_list(where: dict[str, Any], function: str, iterable: Iterable[Any], **kwargs: Any) -> list[Any]:
    """Runs a dispatch to its end; see :meth:`slither.Client.map`."""
    out: list[Any] = []
    with dispatch(where, iterable, function, **kwargs) as d:
        try:
            out.extend(d)
        except DispatchError as e:
            e.results = out
            raise
    return out
