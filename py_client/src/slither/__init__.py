"""Slither's Python client."""

from slither._native import (
    AlreadyExists,
    BrokerUnavailable,
    Busy,
    Conflict,
    DecodeError,
    InternalError,
    InvalidArgument,
    IoError,
    LayoutMismatch,
    LimitExceeded,
    NoSpace,
    NotFound,
    ProtocolError,
    SlitherError,
    Timeout,
    WriterGone,
    decode,
    encode,
)
