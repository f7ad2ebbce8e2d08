"""Functions a spawned multiprocessing Pool runs: handles arrive pickled in its initializer."""

from __future__ import annotations

from typing import Any

_HANDLES: dict[str, Any] = {}


def init(store: Any, table: Any, client: Any) -> None:
    _HANDLES.update(store=store, table=table, client=client)


def read(key: str) -> tuple[Any, Any, str]:
    """The key through the unpickled Store and Table, and the Client's namespace."""
    return (_HANDLES["store"].get("t", key), _HANDLES["table"].get(key),
            _HANDLES["client"].namespace)


def write(key: str) -> int:
    """A write through the unpickled Table (so through the unpickled Client)."""
    _HANDLES["table"][key] = f"from-{key}"
    return _HANDLES["table"].version(key)
