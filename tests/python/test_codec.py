"""Value conversion: every Python form in and out, error messages with paths."""

from __future__ import annotations

import math

import numpy as np
import pytest

import slither
from slither import decode, encode


def roundtrip(obj):
    return decode(encode(obj))


@pytest.mark.parametrize(
    "obj",
    [
        None, True, False, 0, 1, -1, 2**63 - 1, -(2**63), 0.0, -2.5, 1e308, math.inf,
        "", "text", "ünïcødé ✓", b"", b"\x00\xff bytes", [], [1, "a", None], {},
        {"a": 1, "b": [True, {"c": b"x"}]},
    ],
)
def test_scalars_and_containers_round_trip(obj):
    assert roundtrip(obj) == obj
    assert type(roundtrip(obj)) is type(obj)


def test_nan_round_trips():
    assert math.isnan(roundtrip(math.nan))


def test_tuple_becomes_list_and_bytearray_becomes_bytes():
    assert roundtrip((1, (2, 3))) == [1, [2, 3]]
    assert roundtrip(bytearray(b"ab")) == b"ab"


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64", "float32", "float64"])
def test_arrays_round_trip_with_dtype_and_shape(dtype):
    a = (np.arange(24) * 3).astype(dtype).reshape(2, 3, 4)
    b = roundtrip(a)
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_zero_dim_and_empty_arrays():
    np.testing.assert_array_equal(roundtrip(np.array(3.5, dtype=np.float64)), np.array(3.5))
    e = roundtrip(np.zeros((0, 5), dtype=np.int32))
    assert e.shape == (0, 5) and e.dtype == np.int32


def test_strided_array_is_stored_contiguous():
    a = np.arange(20, dtype=np.int64).reshape(4, 5)
    np.testing.assert_array_equal(roundtrip(a[:, 1]), a[:, 1])
    np.testing.assert_array_equal(roundtrip(a.T), a.T)


def test_any_contiguous_buffer_is_an_array():
    m = memoryview(np.arange(6, dtype=np.float32)).cast("B").cast("f", (2, 3))
    out = roundtrip(m)
    assert out.dtype == np.float32 and out.shape == (2, 3)


def test_numpy_scalars_become_python_scalars():
    assert roundtrip(np.float32(1.5)) == 1.5 and type(roundtrip(np.float32(1.5))) is float
    assert roundtrip(np.int64(-3)) == -3 and type(roundtrip(np.int64(-3))) is int
    assert roundtrip(np.bool_(True)) is True


def test_decoded_array_is_a_private_writable_copy():
    out = roundtrip(np.ones(4))
    out[0] = 7
    assert out[0] == 7


def test_object_with_no_value_form_names_type_and_path():
    with pytest.raises(TypeError, match=r"^value\['a'\]\[2\]: object of type 'set' has no Value form$"):
        encode({"a": [1, 2, {3}]})
    with pytest.raises(TypeError, match=r"value: object of type 'object'"):
        encode(object())


def test_non_str_map_key_is_named():
    with pytest.raises(TypeError, match=r"value\['x'\]: map key 1 of type 'int'"):
        encode({"x": {1: "one"}})


def test_unsupported_dtype_is_named():
    with pytest.raises(TypeError, match=r"value\[0\]: array of element format"):
        encode([np.zeros(3, dtype=np.int16)])


def test_int_out_of_int64_range_names_path():
    with pytest.raises(OverflowError, match=r"value\['n'\]: int 9223372036854775808 is out of the int64 range"):
        encode({"n": 2**63})
    with pytest.raises(OverflowError):
        encode(-(2**63) - 1)


def test_too_deep_or_cyclic_nesting_is_a_limit_error():
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(slither.LimitExceeded, match="nested deeper than 128"):
        encode(cyclic)


def test_malformed_bytes_raise_decode_error_not_crash():
    good = encode({"a": [1, 2, 3], "b": b"xyz" * 10})
    for cut in range(len(good)):
        with pytest.raises(slither.SlitherError):
            decode(good[:cut])
    with pytest.raises(slither.DecodeError) as info:
        decode(b"\x01\x99")
    assert isinstance(info.value, ValueError) and info.value.code == "decode_error"


def test_exception_hierarchy_one_class_per_code():
    codes = {cls.code for cls in (
        slither.InvalidArgument, slither.NotFound, slither.DecodeError, slither.LimitExceeded,
        slither.IoError, slither.NoSpace, slither.LayoutMismatch, slither.WriterGone,
        slither.AlreadyExists, slither.Conflict, slither.Busy, slither.Timeout,
        slither.BrokerUnavailable, slither.ProtocolError, slither.InternalError)}
    assert len(codes) == 15
    assert issubclass(slither.NotFound, KeyError) and issubclass(slither.NotFound, slither.SlitherError)
    assert issubclass(slither.BrokerUnavailable, ConnectionError)
    # KeyError would quote the message; slither errors read as plain text.
    assert str(slither.NotFound("no key 'x'")) == "no key 'x'"
    assert slither.NotFound.__module__ == "slither"
