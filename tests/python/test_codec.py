"""Value conversion: every Python form in and out, error messages with paths."""

from __future__ import annotations

import math
import time

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


DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_round_trip_with_dtype_and_shape(dtype):
    a = (np.arange(24) * 3).astype(dtype).reshape(2, 3, 4)
    b = roundtrip(a)
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    # Out of band as well: the view decoded over the buffer keeps the dtype.
    buffers: list = []
    c = decode(encode(a, buffers=buffers), buffers=buffers)
    assert c.dtype == a.dtype
    np.testing.assert_array_equal(a, c)


def test_extreme_values_of_the_small_and_unsigned_dtypes_survive():
    for dtype in ["int8", "int16", "uint16", "uint32", "uint64"]:
        info = np.iinfo(dtype)
        a = np.array([info.min, info.max, 0], dtype=dtype)
        np.testing.assert_array_equal(roundtrip(a), a)
    h = np.array([np.inf, -0.0, 65504.0, 6e-8, np.nan], dtype=np.float16)
    assert roundtrip(h).tobytes() == h.tobytes()
    assert roundtrip(np.array([True, False, True])).tolist() == [True, False, True]


def test_a_bool_array_with_a_byte_other_than_0_or_1_is_refused():
    data = bytearray(encode(np.array([False, True, False])))
    data[-1] = 2
    with pytest.raises(slither.DecodeError, match="bool ndarray element 2 is 2"):
        decode(bytes(data))
    buffers: list = []
    head = encode(np.array([False, True]), buffers=buffers)
    with pytest.raises(slither.DecodeError, match="bool ndarray element 0 is 9"):
        decode(head, buffers=[b"\x09\x01"])


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
    for a in [np.zeros(3, dtype=np.complex64), np.zeros(3, dtype=np.float128),
              np.zeros(3, dtype="datetime64[s]"), np.zeros(2, dtype="U3")]:
        with pytest.raises(slither.InvalidType, match=r"value\[0\]: .*(format|has no Value form)"):
            encode([a])


def test_a_buffer_with_no_value_form_says_why_not_that_it_is_not_contiguous():
    """A C-contiguous datetime64 array and a released memoryview were both called
    "not C-contiguous"; the message now carries Python's own reason."""
    with pytest.raises(slither.InvalidType, match=r"value\['a'\]: .*cannot include dtype 'M'") as e:
        encode({"a": np.zeros(4, dtype="datetime64[s]")})
    assert "C-contiguous" not in str(e.value)
    released = memoryview(bytearray(16))
    released.release()
    with pytest.raises(slither.InvalidType, match=r"^value: .*'memoryview'.*released"):
        encode(released)
    # Strided arrays and memoryviews are still stored as contiguous copies.
    assert decode(encode(np.arange(10.0)[::2])).tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert decode(encode(memoryview(np.arange(10.0))[::3])).tolist() == [0.0, 3.0, 6.0, 9.0]


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
        decode(b"\x02\xcb")  # a reserved tag
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


# ---- the direct codec: order, out-of-band arrays, batches, bounds ---------------------


def test_dict_key_order_survives_a_round_trip():
    keys = ["zeta", "alpha", "mid", "beta", "0", "Z"] + [f"k{i}" for i in range(40, 10, -1)]
    d = {k: i for i, k in enumerate(keys)}
    back = roundtrip(d)
    assert list(back) == keys
    nested = {"b": {"y": 1, "x": 2}, "a": [{"q": 1, "p": 2}]}
    back = roundtrip(nested)
    assert list(back) == ["b", "a"] and list(back["b"]) == ["y", "x"]
    assert list(back["a"][0]) == ["q", "p"]


def test_encoding_matches_the_cxx_codec_byte_for_byte():
    from slither._native import _testing

    values = [
        None, True, 0, 127, 128, -32, -33, 2**63 - 1, -(2**63), 1.5, "", "x" * 31, "x" * 32,
        "ünï", b"", b"\xff" * 40, list(range(15)), list(range(16)), {f"k{i}": i for i in range(20)},
        {"a": [1, {"b": None}], "c": (1.0, b"z")}, np.arange(3, dtype=np.int32),
        ["pad", np.arange(64, dtype=np.float64)],
    ]
    for v in values:
        assert encode(v) == _testing.encode_via_value(v), v


def test_out_of_band_arrays_are_not_copied():
    a = np.arange(1000, dtype=np.float32)
    b = np.arange(24, dtype=np.int64).reshape(4, 6)
    buffers: list = []
    data = encode({"a": a, "n": 7, "rows": [b]}, buffers=buffers)
    assert len(buffers) == 2 and all(isinstance(m, memoryview) for m in buffers)
    assert len(data) < 64, "the array data is not in the message"
    assert np.shares_memory(np.asarray(buffers[0]), a)
    out = decode(data, buffers=buffers)
    assert out["n"] == 7
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["rows"][0], b)
    assert out["rows"][0].shape == (4, 6) and out["rows"][0].dtype == np.int64
    assert np.shares_memory(out["a"], a), "decoded over the given buffer"
    assert not out["a"].flags.writeable
    # Bytes from elsewhere (a socket frame) work as buffers too.
    frames = [bytes(m) for m in buffers]
    np.testing.assert_array_equal(decode(data, buffers=frames)["a"], a)


def test_out_of_band_buffers_must_match_the_message():
    buffers: list = []
    data = encode([np.zeros(8, dtype=np.uint8)], buffers=buffers)
    with pytest.raises(slither.DecodeError, match="0 buffers were given"):
        decode(data)
    with pytest.raises(slither.DecodeError, match="8 bytes given buffer #0 of 7 bytes"):
        decode(data, buffers=[b"x" * 7])
    with pytest.raises(slither.DecodeError, match="2 out-of-band buffers were given"):
        decode(data, buffers=[b"x" * 8, b"y"])
    with pytest.raises(TypeError, match="buffers must be a list"):
        encode(np.zeros(3), buffers=())


def test_strided_arrays_go_out_of_band_as_contiguous_copies():
    a = np.arange(20, dtype=np.int64).reshape(4, 5)
    buffers: list = []
    data = encode(a.T, buffers=buffers)
    np.testing.assert_array_equal(decode(data, buffers=buffers), a.T)


def test_decode_accepts_any_bytes_like_object():
    data = encode({"a": [1, 2]})
    assert decode(memoryview(data)) == {"a": [1, 2]}
    assert decode(bytearray(data)) == {"a": [1, 2]}
    with pytest.raises(TypeError, match="expected bytes or a C-contiguous buffer"):
        decode("not bytes")


def test_repeated_keys_are_refused():
    # {"a": 1, "a": 2}, written by hand.
    with pytest.raises(slither.DecodeError, match="map key 'a' at offset 5 repeats"):
        decode(bytes([2, 0xB2, 0x81, ord("a"), 1, 0x81, ord("a"), 2]))
    # A key that is not UTF-8 is named printably, not raised as a UnicodeDecodeError.
    with pytest.raises(slither.DecodeError, match=r"map key '\\xff'"):
        decode(bytes([2, 0xB2, 0x81, 0xFF, 1, 0x81, 0xFF, 2]))


def test_text_that_is_not_utf8_round_trips():
    # A C++ producer may store bytes that are not UTF-8 as a string: they read
    # back with surrogateescape and encode back to the same bytes.
    data = bytes([2, 0xB1, 0x82, ord("k"), 0xFE, 0x83, 0x61, 0xFF, 0x62])
    value = decode(data)
    assert value == {"k\udcfe": "a\udcffb"}
    assert encode(value) == data
    with pytest.raises(ValueError, match="str is not encodable as UTF-8"):
        encode("\ud800")  # a lone surrogate that stands for no byte


def test_decoded_keys_are_interned_and_shared():
    import sys

    first = decode(encode({"some_key": 1}))
    second = decode(encode([{"some_key": 2}]))
    (k1,), (k2,) = first.keys(), second[0].keys()
    assert k1 is k2 and sys.intern(k1) is k1


def test_decoding_is_bounded_in_memory():
    # 60 million nulls: 60 MB on the wire, refused before anything is built
    # (a decoded Value tree would take 40 bytes per null).
    n = 60_000_000
    head = bytes([2, 0xC7]) + bytes([(n >> s & 0x7F) | (0x80 if n >> (s + 7) else 0) for s in range(0, 28, 7)])
    with pytest.raises(slither.LimitExceeded, match="max_decoded_bytes"):
        decode(head + b"\xc0" * n)


def test_a_dict_changed_while_encoding_is_an_error():
    import gc

    d = {f"k{i}": np.zeros(1) for i in range(50)}

    def shrink(phase, info):
        if phase == "start" and d:
            d.popitem()

    old = gc.get_threshold()
    gc.callbacks.append(shrink)
    gc.set_threshold(1)  # collect on every allocation: memoryviews made while encoding
    try:
        with pytest.raises(RuntimeError, match="changed size during encoding"):
            encode(d, buffers=[])
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(shrink)


def test_batches_round_trip_and_match_the_cxx_codec():
    from slither._native import _testing

    payloads = [{"v": i, "name": f"n{i}", "score": i * 0.5} for i in range(64)] + [None, [1]]
    frame = slither._native.encode_batch(payloads, first_id=100)
    assert slither._native.decode_batch(frame) == payloads
    items = slither._native.decode_items(frame)
    assert [i[0] for i in items] == list(range(100, 166))
    assert items[0][1:] == (payloads[0], {}, "")
    assert frame == _testing.encode_items_via_value([(100 + i, p) for i, p in enumerate(payloads)])
    with pytest.raises(slither.InvalidType, match=r"payloads\[1\]\['a'\]: object of type 'object'"):
        slither._native.encode_batch([1, {"a": object()}])

    full = [(7, {"x": 1}, {"attempt": 2}, "left"), (9, "y", {}, "")]
    frame = slither._native.encode_items(full)
    assert slither._native.decode_items(frame) == full
    assert _testing.decode_items_via_value(frame) == full
    assert frame == _testing.encode_items_via_value(full)
    with pytest.raises(TypeError, match=r"items\[0\]: an item is a tuple"):
        slither._native.encode_items([{"not": "a tuple"}])


def test_batches_carry_out_of_band_arrays():
    arrays = [np.full(100, i, dtype=np.float64) for i in range(3)]
    buffers: list = []
    frame = slither._native.encode_batch([{"x": a} for a in arrays], buffers=buffers)
    assert len(buffers) == 3
    out = slither._native.decode_batch(frame, buffers=buffers)
    for a, o in zip(arrays, out):
        np.testing.assert_array_equal(o["x"], a)


def test_many_large_values_encode_in_time_linear_in_their_bytes():
    """A put_many or reload of many large values: each one made the encoder move and
    zero-fill everything encoded so far (300 values of 1 MiB took 100 s to put).
    Measured against one value of the same bytes, the best of three runs."""
    chunk = b"v" * (1 << 20)
    many = [(f"k{i}", chunk) for i in range(128)]
    one = b"v" * (128 << 20)

    def seconds(obj) -> float:
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            encode(obj)
            best = min(best, time.perf_counter() - start)
        return best

    assert seconds(many) < 10 * seconds(one) + 0.05
