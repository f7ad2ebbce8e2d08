"""Slither's Python client: read shared-memory stores in place, write through the broker.

>>> import slither
>>> client = slither.connect(namespace="demo")
>>> features = client.store("features")
>>> features.get("emb", "user:1")          # decoded copy, no broker round trip
>>> features.view("emb", "matrix")         # zero-copy, read-only numpy array
>>> features.put("emb", "user:2", {"score": 0.5})   # through the broker

Without a broker running, ``slither.launch(config="slither.toml")`` starts one
(the ``slither-broker`` the wheel ships) and returns a client of it; ``python -m
slither --help`` lists the operator's commands (stats, ls, get, clean).

Every error is a :class:`SlitherError`; each error code has its own subclass
(:class:`NotFound`, :class:`BrokerUnavailable`, :class:`Timeout`, :class:`Conflict`,
...). Bad input raises :class:`InvalidArgument` (also a ``ValueError``) or its
subclass :class:`InvalidType` (also a ``TypeError``).
"""

from slither._api import Client, Key, Store, Table, Value, connect
from slither._launch import LaunchedClient, find_broker, launch
from slither.dispatch import Dispatch, DispatchError, Failed, FailureInfo, ItemError, Retry
from slither.pipe import (
    Many,
    Pipe,
    PipeContext,
    PipeError,
    PipeOutputs,
    PipeStream,
    Route,
    Skip,
    on_error,
)
from slither import telemetry
from slither._native import (
    AlreadyExists,
    BrokerUnavailable,
    Busy,
    Conflict,
    DecodeError,
    InternalError,
    InvalidArgument,
    InvalidType,
    IoError,
    LayoutMismatch,
    LimitExceeded,
    NoSpace,
    NotFound,
    OutOfRange,
    ProtocolError,
    Reader,
    ShuttingDown,
    SlitherError,
    Timeout,
    WriterGone,
    decode,
    default_runtime_dir,
    encode,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "BrokerUnavailable",
    "Busy",
    "Client",
    "Conflict",
    "DecodeError",
    "Dispatch",
    "DispatchError",
    "Failed",
    "FailureInfo",
    "InternalError",
    "InvalidArgument",
    "InvalidType",
    "IoError",
    "ItemError",
    "Key",
    "LaunchedClient",
    "LayoutMismatch",
    "LimitExceeded",
    "Many",
    "NoSpace",
    "NotFound",
    "OutOfRange",
    "Pipe",
    "PipeContext",
    "PipeError",
    "PipeOutputs",
    "PipeStream",
    "ProtocolError",
    "Reader",
    "Retry",
    "Route",
    "ShuttingDown",
    "Skip",
    "SlitherError",
    "Store",
    "Table",
    "Timeout",
    "Value",
    "WriterGone",
    "connect",
    "decode",
    "default_runtime_dir",
    "encode",
    "find_broker",
    "launch",
    "on_error",
    "telemetry",
]
