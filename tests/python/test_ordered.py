"""Ordered tables (kind "ordered_set"): range, first, last and sorted keys from Python."""

from __future__ import annotations

import random

import numpy as np
import pytest

import slither


def test_range_first_last_and_sorted_keys(scratch):
    table = scratch.table("ord")
    assert table.first() is None and table.last() is None
    assert table.range() == []
    for k in ["b", "a", "ab", "c", "aa"]:
        table.put(k, k.upper())
    assert table.range() == [("a", "A"), ("aa", "AA"), ("ab", "AB"), ("b", "B"), ("c", "C")]
    assert table.first() == ("a", "A")
    assert table.last() == ("c", "C")
    assert table.keys(prefix="a") == ["a", "aa", "ab"]
    assert list(table) == ["a", "aa", "ab", "b", "c"]
    assert table.range(lo="aa", hi="b") == [("aa", "AA"), ("ab", "AB")]
    assert table.range(hi="b", limit=2, reverse=True) == [("ab", "AB"), ("aa", "AA")]
    assert table.range(lo="ab0") == [("b", "B"), ("c", "C")]
    assert table.range(limit=0) == []
    assert table.delete("aa")
    assert [k for k, _ in table.range()] == ["a", "ab", "b", "c"]


def test_bytes_keys_sort_bytewise_with_str_keys(scratch):
    table = scratch.table("ord")
    table.put(b"\xff\x00", 1)  # not UTF-8: comes back as bytes
    table.put("é", 2)  # UTF-8 c3 a9
    table.put(b"z", 3)
    assert table.range() == [("z", 3), ("é", 2), (b"\xff\x00", 1)]
    assert table.range(lo=b"\xc3") == [("é", 2), (b"\xff\x00", 1)]


def test_values_of_every_kind_come_back_from_a_range(scratch):
    table = scratch.table("ord")
    table.put("arr", np.arange(6, dtype=np.float32).reshape(2, 3))
    table.put("map", {"x": [1, None]})
    (k1, arr), (k2, m) = table.range()
    assert (k1, k2) == ("arr", "map")
    np.testing.assert_array_equal(arr, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert m == {"x": [1, None]}


def test_random_writes_match_a_sorted_dict(scratch):
    table = scratch.table("ord")
    rng = random.Random(5)
    oracle: dict[str, int] = {}
    for i in range(600):
        k = f"k{rng.randrange(300):04d}"
        if rng.random() < 0.3:
            assert table.delete(k) == (k in oracle)
            oracle.pop(k, None)
        else:
            table.put(k, i)
            oracle[k] = i
    table.put_many({f"k{j:04d}": -j for j in range(0, 300, 7)})
    oracle.update({f"k{j:04d}": -j for j in range(0, 300, 7)})
    want = sorted(oracle.items())
    assert table.range() == want
    assert table.range(lo="k0100", hi="k0200") == [p for p in want if "k0100" <= p[0] < "k0200"]
    assert table.range(reverse=True, limit=5) == want[::-1][:5]
    assert len(table) == len(oracle)


def test_range_on_other_kinds_and_bad_arguments_raise(scratch):
    with pytest.raises(slither.InvalidArgument, match="'t'.*set"):
        scratch.table("t").range()
    with pytest.raises(slither.InvalidArgument):
        scratch.table("t").first()
    table = scratch.table("ord")
    with pytest.raises(slither.InvalidArgument):
        table.range(limit=-1)
    with pytest.raises(slither.InvalidType):
        table.range(limit="3")
    with pytest.raises(slither.InvalidType):
        table.range(lo=3)
    # As atomic= is: a flag of another type is a mistake (it raised nanobind's own
    # TypeError, listing the binding's signature).
    for flag in ("x", 1, None):
        named = f"reverse must be a bool, not '{type(flag).__name__}'"
        with pytest.raises(slither.InvalidType, match=named):
            table.range(reverse=flag)
    with pytest.raises(slither.NotFound):
        scratch.range("nope")
