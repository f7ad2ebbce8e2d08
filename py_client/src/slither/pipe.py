"""The Pipe from Python: local stages, python stages and routers, streamed.

A pipe composes **local** stages (Python callables run in this process),
**python** stages (dispatched in batches to a broker's worker pool, like
:meth:`Client.dispatch`) and **routers** (ordered predicates, first match
wins), with named outputs and error policies. It runs on the same C++ engine as
a C++ pipe, so semantics, policies and telemetry are the same::

    import slither

    def prepare(x):                     # a local stage: one value in, one out
        return {"id": x["id"], "text": x["text"].strip()}

    score = (
        slither.Pipe("score")
        .local("prepare", prepare)
        .python("predict", "my_model:predict_batch", batch_size=32, max_in_flight=4)
        .router("route", [(lambda r: r["score"] > 0.9, "accept"),
                          (lambda r: r["score"] > 0.5, "review")])
        .output("accept")
        .output("review")
        .on_error("predict", slither.on_error.skip())
        .on_error("*", slither.on_error.halt())
    )
    client = slither.connect(namespace="app")
    out = score.run(client, rows, session_id="s1")     # {"default": [...], "accept": [...], ...}
    for output, value in score.stream(client, endless_rows()):
        ...                                            # input read only as the pipe has room

What a local stage's function may return (per item):

- a value: the item goes on with it (``None`` is a value);
- ``slither.Many([v1, v2, ...])``: the item is replaced by one new item per
  value (none: the item counts as skipped). A plain list is one value, a list;
- ``slither.Skip``: the item is dropped (a filter); its id is in ``skipped``;
- ``slither.Route(output)`` (or ``Route(output, value)``): the item leaves the
  pipe at ``output``;
- raising fails the item: its stage's ``on_error`` policy applies, and its
  failure carries the exception's type and message.

With ``batch=True`` the function takes a list of values (up to ``batch_size``)
and returns a list of as many of these forms; raising fails every item of the
list. With ``context=True`` it also gets a :class:`PipeContext` (pipe, stage,
session_id, metadata; per item also item_id and meta).

Policies (``on_error(stage or "*", policy)``; without one, a failure halts):
``"halt"`` / ``on_error.halt()``: the run stops, :class:`PipeError` carries the
error and the partial outputs; ``"skip"``: the item is dropped and listed in
``failures``; ``("route", output)``: the item comes out at ``output`` as
:class:`slither.Failed` (value, :class:`FailureInfo` with its ``stage``,
output); :class:`slither.Retry`: the stage runs the item (a python stage: its
batch) again, then ``then`` applies.

Item ids: input items are numbered from 0 in input order; items made by
``Many`` get ids from 2**63 up. Reports name items by id: every input id ends
exactly once, in an output, in ``skipped``, in ``failures``, as the halting
error, or in ``unfinished``.

Threads: local stages and predicates run on the engine's stage threads, taking
the GIL once per chunk of items; the input is read on the thread that iterates,
``chunk_items`` at a time, only when the first stage has room for them; outputs
come out a chunk per wait. ``concurrency=n`` gives a local
stage n threads, but Python code under the GIL still runs one call at a time:
it pays off only for functions that release the GIL (numpy, I/O), and makes
outputs interleave. Stages still overlap with the python stages' workers and
with the thread that reads input and takes outputs.

Caveats: Ctrl-C is seen when the next output arrives (a run whose workers
hang is ended by the python stage's ``timeout``). A pipe whose callables refer
back to the pipe is not collected by the cycle collector.
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from slither import _native
from slither.dispatch import Failed, FailureInfo, Retry, _check_iterable, _policy

__all__ = [
    "Many",
    "Pipe",
    "PipeContext",
    "PipeError",
    "PipeOutputs",
    "PipeStream",
    "Route",
    "Skip",
    "on_error",
]


class _SkipType:
    __slots__ = ()

    def __repr__(self) -> str:
        return "slither.Skip"

    def __reduce__(self) -> str:
        return "Skip"


#: Returned by a local stage: drop the item (it ends in ``skipped``).
Skip = _SkipType()


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unchanged>"


_UNSET = _Unset()


class Many:
    """Returned by a local stage: replace the item by one new item per value."""

    __slots__ = ("values",)

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = list(values)

    def __repr__(self) -> str:
        return f"Many({self.values!r})"


class Route:
    """Returned by a local stage: the item leaves the pipe at ``output`` (with
    ``value`` as its value, if given)."""

    __slots__ = ("output", "value")

    def __init__(self, output: str, value: Any = _UNSET) -> None:
        if not isinstance(output, str):
            raise _native.InvalidType(f"Route: output must be a str (got {type(output).__name__})")
        self.output = output
        self.value = value

    def __repr__(self) -> str:
        v = "" if self.value is _UNSET else f", {self.value!r}"
        return f"Route({self.output!r}{v})"


class PipeContext:
    """What a local stage with ``context=True`` knows: ``pipe``, ``stage``,
    ``session_id``, ``metadata`` (the run's, plus ``"stores"``), and for a
    per-item function ``item_id`` and ``meta`` (the item's, e.g. ``parent``)."""

    __slots__ = ("item_id", "meta", "metadata", "pipe", "session_id", "stage")

    def __init__(self, pipe: str, stage: str, session_id: str, metadata: dict[str, Any]) -> None:
        self.pipe = pipe
        self.stage = stage
        self.session_id = session_id
        self.metadata = metadata
        self.item_id: int | None = None
        self.meta: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"PipeContext(pipe={self.pipe!r}, stage={self.stage!r}, item_id={self.item_id})"


class PipeOutputs(dict):
    """A run's output buckets (output name -> list of values, ``"default"`` and
    every declared output), with its report: ``failures`` (``(item id,
    FailureInfo)`` of items failed under ``skip``), ``skipped`` and ``unfinished``
    (item ids), ``pulled`` (items read from the input)."""

    failures: list[tuple[int | None, FailureInfo]]
    skipped: list[int]
    unfinished: list[int]
    pulled: int

    def _set_report(self, report: dict[str, Any]) -> None:
        self.failures = report["failures"]
        self.skipped = report["skipped"]
        self.unfinished = report["unfinished"]
        self.pulled = report["pulled"]


class PipeError(_native.SlitherError):
    """A pipe run halted. ``error``: the failure that stopped it
    (:class:`FailureInfo`, with ``stage``); ``item``: its item's id (None when
    the stage itself could not go on, e.g. its broker went away); ``outputs``:
    the partial output buckets (from :meth:`Pipe.run`; empty from a stream,
    which yielded them); ``failures``, ``skipped``, ``unfinished``, ``pulled``
    as in :class:`PipeOutputs`."""

    code = "pipe"

    def __init__(self, report: dict[str, Any], outputs: dict[str, list[Any]] | None = None) -> None:
        item, error = report["error"]
        where = f"stage '{error.stage}'" + (f", item {item}" if item is not None else "")
        super().__init__(f"pipe halted at {where}: {error}")
        self.error: FailureInfo = error
        self.item: int | None = item
        self.outputs: dict[str, list[Any]] = outputs if outputs is not None else {}
        self.failures: list[tuple[int | None, FailureInfo]] = report["failures"]
        self.skipped: list[int] = report["skipped"]
        self.unfinished: list[int] = report["unfinished"]
        self.pulled: int = report["pulled"]


_native._set_pipe_types(Many, Route, Skip, _UNSET, PipeContext, FailureInfo, Failed, PipeError)


class on_error:  # noqa: N801 - reads as the C++ namespace: slither.on_error.skip()
    """Error policies, as in C++ (``slither::on_error::skip()``); the plain forms
    (``"halt"``, ``"skip"``, ``("route", output)``, :class:`slither.Retry`) work too."""

    @staticmethod
    def halt() -> str:
        """Stop the run; :class:`PipeError` carries the error and the partial outputs."""
        return "halt"

    @staticmethod
    def skip() -> str:
        """Drop the item; list its failure."""
        return "skip"

    @staticmethod
    def route(output: str) -> tuple[str, str]:
        """Send the item to ``output`` as :class:`slither.Failed`."""
        return ("route", output)

    @staticmethod
    def retry(max_attempts: int = 3, backoff: float = 0.1, then: Any = "halt",
              multiplier: float = 2.0, max_backoff: float = 10.0) -> Retry:
        """Run again, up to ``max_attempts`` runs in all, then ``then``."""
        return Retry(max_attempts, backoff, then, multiplier, max_backoff)


def _where(client: Any) -> dict[str, Any] | None:
    if client is None:
        return None
    where = getattr(client, "_where", None)
    if not isinstance(where, dict):
        raise _native.InvalidType(f"client must be a slither.Client or None (got {type(client).__name__})")
    return where


# Runs still open at exit are closed before the interpreter finalizes: a stage
# thread that reaches for the GIL during finalization would be ended on the spot.
_open_streams: weakref.WeakSet[PipeStream] = weakref.WeakSet()


@atexit.register
def _close_open_streams() -> None:
    for st in list(_open_streams):
        st.close()


class PipeStream:
    """A running pipe, as an iterator of ``(output, value)`` pairs (see
    :meth:`Pipe.stream`). Iterating waits for outputs without holding the GIL.

    :meth:`close` (or leaving the ``with``) cancels what still runs; ``report``
    (complete once the iterator is exhausted): ``failures``, ``skipped``,
    ``unfinished``, ``pulled``; ``pulled``: items read from the input so far.
    Raises :class:`PipeError` at the end of a run that halted, whatever the input
    raises (the run is cancelled first), and :class:`BrokerUnavailable` if the
    broker goes away.
    """

    __slots__ = ("__weakref__", "_native")

    def __init__(self, native: _native.PipeStream) -> None:
        self._native = native
        _open_streams.add(self)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self._native

    def __next__(self) -> tuple[str, Any]:
        return next(self._native)

    @property
    def pulled(self) -> int:
        return self._native.pulled

    @property
    def report(self) -> dict[str, Any]:
        return self._native.report

    def cancel(self) -> None:
        """Stops the run; outputs already made still come out."""
        self._native.cancel()

    def close(self) -> None:
        """Cancels what still runs and waits for the stages to stop. Safe twice."""
        self._native.close()
        _open_streams.discard(self)

    def __enter__(self) -> PipeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<slither.PipeStream pulled={self.pulled}>"


class Pipe(_native.Pipe):
    """A pipe's definition, built step by step (each method returns the pipe).

    ``validate()``, ``run`` and ``stream`` check it: duplicate stage names,
    routes or route policies to undeclared outputs, ``on_error`` for an unknown
    stage, a python stage without module or function, bad options each raise
    :class:`InvalidArgument` (a ``ValueError``) naming the bad part. A run takes
    a snapshot: changing a pipe does not affect runs already started, and one
    pipe may run many times at once (with different sessions).
    """

    def __init__(self, name: str) -> None:
        super().__init__(_text(name, "pipe name"))

    def local(self, name: str, fn: Callable[..., Any], *, context: bool = False,
              batch: bool = False, concurrency: int = 1, batch_size: int = 64) -> Pipe:
        """Adds a local stage: ``fn(value)`` per item (``fn(values)`` per list of up
        to ``batch_size`` with ``batch=True``; an extra ``ctx`` argument with
        ``context=True``), run in this process on ``concurrency`` threads."""
        super().local(_text(name, "stage name"), fn, context, batch, _count(concurrency, "concurrency"),
                      _count(batch_size, "batch_size"))
        return self

    def python(self, name: str, function: str, *, batch_size: int = 32, max_in_flight: int = 4,
               ordering: str = "preserve", timeout: float | None = None, affinity: str = "hint",
               pool: str = "") -> Pipe:
        """Adds a python stage: ``function`` (``"module:function"``, a worker handler
        ``fn(items, ctx) -> list``) runs on the broker's pool ``pool`` in batches of
        ``batch_size``, at most ``max_in_flight`` batches out; ``ordering``,
        ``timeout`` (seconds per batch) and ``affinity`` as in :meth:`Client.dispatch`;
        the run's session id, the pipe and stage names and metadata reach ``ctx``."""
        if not isinstance(function, str):
            raise _native.InvalidType(f"python stage '{name}': function must be a 'module:function' string")
        module, _, func = function.rpartition(":")
        super().python(_text(name, "stage name"), module, func, _count(batch_size, "batch_size"),
                       _count(max_in_flight, "max_in_flight"), ordering, timeout, affinity, pool)
        return self

    def router(self, name: str, routes: Iterable[tuple[Callable[[Any], Any], str]]) -> Pipe:
        """Adds a router: ``[(predicate, output), ...]``; the first predicate that
        holds for a value sends the item to its output (it leaves the pipe);
        unmatched items go on (from the last stage, to ``"default"``). A predicate
        that raises fails the item."""
        try:
            pairs = [tuple(r) for r in routes]
        except TypeError:
            raise _native.InvalidType(
                f"router '{name}': routes must be an iterable of (predicate, output) pairs, "
                f"not '{type(routes).__name__}'") from None
        super().router(_text(name, "router name"), pairs)
        return self

    def output(self, name: str) -> Pipe:
        """Declares an output (``"default"`` always exists)."""
        super().output(_text(name, "output name"))
        return self

    def on_error(self, stage: str, policy: Any) -> Pipe:  # type: ignore[override]
        """Sets the error policy of ``stage``, or of every stage without one (``"*"``)."""
        super().on_error(_text(stage, "stage name"), _policy(policy))
        return self

    def store(self, name: str) -> Pipe:
        """Attaches a broker store by name: a run checks that it exists, and
        stages see it in ``metadata["stores"]``."""
        super().store(_text(name, "store name"))
        return self

    def stream(self, client: Any, iterable: Iterable[Any], *, session_id: str = "",  # type: ignore[override]
               metadata: dict[str, Any] | None = None, queue_items: int = 1024,
               chunk_items: int = 128) -> PipeStream:
        """Runs the pipe over ``iterable`` lazily: an iterator of ``(output, value)``
        pairs. Input is read only as the first stage's queue has room (at most
        ``queue_items`` items between stages, moved ``chunk_items`` at a time), so
        an endless input keeps memory bounded and outputs come before it ends.
        ``client`` (a :class:`slither.Client`) runs the python stages; ``None`` for
        a pipe without any."""
        if metadata is not None and not isinstance(metadata, dict):
            raise _native.InvalidType(f"metadata must be a dict, not '{type(metadata).__name__}'")
        _check_iterable(iterable, "the input")
        return PipeStream(super().stream(_where(client), iterable, _text(session_id, "session_id"),
                                         metadata,
                                         _count(queue_items, "queue_items"),
                                         _count(chunk_items, "chunk_items")))

    def run(self, client: Any, input: Iterable[Any], *, session_id: str = "",
            metadata: dict[str, Any] | None = None, queue_items: int = 1024,
            chunk_items: int = 128) -> PipeOutputs:
        """Runs the pipe over ``input`` to its end: the output buckets (a
        :class:`PipeOutputs` dict, with the run's report). Raises :class:`PipeError`
        (with the partial outputs) if the run halted; input never read is in its
        ``unfinished``."""
        buckets = PipeOutputs((name, []) for name in self.outputs)
        st = self.stream(client, input, session_id=session_id, metadata=metadata,
                         queue_items=queue_items, chunk_items=chunk_items)
        try:
            st._native.collect(buckets)
        except PipeError as e:
            if hasattr(input, "__len__"):
                e.unfinished.extend(range(e.pulled, len(input)))  # type: ignore[arg-type]
            raise
        finally:
            st.close()
        buckets._set_report(st.report)
        return buckets

    def __repr__(self) -> str:
        return f"<slither.Pipe {self.name!r} stages={self.stages!r} outputs={self.outputs!r}>"


def _text(value: Any, what: str) -> str:
    """``value`` if it is a str; else InvalidType naming ``what`` (not nanobind's TypeError)."""
    if not isinstance(value, str):
        raise _native.InvalidType(f"{what} must be a str, not '{type(value).__name__}'")
    return value


def _count(n: int, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _native.InvalidArgument(f"{what} must be an int of at least 1 (got {n!r})")
    return n
