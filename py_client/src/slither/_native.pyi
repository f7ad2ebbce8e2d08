"""Compiled core of slither: Value conversion, store readers and the broker client."""

from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from typing import Any, TypeAlias

#: A bytes-like object (anything with the buffer protocol).
Buffer: TypeAlias = bytes | bytearray | memoryview

class SlitherError(Exception):
    """Base class of every error raised by slither."""

    code: str

class InvalidArgument(SlitherError, ValueError): ...
class InvalidType(InvalidArgument, TypeError): ...
class OutOfRange(InvalidArgument, OverflowError): ...
class NotFound(SlitherError, KeyError): ...
class DecodeError(SlitherError, ValueError): ...
class LimitExceeded(SlitherError): ...
class IoError(SlitherError, OSError): ...
class NoSpace(SlitherError): ...
class LayoutMismatch(SlitherError): ...
class WriterGone(SlitherError): ...
class AlreadyExists(SlitherError): ...
class Conflict(SlitherError): ...
class Busy(SlitherError): ...
class Timeout(SlitherError, TimeoutError): ...
class BrokerUnavailable(SlitherError, ConnectionError): ...
class ProtocolError(SlitherError): ...
class InternalError(SlitherError): ...
class ShuttingDown(SlitherError, ConnectionError): ...

def encode(value: Any, buffers: list[memoryview] | None = None) -> bytes:
    """Encodes a Python object in slither's binary Value form; with `buffers`, arrays
    go out of band (a memoryview of each is appended to the list, no copy)."""

def decode(data: Buffer, buffers: Sequence[Buffer] | None = None) -> Any:
    """Decodes bytes produced by `encode` (or by the C++ codec); `buffers` are the
    out-of-band buffers, in order."""

def encode_batch(
    payloads: Sequence[Any], first_id: int = 0, buffers: list[memoryview] | None = None
) -> bytes:
    """One batch frame of `payloads`, with ids first_id, first_id + 1, ..."""

def encode_items(items: Sequence[tuple[Any, ...]], buffers: list[memoryview] | None = None) -> bytes:
    """One batch frame of (id, payload) or (id, payload, meta, route) tuples."""

def decode_batch(frame: Buffer, buffers: Sequence[Buffer] | None = None) -> list[Any]:
    """The payloads of a batch frame, in order."""

def decode_items(
    frame: Buffer, buffers: Sequence[Buffer] | None = None
) -> list[tuple[int, Any, dict[str, Any], str]]:
    """The items of a batch frame as (id, payload, meta, route) tuples."""

def _remove_dead_store(namespace: str, name: str) -> bool: ...
def default_runtime_dir(namespace: str) -> str:
    """The runtime directory a broker of `namespace` uses by default."""

class Reader:
    """Read-only access to a store's shared memory from this process."""

    def __init__(self, namespace: str, name: str) -> None: ...
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def tables(self) -> list[str]: ...
    @property
    def incarnation(self) -> int:
        """The incarnation of the store this Reader reads (another after a broker restart)."""
    def _reattach(self) -> None: ...
    def get(self, table: str, key: str | bytes, default: Any = None) -> Any: ...
    def get_all(self, table: str, key: str | bytes) -> list[Any]: ...
    def get_many(
        self, table: str, keys: Iterable[str | bytes], default: Any = None
    ) -> list[Any]:
        """The values under `keys` in order (`default` where absent), in one call and one
        snapshot; in a large table several times faster per key than `get` in a loop."""
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def view(self, table: str, key: str | bytes) -> Any:
        """A zero-copy read-only numpy array (memoryview without numpy) or memoryview."""
    def version(self, table: str, key: str | bytes) -> int: ...
    def kind(self, table: str) -> str: ...
    def get_with_version(
        self, table: str, key: str | bytes, default: Any = None
    ) -> tuple[Any, int]:
        """(value, version) of one entry, read together; (default, 0) if absent."""
    def contains(self, table: str, key: str | bytes) -> bool: ...
    def size(self, table: str) -> int: ...
    def key_count(self, table: str) -> int: ...
    def keys(self, table: str, prefix: str | bytes = "") -> list[str | bytes]: ...
    def items(self, table: str) -> list[tuple[str | bytes, Any]]: ...
    def range(
        self,
        table: str,
        lo: str | bytes | None = None,
        hi: str | bytes | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str | bytes, Any]]: ...
    def first(self, table: str) -> tuple[str | bytes, Any] | None: ...
    def last(self, table: str) -> tuple[str | bytes, Any] | None: ...

class _Table:
    """The reads of slither.Table, in C: `table[key]`, `get`, `in`."""

    def __init__(self, store: Reader, name: str) -> None: ...
    @property
    def store(self) -> Any: ...
    @property
    def name(self) -> str: ...
    def __getitem__(self, key: str | bytes) -> Any: ...
    def __contains__(self, key: object) -> bool: ...
    def get(self, key: str | bytes, default: Any = None) -> Any: ...

class Client:
    """A connection to a broker's control socket."""

    def __init__(
        self,
        endpoint: str = "",
        runtime_dir: str | PathLike[str] = "",
        namespace: str = "default",
        timeout: float = 5.0,
        curve_server_key: str = "",
        curve_secret_key: str = "",
        curve_public_key: str = "",
    ) -> None: ...
    @property
    def namespace(self) -> str: ...
    def attach_info(self, store: str) -> dict[str, Any]: ...
    def put(
        self, store: str, table: str, key: str | bytes, value: Any, incarnation: int | None = None
    ) -> int: ...
    def put_in_place(
        self, store: str, table: str, key: str | bytes, value: Any, incarnation: int | None = None
    ) -> int:
        """`put` of bytes, a bytearray or an array through shared memory: the broker
        reserves a block, this process copies the value into it and commits. Readers see
        what `put` of the same value stores."""
    def put_many(
        self, store: str, table: str, entries: Any, incarnation: int | None = None,
        atomic: bool = False,
    ) -> None: ...
    def erase(
        self, store: str, table: str, key: str | bytes, incarnation: int | None = None
    ) -> bool: ...
    def compare_and_set(
        self,
        store: str,
        table: str,
        key: str | bytes,
        expected_version: int,
        value: Any,
        incarnation: int | None = None,
    ) -> int: ...
    def compare_and_erase(
        self,
        store: str,
        table: str,
        key: str | bytes,
        expected_version: int,
        incarnation: int | None = None,
    ) -> bool: ...
    def clear(self, store: str, table: str, incarnation: int | None = None) -> None: ...
    def reload(
        self, store: str, table: str, entries: Any, incarnation: int | None = None
    ) -> None: ...
    def create_table(
        self, store: str, table: str, kind: str = "set", capacity: int = 1024,
        incarnation: int | None = None,
    ) -> None: ...
    def drop_table(self, store: str, table: str, incarnation: int | None = None) -> None: ...
    def call_view(
        self,
        store: str,
        view: str,
        arg: Any = None,
        session_id: str = "",
        incarnation: int | None = None,
    ) -> Any: ...
    def stats(self) -> dict[str, Any]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...

class WorkerRuntime:
    """A worker's connection to a broker's pool (run it with ``python -m slither.worker``)."""

    def __init__(
        self,
        endpoint: str = "",
        runtime_dir: str = "",
        namespace: str = "",
        pool: str = "",
        credits: int = 0,
        timeout: float = 0.0,
        curve_server_key: str = "",
        curve_secret_key: str = "",
    ) -> None:
        """Joins a pool; empty arguments come from the environment a broker sets."""
    @property
    def info(self) -> dict[str, Any]:
        """id, pool, namespace, stores, local, heartbeat (s), heartbeat_misses."""
    @property
    def batches(self) -> int: ...
    def serve(
        self,
        resolve: Callable[[str], Callable[..., Any]],
        make_context: Callable[..., Any],
        item_error: type,
    ) -> str:
        """Serves batches until the worker stops; returns why."""
    def close(self) -> None: ...

def _set_dispatch_types(failure_info: type, failed: type, halted: Callable[..., BaseException]) -> None: ...

class Dispatch:
    """One dispatch job as an iterator of results (the engine of ``slither.Dispatch``)."""

    def __init__(
        self,
        where: dict[str, Any],
        source: Iterable[Any],
        function: str,
        batch_size: int,
        max_in_flight: int,
        ordering: str,
        on_error: tuple[Any, ...],
        timeout: float | None,
        session_id: str | None,
        affinity: str,
        pool: str,
        weight_fn: Callable[[Any], float] | None,
        max_weight: float | None,
        key_fn: Callable[[Any], Any] | None,
        stage: str | None,
        metadata: dict[str, Any] | None,
        idle_timeout: float,
    ) -> None: ...
    def __iter__(self) -> Dispatch: ...
    def __next__(self) -> Any:
        """The next result; waits without the GIL."""
    def close(self) -> None:
        """Cancels what still runs and closes the job's connection. Safe twice."""
    @property
    def errors(self) -> list[tuple[Any, Any]]:
        """(item, FailureInfo) of the items skipped so far."""
    @property
    def moves(self) -> list[dict[str, Any]]:
        """Session moves so far: session, from_worker, to_worker."""
    @property
    def stats(self) -> dict[str, int]:
        """job, window, pulled, batches_submitted, in_flight_items, yielded, skipped, routed,
        failed, cancelled."""
    @property
    def pulled(self) -> int: ...
    @property
    def yielded(self) -> int: ...
    @property
    def ended_count(self) -> int: ...

def _set_pipe_types(
    many: type,
    route: type,
    skip: object,
    unset: object,
    context: type,
    failure_info: type,
    failed: type,
    halted: Callable[..., BaseException],
) -> None: ...

class Pipe:
    """A pipe's definition (the engine of ``slither.Pipe``): local stages and router
    predicates are Python callables, python stages run on a broker's pool."""

    def __init__(self, name: str) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def stages(self) -> list[str]: ...
    @property
    def outputs(self) -> list[str]:
        """'default' and the declared outputs."""
    def local(
        self,
        name: str,
        fn: Callable[..., Any],
        context: bool,
        batch: bool,
        concurrency: int,
        batch_size: int,
    ) -> None: ...
    def python(
        self,
        name: str,
        module: str,
        function: str,
        batch_size: int,
        max_in_flight: int,
        ordering: str,
        timeout: float | None,
        affinity: str,
        pool: str,
    ) -> None: ...
    def router(self, name: str, routes: Sequence[tuple[Callable[[Any], Any], str]]) -> None: ...
    def output(self, name: str) -> None: ...
    def on_error(self, stage: str, policy: tuple[Any, ...]) -> None: ...
    def store(self, name: str) -> None: ...
    def validate(self) -> None:
        """Raises InvalidArgument naming the bad part of the definition."""
    def stream(
        self,
        where: dict[str, Any] | None,
        source: Iterable[Any],
        session_id: str,
        metadata: dict[str, Any] | None,
        queue_items: int,
        chunk_items: int,
    ) -> PipeStream:
        """Starts a run over `source`; python stages on the broker `where` describes."""

class PipeStream:
    """A running pipe, as an iterator of (output, value) pairs."""

    def __iter__(self) -> PipeStream: ...
    def __next__(self) -> tuple[str, Any]:
        """The next output; waits without the GIL."""
    def collect(self, buckets: dict[str, list[Any]]) -> None:
        """Appends every remaining output to buckets[output]; raises PipeError (with the
        buckets as its outputs) if the run halted."""
    def cancel(self) -> None: ...
    def close(self) -> None:
        """Cancels what still runs and waits for the stage threads. Safe twice."""
    @property
    def pulled(self) -> int:
        """Items read from the input so far."""
    @property
    def report(self) -> dict[str, Any]:
        """error, failures, skipped, unfinished, pulled (complete at the end)."""

class TelemetryAttachment:
    """A handler attached to telemetry events."""

    def detach(self) -> None:
        """Stops delivery to the handler. Safe twice."""

def telemetry_attach(
    prefix: str, handler: Callable[[str, dict[str, Any], dict[str, Any]], Any]
) -> TelemetryAttachment:
    """Calls handler(event, measurements, metadata) for events whose name starts with prefix."""
