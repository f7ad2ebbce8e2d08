"""The Pythonic layer over ``slither._native``: Client, Store, Table, connect."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

from slither import _native

if TYPE_CHECKING:
    from slither.dispatch import Dispatch

#: A key: text (stored as UTF-8) or raw bytes.
Key: TypeAlias = str | bytes
#: What a store holds: None, bool, int (int64), float, str, bytes, list, dict with
#: str keys, or an array (numpy, or any C-contiguous buffer of uint8, int32, int64,
#: float32 or float64).
Value: TypeAlias = Any

#: Arrays, bytes and bytearrays at least this large are put through shared memory rather
#: than the socket (``Store.put``): below it the two extra round trips cost more than the
#: copy saves.
LARGE_PUT_BYTES = 1 << 20


def _in_place(value: object) -> bool:
    """Whether ``Store.put`` takes the shared-memory path for ``value``: what it stores
    there is what the socket path stores (bytes and bytearrays encoded as bytes, numpy
    arrays and memoryviews as arrays), so only the path differs."""
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return len(value) >= LARGE_PUT_BYTES  # type: ignore[arg-type]
    if kind is memoryview:
        try:
            return value.nbytes >= LARGE_PUT_BYTES and value.c_contiguous  # type: ignore[union-attr]
        except ValueError:
            return False  # released: the socket path names it in an InvalidType
    # A numpy array of any layout: a strided one is copied to a contiguous one first
    # (`Store.put`), as the socket path would copy it, but into memory of its own size
    # rather than into a message the broker's limit bounds.
    return getattr(value, "nbytes", 0) >= LARGE_PUT_BYTES and kind.__module__ == "numpy"

__all__ = ["Client", "Key", "Store", "Table", "Value", "connect"]


def connect(
    runtime_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    namespace: str | None = None,
    timeout: float = 5.0,
    curve_server_key: str | None = None,
    curve_secret_key: str | None = None,
    curve_public_key: str | None = None,
) -> Client:
    """Connects to a broker.

    Give the broker's ``runtime_dir`` (its control socket is ``<runtime_dir>/control``)
    or a ZeroMQ ``endpoint``; with neither, the default runtime directory of
    ``namespace`` (1-64 characters of ``[A-Za-z0-9_-]``) is used. ``timeout``
    (seconds, more than 0, at most a year) bounds every round trip.

    What is not given comes from the environment, under the names the broker
    sets for its workers: ``SLITHER_CONTROL_ENDPOINT``, else ``SLITHER_RUNTIME_DIR``
    (only when neither ``runtime_dir`` nor ``endpoint`` is given), and
    ``SLITHER_NAMESPACE``; else the namespace is ``"default"``. So code that
    calls ``slither.connect()`` runs unchanged against another broker, and a
    worker's handler reaches its own broker.

    A ``tcp://`` endpoint is authenticated with CURVE: give the broker's public key
    (``curve_server_key``, the text of its ``.pub`` file) and this client's secret key
    (``curve_secret_key``, its ``.key`` file, made by ``slither-broker keygen``), whose
    public key is on the broker's allow-list. A refused key looks like no broker.

    An ``ipc://`` control socket is used only if it, its directory and every
    directory above it belong to this user or root and no one else can replace
    them; otherwise :class:`InvalidArgument` names the path and what is wrong.

    Raises :class:`BrokerUnavailable` if no broker answers within ``timeout``,
    :class:`Timeout` if one answers pings but not this call, :class:`ProtocolError`
    if it speaks another protocol version, :class:`InvalidArgument` for a bad
    namespace or timeout.
    """
    if runtime_dir is None and endpoint is None:
        endpoint = os.environ.get("SLITHER_CONTROL_ENDPOINT") or None
        if endpoint is None:
            runtime_dir = os.environ.get("SLITHER_RUNTIME_DIR") or None
    if namespace is None:
        namespace = os.environ.get("SLITHER_NAMESPACE") or "default"
    where = {
        "endpoint": endpoint or "",
        "runtime_dir": _runtime_dir(runtime_dir),
        "namespace": namespace,
        "timeout": timeout,
        "curve_server_key": curve_server_key or "",
        "curve_secret_key": curve_secret_key or "",
        "curve_public_key": curve_public_key or "",
    }
    return Client(_native.Client(**where), where)


class Client:
    """A connection to a broker; opens stores and reports broker figures.

    Calls are serialized and made without the GIL, so a Client may be shared by
    threads. A ``fork()`` child may keep using it: it connects anew on its first
    call. Ctrl-C interrupts a call that waits for the broker (``KeyboardInterrupt``).
    Use it as a context manager, or call :meth:`close`, to drop the connection.
    """

    __slots__ = ("_native", "_where")

    def __init__(self, native: _native.Client, where: dict[str, Any] | None = None) -> None:
        self._native = native
        # How to reach the broker again: each dispatch job has its own connection.
        self._where = where or {
            "endpoint": "", "runtime_dir": "", "namespace": native.namespace, "timeout": 5.0,
            "curve_server_key": "", "curve_secret_key": "", "curve_public_key": "",
        }

    @property
    def namespace(self) -> str:
        """The namespace the broker serves."""
        return self._native.namespace

    def store(self, name: str) -> Store:
        """Attaches to the store ``name`` read-only (asks the broker where it lives).

        Raises :class:`NotFound` for an unknown store and :class:`LayoutMismatch` if
        the broker was built with another shared-memory layout.
        """
        return Store(self, name)

    def stats(self) -> dict[str, Any]:
        """Broker and store figures (queue depth, entries, bytes...)."""
        return self._native.stats()

    def ping(self) -> None:
        """One round trip; raises :class:`BrokerUnavailable` if the broker does not answer."""
        self._native.ping()

    def dispatch(self, iterable: Iterable[Any], function: str, **options: Any) -> Dispatch:
        """Runs ``function(batch, ctx)`` on a worker pool over ``iterable``; an iterator of results.

        ``function`` is ``"module:function"``, imported by the workers. Options:
        ``batch_size=64``, ``max_in_flight=8`` (batches out at once: the input is
        read at most ``max_in_flight * batch_size`` items ahead of the results
        taken), ``ordering="preserve"`` or ``"as_completed"``, ``on_error="halt"``,
        ``"skip"``, ``("route", output)`` or :class:`slither.Retry`, ``timeout``
        (seconds per batch; an overrunning worker is killed), ``session_id`` with
        ``affinity="hint"`` or ``"strict"`` (a session's batches stay on one
        worker), ``pool="default"``, ``weight_fn``/``max_weight`` or ``key_fn``
        (batching by weight, or items of one key together), ``stage``,
        ``metadata`` (a dict the handler sees in ``ctx``), ``progress`` (called
        with the count of items ended after each result). See
        :mod:`slither.dispatch` for what failed items become.
        """
        from slither.dispatch import dispatch

        return dispatch(self._where, iterable, function, **options)

    def map(self, function: str, iterable: Iterable[Any], **options: Any) -> list[Any]:
        """``list(self.dispatch(iterable, function, **options))``, like ``Pool.map``.

        On a halt, the :class:`DispatchError` carries the results so far in ``results``.
        """
        from slither.dispatch import map_list

        return map_list(self._where, function, iterable, **options)

    def create_table(
        self, store: str, name: str, kind: str = "set", capacity: int = 1024
    ) -> None:
        """Adds the table ``name`` to ``store`` while the broker runs.

        ``kind`` is ``"set"`` (one value per key), ``"bag"`` (several) or ``"ordered_set"`` (sorted keys);
        ``capacity`` (1..2**32) is the number of keys to make room for (the table
        grows past it): its index takes 16 bytes or so per key. The call returns
        at once whatever the capacity, with the table usable: an index over 1 MiB
        (a capacity over 65536) starts at 1 MiB, and the broker makes the asked one
        ready in slices between other requests (1 GiB in a few seconds), then
        moves the table into it; meanwhile the table grows as usual if keys come
        faster. Readers attached before see the table on their next read, without
        attaching again. A store has at most 64 tables over its life (a dropped
        table's directory entry is not reused): past that, :class:`LimitExceeded`.
        ``name`` is 1-47 bytes (UTF-8) without NUL; it is a name, not a path.
        Raises :class:`AlreadyExists` if the table exists, :class:`NotFound` for an
        unknown store, :class:`InvalidArgument` for a bad name, kind or capacity
        (:class:`InvalidType` for one of the wrong type), :class:`NoSpace` if
        ``/dev/shm`` has no room for the index the capacity asks for (the message
        names the bytes).
        """
        self._native.create_table(store, name, kind, _capacity(capacity))

    def drop_table(self, store: str, name: str) -> None:
        """Removes the table ``name`` of ``store``, created with :meth:`create_table`.

        Its entries go with it; readers then get :class:`NotFound` for it (views
        taken before stay valid). Tables declared in the broker's config are the
        store's declared shape and cannot be dropped: :class:`InvalidArgument`
        (clear them instead). Raises :class:`NotFound` for an unknown store or table.
        """
        self._native.drop_table(store, name)

    def close(self) -> None:
        """Closes the connection; stores already attached stay readable. Safe twice."""
        self._native.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Re-connects by where the broker is (runtime dir or endpoint, namespace),
        # as SharedMemory re-attaches by name. A tcp Client's pickle carries its
        # CURVE secret key: keep such pickles as private as the key file.
        return (_connect_where, (dict(self._where),))

    def __repr__(self) -> str:
        return f"<slither.Client namespace={self.namespace!r}>"


def _runtime_dir(runtime_dir: Any) -> Any:
    """``runtime_dir`` made absolute: clients made from it later (unpickled, in a fork
    child, for a dispatch job) must find it whatever their working directory then."""
    if runtime_dir is None:
        return ""
    if isinstance(runtime_dir, (str, os.PathLike)):
        path = os.fspath(runtime_dir)
        if isinstance(path, str) and path:
            # Not normalized: "link/.." is where the link leads, not the directory it is in.
            return os.path.join(os.getcwd(), path)
    # A path of the wrong type goes on as it is: the native client names it.
    return runtime_dir


def _capacity(capacity: Any) -> int:
    """A table's capacity argument, checked before it reaches the native layer."""
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise _native.InvalidType(f"capacity must be an int, not '{type(capacity).__name__}'")
    if not 1 <= capacity <= 2**32:
        raise _native.InvalidArgument(f"capacity {capacity} is not in 1..2**32")
    return capacity


def _connect_where(where: dict[str, Any]) -> Client:
    """Unpickles a :class:`Client`: connects again to the broker ``where`` names."""
    return Client(_native.Client(**where), where)


class Store(_native.Reader):
    """A store: reads straight from shared memory, writes through the broker.

    Reads (inherited from :class:`slither.Reader`: ``get``, ``get_many``, ``get_all``,
    ``view``, ``version``, ``get_with_version``, ``contains``, ``size``, ``key_count``,
    ``keys``, ``items``, ``tables``, ``kind``) never leave this process. Writes return
    once every reader sees them.

    A broker restart re-creates the store: reads then attach to the new one by
    themselves (views taken before stay valid). A write carries the incarnation
    of the store this Store reads, so the new broker refuses it: the write raises
    :class:`WriterGone`, is not applied, and the Store reads the new store from
    then on; read again and retry. So a ``compare_and_set`` on a version read
    from the old store can never overwrite the new one.

    A write interrupted (Ctrl-C) or timed out (:class:`Timeout`) may still have
    been applied: ``version(table, key)`` tells (it changes with every write).
    """

    def __init__(self, client: Client, name: str) -> None:
        info = client._native.attach_info(name)
        super().__init__(info["namespace"], info["name"])
        self._client = client

    def _replaced(self, error: _native.WriterGone, what: str) -> _native.WriterGone:
        """The error a write that met a re-created store raises, once re-attached."""
        try:
            self._reattach()
            now = "this Store now reads the new store: read again, then retry"
        except _native.SlitherError as e:
            now = f"attaching again failed: {e}"
        return _native.WriterGone(f"{error}; the {what} was not applied ({now})")

    @property
    def client(self) -> Client:
        """The client whose broker writes this store."""
        return self._client

    def table(self, name: str) -> Table:
        """The table ``name`` as a :class:`Table` (a mutable mapping).

        Raises :class:`NotFound` if unknown, :class:`InvalidType` if ``name`` is not a str.
        """
        if not isinstance(name, str):
            raise _native.InvalidType(f"table must be a str, not '{type(name).__name__}'")
        if name not in self.tables:
            raise _native.NotFound(f"no table '{name}' in store '{self.name}'")
        return Table(self, name)

    def create_table(self, name: str, kind: str = "set", capacity: int = 1024) -> Table:
        """Adds the table ``name`` through the broker and returns it (see
        :meth:`Client.create_table`)."""
        try:
            self._client._native.create_table(
                self.name, name, kind, _capacity(capacity), self.incarnation
            )
        except _native.WriterGone as e:
            raise self._replaced(e, "create_table") from None
        return Table(self, name)

    def drop_table(self, name: str) -> None:
        """Removes the table ``name``, created at run time (see :meth:`Client.drop_table`)."""
        try:
            self._client._native.drop_table(self.name, name, self.incarnation)
        except _native.WriterGone as e:
            raise self._replaced(e, "drop_table") from None

    def close(self) -> None:
        """Detaches from the store's shared memory; the client stays connected.

        Later reads and writes through this Store raise :class:`InvalidArgument`;
        views taken before stay valid. Safe twice. A ``with`` block closes it.
        """
        super().close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Attaches again by (broker location, namespace, store name) in the process
        # that unpickles it, e.g. a spawned worker or a Pool initializer.
        return (Store, (self._client, self.name))

    def put(self, table: str, key: Key, value: Value) -> int:
        """Stores ``value`` under ``key``; returns the entry's new version.

        A value of at least ``LARGE_PUT_BYTES`` (``bytes``, ``bytearray``, a numpy array
        or a C-contiguous ``memoryview``) travels through shared memory instead of the
        socket: the broker reserves a block, this process copies the value straight into
        it and commits (readers see nothing before the commit, and then the same value a
        put through the socket stores). A numpy array that is not C-contiguous (a slice
        with steps, a transpose, Fortran order) is first copied into a C-contiguous one,
        as the socket path copies it, so it can be as large as the store allows.

        Raises :class:`NotFound` for an unknown table, :class:`InvalidType` for a key that
        is not str/bytes or a value with no Value form (naming its type and path),
        :class:`LimitExceeded` for a key over the store's key limit or a value over the
        broker's message limit, :class:`NoSpace` when the store cannot grow,
        :class:`WriterGone` (nothing applied) if the broker re-created the store, and
        :class:`Timeout` / :class:`BrokerUnavailable` (the write may still have been
        applied: compare ``version(table, key)``).
        """
        native = self._client._native
        try:
            if _in_place(value):
                if type(value).__module__ == "numpy" and not value.flags.c_contiguous:  # type: ignore[union-attr]
                    value = value.copy(order="C")  # type: ignore[union-attr]
                return native.put_in_place(self.name, table, key, value, self.incarnation)
            return native.put(self.name, table, key, value, self.incarnation)
        except _native.WriterGone as e:
            raise self._replaced(e, "put") from None

    def put_many(
        self,
        table: str,
        entries: Mapping[Key, Value] | Iterable[tuple[Key, Value]],
        atomic: bool = False,
    ) -> None:
        """Stores many entries, all or nothing, in one round trip.

        ``entries`` is a mapping or an iterable of ``(key, value)`` tuples or lists;
        anything else (a str, a list of str) raises :class:`InvalidType`. If one
        entry is refused, none is stored; an exception raised by a generator of
        ``entries`` propagates before anything is sent, and nothing is stored. A key
        given twice keeps its last value (in a bag, each value is appended). Errors
        as :meth:`put`.

        What readers see meanwhile: by default the entries become visible one by
        one while the broker applies the batch, so a reader may see part of it
        until this call returns (scans of an ``ordered_set`` excepted: its tree takes
        a batch in one switch). With ``atomic=True`` the batch is published as one
        switch (a copy of the table's index, O(table size) extra work): readers see
        none of it, then all of it. An ``ordered_set`` switches its tree (``range``,
        ``keys``, ``first``, ``last``), then its index (``get``): each read sees none
        or all of the batch, but a ``range`` and a ``get`` made in the instant
        between the two may disagree. ``atomic`` must be a bool (else
        :class:`InvalidType`, and nothing is stored).
        """
        if not isinstance(atomic, bool):
            # bool("no") is True: a flag of another type is a mistake, not a request.
            raise _native.InvalidType(f"atomic must be a bool, not '{type(atomic).__name__}'")
        try:
            self._client._native.put_many(
                self.name, table, entries, self.incarnation, atomic=atomic
            )
        except _native.WriterGone as e:
            raise self._replaced(e, "put_many") from None

    def reload(
        self, table: str, entries: Mapping[Key, Value] | Iterable[tuple[Key, Value]]
    ) -> None:
        """Replaces every entry of ``table`` with ``entries``, atomically.

        The broker builds the new contents beside the old ones and switches with
        one store: readers see the old or the new contents, never a mix, and a read
        under way finishes on the old. If an entry is refused, or a generator of
        ``entries`` raises, the old contents stay. A key given twice keeps its last
        value (in a bag, each value is appended). Errors as :meth:`put`.
        Emits the ``slither.store.reload`` start/stop telemetry events on the broker.
        """
        try:
            self._client._native.reload(self.name, table, entries, self.incarnation)
        except _native.WriterGone as e:
            raise self._replaced(e, "reload") from None

    def delete(self, table: str, key: Key) -> bool:
        """Removes ``key`` (every value of it in a bag); returns whether it was present.

        Raises :class:`NotFound` for an unknown table, :class:`InvalidType` for a key
        that is not str/bytes, and :class:`WriterGone` as :meth:`put` does.
        """
        try:
            return self._client._native.erase(self.name, table, key, self.incarnation)
        except _native.WriterGone as e:
            raise self._replaced(e, "delete") from None

    def compare_and_set(self, table: str, key: Key, expected_version: int, value: Value) -> int:
        """Writes ``value`` only if the entry's version is ``expected_version``.

        ``0`` means "absent". Returns the new version; raises :class:`Conflict`
        naming the version found otherwise. ``version(table, key)`` reads the
        current one. Raises :class:`InvalidArgument` for a version that is not 0 to
        2**63 - 1, and otherwise as :meth:`put`.
        """
        try:
            return self._client._native.compare_and_set(
                self.name, table, key, expected_version, value, self.incarnation
            )
        except _native.WriterGone as e:
            raise self._replaced(e, "compare_and_set") from None

    def compare_and_erase(self, table: str, key: Key, expected_version: int) -> bool:
        """Removes ``key`` only if the entry's version is ``expected_version``.

        The conditional :meth:`delete`, as :meth:`compare_and_set` is the conditional
        :meth:`put`: with the version read alongside the value (``get_with_version``), it
        removes exactly the entry that was read, or nothing. Returns whether an entry
        was removed (``False`` only for ``expected_version`` 0 with the key absent);
        raises :class:`Conflict` naming the version found otherwise (0 if absent), and
        :class:`InvalidArgument` for a bag table (a bag's key has no one version, as for
        :meth:`compare_and_set`) or a version that is not 0 to 2**63 - 1. Otherwise
        as :meth:`delete`.
        """
        try:
            return self._client._native.compare_and_erase(
                self.name, table, key, expected_version, self.incarnation
            )
        except _native.WriterGone as e:
            raise self._replaced(e, "compare_and_erase") from None

    def clear(self, table: str) -> None:
        """Removes every entry of ``table``. Raises :class:`NotFound` for an unknown table."""
        try:
            self._client._native.clear(self.name, table, self.incarnation)
        except _native.WriterGone as e:
            raise self._replaced(e, "clear") from None

    def call_view(self, name: str, arg: Value = None, session_id: str | None = None) -> Value:
        """Calls the broker view ``name`` of this store with ``arg`` and returns its result.

        Session-scoped views need a ``session_id``.
        """
        try:
            return self._client._native.call_view(
                self.name, name, arg, session_id or "", self.incarnation
            )
        except _native.WriterGone as e:
            raise self._replaced(e, "view call") from None

    def __repr__(self) -> str:
        return f"<slither.Store {self.namespace}.{self.name} tables={self.tables!r}>"


class Table(_native._Table):
    """One table of a store, as a :class:`collections.abc.MutableMapping`.

    Reads come from shared memory (``key in table``, ``len(table)``, ``iter(table)``
    over keys, ``table[key]`` raising :class:`NotFound`, which is a ``KeyError``);
    ``table[key] = value``, ``del table[key]`` (``KeyError`` if absent),
    ``update``, ``pop``, ``popitem``, ``setdefault`` and ``clear`` write through the
    broker. ``==`` compares contents with any mapping.

    ``pop``, ``popitem`` and ``setdefault`` are atomic in a set or ordered table, even
    with other processes writing the same keys: each reads the entry with its version
    and writes only if it is unchanged (:meth:`compare_and_erase`,
    :meth:`compare_and_set`), reading again when another writer got there first. So a
    value is popped by one caller only, a replacement made meanwhile is never removed
    unseen (``pop`` returns it, or a later ``pop`` does), and every ``setdefault`` of one
    key returns the value stored.

    A bag table is a mapping of each key to its first value: ``table[key]``, ``len``,
    iteration and ``==`` see one value per key, ``table[key] = v`` appends a value,
    ``del table[key]`` and ``pop`` remove every value of the key (``pop`` returns the
    first); ``items()``, ``values()`` and ``get_all(key)`` list every value. A bag's key
    has no one version to compare (``compare_and_set`` and ``compare_and_erase`` refuse
    bags), so there these three are not atomic: ``pop``/``popitem`` read, then delete
    (a pop that finds the key already gone reads again rather than fail, but values
    written in between are removed unseen) and ``setdefault`` reads, then appends
    (racing callers may each append their default).

    ``keys(prefix)``, ``items()`` and ``values()`` return lists (a snapshot), not
    views.

    ``table[key]``, ``get`` and ``in`` are single C calls (the table's number is
    cached in the handle); ``name`` and ``store`` are the handle's. The class
    derives from the compiled base, so it is registered as a ``MutableMapping``
    and takes that class's mixin methods explicitly (a compiled class cannot
    also have ``ABCMeta`` as its metaclass).
    """

    __slots__ = ()

    # MutableMapping's mixins this class does not define below.
    __hash__ = None  # type: ignore[assignment]
    __reversed__ = None  # type: ignore[assignment]

    def _take(self, key: Key) -> tuple[bool, Value]:
        """Removes ``key`` if present: ``(True, its value)``, else ``(False, None)``.

        In a set or ordered table, only the entry read is removed (a compare-and-erase
        on its version); when another writer changed or removed it first, the key is
        read again. The loop repeats only after another write to this key.
        """
        bag = self.store.kind(self.name) == "bag"
        while True:
            value, version = self.store.get_with_version(self.name, key)
            if version == 0:
                return False, None
            if bag:
                if self.store.delete(self.name, key):
                    return True, value
                continue  # another caller removed it: read again
            try:
                self.store.compare_and_erase(self.name, key, version)
                return True, value
            except _native.Conflict:
                continue

    def pop(self, key: Key, *default: Value) -> Value:
        """Removes ``key`` and returns its value, else ``default`` or :class:`NotFound`.

        Atomic in a set or ordered table: the value returned is the one removed, and
        racing callers never both get it (see the class notes for a bag)."""
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        found, value = self._take(key)
        if found:
            return value
        if default:
            return default[0]
        raise _native.NotFound(f"no key {key!r} in table '{self.name}'")

    def popitem(self) -> tuple[Key, Value]:
        """Removes and returns some ``(key, value)`` pair; ``KeyError`` if empty.

        Atomic as :meth:`pop`: a key another caller pops first is skipped for the next."""
        while True:
            keys = self.store.keys(self.name)
            if not keys:
                raise KeyError(f"popitem(): table '{self.name}' is empty")
            for key in keys:
                found, value = self._take(key)
                if found:
                    return key, value

    def setdefault(self, key: Key, default: Value = None) -> Value:
        """``table[key]`` if present, else stores ``default`` under ``key`` and returns it.

        Atomic in a set or ordered table: ``default`` is stored only if the key is
        still absent (:meth:`compare_and_set` with version 0), so racing callers all
        return the one value stored. That write travels through the socket, even for a
        ``default`` of ``LARGE_PUT_BYTES`` or more (which ``put`` sends through shared
        memory): one over the broker's message limit raises :class:`LimitExceeded`
        naming setdefault and the key, and nothing is stored."""
        if self.store.kind(self.name) == "bag":
            value, version = self.store.get_with_version(self.name, key)
            if version != 0:
                return value
            self[key] = default
            return default
        while True:
            value, version = self.store.get_with_version(self.name, key)
            if version != 0:
                return value
            try:
                self.store.compare_and_set(self.name, key, 0, default)
                return default
            except _native.Conflict:
                continue  # stored meanwhile: read what was stored
            except _native.LimitExceeded as e:
                if not _in_place(default):
                    raise
                raise _native.LimitExceeded(
                    f"setdefault of key {key!r} in table '{self.name}': {e} (an atomic "
                    "setdefault sends its default through the socket, where a put of "
                    "this size would go through shared memory)"
                ) from None

    def __len__(self) -> int:
        # Keys, not values: a bag's length is what iterating it yields.
        return self.store.key_count(self.name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        # Another table is read as this one is: its items() list every value of a bag.
        theirs = other._as_dict() if isinstance(other, Table) else dict(other.items())
        return self._as_dict() == theirs

    def _as_dict(self) -> dict[Key, Value]:
        """The table as a dict, from one snapshot; a bag's key stands for its first value,
        as ``table[key]`` reads it."""
        out: dict[Key, Value] = {}
        for key, value in self.store.items(self.name):
            out.setdefault(key, value)
        return out

    def __iter__(self) -> Iterator[Key]:
        return iter(self.store.keys(self.name))

    def __setitem__(self, key: Key, value: Value) -> None:
        self.store.put(self.name, key, value)

    def __delitem__(self, key: Key) -> None:
        if not self.store.delete(self.name, key):
            raise _native.NotFound(f"no key {key!r} in table '{self.name}'")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Table, (self.store, self.name))

    def get_many(self, keys: Iterable[Key], default: Value = None) -> list[Value]:
        """The values under ``keys`` (any iterable of str or bytes keys), in order,
        ``default`` where absent: what ``get`` returns key by key, in one call and one
        snapshot. Faster per key than a loop of ``get``, and much faster in a table
        larger than the CPU caches (the batch overlaps the lookups' memory misses).
        Raises :class:`InvalidType` (a ``TypeError``) naming a key of another type."""
        return self.store.get_many(self.name, keys, default)

    def get_all(self, key: Key) -> list[Value]:
        """Every value under ``key`` (a bag's values, in insertion order)."""
        return self.store.get_all(self.name, key)

    def view(self, key: Key) -> Any:
        """A zero-copy, read-only view of the value under ``key`` (see :meth:`Reader.view`)."""
        return self.store.view(self.name, key)

    def version(self, key: Key) -> int:
        """The entry's version, or 0 if absent."""
        return self.store.version(self.name, key)

    def get_with_version(self, key: Key, default: Value = None) -> tuple[Value, int]:
        """``(value, version)`` of the entry under ``key``, read together (``get`` then
        ``version`` may see two different writes); ``(default, 0)`` if absent. The
        value is a decoded copy, as ``get``'s; in a bag, the first value and its
        version, which appending more values does not change. What
        :meth:`compare_and_set` and :meth:`compare_and_erase` expect."""
        return self.store.get_with_version(self.name, key, default)

    def keys(self, prefix: Key = "") -> list[Key]:
        """Keys starting with ``prefix`` (sorted bytewise in an ``ordered_set`` table)."""
        return self.store.keys(self.name, prefix)

    def range(
        self,
        lo: Key | None = None,
        hi: Key | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[Key, Value]]:
        """The ``(key, value)`` pairs with ``lo <= key < hi`` of an ``ordered_set`` table.

        Keys are sorted bytewise (str keys by their UTF-8 bytes); ``None`` leaves a
        bound open; at most ``limit`` pairs, from the largest key if ``reverse``. One
        snapshot of the table; ``lo >= hi`` gives ``[]``. Raises :class:`InvalidArgument`
        for other table kinds or a negative ``limit``, :class:`InvalidType` for a bound
        that is not str/bytes/None or a ``limit`` that is not an int or None,
        :class:`NotFound` for a dropped table.
        """
        return self.store.range(self.name, lo, hi, limit, reverse)

    def first(self) -> tuple[Key, Value] | None:
        """The ``(key, value)`` pair with the smallest key of an ``ordered_set`` table, or None."""
        return self.store.first(self.name)

    def last(self) -> tuple[Key, Value] | None:
        """The ``(key, value)`` pair with the largest key of an ``ordered_set`` table, or None."""
        return self.store.last(self.name)

    def items(self) -> list[tuple[Key, Value]]:
        """Every ``(key, value)`` pair, values decoded."""
        return self.store.items(self.name)

    def values(self) -> list[Value]:
        """Every value, decoded."""
        return [v for _, v in self.store.items(self.name)]

    def put(self, key: Key, value: Value) -> int:
        """Stores ``value`` under ``key`` through the broker; returns the new version."""
        return self.store.put(self.name, key, value)

    def put_many(
        self, entries: Mapping[Key, Value] | Iterable[tuple[Key, Value]], atomic: bool = False
    ) -> None:
        """Stores many entries, all or nothing (see :meth:`Store.put_many` for what
        readers see meanwhile, and ``atomic``)."""
        self.store.put_many(self.name, entries, atomic=atomic)

    def update(self, other: Any = (), /, **kwds: Value) -> None:
        """Stores the entries of ``other`` (a mapping or an iterable of ``(key, value)``
        pairs) and ``kwds`` in one :meth:`put_many`, all or nothing. Raises
        :class:`InvalidType` (a ``TypeError``) for anything else."""
        if isinstance(other, Table):
            entries = list(other._as_dict().items())  # its items() list every value of a bag
        elif isinstance(other, Mapping):
            entries = list(other.items())
        else:
            try:
                pairs = iter(other)
            except TypeError:
                raise _native.InvalidType(
                    "update needs a mapping or an iterable of (key, value) pairs, "
                    f"not '{type(other).__name__}'"
                ) from None
            entries = list(pairs)
        entries.extend(kwds.items())
        if entries:
            self.put_many(entries)

    def reload(self, entries: Mapping[Key, Value] | Iterable[tuple[Key, Value]]) -> None:
        """Replaces every entry atomically (see :meth:`Store.reload`)."""
        self.store.reload(self.name, entries)

    def delete(self, key: Key) -> bool:
        """Removes ``key``; returns whether it was present."""
        return self.store.delete(self.name, key)

    def compare_and_set(self, key: Key, expected_version: int, value: Value) -> int:
        """Writes ``value`` only if the entry's version is ``expected_version`` (0 = absent)."""
        return self.store.compare_and_set(self.name, key, expected_version, value)

    def compare_and_erase(self, key: Key, expected_version: int) -> bool:
        """Removes ``key`` only if the entry's version is ``expected_version`` (see
        :meth:`Store.compare_and_erase`)."""
        return self.store.compare_and_erase(self.name, key, expected_version)

    def clear(self) -> None:
        """Removes every entry."""
        self.store.clear(self.name)

    def __repr__(self) -> str:
        return f"<slither.Table {self.store.name}.{self.name}>"


MutableMapping.register(Table)
