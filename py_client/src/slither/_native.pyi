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
    def view(self, table: str, key: str | bytes) -> Any:
        """A zero-copy read-only numpy array (memoryview without numpy) or memoryview."""
    def version(self, table: str, key: str | bytes) -> int: ...
    def contains(self, table: str, key: str | bytes) -> bool: ...
    def size(self, table: str) -> int: ...
    def keys(self, table: str, prefix: str | bytes = "") -> list[str | bytes]: ...
    def items(self, table: str) -> list[tuple[str | bytes, Any]]: ...

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
    def put_many(
        self, store: str, table: str, entries: Any, incarnation: int | None = None
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
    def clear(self, store: str, table: str, incarnation: int | None = None) -> None: ...
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
